//! Puts the kernel, initramfs, command line and boot information into guest memory
//! (through linux-loader) and says where the boot vCPU starts.

use std::fs::File;
use std::path::Path;

use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::start_info::hvm_memmap_table_entry;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{KernelLoader, KernelLoaderResult};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::x86_64::boot_params::{
    e820_map, linux_boot_params, pvh_start_info, InitrdPlacement,
};
use crate::arch::x86_64::layout::{
    low_ram_end, CMDLINE_ADDR, GDT_ADDR, HIMEM_START, IDT_ADDR, PVH_INFO_ADDR, ZERO_PAGE_ADDR,
};
use crate::arch::x86_64::regs::{boot_gdt, identity_page_tables, EntryMode};
use crate::image::KernelFormat;

const PVH_MEMMAP_ADDR: u64 = PVH_INFO_ADDR + 0x100;
const PVH_MODLIST_ADDR: u64 = PVH_INFO_ADDR + 0x800;
/// The 64-bit entry of a bzImage's protected-mode part (boot protocol, "64-bit BOOT PROTOCOL").
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
const PAGE_SIZE: u64 = 0x1000;
/// Highest initramfs end a kernel accepts when its header does not say.
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x3fff_ffff;

/// Where and how the boot vCPU starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootEntry {
    /// CPU mode at entry.
    pub mode: EntryMode,
    /// Entry point (guest physical).
    pub entry: u64,
    /// Zero page (64-bit) or PVH start info (32-bit).
    pub boot_info: u64,
}

