//! Initial register state of the boot vCPU: segments, control registers, identity page
//! tables (64-bit entry) or flat 32-bit protected mode (PVH entry).

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};

use super::layout::{BOOT_STACK_POINTER, GDT_ADDR, IDT_ADDR, PDE_ADDR, PDPTE_ADDR, PML4_ADDR};

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;
const PAGE_PRESENT_RW: u64 = 0x3;
const PAGE_SIZE_2M: u64 = 0x80;

/// How the boot vCPU enters the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMode {
    /// 64-bit long mode, RSI = zero page (Linux 64-bit boot protocol, test payloads).
    Long64,
    /// 32-bit protected mode without paging, EBX = hvm_start_info (PVH).
    Pvh32,
}

/// GDT descriptor from flags, base and limit (the layout the CPU wants).
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((u64::from(base) & 0xff00_0000) << 32)
        | ((u64::from(flags) & 0xf0ff) << 40)
        | ((u64::from(limit) & 0x000f_0000) << 32)
        | ((u64::from(base) & 0x00ff_ffff) << 16)
        | (u64::from(limit) & 0x0000_ffff)
}

/// The boot GDT: null, code, data, TSS.
pub fn boot_gdt(mode: EntryMode) -> [u64; 4] {
    let code_flags = match mode {
        EntryMode::Long64 => 0xa09b, // 64-bit code, present, ring 0
        EntryMode::Pvh32 => 0xc09b,  // 32-bit code
    };
    [
        0,
        gdt_entry(code_flags, 0, 0xfffff),
        gdt_entry(0xc093, 0, 0xfffff),
        gdt_entry(0x808b, 0, 0xfffff),
    ]
}

/// The segment register KVM wants for GDT slot `index` holding `entry`.
fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let flag = |shift: u32, mask: u64| ((entry >> shift) & mask) as u8;
    let limit = (((entry >> 32) & 0x000f_0000) | (entry & 0xffff)) as u32;
    let granularity = flag(55, 1);
    kvm_segment {
        base: (((entry >> 32) & 0xff00_0000) | ((entry >> 16) & 0x00ff_ffff)),
        limit: if granularity == 1 {
            (limit << 12) | 0xfff
        } else {
            limit
        },
        selector: u16::from(index) * 8,
        type_: flag(40, 0xf),
        present: flag(47, 1),
        dpl: flag(45, 0x3),
        db: flag(54, 1),
        s: flag(44, 1),
        l: flag(53, 1),
        g: granularity,
        avl: flag(52, 1),
        padding: 0,
        unusable: u8::from(flag(47, 1) == 0),
    }
}

/// Identity map of the low 4 GiB with 2 MiB pages: (guest address, entry) pairs to write.
pub fn identity_page_tables() -> Vec<(u64, u64)> {
    let mut writes = vec![(PML4_ADDR, PDPTE_ADDR | PAGE_PRESENT_RW)];
    for gib in 0..4u64 {
        let pd = PDE_ADDR + gib * 0x1000;
        writes.push((PDPTE_ADDR + gib * 8, pd | PAGE_PRESENT_RW));
        for i in 0..512u64 {
            let phys = (gib << 30) | (i << 21);
            writes.push((pd + i * 8, phys | PAGE_PRESENT_RW | PAGE_SIZE_2M));
        }
    }
    writes
}

/// Special registers for the entry mode, starting from KVM's defaults `sregs`.
pub fn boot_sregs(mut sregs: kvm_sregs, mode: EntryMode) -> kvm_sregs {
    let gdt = boot_gdt(mode);
    let code = segment_from_gdt(gdt[1], 1);
    let data = segment_from_gdt(gdt[2], 2);
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment_from_gdt(gdt[3], 3);
    match mode {
        EntryMode::Long64 => {
            sregs.cr3 = PML4_ADDR;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.cr0 |= X86_CR0_PE | X86_CR0_PG;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
        EntryMode::Pvh32 => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
    sregs
}

/// General registers at the entry point. `boot_info` is the zero page (64-bit) or the PVH
/// start info (32-bit).
pub fn boot_regs(mode: EntryMode, entry: u64, boot_info: u64) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        ..Default::default()
    };
    match mode {
        EntryMode::Long64 => {
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = boot_info;
        }
        EntryMode::Pvh32 => regs.rbx = boot_info,
    }
    regs
}

/// x87 and SSE control words as after FNINIT / reset.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_encode_flat_segments() {
        assert_eq!(gdt_entry(0xa09b, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(0xc093, 0, 0xfffff), 0x00cf_9300_0000_ffff);
        assert_eq!(gdt_entry(0x808b, 0, 0xfffff), 0x008f_8b00_0000_ffff);
    }

    #[test]
    fn long_mode_segments() {
        let s = boot_sregs(kvm_sregs::default(), EntryMode::Long64);
        assert_eq!((s.cs.selector, s.cs.l, s.cs.db, s.cs.type_), (8, 1, 0, 0xb));
        assert_eq!((s.ds.selector, s.ds.db, s.ds.limit), (0x10, 1, 0xffff_ffff));
        assert_eq!(s.tr.selector, 0x18);
        assert_eq!(s.cr3, PML4_ADDR);
        assert_ne!(s.cr0 & X86_CR0_PG, 0);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
    }

    #[test]
    fn pvh_is_flat_protected_mode_without_paging() {
        let s = boot_sregs(
            kvm_sregs {
                cr0: X86_CR0_PG,
                efer: EFER_LME,
                ..Default::default()
            },
            EntryMode::Pvh32,
        );
        assert_eq!((s.cs.l, s.cs.db), (0, 1));
        assert_eq!(s.cr0, X86_CR0_PE | X86_CR0_ET);
        assert_eq!(s.efer, 0);
        let r = boot_regs(EntryMode::Pvh32, 0x100_0000, 0x6000);
        assert_eq!((r.rip, r.rbx, r.rsi), (0x100_0000, 0x6000, 0));
    }

    #[test]
    fn long_mode_regs_point_to_zero_page() {
        let r = boot_regs(EntryMode::Long64, 0x20_0000, 0x7000);
        assert_eq!(
            (r.rip, r.rsi, r.rsp, r.rflags),
            (0x20_0000, 0x7000, BOOT_STACK_POINTER, 2)
        );
    }

    #[test]
    fn page_tables_identity_map_4gib() {
        let writes = identity_page_tables();
        assert_eq!(writes.len(), 1 + 4 + 4 * 512);
        assert_eq!(writes[0], (PML4_ADDR, PDPTE_ADDR | 3));
        let last = writes[writes.len() - 1];
        assert_eq!(last.0, PDE_ADDR + 3 * 0x1000 + 511 * 8);
        assert_eq!(last.1 & !0xfff, 0xffe0_0000);
    }
}
