# Loads an empty IDT and raises an exception: #UD -> #DF -> triple fault, which KVM
# reports as KVM_EXIT_SHUTDOWN (condo exits 3).
        .code64
        .include "common.inc"
        .global _start
_start:
        lea before(%rip), %rbx
        call puts
        lidt empty_idt(%rip)
        ud2
        lea after(%rip), %rbx
        call puts
        jmp reset

        .section .rodata
before: .asciz "about to triple fault\n"
after:  .asciz "still alive after ud2\n"
        .balign 8
empty_idt:
        .word 0
        .quad 0
