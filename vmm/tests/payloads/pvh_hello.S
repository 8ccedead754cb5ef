# The hello payload behind a PVH entry (Xen ELF note, 32-bit protected mode, paging off),
# so that QEMU's microvm, which loads ELF kernels only through PVH, can run it too: the
# benchmark's common payload. It builds its own page tables and enters long mode.
        .set COM1, 0x3f8

        .pushsection .note.Xen, "a", @note
        .balign 4
        .long 4, 4, 18                  # namesz "Xen\0", descsz, XEN_ELFNOTE_PHYS32_ENTRY
        .asciz "Xen"
        .balign 4
        .long pvh_start
        .popsection

        .text
        .code32
        .global _start
_start:
pvh_start:
        # PML4[0] -> PDPT, PDPT[0] -> PD, PD: first 1 GiB in 2 MiB pages.
        lea pml4, %edi
        lea pdpt, %eax
        or $3, %eax
        mov %eax, (%edi)
        lea pdpt, %edi
        lea pd, %eax
        or $3, %eax
        mov %eax, (%edi)
        lea pd, %edi
        mov $0x83, %eax
        mov $512, %ecx
1:      mov %eax, (%edi)
        movl $0, 4(%edi)
        add $0x200000, %eax
        add $8, %edi
        dec %ecx
        jnz 1b
        mov %cr4, %eax
        or $0x20, %eax                  # PAE
        mov %eax, %cr4
        lea pml4, %eax
        mov %eax, %cr3
        mov $0xc0000080, %ecx           # EFER.LME
        rdmsr
        or $0x100, %eax
        wrmsr
        mov %cr0, %eax
        or $0x80000001, %eax            # PG | PE
        mov %eax, %cr0
        lgdt gdt_desc
        ljmp $8, $long_mode

        .code64
long_mode:
        lea hello(%rip), %rbx
        mov $COM1, %dx
2:      movb (%rbx), %al
        test %al, %al
        jz 3f
        outb %al, %dx
        inc %rbx
        jmp 2b
3:      mov $0xfe, %al
        outb %al, $0x64
        hlt
        jmp 3b

        .section .rodata
hello:  .asciz "Hello from the condo test payload\n"
        .balign 8
gdt:    .quad 0
        .quad 0x00af9b000000ffff        # 64-bit code
gdt_desc:
        .word gdt_desc - gdt - 1
        .long gdt

        .bss
        .balign 4096
pml4:   .skip 4096
pdpt:   .skip 4096
pd:     .skip 4096