/// Loading failed.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// The kernel could not be opened.
    #[error("kernel {path}: {source}")]
    KernelFile {
        /// Path.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// linux-loader refused the kernel.
    #[error("kernel {path}: cannot load it into {memory_mib} MiB of guest memory: {source}")]
    Kernel {
        /// Path.
        path: String,
        /// Guest memory size.
        memory_mib: u64,
        /// Loader error.
        source: linux_loader::loader::Error,
    },
    /// The command line is too long for the kernel.
    #[error("--cmdline is {len} bytes; this kernel accepts at most {max}")]
    CmdlineTooLong {
        /// Length given.
        len: usize,
        /// The kernel's limit.
        max: usize,
    },
    /// The initramfs could not be read.
    #[error("initrd {path}: {source}")]
    InitrdFile {
        /// Path.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// The initramfs does not fit between the kernel and the end of low memory.
    #[error("initrd {path}: {size} bytes do not fit in guest memory after the kernel ({room} bytes free below {limit:#x}); give the VM more --memory")]
    InitrdTooLarge {
        /// Path.
        path: String,
        /// Its size.
        size: u64,
        /// Room available.
        room: u64,
        /// Highest address usable.
        limit: u64,
    },
    /// Writing boot data into guest memory failed.
    #[error("writing {what} into guest memory: {source}")]
    Memory {
        /// What was written.
        what: &'static str,
        /// The error.
        source: vm_memory::GuestMemoryError,
    },
}

/// Refuses a command line longer than `format` allows.
pub fn check_cmdline(cmdline: &str, format: KernelFormat) -> Result<(), LoaderError> {
    let max = format.cmdline_max();
    if cmdline.len() > max {
        return Err(LoaderError::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    Ok(())
}

/// What to load.
pub struct BootImages<'a> {
    /// Kernel path.
    pub kernel: &'a Path,
    /// Its format (from `image::inspect_kernel`).
    pub format: KernelFormat,
    /// Initramfs path.
    pub initrd: Option<&'a Path>,
    /// Command line.
    pub cmdline: &'a str,
}

/// Loads everything and writes the boot structures; returns the boot vCPU's entry.
pub fn load(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    images: &BootImages<'_>,
) -> Result<BootEntry, LoaderError> {
    check_cmdline(images.cmdline, images.format)?;
    let kernel_path = images.kernel.display().to_string();
    let mut kernel = File::open(images.kernel).map_err(|source| LoaderError::KernelFile {
        path: kernel_path.clone(),
        source,
    })?;
    let himem = Some(GuestAddress(HIMEM_START));
    let loaded: Result<KernelLoaderResult, _> = match images.format {
        KernelFormat::Elf { .. } => Elf::load(mem, None, &mut kernel, himem),
        KernelFormat::BzImage { .. } => BzImage::load(mem, None, &mut kernel, himem),
    };
    let loaded = loaded.map_err(|source| LoaderError::Kernel {
        path: kernel_path,
        memory_mib: mem_size >> 20,
        source,
    })?;

    let mut cmdline = images.cmdline.as_bytes().to_vec();
    cmdline.push(0);
    write(mem, "the command line", &cmdline, CMDLINE_ADDR)?;

    let initrd_max = loaded
        .setup_header
        .map(|h| u64::from(h.initrd_addr_max))
        .filter(|max| *max != 0)
        .unwrap_or(DEFAULT_INITRD_ADDR_MAX);
    let initrd = match images.initrd {
        Some(path) => Some(load_initrd(
            mem,
            mem_size,
            path,
            loaded.kernel_end,
            initrd_max,
        )?),
        None => None,
    };
    write_boot_structures(mem, mem_size, &loaded, images, initrd)
}

fn write_boot_structures(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    loaded: &KernelLoaderResult,
    images: &BootImages<'_>,
    initrd: Option<InitrdPlacement>,
) -> Result<BootEntry, LoaderError> {
    let e820 = e820_map(mem_size);
    let pvh_entry = match (images.format, loaded.pvh_boot_cap) {
        (KernelFormat::Elf { .. }, PvhBootCapability::PvhEntryPresent(addr)) => Some(addr.0),
        _ => None,
    };
    let entry = match pvh_entry {
        Some(entry) => {
            let (info, memmap, module) = pvh_start_info(
                CMDLINE_ADDR,
                PVH_MEMMAP_ADDR,
                &e820,
                PVH_MODLIST_ADDR,
                initrd,
            );
            write_obj(mem, "the PVH start info", info, PVH_INFO_ADDR)?;
            let stride = std::mem::size_of::<hvm_memmap_table_entry>() as u64;
            for (i, entry) in memmap.into_iter().enumerate() {
                write_obj(
                    mem,
                    "the PVH memory map",
                    entry,
                    PVH_MEMMAP_ADDR + stride * i as u64,
                )?;
            }
            if let Some(module) = module {
                write_obj(mem, "the PVH module list", module, PVH_MODLIST_ADDR)?;
            }
            BootEntry {
                mode: EntryMode::Pvh32,
                entry,
                boot_info: PVH_INFO_ADDR,
            }
        }
        None => {
            let params = linux_boot_params(
                loaded.setup_header,
                CMDLINE_ADDR,
                images.cmdline.len(),
                initrd,
                &e820,
            );
            write_obj(mem, "the zero page", params, ZERO_PAGE_ADDR)?;
            let entry = match images.format {
                KernelFormat::BzImage { .. } => loaded.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET,
                KernelFormat::Elf { .. } => loaded.kernel_load.0,
            };
            for (addr, value) in identity_page_tables() {
                write_obj(mem, "the page tables", value, addr)?;
            }
            BootEntry {
                mode: EntryMode::Long64,
                entry,
                boot_info: ZERO_PAGE_ADDR,
            }
        }
    };
    for (i, descriptor) in boot_gdt(entry.mode).into_iter().enumerate() {
        write_obj(mem, "the GDT", descriptor, GDT_ADDR + 8 * i as u64)?;
    }
    write_obj(mem, "the IDT", 0u64, IDT_ADDR)?;
    Ok(entry)
}

fn load_initrd(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    path: &Path,
    kernel_end: u64,
    addr_max: u64,
) -> Result<InitrdPlacement, LoaderError> {
    let shown = path.display().to_string();
    let io_err = |source| LoaderError::InitrdFile {
        path: shown.clone(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let size = file.metadata().map_err(io_err)?.len();
    let limit = low_ram_end(mem_size).min(addr_max.saturating_add(1));
    let floor = kernel_end.max(HIMEM_START).next_multiple_of(PAGE_SIZE);
    let room = limit.saturating_sub(floor);
    if size > room {
        return Err(LoaderError::InitrdTooLarge {
            path: shown,
            size,
            room,
            limit,
        });
    }
    // Highest page-aligned spot: far from the kernel, which decompresses upwards.
    let addr = (limit - size) & !(PAGE_SIZE - 1);
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|source| LoaderError::Memory {
            what: "the initrd",
            source,
        })?;
    Ok(InitrdPlacement { addr, size })
}

fn write(
    mem: &GuestMemoryMmap,
    what: &'static str,
    bytes: &[u8],
    addr: u64,
) -> Result<(), LoaderError> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|source| LoaderError::Memory { what, source })
}

fn write_obj<T: vm_memory::ByteValued>(
    mem: &GuestMemoryMmap,
    what: &'static str,
    value: T,
    addr: u64,
) -> Result<(), LoaderError> {
    mem.write_obj(value, GuestAddress(addr))
        .map_err(|source| LoaderError::Memory { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_limits_follow_the_format() {
        let elf = KernelFormat::Elf {
            linux_notes: false,
            pvh: false,
        };
        assert!(check_cmdline(&"a".repeat(2047), elf).is_ok());
        let err = check_cmdline(&"a".repeat(2048), elf).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--cmdline is 2048 bytes; this kernel accepts at most 2047"
        );
        let old = KernelFormat::BzImage { cmdline_max: 255 };
        assert!(check_cmdline(&"a".repeat(256), old).is_err());
    }
}
