//! Capability sets by name and their application with capset(2)/prctl(2).
//!
//! Hand-written on libc rather than the `caps` crate: the init applies them after clone(2)
//! where it should not allocate, and only five syscalls are involved (capset, PR_CAPBSET_DROP,
//! PR_CAPBSET_READ, PR_CAP_AMBIENT, PR_SET_KEEPCAPS).

use super::RuntimeError;

/// Capability names in bit order (CAP_CHOWN = 0 ... CAP_CHECKPOINT_RESTORE = 40).
pub const CAPABILITY_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// A set of capabilities as a bit mask (bit n = capability n).
pub type CapMask = u64;

/// The bit of capability `name` ("CAP_CHOWN", case-insensitive, "CAP_" optional).
pub fn capability_bit(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    CAPABILITY_NAMES
        .iter()
        .position(|n| *n == full)
        .map(|i| i as u32)
}

/// Mask of the named capabilities; `field` names the spec field in the error.
pub fn mask_of<S: AsRef<str>>(names: &[S], field: &str) -> Result<CapMask, RuntimeError> {
    let mut mask = 0;
    for (i, name) in names.iter().enumerate() {
        let name = name.as_ref();
        let bit = capability_bit(name).ok_or_else(|| {
            RuntimeError::spec(
                format!("{field}[{i}]"),
                format!("unknown capability {name:?}"),
            )
        })?;
        mask |= 1 << bit;
    }
    Ok(mask)
}

/// Names of the capabilities in `mask`.
pub fn names_of(mask: CapMask) -> Vec<String> {
    CAPABILITY_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// The five capability sets of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSets {
    pub bounding: CapMask,
    pub effective: CapMask,
    pub permitted: CapMask,
    pub inheritable: CapMask,
    pub ambient: CapMask,
}

/// Capabilities the running kernel knows (bits below /proc/sys/kernel/cap_last_cap + 1).
fn kernel_caps() -> CapMask {
    // Probe with PR_CAPBSET_READ: it fails with EINVAL past the last capability.
    let mut mask = 0;
    for bit in 0..64u64 {
        // SAFETY: PR_CAPBSET_READ only reads the caller's bounding set.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_READ, bit, 0, 0, 0) };
        if rc < 0 {
            break;
        }
        mask |= 1 << bit;
    }
    mask
}

/// The caller's current bounding set.
fn current_bounding() -> CapMask {
    let mut mask = 0;
    for bit in 0..64u64 {
        // SAFETY: PR_CAPBSET_READ only reads the caller's bounding set.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_READ, bit, 0, 0, 0) };
        if rc < 0 {
            break;
        }
        if rc == 1 {
            mask |= 1 << bit;
        }
    }
    mask
}

/// Drops every capability not in `sets.bounding` from the bounding set. Needs CAP_SETPCAP,
/// so it runs before the user switch.
pub(crate) fn drop_bounding(sets: &CapSets) -> Result<(), RuntimeError> {
    let known = kernel_caps();
    for bit in 0..64u64 {
        if known & (1 << bit) != 0 && sets.bounding & (1 << bit) == 0 {
            // SAFETY: PR_CAPBSET_DROP changes only the caller's bounding set.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, bit, 0, 0, 0) } < 0 {
                return Err(RuntimeError::last_os("prctl(PR_CAPBSET_DROP)"));
            }
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Sets effective/permitted/inheritable, then raises the ambient set. Capabilities the host
/// cannot give (outside its bounding set, e.g. CAP_SYS_RESOURCE on some hosts) are left out
/// rather than failing, as runc does.
pub(crate) fn apply(sets: &CapSets) -> Result<(), RuntimeError> {
    let possible = current_bounding() | sets.permitted;
    let inheritable = sets.inheritable & current_bounding();
    let words = |m: CapMask| [(m & 0xffff_ffff) as u32, (m >> 32) as u32];
    let (eff, perm, inh) = (
        words(sets.effective & possible),
        words(sets.permitted & possible),
        words(inheritable),
    );
    let data = [
        CapData {
            effective: eff[0],
            permitted: perm[0],
            inheritable: inh[0],
        },
        CapData {
            effective: eff[1],
            permitted: perm[1],
            inheritable: inh[1],
        },
    ];
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: capset reads a v3 header and two CapData structs, both valid for the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if rc < 0 {
        return Err(RuntimeError::last_os("capset"));
    }
    for bit in 0..64u64 {
        if sets.ambient & (1 << bit) != 0 && (inheritable & sets.permitted) & (1 << bit) != 0 {
            // SAFETY: PR_CAP_AMBIENT_RAISE changes only the caller's ambient set.
            let rc = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    bit,
                    0,
                    0,
                )
            };
            if rc < 0 {
                return Err(RuntimeError::last_os("prctl(PR_CAP_AMBIENT_RAISE)"));
            }
        }
    }
    Ok(())
}

/// Keeps permitted capabilities across the setuid of the user switch.
pub(crate) fn keep_caps() -> Result<(), RuntimeError> {
    // SAFETY: PR_SET_KEEPCAPS only sets a flag of the caller.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } < 0 {
        return Err(RuntimeError::last_os("prctl(PR_SET_KEEPCAPS)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_defaults_give_the_known_mask() {
        let mask = mask_of(super::super::defaults::DOCKER_CAPABILITIES, "caps").unwrap();
        assert_eq!(mask, 0xa804_25fb);
        assert_eq!(names_of(mask).len(), 14);
    }

    #[test]
    fn names_parse_and_errors_name_the_field() {
        assert_eq!(capability_bit("cap_sys_admin"), Some(21));
        assert_eq!(capability_bit("NET_RAW"), Some(13));
        let err = mask_of(&["CAP_CHOWN", "CAP_BOGUS"], "process.capabilities.bounding")
            .unwrap_err()
            .to_string();
        assert!(err.contains("process.capabilities.bounding[1]"), "{err}");
        assert!(err.contains("CAP_BOGUS"), "{err}");
    }
}
