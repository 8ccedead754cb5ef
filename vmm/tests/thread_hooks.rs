//! The jail seam: the per-thread hook runs in every vCPU thread and then in the main thread,
//! all before the guest's first instruction; a failing hook stops the VM from starting.

mod common;

use std::sync::{Arc, Mutex};

use condo_vmm::config::Console;
use condo_vmm::hooks::{ThreadHook, ThreadKind};
use condo_vmm::{run_vm, Error, RunOptions, VmConfig, VmExit};

fn config(console: &str, vcpus: u8) -> VmConfig {
    let mut config = VmConfig::with_kernel(common::payload("hello"));
    config.vcpus = vcpus;
    config.memory_mib = 32;
    config.console = Console::File(common::scratch_dir("thread-hooks").join(console));
    config
}

fn console_text(config: &VmConfig) -> String {
    match &config.console {
        Console::File(path) => std::fs::read_to_string(path).unwrap_or_default(),
        Console::Stdout => String::new(),
    }
}

fn remove_console(config: &VmConfig) {
    if let Console::File(path) = &config.console {
        let _ = std::fs::remove_file(path);
    }
}

#[test]
fn hooks_run_in_every_thread_before_the_guest() {
    if !common::kvm_or_skip("hooks_run_in_every_thread_before_the_guest") {
        return;
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let hook: ThreadHook = Arc::new(move |kind| {
        let name = std::thread::current().name().unwrap_or("main").to_string();
        record.lock().unwrap().push((kind, name));
        Ok(())
    });
    let config = config("ok.log", 3);
    let options = RunOptions {
        thread_hook: Some(hook),
        allow_pvm_linux: false,
        checked_outside: false,
        ..Default::default()
    };
    let exit = run_vm(&config, &options).unwrap();
    assert_eq!(exit, VmExit::Reset);
    assert_eq!(console_text(&config), "Hello from the condo test payload\n");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 4, "{seen:?}");
    let mut vcpu_threads: Vec<&str> = seen[..3]
        .iter()
        .map(|(k, n)| {
            assert_eq!(*k, ThreadKind::Vcpu);
            n.as_str()
        })
        .collect();
    vcpu_threads.sort();
    assert_eq!(vcpu_threads, ["vcpu0", "vcpu1", "vcpu2"]);
    assert_eq!(
        seen[3].0,
        ThreadKind::Vmm,
        "the main thread's hook comes last"
    );
}

#[test]
fn failing_hook_keeps_the_guest_from_running() {
    if !common::kvm_or_skip("failing_hook_keeps_the_guest_from_running") {
        return;
    }
    for failing in [ThreadKind::Vcpu, ThreadKind::Vmm] {
        let hook: ThreadHook = Arc::new(move |kind| {
            if kind == failing {
                Err(format!("no filter for {kind:?}").into())
            } else {
                Ok(())
            }
        });
        let config = config(&format!("fail-{failing:?}.log"), 2);
        remove_console(&config);
        let options = RunOptions {
            thread_hook: Some(hook),
            allow_pvm_linux: false,
            checked_outside: false,
            ..Default::default()
        };
        let err = run_vm(&config, &options).unwrap_err();
        assert!(matches!(err, Error::ThreadHook(_)), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("no filter for {failing:?}")),
            "{err}"
        );
        let Console::File(log) = &config.console else {
            unreachable!()
        };
        assert!(
            !log.exists(),
            "the guest must not have run, and no console file is left"
        );
    }
}
