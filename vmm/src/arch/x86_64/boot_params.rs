//! Boot information handed to the guest: the e820 memory map, the Linux "zero page"
//! (`boot_params`) and the PVH `hvm_start_info`. Pure builders; the loader writes them.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};

use super::layout::{low_ram_end, EBDA_START, HIMEM_START, MMIO_GAP_END, MMIO_GAP_START};

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x0100_0000;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

/// One e820 region: start, length, type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// First guest physical address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// `E820_RAM` or `E820_RESERVED`.
    pub kind: u32,
}

/// The memory map of a guest with `mem_size` bytes of RAM: conventional memory up to the
/// EBDA (which holds the MP table), RAM from 1 MiB up to the MMIO hole, and the rest of the
/// RAM above 4 GiB.
pub fn e820_map(mem_size: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        E820Entry {
            addr: EBDA_START,
            size: 0xa0000 - EBDA_START,
            kind: E820_RESERVED,
        },
    ];
    let low_end = low_ram_end(mem_size);
    if low_end > HIMEM_START {
        map.push(E820Entry {
            addr: HIMEM_START,
            size: low_end - HIMEM_START,
            kind: E820_RAM,
        });
    }
    if mem_size > MMIO_GAP_START {
        map.push(E820Entry {
            addr: MMIO_GAP_END,
            size: mem_size - MMIO_GAP_START,
            kind: E820_RAM,
        });
    }
    map
}

/// Where the initramfs sits in guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitrdPlacement {
    /// Guest physical address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// The Linux zero page. `header` is the bzImage's setup header, or `None` for an ELF
/// vmlinux (which has none: a minimal valid one is made).
pub fn linux_boot_params(
    header: Option<setup_header>,
    cmdline_addr: u64,
    cmdline_len: usize,
    initrd: Option<InitrdPlacement>,
    e820: &[E820Entry],
) -> boot_params {
    let mut params = boot_params::default();
    if let Some(hdr) = header {
        params.hdr = hdr;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    if params.hdr.kernel_alignment == 0 {
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
    }
    params.hdr.cmd_line_ptr = cmdline_addr as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some(initrd) = initrd {
        params.hdr.ramdisk_image = initrd.addr as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(e820) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            r#type: entry.kind,
        };
    }
    params.e820_entries = e820.len().min(params.e820_table.len()) as u8;
    params
}

/// The PVH start info, its memory map and (with an initramfs) its module list. The caller
/// writes the memory map at `memmap_addr` and the module at `modlist_addr`.
pub fn pvh_start_info(
    cmdline_addr: u64,
    memmap_addr: u64,
    e820: &[E820Entry],
    modlist_addr: u64,
    initrd: Option<InitrdPlacement>,
) -> (
    hvm_start_info,
    Vec<hvm_memmap_table_entry>,
    Option<hvm_modlist_entry>,
) {
    let memmap: Vec<hvm_memmap_table_entry> = e820
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        })
        .collect();
    let module = initrd.map(|i| hvm_modlist_entry {
        paddr: i.addr,
        size: i.size,
        ..Default::default()
    });
    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        nr_modules: u32::from(module.is_some()),
        modlist_paddr: if module.is_some() { modlist_addr } else { 0 },
        cmdline_paddr: cmdline_addr,
        memmap_paddr: memmap_addr,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    (info, memmap, module)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_for_small_guest() {
        let map = e820_map(128 << 20);
        assert_eq!(map.len(), 3);
        assert_eq!(
            map[0],
            E820Entry {
                addr: 0,
                size: 0x9fc00,
                kind: E820_RAM
            }
        );
        assert_eq!(map[1].kind, E820_RESERVED);
        assert_eq!(
            map[2],
            E820Entry {
                addr: 0x10_0000,
                size: (128 << 20) - 0x10_0000,
                kind: E820_RAM
            }
        );
    }

    #[test]
    fn e820_for_large_guest_skips_hole() {
        let map = e820_map(6 << 30);
        assert_eq!(map[2].addr + map[2].size, MMIO_GAP_START);
        assert_eq!(
            map[3],
            E820Entry {
                addr: 4 << 30,
                size: 3 << 30,
                kind: E820_RAM
            }
        );
        let ram: u64 = map
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        assert_eq!(ram, (6 << 30) - (0x10_0000 - 0x9fc00));
    }

    #[test]
    fn zero_page_for_elf_kernel() {
        let map = e820_map(64 << 20);
        let initrd = InitrdPlacement {
            addr: 0x300_0000,
            size: 4096,
        };
        let p = linux_boot_params(None, 0x20000, 12, Some(initrd), &map);
        let hdr = p.hdr;
        assert_eq!({ hdr.boot_flag }, 0xaa55);
        assert_eq!({ hdr.header }, 0x5372_6448);
        assert_eq!({ hdr.cmd_line_ptr }, 0x20000);
        assert_eq!({ hdr.cmdline_size }, 12);
        assert_eq!({ hdr.ramdisk_image }, 0x300_0000);
        assert_eq!({ hdr.ramdisk_size }, 4096);
        assert_eq!({ hdr.type_of_loader }, 0xff);
        assert_eq!(p.e820_entries, 3);
        let second = p.e820_table[2];
        assert_eq!({ second.addr }, 0x10_0000);
    }

    #[test]
    fn zero_page_keeps_bzimage_header_fields() {
        let hdr = setup_header {
            version: 0x20f,
            kernel_alignment: 0x20_0000,
            setup_sects: 27,
            ..Default::default()
        };
        let p = linux_boot_params(Some(hdr), 0x20000, 1, None, &e820_map(64 << 20));
        let out = p.hdr;
        assert_eq!({ out.version }, 0x20f);
        assert_eq!({ out.kernel_alignment }, 0x20_0000);
        assert_eq!({ out.setup_sects }, 27);
        assert_eq!({ out.ramdisk_image }, 0);
    }

    #[test]
    fn pvh_start_info_lists_memory_and_module() {
        let map = e820_map(64 << 20);
        let initrd = InitrdPlacement {
            addr: 0x200_0000,
            size: 100,
        };
        let (info, memmap, module) = pvh_start_info(0x20000, 0x6040, &map, 0x6100, Some(initrd));
        assert_eq!(info.magic, XEN_HVM_START_MAGIC);
        assert_eq!(info.memmap_entries as usize, memmap.len());
        assert_eq!(info.nr_modules, 1);
        assert_eq!(info.modlist_paddr, 0x6100);
        assert_eq!(module.map(|m| (m.paddr, m.size)), Some((0x200_0000, 100)));
        let (info, _, module) = pvh_start_info(0x20000, 0x6040, &map, 0x6100, None);
        assert_eq!((info.nr_modules, info.modlist_paddr), (0, 0));
        assert!(module.is_none());
    }
}
