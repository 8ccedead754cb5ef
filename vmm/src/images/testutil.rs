//! Building fixture tars in tests, including entries the `tar` crate's safe setters refuse
//! (`..`, absolute paths), which are written into the header bytes directly.

use std::io::Write;

/// One fixture entry.
pub enum E<'a> {
    /// Directory with mode.
    Dir(&'a str, u32),
    /// Regular file with content and mode.
    File(&'a str, &'a [u8], u32),
    /// Symlink to a target.
    Sym(&'a str, &'a str),
    /// Hardlink to an archive path.
    Hard(&'a str, &'a str),
    /// FIFO.
    Fifo(&'a str),
    /// Character device (major, minor).
    Char(&'a str, u32, u32),
}

fn header(kind: tar::EntryType, path: &str, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    // Raw name bytes: set_path would refuse the hostile paths tests need.
    let name = &mut h.as_old_mut().name;
    name.fill(0);
    name[..path.len()].copy_from_slice(path.as_bytes());
    h
}

fn set_link(h: &mut tar::Header, target: &str) {
    let link = &mut h.as_old_mut().linkname;
    link.fill(0);
    link[..target.len()].copy_from_slice(target.as_bytes());
}

/// A tar holding `entries`, in order.
pub fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        use tar::EntryType as T;
        let (mut h, data): (tar::Header, &[u8]) = match e {
            E::Dir(p, m) => (header(T::Directory, p, *m, 0), &[]),
            E::File(p, d, m) => (header(T::Regular, p, *m, d.len() as u64), d),
            E::Sym(p, t) => {
                let mut h = header(T::Symlink, p, 0o777, 0);
                set_link(&mut h, t);
                (h, &[])
            }
            E::Hard(p, t) => {
                let mut h = header(T::Link, p, 0o644, 0);
                set_link(&mut h, t);
                (h, &[])
            }
            E::Fifo(p) => (header(T::Fifo, p, 0o644, 0), &[]),
            E::Char(p, major, minor) => {
                let mut h = header(T::Char, p, 0o666, 0);
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
                (h, &[])
            }
        };
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// gzip of `bytes`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}
