//! `create`: validate the bundle, plan, make the cgroup and state directory, clone the init
//! into its namespaces and wait until it reports ready. Any failure undoes everything.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::cgroups::{self, CGROUP_ROOT};
use super::devices;
use super::hooks;
use super::init::{self, InitFds};
use super::namespaces;
use super::plan;
use super::state_store::{self, EXEC_FIFO};
use super::validate::load_bundle_spec;
use super::{ContainerState, ProcessIo, RuntimeError, Status};

/// Undoes a half-made container when dropped armed.
struct Undo {
    dir: Option<PathBuf>,
    cgroup: Option<PathBuf>,
    device_cgroup: Option<PathBuf>,
    pid: Option<libc::pid_t>,
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            // SAFETY: kill and waitpid on our own child; status is not needed.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        if let Some(cg) = &self.cgroup {
            let _ = cgroups::remove(cg);
        }
        if let Some(cg) = &self.device_cgroup {
            let _ = devices::v1_remove(cg);
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn mkfifo(path: &Path) -> Result<(), RuntimeError> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| RuntimeError::Setup("fifo path".into()))?;
    // SAFETY: c is a valid C string.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o622) } < 0 {
        return Err(RuntimeError::io(
            "mkfifo",
            path,
            std::io::Error::last_os_error(),
        ));
    }
    // mkfifo honours the umask; the init may run as any user and must be able to open it.
    // SAFETY: as above.
    unsafe { libc::chmod(c.as_ptr(), 0o622) };
    Ok(())
}

fn report_error(report: Vec<u8>) -> RuntimeError {
    let msg = String::from_utf8_lossy(&report).into_owned();
    if msg.is_empty() {
        RuntimeError::Setup("container init died during setup".into())
    } else {
        RuntimeError::Child(msg)
    }
}

/// The error a child reported on `status` before it gave up.
fn child_error(status: std::fs::File) -> RuntimeError {
    report_error(namespaces::read_to_end(status))
}

/// stdio descriptors for the child, /dev/null where none was given.
pub(crate) fn stdio_fds(io: &ProcessIo) -> Result<(Option<OwnedFd>, [i32; 3]), RuntimeError> {
    let null = if io.stdin.is_none() || io.stdout.is_none() || io.stderr.is_none() {
        Some(namespaces::open(Path::new("/dev/null"), libc::O_RDWR)?)
    } else {
        None
    };
    let null_fd = null.as_ref().map_or(-1, |f| f.as_raw_fd());
    let pick = |f: &Option<OwnedFd>| f.as_ref().map_or(null_fd, |f| f.as_raw_fd());
    Ok((null, [pick(&io.stdin), pick(&io.stdout), pick(&io.stderr)]))
}

pub(crate) fn create(
    root: &Path,
    id: &str,
    bundle: &Path,
    io: ProcessIo,
) -> Result<ContainerState, RuntimeError> {
    state_store::validate_id(id)?;
    let bundle = bundle
        .canonicalize()
        .map_err(|e| RuntimeError::BundleConfig {
            path: bundle.to_path_buf(),
            reason: e.to_string(),
        })?;
    let spec = load_bundle_spec(&bundle)?;
    let dir = state_store::container_dir(root, id);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(RuntimeError::AlreadyExists(id.to_string()))
        }
        Err(e) => return Err(RuntimeError::io("create state directory", dir, e)),
    }
    let mut undo = Undo {
        dir: Some(dir.clone()),
        cgroup: None,
        device_cgroup: None,
        pid: None,
    };
    let plan = plan::container_plan(&spec, &bundle, &dir)?;
    hooks::check(&spec)?;
    if plan.process.terminal && io.terminal.is_none() {
        return Err(RuntimeError::spec(
            "process.terminal",
            "true, but no console socket was given",
        ));
    }
    let cgroup_root = Path::new(CGROUP_ROOT);
    let cgroup = cgroups::plan(&spec, id, cgroup_root)?;
    let device_rules = devices::rules(
        spec.linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.devices().as_deref())
            .unwrap_or(&[]),
        &plan.rootfs.devices,
    )?;
    if let Some(cg) = &cgroup {
        cgroups::create(cg, cgroup_root)?;
        undo.cgroup = Some(cg.path.clone());
        devices::attach(&cg.path, &device_rules)?;
    } else if devices::v1_available(Path::new(devices::V1_DEVICES_ROOT)) {
        let dir = devices::v1_create(Path::new(devices::V1_DEVICES_ROOT), id, &device_rules)?;
        undo.device_cgroup = Some(dir);
    }
    let fifo_path = dir.join(EXEC_FIFO);
    mkfifo(&fifo_path)?;
    let fifo = namespaces::open(&fifo_path, libc::O_PATH)?;
    let (_null, stdio) = stdio_fds(&io)?;
    let (go_r, mut go_w) = namespaces::pipe()?;
    let (status_r, status_w) = namespaces::pipe()?;
    let (sync_r, sync_w) = namespaces::pipe()?;
    let helper = namespaces::fork()?;
    if helper == 0 {
        drop(go_w);
        drop(status_r);
        drop(sync_r);
        let fds = InitFds {
            go: go_r,
            status: status_w,
            stdio,
            console: io.terminal.as_ref().map(|f| f.as_raw_fd()),
            fifo: fifo.as_raw_fd(),
        };
        init::intermediate(&plan, fds, sync_w);
    }
    undo.pid = Some(helper);
    drop(go_r);
    drop(status_w);
    drop(sync_w);
    drop(io);
    let mut sync_r = sync_r;
    let mut release = |what: &str| {
        go_w.write_all(b"1")
            .map_err(|e| RuntimeError::Setup(format!("releasing the {what}: {e}")))
    };
    if let (Some(uid_map), Some(gid_map)) = (&plan.uid_map, &plan.gid_map) {
        let mut byte = [0u8; 1];
        if sync_r.read_exact(&mut byte).is_err() || byte != *b"U" {
            return Err(child_error(status_r));
        }
        namespaces::write_id_maps(helper, uid_map, gid_map)?;
        release("namespace helper")?;
    }
    let mut pid_bytes = [0u8; 4];
    if sync_r.read_exact(&mut pid_bytes).is_err() {
        return Err(child_error(status_r));
    }
    let pid = i32::from_ne_bytes(pid_bytes);
    // SAFETY: reap the helper, which has exited after reporting the pid.
    unsafe { libc::waitpid(helper, std::ptr::null_mut(), 0) };
    undo.pid = Some(pid);
    if let Some(cg) = &cgroup {
        cgroups::add_process(&cg.path, pid)?;
    }
    if let Some(dir) = &undo.device_cgroup {
        cgroups::add_process(dir, pid)?;
    }
    release("init")?;
    drop(go_w);
    let report = namespaces::read_to_end(status_r);
    if report != init::READY {
        return Err(report_error(report));
    }
    let state = ContainerState {
        oci_version: spec.version().clone(),
        id: id.to_string(),
        status: Status::Created,
        pid,
        bundle,
        annotations: spec.annotations().clone().unwrap_or_default(),
        created: state_store::now_rfc3339(),
        cgroup: cgroup.map(|c| c.path),
        device_cgroup: undo.device_cgroup.clone(),
        init_start_time: namespaces::proc_start(pid).map_or(0, |(start, _)| start),
        exit: None,
    };
    state_store::save(root, &state)?;
    for phase in ["createRuntime", "prestart"] {
        hooks::run(phase, &hooks::of(spec.hooks(), phase), &state)?;
    }
    undo.dir = None;
    undo.cgroup = None;
    undo.device_cgroup = None;
    undo.pid = None;
    Ok(state)
}
