//! What kind of kernel a file holds, read before anything is created: the format decides the
//! entry protocol, the command-line limit, and whether a PVM host can run it.

use std::io::{Read, Seek, SeekFrom};

use crate::arch::x86_64::layout::CMDLINE_MAX_SIZE;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELFCLASS64: u8 = 2;
const EM_X86_64: u16 = 62;
const PT_NOTE: u32 = 4;
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
const BZIMAGE_MAGIC_OFFSET: u64 = 0x202;
const BZIMAGE_VERSION_OFFSET: u64 = 0x206;
const BZIMAGE_CMDLINE_SIZE_OFFSET: u64 = 0x238;
/// Boot protocol 2.06 introduced `cmdline_size`; older kernels take 255 bytes.
const BOOT_PROTOCOL_CMDLINE_SIZE: u16 = 0x206;
const OLD_CMDLINE_MAX: usize = 255;
/// Notes are small; a larger PT_NOTE segment means a garbage header.
const MAX_NOTES_LEN: u64 = 1 << 20;

/// The kernel's format as far as booting is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// A 64-bit x86 ELF (vmlinux or test payload).
    Elf {
        /// Has notes named "Linux": a Linux kernel.
        linux_notes: bool,
        /// Has the PVH entry note.
        pvh: bool,
    },
    /// A bzImage with its command-line limit.
    BzImage {
        /// Longest command line the kernel accepts, without the NUL.
        cmdline_max: usize,
    },
}

impl KernelFormat {
    /// Whether this is a Linux kernel (as opposed to a small test payload).
    pub fn is_linux(&self) -> bool {
        matches!(
            self,
            KernelFormat::BzImage { .. }
                | KernelFormat::Elf {
                    linux_notes: true,
                    ..
                }
        )
    }

    /// Longest command line the kernel accepts, without the terminating NUL.
    pub fn cmdline_max(&self) -> usize {
        match self {
            KernelFormat::BzImage { cmdline_max } => *cmdline_max,
            KernelFormat::Elf { .. } => CMDLINE_MAX_SIZE - 1,
        }
    }
}

/// Why a file is not a kernel condo can boot.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Reading failed.
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    /// Neither ELF nor bzImage.
    #[error("neither an ELF vmlinux nor a bzImage (no ELF magic, no \"HdrS\" at offset 0x202)")]
    UnknownFormat,
    /// ELF but not 64-bit x86.
    #[error("ELF file is not 64-bit x86_64 (class {class}, machine {machine})")]
    WrongElf {
        /// EI_CLASS.
        class: u8,
        /// e_machine.
        machine: u16,
    },
    /// Program headers point outside the file or are malformed.
    #[error("malformed ELF program headers: {0}")]
    BadElf(&'static str),
}

