//! The boot order in one place: check the input -> KVM -> memory -> vCPUs -> devices ->
//! loader -> vCPU threads -> run until the guest stops.

use std::fs::File;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use event_manager::MutEventSubscriber;
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Cap, IoEventAddress, Kvm};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::x86_64::layout::{
    EBDA_START, VIRTIO_FIRST_GSI, VIRTIO_MAX_DEVICES, VIRTIO_MMIO_BASE, VIRTIO_MMIO_SLOT,
};
use crate::arch::x86_64::mptable::mptable_bytes;
use crate::config::{Console, VmConfig};
use crate::devices::legacy::{BoundedConsoleFile, ConsoleOutput, IrqTrigger, SerialConsole, I8042};
use crate::devices::virtio::block::{Block, DiskFile, SECTOR_SIZE};
use crate::devices::virtio::mmio::regs::QUEUE_NOTIFY;
use crate::devices::virtio::vsock::Vsock;
use crate::devices::virtio::{Interrupt, MmioTransport, VirtioDevice};
use crate::devices::{LegacyBus, MmioBus};
use crate::hooks::ThreadHook;
use crate::image::{inspect_kernel, KernelFormat};
use crate::loader::{self, BootImages};
use crate::runner::{self, VmExit};
use crate::vstate::vcpu::{self, Vcpu, VcpuShared};
use crate::vstate::vm::{Vm, VmError};
use crate::Error;

/// IRQ line of COM1 on a PC.
const COM1_IRQ: u32 = 4;
/// IRQ line of the i8042's keyboard port.
const I8042_IRQ: u32 = 1;

/// A subscriber of the VMM's event loop (the main thread).
pub type EventSubscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// A virtio device as the builder registers it: the transport's view of it and its event
/// handler's (usually the same `Arc<Mutex<Device>>`).
pub struct VirtioSlot {
    /// The device, for the MMIO transport.
    pub device: Arc<Mutex<dyn VirtioDevice>>,
    /// Its queue (and backend) event handler, served by the event loop.
    pub handler: EventSubscriber,
}

impl VirtioSlot {
    /// The slot of a device that is its own event handler.
    pub fn new<D: VirtioDevice + MutEventSubscriber + 'static>(device: Arc<Mutex<D>>) -> Self {
        Self {
            device: device.clone(),
            handler: device,
        }
    }
}

/// Options beyond the boot configuration.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Per-thread hook (the jail's seccomp filters); `None` installs nothing.
    pub thread_hook: Option<ThreadHook>,
    /// Boot a Linux kernel even on PVM (see `host::ALLOW_PVM_LINUX_ENV`).
    pub allow_pvm_linux: bool,
    /// `preflight` ran before the jail, where the host's /proc and /sys were visible.
    pub checked_outside: bool,
    /// The vsock device's listening socket, bound on the host by the jail's parent (the jailed
    /// VMM cannot create it at the operator's path); `None`: the VMM binds it itself.
    pub vsock_listener_fd: Option<RawFd>,
    /// The control socket's listening socket (see `control`), bound by the VMM's parent.
    pub control_listener_fd: Option<RawFd>,
}

/// The checks of the input and of the host that need the host's view (/proc/meminfo, /sys):
/// `run_vm` makes them itself unless `RunOptions::checked_outside` says a jailed VMM's parent
/// made them before entering the jail. Returns the kernel's format.
pub fn preflight(config: &VmConfig, options: &RunOptions) -> Result<KernelFormat, Error> {
    config.validate()?;
    let format = kernel_format(&config.kernel)?;
    loader::check_cmdline(
        &virtio_cmdline(&config.cmdline, config.virtio_device_count()),
        format,
    )?;
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

    // 3. Memory, irqchip.
    let vm = Vm::new(&kvm, config.memory_bytes())?;

    // 4. vCPUs.
    let vcpus = (0..config.vcpus)
        .map(|id| Vcpu::new(vm.fd(), id))
        .collect::<Result<Vec<_>, _>>()?;

    // 5-7. The PIT on a thread of its own (see `Vm::create_pit`) while the devices, the loader
    // and the vCPU registers are set up.
    let devices = std::thread::scope(|scope| {
        let pit = std::thread::Builder::new()
            .name("pit".into())
            .spawn_scoped(scope, || vm.create_pit());
        let devices = attach_devices(&vm, config, options).and_then(|devices| {
            load_and_set_registers(&kvm, &vm, &vcpus, config, format, &devices.cmdline)?;
            Ok(devices)
        });
        let pit = match pit {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(VmError::Thread("the PIT thread panicked".into()))),
            // No thread to spare (a jail's limit): create it here.
            Err(_) => vm.create_pit(),
        };
        pit.map_err(Error::from).and(devices)
    })?;
    let Devices {
        serial,
        bus,
        subscribers,
        ..
    } = devices;

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
    let stop_requested = Arc::new(AtomicBool::new(false));
    let mut subscribers = subscribers;
    if let Some(fd) = options.control_listener_fd {
        // SAFETY: the parent handed this listening socket to the VMM alone.
        let control = unsafe {
            crate::control::ControlSocket::from_listener_fd(
                fd,
                stop_requested.clone(),
                config.vcpus,
                config.memory_mib,
            )
        }
        .map_err(|e| Error::EventLoop(format!("control socket: {e}")))?;
        subscribers.push(Arc::new(Mutex::new(control)));
    }
    let running = runner::Running {
        threads,
        events: events_rx,
        stop,
        stop_evt,
        signals,
        serial,
        stdin_attached,
        subscribers,
        stop_requested,
    };
    let (exit, all_stopped) = running.run(options.thread_hook.as_ref())?;
    if crate::stats::enabled() {
        eprintln!("{}", crate::stats::report(vm.memory()));
    }
    if all_stopped {
        vm.close();
    } else {
        // A vCPU thread may still be inside KVM_RUN: its guest memory must stay mapped
        // until the process exits.
        std::mem::forget(vm);
    }
    Ok(exit)
}

