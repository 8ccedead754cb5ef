//! Where the VMM puts things in guest physical memory (x86_64). Low addresses follow
//! Firecracker's layout, which Linux's boot code and our test payloads both expect.

/// Global descriptor table used to enter the kernel.
pub const GDT_ADDR: u64 = 0x500;
/// Interrupt descriptor table (empty: the guest installs its own).
pub const IDT_ADDR: u64 = 0x520;
/// PVH `hvm_start_info`, followed by its memory map.
pub const PVH_INFO_ADDR: u64 = 0x6000;
/// Linux boot protocol "zero page" (`struct boot_params`).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Page map level 4 of the initial identity map.
pub const PML4_ADDR: u64 = 0x9000;
/// Page directory pointer table of the initial identity map.
pub const PDPTE_ADDR: u64 = 0xa000;
/// First of four page directories (2 MiB pages) mapping the low 4 GiB.
pub const PDE_ADDR: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// x86 COMMAND_LINE_SIZE: the limit for kernels that do not state their own.
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the extended BIOS data area, where Linux looks for the MP table.
pub const EBDA_START: u64 = 0x9fc00;
/// First address of "high" memory, where kernels are loaded.
pub const HIMEM_START: u64 = 0x10_0000;
/// 32-bit MMIO hole: guest RAM never sits in [MMIO_GAP_START, MMIO_GAP_END).
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO hole (4 GiB).
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// Three pages KVM needs for the real-mode TSS on Intel; placed in the MMIO hole.
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;
/// IO-APIC base address announced in the MP table.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// Local APIC base address announced in the MP table.
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// First virtio-mmio window: device slot i sits at VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_SLOT.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Size of one virtio-mmio window.
pub const VIRTIO_MMIO_SLOT: u64 = 0x1000;
/// GSI of virtio slot 0; slot i uses VIRTIO_FIRST_GSI + i (0-4 are the PC's legacy lines).
pub const VIRTIO_FIRST_GSI: u32 = 5;
/// IO-APIC pins 5..=23 are free for virtio devices.
pub const VIRTIO_MAX_DEVICES: usize = 19;

// The boot structures must not overlap: checked when compiling.
const _: () = {
    assert!(GDT_ADDR + 4 * 8 <= IDT_ADDR);
    assert!(PVH_INFO_ADDR + 0x1000 <= ZERO_PAGE_ADDR);
    assert!(ZERO_PAGE_ADDR + 0x1000 <= BOOT_STACK_POINTER);
    assert!(PDE_ADDR + 4 * 0x1000 <= CMDLINE_ADDR);
    assert!(CMDLINE_ADDR + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
    assert!(VIRTIO_MMIO_BASE >= MMIO_GAP_START);
    assert!(VIRTIO_MMIO_BASE + VIRTIO_MAX_DEVICES as u64 * VIRTIO_MMIO_SLOT <= IOAPIC_ADDR as u64);
    assert!(VIRTIO_FIRST_GSI + VIRTIO_MAX_DEVICES as u32 <= 24);
};

/// Guest RAM ranges (start, length) for `mem_size` bytes, leaving out the MMIO hole.
pub fn ram_ranges(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO_GAP_START {
        vec![(0, mem_size)]
    } else {
        vec![
            (0, MMIO_GAP_START),
            (MMIO_GAP_END, mem_size - MMIO_GAP_START),
        ]
    }
}

/// End of RAM below the MMIO hole.
pub fn low_ram_end(mem_size: u64) -> u64 {
    mem_size.min(MMIO_GAP_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_range() {
        assert_eq!(ram_ranges(128 << 20), vec![(0, 128 << 20)]);
        assert_eq!(low_ram_end(128 << 20), 128 << 20);
    }

    #[test]
    fn large_memory_skips_the_mmio_hole() {
        let ranges = ram_ranges(4 << 30);
        assert_eq!(ranges, vec![(0, 3 << 30), (4 << 30, 1 << 30)]);
        assert_eq!(ranges.iter().map(|r| r.1).sum::<u64>(), 4 << 30);
        assert_eq!(low_ram_end(4 << 30), MMIO_GAP_START);
    }
}
