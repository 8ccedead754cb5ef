//! PID 1's network setup (condo_agent::agent::net::configure) on a veth named eth0 inside a
//! throwaway network namespace. Needs root and iproute2; skips (saying why) without them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::fd::AsRawFd;
use std::process::Command;

use condo_agent::agent::net::{configure, NetBoot};

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn configures_eth0_address_route_and_lo() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || Command::new("ip").arg("-V").output().is_err() {
        eprintln!("skipped: needs root and iproute2 for a network namespace");
        return;
    }
    let ns = format!("condo-agent-net-{}", std::process::id());
    ip(&["netns", "add", &ns]);
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _cleanup = Cleanup(ns.clone());
    ip(&[
        "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
    ]);
    ip(&["-n", &ns, "link", "set", "peer0", "up"]);

    let net: NetBoot = "10.231.0.18/30,10.231.0.17,1.1.1.1".parse().unwrap();
    let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    let result = std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a namespace fd we own.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        configure("eth0", &net)
    })
    .join()
    .unwrap();
    result.unwrap();

    let addr = ip(&["-n", &ns, "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains("inet 10.231.0.18/30"), "{addr}");
    let route = ip(&["-n", &ns, "route", "show", "default"]);
    assert!(
        route.contains("default via 10.231.0.17 dev eth0"),
        "{route}"
    );
    let lo = ip(&["-n", &ns, "-o", "link", "show", "lo"]);
    assert!(lo.contains("UP"), "{lo}");
    // A missing interface is an error naming it.
    let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    let err = std::thread::spawn(move || {
        // SAFETY: as above.
        unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        configure("nosuch0", &net)
    })
    .join()
    .unwrap()
    .unwrap_err()
    .to_string();
    assert!(err.contains("nosuch0"), "{err}");
}
