# Writes to and reads from an address in the 32-bit MMIO hole (no RAM there: each access
# is a KVM_EXIT_MMIO), prints what the read returned, then resets. Addresses go through
# a register: a [disp32] operand would sign-extend above 2 GiB.
        .code64
        .include "common.inc"
        .global _start
_start:
        movabs $0xd0000000, %rdi
        movl $0x12345678, (%rdi)
        movl 8(%rdi), %eax
        lea prefix(%rip), %rbx
        call puts
        call put_hex32
        lea newline(%rip), %rbx
        call puts
        jmp reset

        .section .rodata
prefix: .asciz "mmio read: "
newline: .asciz "\n"
