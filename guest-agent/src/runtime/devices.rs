//! The device cgroup of cgroup v2: an eBPF program (BPF_PROG_TYPE_CGROUP_DEVICE) built from
//! the spec's `linux.resources.devices` rules plus the minimal device set, loaded with bpf(2)
//! and attached to the container's cgroup. Deny by default; the last matching rule wins.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::mounts::DeviceNode;
use super::RuntimeError;

/// One rule: type ('a' any, 'b', 'c'), major/minor (None = any), access bits, allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceRule {
    pub kind: char,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// BPF_DEVCG_ACC_* bits: mknod 1, read 2, write 4.
    pub access: u32,
    pub allow: bool,
}

const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

fn access_bits(access: &str, field: &str) -> Result<u32, RuntimeError> {
    let mut bits = 0;
    for c in access.chars() {
        bits |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => {
                return Err(RuntimeError::spec(
                    format!("{field}.access"),
                    format!("{access:?} is not made of r, w, m"),
                ))
            }
        };
    }
    Ok(bits)
}

/// The rules of a container: the spec's, then rwm for the device nodes it gets and the ptys.
pub fn rules(
    spec_rules: &[LinuxDeviceCgroup],
    nodes: &[DeviceNode],
) -> Result<Vec<DeviceRule>, RuntimeError> {
    let mut out = Vec::new();
    for (i, r) in spec_rules.iter().enumerate() {
        let field = format!("linux.resources.devices[{i}]");
        let kind = match r.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => 'a',
            LinuxDeviceType::B => 'b',
            LinuxDeviceType::C | LinuxDeviceType::U => 'c',
            LinuxDeviceType::P => continue,
        };
        let num = |v: Option<i64>, what: &str| -> Result<Option<u32>, RuntimeError> {
            match v {
                None | Some(-1) => Ok(None),
                Some(n) => u32::try_from(n)
                    .map(Some)
                    .map_err(|_| RuntimeError::spec(format!("{field}.{what}"), n.to_string())),
            }
        };
        out.push(DeviceRule {
            kind,
            major: num(r.major(), "major")?,
            minor: num(r.minor(), "minor")?,
            access: access_bits(r.access().as_deref().unwrap_or("rwm"), &field)?,
            allow: r.allow(),
        });
    }
    let rwm = ACC_READ | ACC_WRITE | ACC_MKNOD;
    for node in nodes {
        let kind = match node.mode & libc::S_IFMT {
            libc::S_IFCHR => 'c',
            libc::S_IFBLK => 'b',
            _ => continue,
        };
        out.push(DeviceRule {
            kind,
            major: Some(node.major),
            minor: Some(node.minor),
            access: rwm,
            allow: true,
        });
    }
    // /dev/ptmx and the container's ptys (devpts is a new instance per container).
    out.push(DeviceRule {
        kind: 'c',
        major: Some(5),
        minor: Some(2),
        access: rwm,
        allow: true,
    });
    out.push(DeviceRule {
        kind: 'c',
        major: Some(136),
        minor: None,
        access: rwm,
        allow: true,
    });
    Ok(out)
}

/// struct bpf_insn.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BpfInsn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
    BpfInsn {
        code,
        regs: (src << 4) | (dst & 0xf),
        off,
        imm,
    }
}

const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND_K32: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RSH_K32: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const MOV_X32: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const MOV_K64: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

