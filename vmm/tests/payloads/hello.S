# Prints a line on the serial console, then resets through the i8042 (exit code 0).
        .code64
        .include "common.inc"
        .global _start
_start:
        lea hello(%rip), %rbx
        call puts
        jmp reset

        .section .rodata
hello:  .asciz "Hello from the condo test payload\n"
