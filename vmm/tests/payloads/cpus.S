# Counts the processors listed in the MP table (floating pointer searched in the EBDA at
# 0x9fc00), prints "cpus: N", then resets.
        .code64
        .include "common.inc"
        .global _start
_start:
        mov $0x9fc00, %rdi
        mov $0xa0000, %r9
find:   cmpl $0x5f504d5f, (%rdi)        # "_MP_"
        je found
        add $16, %rdi
        cmp %r9, %rdi
        jb find
        lea missing(%rip), %rbx
        call puts
        jmp reset
found:  movl 4(%rdi), %esi              # configuration table
        movzwl 34(%rsi), %ecx           # entry count
        lea 44(%rsi), %rdi
        xor %eax, %eax
next:   test %ecx, %ecx
        jz done
        cmpb $0, (%rdi)
        jne other
        inc %eax
        add $20, %rdi
        dec %ecx
        jmp next
other:  add $8, %rdi
        dec %ecx
        jmp next
done:   lea prefix(%rip), %rbx
        call puts
        call put_dec
        lea newline(%rip), %rbx
        call puts
        jmp reset

        .section .rodata
prefix:  .asciz "cpus: "
newline: .asciz "\n"
missing: .asciz "no MP table\n"