/// The program: r2 = type, r3 = access, r4 = major, r5 = minor (struct bpf_cgroup_dev_ctx),
/// then one block per rule, last rule first (so the last matching rule decides), then deny.
pub fn program(rules: &[DeviceRule]) -> Vec<BpfInsn> {
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND_K32, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, 0, 0),
        insn(RSH_K32, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        let mut block = Vec::new();
        match rule.kind {
            'b' => block.push(insn(JNE_K, 2, 0, 0, DEV_BLOCK)),
            'c' => block.push(insn(JNE_K, 2, 0, 0, DEV_CHAR)),
            _ => {}
        }
        if rule.access & 7 != 7 {
            // Requested access must be within the rule's: (access & ~rule) == 0.
            block.push(insn(MOV_X32, 1, 3, 0, 0));
            block.push(insn(AND_K32, 1, 0, 0, !(rule.access as i32) & 7));
            block.push(insn(JNE_K, 1, 0, 0, 0));
        }
        if let Some(major) = rule.major {
            block.push(insn(JNE_K, 4, 0, 0, major as i32));
        }
        if let Some(minor) = rule.minor {
            block.push(insn(JNE_K, 5, 0, 0, minor as i32));
        }
        block.push(insn(MOV_K64, 0, 0, 0, i32::from(rule.allow)));
        block.push(insn(EXIT, 0, 0, 0, 0));
        let len = block.len();
        let unconditional = len == 2;
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code == JNE_K {
                // Skip to the instruction after this block.
                ins.off = (len - i - 1) as i16;
            }
        }
        p.extend(block);
        if unconditional {
            // It decides every access: anything after it would be unreachable, which the
            // verifier refuses.
            return p;
        }
    }
    p.push(insn(MOV_K64, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// Loads `rules` as a device program and attaches it to the cgroup directory `cgroup`.
pub fn attach(cgroup: &Path, rules: &[DeviceRule]) -> Result<(), RuntimeError> {
    let insns = program(rules);
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 4096];
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..ProgLoadAttr::default()
    };
    // SAFETY: attr points to valid instructions, license and log buffer for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        let log = String::from_utf8_lossy(&log);
        return Err(RuntimeError::Cgroup(format!(
            "loading the device program ({} instructions): {err}; verifier: {}",
            insns.len(),
            log.trim_end_matches('\0').trim()
        )));
    }
    // SAFETY: bpf returned a new descriptor we own.
    let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let dir = std::fs::File::open(cgroup)
        .map_err(|e| RuntimeError::Cgroup(format!("open {}: {e}", cgroup.display())))?;
    let attach = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    // SAFETY: attach is a valid attribute struct for BPF_PROG_ATTACH.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attach,
            std::mem::size_of::<ProgAttachAttr>(),
        )
    };
    if rc < 0 {
        return Err(RuntimeError::Cgroup(format!(
            "attaching the device program to {}: {}",
            cgroup.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// The cgroup v1 devices hierarchy of a v1/v2 hybrid host.
pub const V1_DEVICES_ROOT: &str = "/sys/fs/cgroup/devices";

/// Whether `root` is a cgroup v1 devices hierarchy (hybrid or v1 host).
pub fn v1_available(root: &Path) -> bool {
    root.join("devices.allow").exists() && !super::cgroups::is_cgroup2(root)
}

/// A rule in cgroup v1 devices syntax ("c 1:3 rwm").
fn v1_line(rule: &DeviceRule) -> String {
    let num = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
    let mut access = String::new();
    for (bit, c) in [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')] {
        if rule.access & bit != 0 {
            access.push(c);
        }
    }
    format!(
        "{} {}:{} {access}",
        rule.kind,
        num(rule.major),
        num(rule.minor)
    )
}

/// On a host without cgroup v2 controllers the devices rules still hold, through the v1
/// devices controller: `root/condo/<id>` denies everything, then applies `rules` in order.
pub fn v1_create(
    root: &Path,
    id: &str,
    rules: &[DeviceRule],
) -> Result<std::path::PathBuf, RuntimeError> {
    let dir = root.join("condo").join(id);
    let err = |what: &str, e: std::io::Error| {
        RuntimeError::Cgroup(format!("{what} {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(&dir).map_err(|e| err("create", e))?;
    let write = |file: &str, line: &str| {
        std::fs::write(dir.join(file), line).map_err(|e| {
            RuntimeError::Cgroup(format!(
                "write {line:?} to {}: {e}",
                dir.join(file).display()
            ))
        })
    };
    let result = write("devices.deny", "a").and_then(|()| {
        rules.iter().try_for_each(|rule| {
            let file = if rule.allow {
                "devices.allow"
            } else {
                "devices.deny"
            };
            write(file, &v1_line(rule))
        })
    });
    if let Err(e) = result {
        let _ = std::fs::remove_dir(&dir);
        return Err(e);
    }
    Ok(dir)
}

/// Removes a v1 devices cgroup once its processes are gone (waits up to 5 s for them to leave).
pub fn v1_remove(dir: &Path) -> Result<(), RuntimeError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e)
                if e.raw_os_error() == Some(libc::EBUSY)
                    && std::time::Instant::now() < deadline =>
            {
                // v1 has no "populated" event to wait on: exiting tasks leave within moments.
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => {
                return Err(RuntimeError::Cgroup(format!(
                    "remove {}: {e}",
                    dir.display()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interprets the generated program for one access (a tiny BPF evaluator for its opcodes).
    fn eval(p: &[BpfInsn], typ: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(access << 16) | typ, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_W => r[dst] = u64::from(ctx[(i.off / 4) as usize]),
                AND_K32 => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                RSH_K32 => r[dst] = (r[dst] as u32 >> i.imm) as u64,
                MOV_X32 => r[dst] = r[src] as u32 as u64,
                MOV_K64 => r[dst] = i.imm as i64 as u64,
                JNE_K => {
                    if r[dst] != i.imm as i64 as u64 {
                        pc += i.off as usize;
                    }
                }
                EXIT => return r[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn deny_all_then_minimal_set() {
        let deny_all: LinuxDeviceCgroup =
            serde_json::from_value(serde_json::json!({"allow": false, "access": "rwm"})).unwrap();
        let rules = rules(&[deny_all], &super::super::mounts::default_devices()).unwrap();
        let p = program(&rules);
        let (c, b) = (DEV_CHAR as u32, DEV_BLOCK as u32);
        assert_eq!(eval(&p, c, ACC_READ | ACC_WRITE, 1, 3), 1, "/dev/null rw");
        assert_eq!(eval(&p, c, ACC_READ, 1, 9), 1, "/dev/urandom");
        assert_eq!(eval(&p, c, ACC_READ, 136, 4), 1, "a pty");
        assert_eq!(eval(&p, b, ACC_READ, 8, 0), 0, "a disk");
        assert_eq!(eval(&p, c, ACC_READ, 1, 1), 0, "/dev/mem");
        assert_eq!(eval(&p, b, ACC_MKNOD, 8, 0), 0, "mknod of a disk");
        // The deny-all rule decides last: nothing may follow its block (verifier: unreachable).
        assert_eq!(p.last().unwrap().code, EXIT);
        assert_eq!(p[p.len() - 2], insn(MOV_K64, 0, 0, 0, 0));
        assert_eq!(p.iter().filter(|i| i.code == EXIT).count(), rules.len());
    }

    #[test]
    fn v1_lines() {
        let rule = DeviceRule {
            kind: 'c',
            major: Some(136),
            minor: None,
            access: ACC_READ | ACC_WRITE,
            allow: true,
        };
        assert_eq!(v1_line(&rule), "c 136:* rw");
        let all = DeviceRule {
            kind: 'a',
            major: None,
            minor: None,
            access: 7,
            allow: false,
        };
        assert_eq!(v1_line(&all), "a *:* rwm");
    }

    #[test]
    fn last_matching_rule_wins_and_access_is_a_subset() {
        let spec: Vec<LinuxDeviceCgroup> = serde_json::from_value(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "b", "major": 8, "access": "r"},
            {"allow": false, "type": "b", "major": 8, "minor": 1, "access": "rwm"}
        ]))
        .unwrap();
        let p = program(&rules(&spec, &[]).unwrap());
        let b = DEV_BLOCK as u32;
        assert_eq!(eval(&p, b, ACC_READ, 8, 0), 1);
        assert_eq!(
            eval(&p, b, ACC_READ | ACC_WRITE, 8, 0),
            0,
            "write not granted"
        );
        assert_eq!(eval(&p, b, ACC_READ, 8, 1), 0, "later deny wins");
        let bad: Vec<LinuxDeviceCgroup> =
            serde_json::from_value(serde_json::json!([{"allow": true, "access": "rx"}])).unwrap();
        let err = rules(&bad, &[]).unwrap_err().to_string();
        assert!(
            err.contains("linux.resources.devices[0].access") && err.contains("rx"),
            "{err}"
        );
    }
}
