# Floods the serial console: 8192 lines "flood XXXXXXXX" (a hex counter, 15 bytes each),
# then "flood done", then resets through the i8042 (exit code 0). 122891 bytes in all:
# more than any console limit the tests set, so the console file must drop the oldest.
        .code64
        .include "common.inc"
        .set LINES, 0x2000
        .global _start
_start:
        xor %ecx, %ecx
1:      lea prefix(%rip), %rbx
        call puts
        mov %ecx, %eax
        call put_hex32
        lea newline(%rip), %rbx
        call puts
        inc %ecx
        cmp $LINES, %ecx
        jb 1b
        lea done(%rip), %rbx
        call puts
        jmp reset

        .section .rodata
prefix: .asciz "flood "
newline: .asciz "\n"
done:   .asciz "flood done\n"
