//! condo's virtual machine monitor: KVM setup, guest memory, vCPUs, devices and boot.
//!
//! The boot order lives in [`builder::run_vm`]; [`hooks`] is the seam for the VMM jail.

pub mod arch;
pub mod builder;
pub mod config;
mod config_vsock;
pub mod control;
pub mod devices;
pub mod hooks;
pub mod host;
pub mod image;
pub mod images;
pub mod jail;
pub mod loader;
pub mod net;
pub mod runner;
pub mod size;
pub mod stats;
pub mod tenant;
pub mod vstate;

use std::path::PathBuf;

pub use builder::{run_vm, RunOptions};
pub use config::VmConfig;
pub use runner::VmExit;

/// Exit code of a binary whose command line clap refused, after printing clap's message: 0 for
/// `--help` and `--version`, else 1, since bad usage is a "could not start" like any bad input.
pub fn usage_exit_code(error: &clap::Error) -> i32 {
    let _ = error.print();
    if error.use_stderr() {
        1
    } else {
        0
    }
}

/// Why a VM could not be started (or its run loop failed).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Kernel file unreadable.
    #[error("kernel {path}: {source}", path = path.display())]
    KernelFile {
        /// Path.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// Kernel file is not a bootable image.
    #[error("kernel {path}: {source}", path = path.display())]
    KernelImage {
        /// Path.
        path: PathBuf,
        /// What is wrong.
        source: image::ImageError,
    },
    /// Host KVM unusable.
    #[error(transparent)]
    Host(#[from] host::HostError),
    /// VM creation failed.
    #[error(transparent)]
    Vm(#[from] vstate::vm::VmError),
    /// vCPU setup failed.
    #[error(transparent)]
    Vcpu(#[from] vstate::vcpu::VcpuError),
    /// Loading the kernel failed.
    #[error(transparent)]
    Loader(#[from] loader::LoaderError),
    /// A KVM ioctl failed.
    #[error("{what}: {source}")]
    Kvm {
        /// The operation.
        what: &'static str,
        /// KVM's error.
        source: kvm_ioctls::Error,
    },
    /// Writing guest memory failed.
    #[error("writing {what} into guest memory: {source}")]
    GuestMemory {
        /// What.
        what: &'static str,
        /// Error.
        source: vm_memory::GuestMemoryError,
    },
    /// The console file could not be created.
    #[error("console {path}: {source}", path = path.display())]
    Console {
        /// Path.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// An eventfd could not be created.
    #[error("eventfd: {0}")]
    EventFd(std::io::Error),
    /// Signal setup failed.
    #[error("signal setup: {0}")]
    Signals(String),
    /// A thread could not be started.
    #[error("starting a vCPU thread: {0}")]
    Thread(std::io::Error),
    /// A jail hook failed.
    #[error("{0}")]
    ThreadHook(String),
    /// A virtio device could not be set up.
    #[error("virtio device in slot {slot}: {what}")]
    Virtio {
        /// Its slot (0 = first disk).
        slot: usize,
        /// What failed.
        what: String,
    },
    /// The vsock device could not be set up.
    #[error(transparent)]
    Vsock(#[from] devices::virtio::vsock::VsockError),
    /// The main event loop failed.
    #[error("event loop: {0}")]
    EventLoop(String),
}
