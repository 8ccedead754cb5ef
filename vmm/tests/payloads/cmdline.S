# Prints the command line found through boot_params (RSI -> zero page, cmd_line_ptr at
# offset 0x228), then resets.
        .code64
        .include "common.inc"
        .global _start
_start:
        mov %rsi, %r12
        lea prefix(%rip), %rbx
        call puts
        mov 0x228(%r12), %ebx
        call puts
        lea newline(%rip), %rbx
        call puts
        jmp reset

        .section .rodata
prefix: .asciz "cmdline: ["
newline: .asciz "]\n"
