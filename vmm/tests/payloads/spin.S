# Prints a line, then spins forever with interrupts off: the vCPU never leaves KVM_RUN by
# itself. A signal must still end the VMM promptly (its vCPU threads are kicked out).
        .code64
        .include "common.inc"
        .global _start
_start:
        lea spinning(%rip), %rbx
        call puts
        cli
1:      jmp 1b

        .section .rodata
spinning: .asciz "spinning\n"
