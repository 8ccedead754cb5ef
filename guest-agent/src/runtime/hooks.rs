//! OCI hooks that run in the runtime's namespaces: createRuntime and prestart (after the init
//! is ready, before `create` returns), poststart (after `start`) and poststop (after `delete`).
//! Each gets the container's OCI state on stdin. createContainer/startContainer (inside the
//! container) are refused at create time rather than silently skipped.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Hooks, Spec};

use super::{ContainerState, RuntimeError};

/// Default time a hook may take when it gives no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Refuses hooks condo cannot run (inside the container's namespaces).
pub(crate) fn check(spec: &Spec) -> Result<(), RuntimeError> {
    let Some(hooks) = spec.hooks() else {
        return Ok(());
    };
    for (name, list) in [
        ("createContainer", hooks.create_container()),
        ("startContainer", hooks.start_container()),
    ] {
        if list.as_ref().is_some_and(|l| !l.is_empty()) {
            return Err(RuntimeError::spec(
                format!("hooks.{name}"),
                "hooks inside the container are not supported",
            ));
        }
    }
    let all = [
        hooks.create_runtime(),
        hooks.prestart(),
        hooks.poststart(),
        hooks.poststop(),
    ];
    for (i, hook) in all.into_iter().flatten().flatten().enumerate() {
        if !hook.path().is_absolute() {
            return Err(RuntimeError::spec(
                format!("hooks[{i}].path"),
                format!("{} is not absolute", hook.path().display()),
            ));
        }
    }
    Ok(())
}

/// The hooks of one phase.
pub(crate) fn of(hooks: &Option<Hooks>, phase: &str) -> Vec<Hook> {
    let Some(h) = hooks else { return Vec::new() };
    let list = match phase {
        "createRuntime" => h.create_runtime(),
        "prestart" => h.prestart(),
        "poststart" => h.poststart(),
        "poststop" => h.poststop(),
        _ => &None,
    };
    list.clone().unwrap_or_default()
}

/// The OCI state document given to hooks and printed by `state`.
pub fn oci_state_json(s: &ContainerState) -> serde_json::Value {
    let mut v = serde_json::json!({
        "ociVersion": s.oci_version,
        "id": s.id,
        "status": s.status,
        "bundle": s.bundle,
        "annotations": s.annotations,
    });
    if s.status != super::Status::Stopped {
        v["pid"] = s.pid.into();
    }
    v
}

/// Runs `hooks` in order; the first failure stops them and is returned.
pub(crate) fn run(phase: &str, hooks: &[Hook], state: &ContainerState) -> Result<(), RuntimeError> {
    let input = oci_state_json(state).to_string();
    for (i, hook) in hooks.iter().enumerate() {
        let what = format!("hooks.{phase}[{i}] ({})", hook.path().display());
        let fail = |reason: String| RuntimeError::Setup(format!("{what}: {reason}"));
        let mut cmd = Command::new(hook.path());
        let args = hook.args().clone().unwrap_or_default();
        if let Some((arg0, rest)) = args.split_first() {
            cmd.arg0(arg0).args(rest);
        }
        cmd.env_clear();
        for kv in hook.env().iter().flatten() {
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env(k, v);
            }
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| fail(format!("cannot run: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A hook may ignore its input and exit early: a broken pipe is not an error.
            let _ = stdin.write_all(input.as_bytes());
        }
        let timeout = hook
            .timeout()
            .filter(|t| *t > 0)
            .map_or(DEFAULT_TIMEOUT, |t| Duration::from_secs(t as u64));
        let status = wait_with_timeout(&mut child, timeout).map_err(fail)?;
        if !status.success() {
            return Err(fail(format!("failed: {status}")));
        }
    }
    Ok(())
}

fn wait_with_timeout(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Result<std::process::ExitStatus, String> {
    let deadline = Instant::now() + timeout;
    let pidfd = super::namespaces::pidfd_open(child.id() as i32);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(status);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("timed out after {}s", timeout.as_secs()));
        }
        match &pidfd {
            Some(fd) => {
                super::namespaces::wait_pidfd(fd, left.as_millis().min(i32::MAX as u128) as i32);
            }
            None => return child.wait().map_err(|e| e.to_string()),
        }
    }
}
