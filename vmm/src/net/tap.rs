//! Tap devices through /dev/net/tun: persistent taps made for a tenant, and the VMM's handle.
//!
//! Choice: `condo tenant create --net` makes a PERSISTENT tap owned by the tenant's jail uid
//! (TUNSETPERSIST, TUNSETOWNER/TUNSETGROUP) in the host's network namespace; `condo vm run`
//! attaches to it (TUNSETIFF) BEFORE entering the jail, whose own network namespace would not
//! see the tap, and the VMM keeps that descriptor (the jail's `keep_fds`). An attached fd keeps
//! working from any namespace: frames still enter and leave the host's stack on the tap.
//! The owner uid additionally lets an unjailed VMM running as that uid attach by itself.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::NetError;

/// Size of struct virtio_net_hdr_v1 (with num_buffers), which the tap is told to use.
pub const VNET_HDR_LEN: usize = 12;
const TUN_PATH: &str = "/dev/net/tun";

/// An attached tap queue: frames (each preceded by a virtio_net_hdr_v1) in and out.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

fn ifreq_for(name: &str, flags: libc::c_int) -> Result<libc::ifreq, NetError> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
        return Err(NetError::BadTapName(name.to_owned()));
    }
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = flags as libc::c_short;
    Ok(req)
}

fn tap_ioctl<T>(
    file: &File,
    request: libc::Ioctl,
    arg: T,
    what: &'static str,
    name: &str,
) -> Result<(), NetError>
where
    T: IoctlArg,
{
    // SAFETY: `file` is an open tun descriptor; `arg` is either an integer or a pointer to a
    // live ifreq, as the request expects (see IoctlArg's implementations).
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request, arg.raw()) };
    if rc < 0 {
        return Err(NetError::TapIoctl {
            what,
            name: name.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// An ioctl argument: an integer passed by value or a pointer to an ifreq.
trait IoctlArg {
    fn raw(self) -> libc::c_ulong;
}
impl IoctlArg for libc::c_ulong {
    fn raw(self) -> libc::c_ulong {
        self
    }
}
impl IoctlArg for *mut libc::ifreq {
    fn raw(self) -> libc::c_ulong {
        self as libc::c_ulong
    }
}
impl IoctlArg for *mut libc::c_int {
    fn raw(self) -> libc::c_ulong {
        self as libc::c_ulong
    }
}

fn open_tun(name: &str) -> Result<File, NetError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(TUN_PATH)
        .map_err(|source| NetError::TapIoctl {
            what: "open /dev/net/tun for",
            name: name.to_owned(),
            source,
        })
}

const TAP_FLAGS: libc::c_int = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;

/// Attaches `file` to tap `name` (created if missing) and returns the kernel's name for it.
fn attach(file: &File, name: &str) -> Result<String, NetError> {
    let mut req = ifreq_for(name, TAP_FLAGS)?;
    tap_ioctl(
        file,
        libc::TUNSETIFF,
        &mut req as *mut libc::ifreq,
        "TUNSETIFF",
        name,
    )?;
    let bytes: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Makes tap `name` persistent in this thread's network namespace, owned by `owner` (uid and
/// gid) when given. Idempotent for an existing tap of the same kind.
pub fn create_persistent(name: &str, owner: Option<u32>) -> Result<(), NetError> {
    let file = open_tun(name)?;
    attach(&file, name)?;
    if let Some(id) = owner {
        tap_ioctl(
            &file,
            libc::TUNSETOWNER,
            libc::c_ulong::from(id),
            "TUNSETOWNER",
            name,
        )?;
        tap_ioctl(
            &file,
            libc::TUNSETGROUP,
            libc::c_ulong::from(id),
            "TUNSETGROUP",
            name,
        )?;
    }
    tap_ioctl(&file, libc::TUNSETPERSIST, 1, "TUNSETPERSIST", name)
}

impl Tap {
    /// Attaches to tap `name` (made if missing) for a VMM: vnet header v1 (12 bytes), no
    /// offloads, non-blocking.
    pub fn open(name: &str) -> Result<Tap, NetError> {
        let file = open_tun(name)?;
        let name = attach(&file, name)?;
        let tap = Tap { file, name };
        tap.configure()?;
        Ok(tap)
    }

    /// Wraps a descriptor attached earlier (e.g. before entering the jail) and configures it.
    pub fn from_fd(fd: OwnedFd) -> Result<Tap, NetError> {
        let file = File::from(fd);
        let mut req = ifreq_for("fd", 0)?;
        let name = format!("fd {}", file.as_raw_fd());
        tap_ioctl(
            &file,
            libc::TUNGETIFF,
            &mut req as *mut libc::ifreq,
            "TUNGETIFF",
            &name,
        )?;
        // SAFETY: TUNGETIFF filled the flags member of the union.
        let flags = libc::c_int::from(unsafe { req.ifr_ifru.ifru_flags }) & 0xffff;
        if flags & TAP_FLAGS != TAP_FLAGS {
            return Err(NetError::NotATap { fd: name, flags });
        }
        let bytes: Vec<u8> = req
            .ifr_name
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        let tap = Tap {
            file,
            name: String::from_utf8_lossy(&bytes).into_owned(),
        };
        // SAFETY: fcntl on a descriptor we own with integer arguments.
        let rc = unsafe { libc::fcntl(tap.file.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        if rc < 0 {
            return Err(NetError::TapIoctl {
                what: "fcntl O_NONBLOCK on",
                name: tap.name,
                source: io::Error::last_os_error(),
            });
        }
        tap.configure()?;
        Ok(tap)
    }

    fn configure(&self) -> Result<(), NetError> {
        let mut size: libc::c_int = VNET_HDR_LEN as libc::c_int;
        let size_ptr = &mut size as *mut libc::c_int;
        tap_ioctl(
            &self.file,
            libc::TUNSETVNETHDRSZ,
            size_ptr,
            "TUNSETVNETHDRSZ",
            &self.name,
        )?;
        tap_ioctl(
            &self.file,
            libc::TUNSETOFFLOAD,
            0,
            "TUNSETOFFLOAD",
            &self.name,
        )
    }

    /// The tap's name on the host.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame (header included); WouldBlock when none is waiting.
    pub fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for buf.len() writable bytes; the fd is ours.
        let n = unsafe { libc::read(self.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Writes one frame (header included).
    pub fn write_frame(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: frame is valid for frame.len() readable bytes; the fd is ours.
        let n = unsafe { libc::write(self.file.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Gives the descriptor up (to keep it across the jail's fd cleanup).
    pub fn into_fd(self) -> OwnedFd {
        OwnedFd::from(self.file)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// Takes ownership of an inherited descriptor number (the jail kept it open for us).
///
/// # Safety
/// `fd` must be an open descriptor that nothing else in the process owns or will close.
pub unsafe fn owned_from_raw(fd: RawFd) -> OwnedFd {
    // SAFETY: guaranteed by the caller.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
