//! Seccomp filters per kind of VMM thread. The allowlists are data (vmm/seccomp/x86_64.json,
//! seccompiler's JSON format) compiled into BPF by build.rs; a thread installs its own filter
//! (no TSYNC) before it runs guest code. A syscall outside the list kills the whole VMM with
//! SIGSYS (SECCOMP_RET_KILL_PROCESS).

use std::str::FromStr;

use super::JailError;

include!(concat!(env!("OUT_DIR"), "/seccomp_filters.rs"));

/// The kinds of thread a VMM runs, each with its own allowlist (the VMM's hook seam names them).
pub use crate::hooks::ThreadKind;

impl ThreadKind {
    pub const ALL: [ThreadKind; 2] = [ThreadKind::Vmm, ThreadKind::Vcpu];

    /// The filter's name in the JSON file.
    pub fn filter_name(self) -> &'static str {
        match self {
            ThreadKind::Vmm => "vmm",
            ThreadKind::Vcpu => "vcpu",
        }
    }
}

impl FromStr for ThreadKind {
    type Err = JailError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ThreadKind::ALL
            .into_iter()
            .find(|kind| kind.filter_name() == s)
            .ok_or_else(|| {
                JailError::InvalidConfig(format!("thread kind {s:?} is not one of vmm, vcpu"))
            })
    }
}

/// The compiled BPF program of a thread kind.
pub fn filter(kind: ThreadKind) -> Result<&'static [seccompiler::sock_filter], JailError> {
    compiled_filter(kind.filter_name()).ok_or_else(|| JailError::Seccomp {
        kind,
        message: format!(
            "no filter named {:?} in the allowlist (it has {FILTER_NAMES:?})",
            kind.filter_name()
        ),
    })
}

/// Installs the filter of `kind` on the calling thread only (also sets no_new_privs, which a
/// thread needs to install a filter without CAP_SYS_ADMIN).
pub fn install_filter(kind: ThreadKind) -> Result<(), JailError> {
    let program = filter(kind)?;
    seccompiler::apply_filter(program).map_err(|e| JailError::Seccomp {
        kind,
        message: e.to_string(),
    })
}

/// The VMM's per-thread hook: installs the thread's filter; with `forbidden_in` (a test hook),
/// a thread of that kind then makes a forbidden system call.
pub fn thread_hook(forbidden_in: Option<ThreadKind>) -> crate::hooks::ThreadHook {
    std::sync::Arc::new(move |kind| {
        install_filter(kind)?;
        if forbidden_in == Some(kind) {
            make_forbidden_syscall();
        }
        Ok(())
    })
}

/// Test hook: makes a system call no thread kind allows (uname), so a test can watch the VMM
/// die of SIGSYS from a thread of the given kind. Reached only through a hidden CLI flag.
pub fn make_forbidden_syscall() {
    let mut name = std::mem::MaybeUninit::<libc::utsname>::uninit();
    // SAFETY: uname writes into the buffer it is given, which is large enough.
    unsafe { libc::uname(name.as_mut_ptr()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_kind_has_a_compiled_filter() {
        for kind in ThreadKind::ALL {
            let program = filter(kind).unwrap();
            assert!(
                program.len() > 10,
                "{kind:?}: {} instructions",
                program.len()
            );
            // BPF programs are limited to 4096 instructions.
            assert!(program.len() <= 4096, "{kind:?}: {}", program.len());
        }
        assert_eq!(FILTER_NAMES.len(), ThreadKind::ALL.len());
    }

    #[test]
    fn thread_kind_names_round_trip() {
        for kind in ThreadKind::ALL {
            assert_eq!(kind.filter_name().parse::<ThreadKind>().unwrap(), kind);
        }
        assert!("api".parse::<ThreadKind>().is_err());
    }

    /// The ioctl numbers written in the JSON are those of the kernel headers.
    #[test]
    fn ioctl_numbers_in_the_allowlist_are_right() {
        vmm_sys_util::ioctl_io_nr!(KVM_RUN, 0xAE, 0x80);
        vmm_sys_util::ioctl_ior_nr!(KVM_GET_REGS, 0xAE, 0x81, kvm_bindings::kvm_regs);
        vmm_sys_util::ioctl_ior_nr!(KVM_GET_SREGS, 0xAE, 0x83, kvm_bindings::kvm_sregs);
        let expected = [
            ("KVM_RUN", u64::from(KVM_RUN() as u32)),
            ("KVM_GET_REGS", u64::from(KVM_GET_REGS() as u32)),
            ("KVM_GET_SREGS", u64::from(KVM_GET_SREGS() as u32)),
            ("TCGETS", libc::TCGETS),
            ("TCSETS", libc::TCSETS),
        ];
        let json: serde_json::Value =
            serde_json::from_str(include_str!("../../seccomp/x86_64.json")).unwrap();
        let mut checked = Vec::new();
        for (kind, filter) in json.as_object().unwrap() {
            for rule in filter["filter"].as_array().unwrap() {
                if rule["syscall"] != "ioctl" {
                    continue;
                }
                let arg = &rule["args"][0];
                let name = arg["comment"].as_str().unwrap();
                let (_, number) = expected
                    .iter()
                    .find(|(n, _)| *n == name)
                    .unwrap_or_else(|| panic!("ioctl {name} has no expected number here"));
                assert_eq!(arg["val"].as_u64().unwrap(), *number, "{name}");
                checked.push(format!("{kind}:{name}"));
            }
        }
        checked.sort();
        assert_eq!(
            checked,
            [
                "vcpu:KVM_GET_REGS",
                "vcpu:KVM_GET_SREGS",
                "vcpu:KVM_RUN",
                "vmm:TCGETS",
                "vmm:TCSETS"
            ]
        );
    }

    /// The vCPU kick signal in the allowlist is the one the VMM sends.
    #[test]
    fn tgkill_allows_the_kick_signal() {
        let json: serde_json::Value =
            serde_json::from_str(include_str!("../../seccomp/x86_64.json")).unwrap();
        let kick = vmm_sys_util::signal::SIGRTMIN();
        let rules = json["vmm"]["filter"].as_array().unwrap();
        let tgkill = rules.iter().find(|r| r["syscall"] == "tgkill").unwrap();
        assert_eq!(tgkill["args"][0]["index"], 2);
        assert_eq!(tgkill["args"][0]["val"], kick);
    }
}
