//! The boot order in one place: check the input -> KVM -> memory -> vCPUs -> devices ->
//! loader -> vCPU threads -> run until the guest stops.

use std::fs::File;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::Cap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::x86_64::layout::EBDA_START;
use crate::arch::x86_64::mptable::mptable_bytes;
use crate::config::{Console, VmConfig};
use crate::devices::legacy::{ConsoleOutput, IrqTrigger, SerialConsole, I8042};
use crate::devices::LegacyBus;
use crate::hooks::ThreadHook;
use crate::image::{inspect_kernel, KernelFormat};
use crate::loader::{self, BootImages};
use crate::runner::{self, VmExit};
use crate::vstate::vcpu::{self, Vcpu, VcpuShared};
use crate::vstate::vm::Vm;
use crate::Error;

/// IRQ line of COM1 on a PC.
const COM1_IRQ: u32 = 4;
/// IRQ line of the i8042's keyboard port.
const I8042_IRQ: u32 = 1;

/// Options beyond the boot configuration.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Per-thread hook (the jail's seccomp filters); `None` installs nothing.
    pub thread_hook: Option<ThreadHook>,
    /// Boot a Linux kernel even on PVM (see `host::ALLOW_PVM_LINUX_ENV`).
    pub allow_pvm_linux: bool,
    /// `preflight` ran before the jail, where the host's /proc and /sys were visible.
    pub checked_outside: bool,
}

/// The checks of the input and of the host that need the host's view (/proc/meminfo, /sys):
/// `run_vm` makes them itself unless `RunOptions::checked_outside` says a jailed VMM's parent
/// made them before entering the jail. Returns the kernel's format.
pub fn preflight(config: &VmConfig, options: &RunOptions) -> Result<KernelFormat, Error> {
    config.validate()?;
    let format = kernel_format(&config.kernel)?;
    loader::check_cmdline(&config.cmdline, format)?;
    crate::host::check_guest_runs(
        crate::host::is_pvm(),
        options.allow_pvm_linux,
        format,
        &config.kernel,
    )?;
    Ok(format)
}

fn kernel_format(path: &std::path::Path) -> Result<KernelFormat, Error> {
    let mut kernel = File::open(path).map_err(|source| Error::KernelFile {
        path: path.to_path_buf(),
        source,
    })?;
    inspect_kernel(&mut kernel).map_err(|source| Error::KernelImage {
        path: path.to_path_buf(),
        source,
    })
}

/// Boots the VM described by `config` and runs it until the guest stops or a signal ends it.
/// If it cannot start, a console file it created is removed again.
pub fn run_vm(config: &VmConfig, options: &RunOptions) -> Result<VmExit, Error> {
    let new_console_file = match &config.console {
        Console::File(path) if !path.exists() => Some(path),
        _ => None,
    };
    let result = build_and_run(config, options);
    if let (Err(_), Some(path)) = (&result, new_console_file) {
        let _ = std::fs::remove_file(path);
    }
    result
}

fn build_and_run(config: &VmConfig, options: &RunOptions) -> Result<VmExit, Error> {
    // 1. Input and host, before any resource exists.
    let format = if options.checked_outside {
        kernel_format(&config.kernel)?
    } else {
        preflight(config, options)?
    };

    // 2. KVM.
    let kvm = crate::host::open_kvm(config.vcpus)?;

    // 3. Memory, irqchip, PIT.
    let mem_size = config.memory_bytes();
    let vm = Vm::new(&kvm, mem_size)?;

    // 4. vCPUs.
    let vcpus = (0..config.vcpus)
        .map(|id| Vcpu::new(vm.fd(), id))
        .collect::<Result<Vec<_>, _>>()?;

    // 5. Devices.
    let console_out = open_console(&config.console)?;
    let serial_irq = EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)?;
    vm.fd()
        .register_irqfd(&serial_irq, COM1_IRQ)
        .map_err(|source| Error::Kvm {
            what: "KVM_IRQFD for the serial port",
            source,
        })?;
    let serial = Arc::new(Mutex::new(SerialConsole::new(
        IrqTrigger(serial_irq),
        console_out,
    )));
    let kbd_irq = EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)?;
    vm.fd()
        .register_irqfd(&kbd_irq, I8042_IRQ)
        .map_err(|source| Error::Kvm {
            what: "KVM_IRQFD for the i8042",
            source,
        })?;
    let bus = Arc::new(LegacyBus::new(serial.clone(), I8042::new(Some(kbd_irq))));

    // 6. Kernel, initramfs, command line, boot structures, MP table.
    let images = BootImages {
        kernel: &config.kernel,
        format,
        initrd: config.initrd.as_deref(),
        cmdline: &config.cmdline,
    };
    let entry = loader::load(vm.memory(), mem_size, &images)?;
    vm_memory::Bytes::write_slice(
        vm.memory(),
        &mptable_bytes(config.vcpus, EBDA_START),
        vm_memory::GuestAddress(EBDA_START),
    )
    .map_err(|source| Error::GuestMemory {
        what: "the MP table",
        source,
    })?;

    // 7. vCPU registers.
    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|source| Error::Kvm {
            what: "KVM_GET_SUPPORTED_CPUID",
            source,
        })?;
    let tsc_deadline = kvm.check_extension(Cap::TscDeadlineTimer);
    for vcpu in &vcpus {
        let boot = (vcpu.id() == 0).then_some(&entry);
        vcpu.configure(&supported, config.vcpus, tsc_deadline, boot)?;
    }

    // 8. Threads, jail hooks, release, run.
    runner::install_kick_handler()?;
    let stop_evt = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)?);
    let signals = runner::block_exit_signals()?;
    let (events_tx, events_rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::with_capacity(vcpus.len());
    for vcpu in vcpus {
        let (release_tx, release_rx) = mpsc::channel();
        let shared = VcpuShared {
            bus: bus.clone(),
            stop: stop.clone(),
            stop_evt: stop_evt.clone(),
            hook: options.thread_hook.clone(),
        };
        let handle =
            vcpu::spawn(vcpu, shared, release_rx, events_tx.clone()).map_err(Error::Thread)?;
        threads.push(runner::VcpuThread {
            handle,
            release: release_tx,
        });
    }
    drop(events_tx);
    let stdin_attached = config.console == Console::Stdout;
    let running = runner::Running {
        threads,
        events: events_rx,
        stop,
        stop_evt,
        signals,
        serial,
        stdin_attached,
    };
    let (exit, all_stopped) = running.run(options.thread_hook.as_ref())?;
    if crate::stats::enabled() {
        eprintln!("{}", crate::stats::report(vm.memory()));
    }
    if !all_stopped {
        // A vCPU thread may still be inside KVM_RUN: its guest memory must stay mapped
        // until the process exits.
        std::mem::forget(vm);
    }
    Ok(exit)
}

fn open_console(console: &Console) -> Result<ConsoleOutput, Error> {
    Ok(match console {
        Console::Stdout => Box::new(std::io::stdout()),
        Console::File(path) => Box::new(File::create(path).map_err(|source| Error::Console {
            path: path.clone(),
            source,
        })?),
    })
}
