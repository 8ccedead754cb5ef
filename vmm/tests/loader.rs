//! The loader against real guest memory (no KVM needed): entry points, boot structures,
//! initramfs placement, for the payload ELFs and a minimal bzImage.

// Test helpers outside #[test] functions fail loudly too.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use condo_vmm::arch::x86_64::layout::{CMDLINE_ADDR, PML4_ADDR, PVH_INFO_ADDR, ZERO_PAGE_ADDR};
use condo_vmm::arch::x86_64::regs::EntryMode;
use condo_vmm::image::{inspect_kernel, KernelFormat};
use condo_vmm::loader::{load, BootEntry, BootImages, LoaderError};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MEM: u64 = 64 << 20;

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap()
}

fn format_of(path: &Path) -> KernelFormat {
    inspect_kernel(&mut std::fs::File::open(path).unwrap()).unwrap()
}

fn load_kernel(
    mem: &GuestMemoryMmap,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
) -> Result<BootEntry, LoaderError> {
    let images = BootImages {
        kernel,
        format: format_of(kernel),
        initrd,
        cmdline,
    };
    load(mem, MEM, &images)
}

fn read_u32(mem: &GuestMemoryMmap, addr: u64) -> u32 {
    mem.read_obj(GuestAddress(addr)).unwrap()
}

#[test]
fn plain_elf_gets_64bit_entry_and_zero_page() {
    let mem = memory();
    let kernel = common::payload("hello");
    let elf = std::fs::read(&kernel).unwrap();
    let e_entry = u64::from_le_bytes(elf[24..32].try_into().unwrap());
    assert!(e_entry > 0x10_0000, "_start follows the shared helpers");
    let entry = load_kernel(&mem, &kernel, None, "a=b").unwrap();
    assert_eq!(
        entry,
        BootEntry {
            mode: EntryMode::Long64,
            entry: e_entry,
            boot_info: ZERO_PAGE_ADDR
        }
    );
    assert_eq!(read_u32(&mem, ZERO_PAGE_ADDR + 0x228), CMDLINE_ADDR as u32);
    assert_eq!(read_u32(&mem, ZERO_PAGE_ADDR + 0x202), 0x5372_6448);
    let mut cmdline = [0u8; 4];
    mem.read_slice(&mut cmdline, GuestAddress(CMDLINE_ADDR))
        .unwrap();
    assert_eq!(&cmdline, b"a=b\0");
    assert_eq!(read_u32(&mem, PML4_ADDR) & !0xfff, 0xa000);
}

#[test]
fn pvh_note_selects_the_pvh_entry() {
    let mem = memory();
    let kernel = common::payload("pvh_hello");
    assert_eq!(
        format_of(&kernel),
        KernelFormat::Elf {
            linux_notes: false,
            pvh: true
        }
    );
    let entry = load_kernel(&mem, &kernel, None, "x").unwrap();
    assert_eq!(entry.mode, EntryMode::Pvh32);
    assert_eq!(entry.boot_info, PVH_INFO_ADDR);
    assert_eq!(read_u32(&mem, PVH_INFO_ADDR), 0x336e_c578);
    let cmdline: u64 = mem.read_obj(GuestAddress(PVH_INFO_ADDR + 24)).unwrap();
    assert_eq!(cmdline, CMDLINE_ADDR);
    // The memory map as the guest reads it: packed 24-byte entries {addr, size, type, pad}.
    let memmap: u64 = mem.read_obj(GuestAddress(PVH_INFO_ADDR + 40)).unwrap();
    let entries = read_u32(&mem, PVH_INFO_ADDR + 48) as u64;
    let map: Vec<(u64, u64, u32)> = (0..entries)
        .map(|i| {
            let at = memmap + 24 * i;
            (
                mem.read_obj(GuestAddress(at)).unwrap(),
                mem.read_obj(GuestAddress(at + 8)).unwrap(),
                read_u32(&mem, at + 16),
            )
        })
        .collect();
    assert_eq!(
        map,
        vec![
            (0, 0x9fc00, 1),
            (0x9fc00, 0x400, 2),
            (0x10_0000, MEM - 0x10_0000, 1)
        ]
    );
}

#[test]
fn initrd_sits_page_aligned_at_the_top_of_memory() {
    let mem = memory();
    let contents: Vec<u8> = b"070701"
        .iter()
        .copied()
        .chain((0..10_000u32).map(|i| i as u8))
        .collect();
    let initrd = common::scratch_file("loader", "initrd.cpio", &contents);
    load_kernel(&mem, &common::payload("hello"), Some(&initrd), "").unwrap();
    let addr = u64::from(read_u32(&mem, ZERO_PAGE_ADDR + 0x218));
    let size = read_u32(&mem, ZERO_PAGE_ADDR + 0x21c) as usize;
    assert_eq!(size, contents.len());
    assert_eq!(addr % 4096, 0);
    assert!(addr + size as u64 <= MEM && addr + size as u64 > MEM - 4096);
    let mut back = vec![0u8; size];
    mem.read_slice(&mut back, GuestAddress(addr)).unwrap();
    assert_eq!(back, contents);
}

#[test]
fn pvh_initrd_is_a_module() {
    let mem = memory();
    let initrd = common::scratch_file("loader", "pvh-initrd.cpio", b"070701 payload");
    load_kernel(&mem, &common::payload("pvh_hello"), Some(&initrd), "").unwrap();
    assert_eq!(read_u32(&mem, PVH_INFO_ADDR + 12), 1); // nr_modules
    let modlist: u64 = mem.read_obj(GuestAddress(PVH_INFO_ADDR + 16)).unwrap();
    let size: u64 = mem.read_obj(GuestAddress(modlist + 8)).unwrap();
    assert_eq!(size, 14);
}

/// A bzImage with one setup sector and a tiny protected-mode part.
fn fake_bzimage() -> Vec<u8> {
    let mut image = vec![0u8; 1024 + 4096];
    image[0x1f1] = 1; // setup_sects
    image[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
    image[0x211] = 1; // loadflags: LOADED_HIGH
    image[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
    image[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
    image[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes());
    image[1024..1028].copy_from_slice(b"\xf4\xf4\xf4\xf4");
    image
}

#[test]
fn bzimage_gets_64bit_entry_and_its_header() {
    let mem = memory();
    let kernel = common::scratch_file("loader", "bzImage", &fake_bzimage());
    assert_eq!(
        format_of(&kernel),
        KernelFormat::BzImage { cmdline_max: 2047 }
    );
    let entry = load_kernel(&mem, &kernel, None, "console=ttyS0").unwrap();
    assert_eq!(
        entry,
        BootEntry {
            mode: EntryMode::Long64,
            entry: 0x10_0200,
            boot_info: ZERO_PAGE_ADDR
        }
    );
    let version: u16 = mem.read_obj(GuestAddress(ZERO_PAGE_ADDR + 0x206)).unwrap();
    assert_eq!(version, 0x20f);
    assert_eq!(read_u32(&mem, ZERO_PAGE_ADDR + 0x238), 13); // cmdline_size = length used
    assert_eq!(read_u32(&mem, 0x10_0000), 0xf4f4_f4f4);
}

#[test]
fn kernel_too_big_for_memory_is_an_error() {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let kernel = common::payload("hello");
    let images = BootImages {
        kernel: &kernel,
        format: format_of(&kernel),
        initrd: None,
        cmdline: "",
    };
    let err = load(&mem, 0x10_0000, &images).unwrap_err().to_string();
    assert!(err.contains("cannot load it into 1 MiB"), "{err}");
}