fn read_at<R: Read + Seek>(file: &mut R, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Magic numbers an initramfs can start with: cpio "newc"/"crc", or one of the compressors
/// Linux can unpack (gzip, bzip2, lzma, xz, lzo, lz4, zstd).
const INITRD_MAGICS: [&[u8]; 8] = [
    b"070701",
    b"070702",
    b"\x1f\x8b",
    b"BZh",
    b"\x5d\x00\x00",
    b"\xfd7zXZ\x00",
    b"\x89LZO",
    b"\x28\xb5\x2f\xfd",
];
const LZ4_LEGACY_MAGIC: &[u8] = b"\x02\x21\x4c\x18";

/// Whether `head` (the first bytes of a file) looks like an initramfs.
pub fn looks_like_initramfs(head: &[u8]) -> bool {
    INITRD_MAGICS
        .iter()
        .chain([&LZ4_LEGACY_MAGIC])
        .any(|magic| head.starts_with(magic))
}

/// Reads enough of `file` to tell its format.
pub fn inspect_kernel<R: Read + Seek>(file: &mut R) -> Result<KernelFormat, ImageError> {
    let mut ident = [0u8; 64];
    let len = file.seek(SeekFrom::End(0))?;
    if len >= 64 {
        read_at(file, 0, &mut ident)?;
        if &ident[..4] == ELF_MAGIC {
            return inspect_elf(file, &ident, len);
        }
    }
    let mut magic = [0u8; 4];
    if len >= BZIMAGE_CMDLINE_SIZE_OFFSET + 4 {
        read_at(file, BZIMAGE_MAGIC_OFFSET, &mut magic)?;
        if &magic == b"HdrS" {
            let mut version = [0u8; 2];
            read_at(file, BZIMAGE_VERSION_OFFSET, &mut version)?;
            let cmdline_max = if u16::from_le_bytes(version) >= BOOT_PROTOCOL_CMDLINE_SIZE {
                let mut size = [0u8; 4];
                read_at(file, BZIMAGE_CMDLINE_SIZE_OFFSET, &mut size)?;
                u32::from_le_bytes(size) as usize
            } else {
                OLD_CMDLINE_MAX
            };
            return Ok(KernelFormat::BzImage { cmdline_max });
        }
    }
    Err(ImageError::UnknownFormat)
}

fn inspect_elf<R: Read + Seek>(
    file: &mut R,
    ehdr: &[u8],
    len: u64,
) -> Result<KernelFormat, ImageError> {
    let (class, machine) = (ehdr[4], u16_at(ehdr, 18));
    if class != ELFCLASS64 || machine != EM_X86_64 {
        return Err(ImageError::WrongElf { class, machine });
    }
    let phoff = u64_at(ehdr, 32);
    let phentsize = u64::from(u16_at(ehdr, 54));
    let phnum = u64::from(u16_at(ehdr, 56));
    if phentsize < 56
        || phoff
            .checked_add(phentsize * phnum)
            .is_none_or(|end| end > len)
    {
        return Err(ImageError::BadElf("program header table outside the file"));
    }
    let (mut linux_notes, mut pvh) = (false, false);
    for i in 0..phnum {
        let mut phdr = [0u8; 56];
        read_at(file, phoff + i * phentsize, &mut phdr)?;
        if u32_at(&phdr, 0) != PT_NOTE {
            continue;
        }
        let (offset, size) = (u64_at(&phdr, 8), u64_at(&phdr, 32));
        if size > MAX_NOTES_LEN || offset.checked_add(size).is_none_or(|end| end > len) {
            return Err(ImageError::BadElf("note segment outside the file"));
        }
        let mut notes = vec![0u8; size as usize];
        read_at(file, offset, &mut notes)?;
        for (name, kind) in parse_notes(&notes) {
            linux_notes |= name == b"Linux";
            pvh |= name == b"Xen" && kind == XEN_ELFNOTE_PHYS32_ENTRY;
        }
    }
    Ok(KernelFormat::Elf { linux_notes, pvh })
}

/// (name without NUL, type) of each note in a PT_NOTE segment.
fn parse_notes(mut notes: &[u8]) -> Vec<(&[u8], u32)> {
    let align4 = |n: usize| (n + 3) & !3;
    let mut out = Vec::new();
    while notes.len() >= 12 {
        let namesz = u32_at(notes, 0) as usize;
        let descsz = u32_at(notes, 4) as usize;
        let kind = u32_at(notes, 8);
        let total = 12 + align4(namesz) + align4(descsz);
        if total > notes.len() {
            break;
        }
        let name = &notes[12..12 + namesz];
        out.push((name.strip_suffix(b"\0").unwrap_or(name), kind));
        notes = &notes[total..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&kind.to_le_bytes());
        n.extend_from_slice(name);
        n.push(0);
        while n.len() % 4 != 0 {
            n.push(0);
        }
        n.extend_from_slice(desc);
        while n.len() % 4 != 0 {
            n.push(0);
        }
        n
    }

    fn elf(notes: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 64 + 56];
        f[..4].copy_from_slice(ELF_MAGIC);
        f[4] = ELFCLASS64;
        f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&1u16.to_le_bytes());
        f[64..68].copy_from_slice(&PT_NOTE.to_le_bytes());
        f[72..80].copy_from_slice(&120u64.to_le_bytes());
        f[96..104].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        f.extend_from_slice(notes);
        f
    }

    #[test]
    fn initramfs_magics() {
        assert!(looks_like_initramfs(b"070701000000"));
        assert!(looks_like_initramfs(&[0x1f, 0x8b, 8, 0]));
        assert!(looks_like_initramfs(&[0x28, 0xb5, 0x2f, 0xfd, 1]));
        assert!(!looks_like_initramfs(b"garbage!"));
        assert!(!looks_like_initramfs(b""));
    }

    #[test]
    fn plain_payload_elf() {
        let f = elf(&note(b"GNU", 3, &[1, 2, 3, 4]));
        let fmt = inspect_kernel(&mut Cursor::new(f)).unwrap();
        assert_eq!(
            fmt,
            KernelFormat::Elf {
                linux_notes: false,
                pvh: false
            }
        );
        assert!(!fmt.is_linux());
        assert_eq!(fmt.cmdline_max(), 2047);
    }

    #[test]
    fn vmlinux_with_linux_and_pvh_notes() {
        let mut notes = note(
            b"Xen",
            XEN_ELFNOTE_PHYS32_ENTRY,
            &0x100_0000u32.to_le_bytes(),
        );
        notes.extend(note(b"Linux", 0x100, b"salt"));
        let fmt = inspect_kernel(&mut Cursor::new(elf(&notes))).unwrap();
        assert_eq!(
            fmt,
            KernelFormat::Elf {
                linux_notes: true,
                pvh: true
            }
        );
        assert!(fmt.is_linux());
    }

    #[test]
    fn pvh_payload_is_not_linux() {
        let notes = note(
            b"Xen",
            XEN_ELFNOTE_PHYS32_ENTRY,
            &0x10_0000u32.to_le_bytes(),
        );
        let fmt = inspect_kernel(&mut Cursor::new(elf(&notes))).unwrap();
        assert_eq!(
            fmt,
            KernelFormat::Elf {
                linux_notes: false,
                pvh: true
            }
        );
        assert!(!fmt.is_linux());
    }

    #[test]
    fn bzimage_header() {
        let mut f = vec![0u8; 0x1000];
        f[0x202..0x206].copy_from_slice(b"HdrS");
        f[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        f[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes());
        let fmt = inspect_kernel(&mut Cursor::new(f.clone())).unwrap();
        assert_eq!(fmt, KernelFormat::BzImage { cmdline_max: 2047 });
        assert!(fmt.is_linux());
        f[0x206..0x208].copy_from_slice(&0x204u16.to_le_bytes());
        assert_eq!(
            inspect_kernel(&mut Cursor::new(f)).unwrap().cmdline_max(),
            255
        );
    }

    #[test]
    fn garbage_is_refused() {
        let err = inspect_kernel(&mut Cursor::new(vec![0x55u8; 4096])).unwrap_err();
        assert!(matches!(err, ImageError::UnknownFormat));
        assert!(matches!(
            inspect_kernel(&mut Cursor::new(b"tiny".to_vec())),
            Err(ImageError::UnknownFormat)
        ));
    }

    #[test]
    fn wrong_elf_and_truncated_headers() {
        let mut f = elf(&[]);
        f[18] = 3; // EM_386
        assert!(matches!(
            inspect_kernel(&mut Cursor::new(f)),
            Err(ImageError::WrongElf { machine: 3, .. })
        ));
        let mut f = elf(&[]);
        f[56..58].copy_from_slice(&1000u16.to_le_bytes());
        assert!(matches!(
            inspect_kernel(&mut Cursor::new(f)),
            Err(ImageError::BadElf(_))
        ));
    }
}