/// What step 5 made: the console, the I/O bus, the devices' event handlers, and the command
/// line that announces the virtio devices.
struct Devices {
    serial: Arc<Mutex<SerialConsole>>,
    bus: Arc<LegacyBus>,
    subscribers: Vec<EventSubscriber>,
    cmdline: String,
}

/// An eventfd wired to the in-kernel irqchip's line `gsi`: a write raises the interrupt.
fn irq_line(vm: &Vm, gsi: u32, what: &'static str) -> Result<EventFd, Error> {
    let evt = EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)?;
    vm.fd()
        .register_irqfd(&evt, gsi)
        .map_err(|source| Error::Kvm { what, source })?;
    Ok(evt)
}

/// 5. The serial console and the i8042 on their IRQs, the virtio devices in their slots.
fn attach_devices(vm: &Vm, config: &VmConfig, options: &RunOptions) -> Result<Devices, Error> {
    let console_out = open_console(&config.console, config.console_limit)?;
    let serial_irq = irq_line(vm, COM1_IRQ, "KVM_IRQFD for the serial port")?;
    let serial = Arc::new(Mutex::new(SerialConsole::new(
        IrqTrigger(serial_irq),
        console_out,
    )));
    let kbd_irq = irq_line(vm, I8042_IRQ, "KVM_IRQFD for the i8042")?;
    let virtio = virtio_devices(config, options)?;
    let cmdline = virtio_cmdline(&config.cmdline, virtio.len());
    let (mmio, subscribers) = register_virtio_devices(vm, virtio)?;
    let bus = Arc::new(LegacyBus::new(
        serial.clone(),
        I8042::new(Some(kbd_irq)),
        mmio,
    ));
    Ok(Devices {
        serial,
        bus,
        subscribers,
        cmdline,
    })
}

/// 6-7. Kernel, initramfs, command line, boot structures and MP table into guest memory; the
/// vCPUs' CPUID, MSRs, FPU, LAPIC and (boot vCPU) entry registers.
fn load_and_set_registers(
    kvm: &Kvm,
    vm: &Vm,
    vcpus: &[Vcpu],
    config: &VmConfig,
    format: KernelFormat,
    cmdline: &str,
) -> Result<(), Error> {
    let mem_size = config.memory_bytes();
    let images = BootImages {
        kernel: &config.kernel,
        format,
        initrd: config.initrd.as_deref(),
        cmdline,
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
    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|source| Error::Kvm {
            what: "KVM_GET_SUPPORTED_CPUID",
            source,
        })?;
    let tsc_deadline = kvm.check_extension(Cap::TscDeadlineTimer);
    for vcpu in vcpus {
        let boot = (vcpu.id() == 0).then_some(&entry);
        vcpu.configure(&supported, config.vcpus, tsc_deadline, boot)?;
    }
    Ok(())
}

/// The virtio devices of `config`, in slot order: disks (/dev/vda, /dev/vdb, ... in the
/// guest), then net, then vsock.
fn virtio_devices(config: &VmConfig, options: &RunOptions) -> Result<Vec<VirtioSlot>, Error> {
    let mut devices = Vec::with_capacity(config.virtio_device_count());
    for disk in &config.disks {
        let file =
            DiskFile::open(&disk.path, disk.read_only).map_err(|e| Error::Config(e.into()))?;
        let tail = file.size() % SECTOR_SIZE;
        if tail != 0 {
            eprintln!(
                "condo: disk {}: size {} is not a multiple of {SECTOR_SIZE}; the guest does not see the last {tail} bytes",
                disk.path.display(),
                file.size()
            );
        }
        let block = Block::new(file).map_err(Error::EventFd)?;
        devices.push(VirtioSlot::new(Arc::new(Mutex::new(block))));
    }
    for (index, net) in config.net.iter().enumerate() {
        devices.push(net_device(devices.len(), index, net)?);
    }
    if let Some(vsock) = &config.vsock {
        let device = match options.vsock_listener_fd {
            Some(fd) => {
                // SAFETY: the jail's parent bound this listener for this VMM and handed its
                // descriptor over (kept open through the jail); nothing else in this process
                // uses or closes it, so the device takes sole ownership.
                let listener = unsafe { UnixListener::from_raw_fd(fd) };
                Vsock::with_listener(vsock.guest_cid, listener, &vsock.uds_path)?
            }
            None => Vsock::new(vsock.guest_cid, &vsock.uds_path)?,
        };
        devices.push(VirtioSlot::new(Arc::new(Mutex::new(device))));
    }
    Ok(devices)
}

