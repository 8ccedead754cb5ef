//! The seam where the VMM jail installs per-thread restrictions (seccomp filters): called
//! at the start of each vCPU thread before its first KVM_RUN, and in the main thread after
//! setup, before the vCPUs are released. Without a hook nothing happens.

use std::sync::Arc;

/// Which kind of VMM thread is starting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ThreadKind {
    /// The main thread: event loop, devices, console.
    Vmm,
    /// A vCPU thread.
    Vcpu,
}

/// Error a hook returns; the VM then does not start (exit code 1).
pub type ThreadHookError = Box<dyn std::error::Error + Send + Sync>;

/// A hook run once per thread, in that thread.
pub type ThreadHook = Arc<dyn Fn(ThreadKind) -> Result<(), ThreadHookError> + Send + Sync>;

/// Runs `hook` (if any) for a thread of `kind`.
pub fn run_thread_hook(hook: Option<&ThreadHook>, kind: ThreadKind) -> Result<(), String> {
    match hook {
        Some(hook) => hook(kind).map_err(|e| format!("{kind:?} thread hook failed: {e}")),
        None => Ok(()),
    }
}
