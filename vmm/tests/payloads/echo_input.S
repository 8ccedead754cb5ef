# Enables the UART's receive interrupt (as a driver does), then reads bytes from COM1
# until a newline and prints them back as "got: ...", then resets.
        .code64
        .include "common.inc"
        .global _start
_start:
        mov $COM1 + 1, %dx              # IER: received-data interrupt on
        mov $1, %al
        outb %al, %dx
        lea prefix(%rip), %rbx
        call puts
wait:   mov $COM1 + 5, %dx              # LSR
        inb %dx, %al
        test $1, %al                    # data ready
        jz wait
        mov $COM1, %dx
        inb %dx, %al
        cmp $'\n', %al
        je done
        outb %al, %dx
        jmp wait
done:   lea newline(%rip), %rbx
        call puts
        jmp reset

        .section .rodata
prefix:  .asciz "got: "
newline: .asciz "\n"