/// virtio-net on its tap: the descriptor attached before the jail, or the tap by name.
fn net_device(slot: usize, index: usize, net: &crate::net::NetConfig) -> Result<VirtioSlot, Error> {
    let err = |what: String| Error::Virtio { slot, what };
    let tap = match net.tap_fd {
        // SAFETY: the jail kept this descriptor open for this device alone (vm_jail).
        Some(fd) => crate::net::Tap::from_fd(unsafe { crate::net::tap::owned_from_raw(fd) }),
        None => crate::net::Tap::open(&net.tap),
    }
    .map_err(|e| err(format!("--net #{index}: {e}")))?;
    let mac = net.mac.unwrap_or_else(crate::net::Mac::random_local);
    let device = crate::devices::virtio::net::Net::new(Box::new(tap), mac)
        .map_err(|e| err(format!("--net #{index}: eventfd: {e}")))?;
    Ok(VirtioSlot::new(Arc::new(Mutex::new(device))))
}

/// The kernel command line with one `virtio_mmio.device=` per device slot.
pub fn virtio_cmdline(cmdline: &str, devices: usize) -> String {
    let mut full = cmdline.trim_end().to_string();
    for slot in 0..devices {
        let base = VIRTIO_MMIO_BASE + slot as u64 * VIRTIO_MMIO_SLOT;
        let gsi = VIRTIO_FIRST_GSI as usize + slot;
        if !full.is_empty() {
            full.push(' ');
        }
        full.push_str(&format!(
            "virtio_mmio.device={}K@{base:#x}:{gsi}",
            VIRTIO_MMIO_SLOT >> 10
        ));
    }
    full
}

/// Puts every virtio device in its MMIO slot: an irqfd on the slot's GSI, an ioeventfd per
/// queue on QueueNotify (matching the queue index), and a transport on the bus. Returns the
/// bus and the devices' event handlers for the event loop.
fn register_virtio_devices(
    vm: &Vm,
    devices: Vec<VirtioSlot>,
) -> Result<(MmioBus, Vec<EventSubscriber>), Error> {
    if devices.len() > VIRTIO_MAX_DEVICES {
        return Err(Error::Virtio {
            slot: devices.len() - 1,
            what: format!("at most {VIRTIO_MAX_DEVICES} virtio devices fit"),
        });
    }
    let mut bus = MmioBus::default();
    let mut handlers = Vec::with_capacity(devices.len());
    for (slot, entry) in devices.into_iter().enumerate() {
        let base = VIRTIO_MMIO_BASE + slot as u64 * VIRTIO_MMIO_SLOT;
        let gsi = VIRTIO_FIRST_GSI + slot as u32;
        let virtio_err = |what: String| Error::Virtio { slot, what };
        let irqfd = EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)?;
        vm.fd()
            .register_irqfd(&irqfd, gsi)
            .map_err(|e| virtio_err(format!("KVM_IRQFD on GSI {gsi}: {e}")))?;
        {
            let device = entry.device.lock().unwrap_or_else(|p| p.into_inner());
            for (index, evt) in device.queue_events().iter().enumerate() {
                vm.fd()
                    .register_ioevent(
                        evt,
                        &IoEventAddress::Mmio(base + QUEUE_NOTIFY),
                        index as u32,
                    )
                    .map_err(|e| virtio_err(format!("KVM_IOEVENTFD for queue {index}: {e}")))?;
            }
        }
        let interrupt = Arc::new(Interrupt::new(irqfd));
        let transport = MmioTransport::new(entry.device, vm.memory().clone(), interrupt)
            .map_err(|e| virtio_err(e.to_string()))?;
        bus.push(transport);
        handlers.push(entry.handler);
    }
    Ok((bus, handlers))
}

/// Stdout as it is; a file created or truncated, bounded to `limit` bytes (read access too:
/// compacting it reads its tail back).
fn open_console(console: &Console, limit: u64) -> Result<ConsoleOutput, Error> {
    Ok(match console {
        Console::Stdout => Box::new(std::io::stdout()),
        Console::File(path) => {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)
                .map_err(|source| Error::Console {
                    path: path.clone(),
                    source,
                })?;
            Box::new(BoundedConsoleFile::new(file, limit))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_announces_each_virtio_slot() {
        assert_eq!(virtio_cmdline("console=ttyS0 ", 0), "console=ttyS0");
        assert_eq!(
            virtio_cmdline("console=ttyS0", 2),
            "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 \
             virtio_mmio.device=4K@0xd0001000:6"
        );
        assert_eq!(virtio_cmdline("", 1), "virtio_mmio.device=4K@0xd0000000:5");
    }
}
