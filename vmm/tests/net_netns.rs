//! condo_vmm::net on network namespaces only: a namespace plays the host, others play the
//! tenants' VMs (a veth named like the tenant's tap, the VM end carrying the guest MAC) and
//! the outside world. The real host's interfaces and ruleset are never touched.
//! Needs root, `ip` and `nft`; skips (saying why) without them.

// The helpers below are test code too (clippy.toml only sees #[test] functions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use condo_vmm::net::{NetHost, PortSpec, Published, TenantAddrs};

const OUTSIDE_HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const OUTSIDE_PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const WAIT: Duration = Duration::from_secs(5);

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root: network namespaces need CAP_SYS_ADMIN".into());
    }
    for tool in ["ip", "nft"] {
        if Command::new(tool).arg("-V").output().is_err() {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Namespaces of one test, deleted on drop (also when the test fails).
struct Lab {
    names: Vec<String>,
    host: String,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let host = format!("cn{}-{tag}-h", std::process::id());
        let outside = format!("cn{}-{tag}-o", std::process::id());
        let lab = Lab {
            names: vec![host.clone(), outside.clone()],
            host,
        };
        for ns in &lab.names {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&[
            "ip", "-n", &lab.host, "link", "add", "out0", "type", "veth", "peer", "name", "eth0",
            "netns", &outside,
        ]);
        sh(&[
            "ip",
            "-n",
            &lab.host,
            "addr",
            "add",
            "192.0.2.1/24",
            "dev",
            "out0",
        ]);
        sh(&["ip", "-n", &lab.host, "link", "set", "out0", "up"]);
        sh(&[
            "ip",
            "-n",
            &outside,
            "addr",
            "add",
            "192.0.2.2/24",
            "dev",
            "eth0",
        ]);
        sh(&["ip", "-n", &outside, "link", "set", "eth0", "up"]);
        lab
    }

    fn outside(&self) -> String {
        self.names[1].clone()
    }

    /// A fake VM: its own namespace, linked to the host by a veth named like the tap.
    fn vm(&mut self, a: &TenantAddrs) -> String {
        let ns = format!("{}-vm{}", self.host, a.index);
        sh(&["ip", "netns", "add", &ns]);
        self.names.push(ns.clone());
        let mac = a.guest_mac.to_string();
        sh(&[
            "ip", "-n", &self.host, "link", "add", &a.tap, "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ]);
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "address", &mac]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/30", a.guest),
            "dev",
            "eth0",
        ]);
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            &a.host.to_string(),
        ]);
        ns
    }

    fn net(&self) -> NetHost {
        NetHost::in_netns(&self.host)
    }

    /// What the host namespace holds: ruleset, links, addresses, routes.
    fn snapshot(&self) -> String {
        let h = &self.host;
        [
            sh(&["ip", "netns", "exec", h, "nft", "list", "ruleset"]),
            sh(&["ip", "-n", h, "-o", "link", "show"]),
            sh(&["ip", "-n", h, "-4", "-o", "addr", "show"]),
            sh(&["ip", "-n", h, "route", "show"]),
        ]
        .join("\n---\n")
    }

    /// Packets counted by the rule of `chain` whose text contains `marker`.
    fn counter(&self, chain: &str, marker: &str) -> u64 {
        let text = sh(&[
            "ip", "netns", "exec", &self.host, "nft", "list", "chain", "inet", "condo", chain,
        ]);
        let line = text
            .lines()
            .find(|l| l.contains(marker))
            .unwrap_or_else(|| panic!("{marker} in {text}"));
        let after = line.split("packets ").nth(1).unwrap();
        after.split_whitespace().next().unwrap().parse().unwrap()
    }

    fn wait_counter_above(&self, chain: &str, marker: &str, floor: u64) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = self.counter(chain, marker);
            if now > floor || Instant::now() > deadline {
                return now;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.names.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a new thread inside namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

/// A TCP server in `ns` that accepts one connection within WAIT, greets it, and returns the
/// peer's address. Returns once it listens.
fn serve_once(ns: &str, addr: SocketAddrV4) -> JoinHandle<Option<SocketAddr>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = in_ns(ns, move || {
        let listener = TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        ready_tx.send(()).unwrap();
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let mut fds = [libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(&listener),
                events: libc::POLLIN,
                revents: 0,
            }];
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(fds.as_mut_ptr(), 1, 100) } > 0 {
                let (mut stream, peer) = listener.accept().unwrap();
                std::io::Write::write_all(&mut stream, b"hello").unwrap();
                return Some(peer);
            }
        }
        None
    });
    ready_rx.recv_timeout(WAIT).unwrap();
    handle
}

/// Connects from `ns` to `to` and reads the greeting; the error when it fails.
fn connect(ns: &str, to: SocketAddrV4, timeout: Duration) -> Result<String, String> {
    in_ns(ns, move || {
        let mut stream =
            TcpStream::connect_timeout(&to.into(), timeout).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stream, &mut text).map_err(|e| e.to_string())?;
        Ok(text)
    })
    .join()
    .unwrap()
}

fn send_udp(ns: &str, from: Ipv4Addr, to: SocketAddrV4, payload: &'static [u8]) {
    in_ns(ns, move || {
        let socket = UdpSocket::bind(SocketAddrV4::new(from, 0)).unwrap();
        socket.send_to(payload, to).unwrap();
    })
    .join()
    .unwrap();
}

/// A UDP socket bound in `ns`; the handle returns the first datagram received within WAIT.
fn first_datagram(ns: &str, addr: SocketAddrV4) -> JoinHandle<Option<(Vec<u8>, SocketAddr)>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = in_ns(ns, move || {
        let socket = UdpSocket::bind(addr).unwrap();
        socket.set_read_timeout(Some(WAIT)).unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 64];
        socket
            .recv_from(&mut buf)
            .ok()
            .map(|(n, from)| (buf[..n].to_vec(), from))
    });
    ready_rx.recv_timeout(WAIT).unwrap();
    handle
}

#[test]
fn tenant_gets_nat_published_ports_and_removal_leaves_nothing() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let mut lab = Lab::new("nat");
    let before = lab.snapshot();
    let a = TenantAddrs::for_index(5).unwrap();
    let vm = lab.vm(&a);
    let net = lab.net();
    net.add_tenant(&a).unwrap();
    net.add_tenant(&a).unwrap(); // idempotent

    // Outbound: masqueraded behind the host's outside address.
    let server = serve_once(&lab.outside(), SocketAddrV4::new(OUTSIDE_PEER, 9000));
    assert_eq!(
        connect(&vm, SocketAddrV4::new(OUTSIDE_PEER, 9000), WAIT),
        Ok("hello".into())
    );
    assert_eq!(
        server.join().unwrap().map(|p| p.ip()),
        Some(OUTSIDE_HOST.into())
    );

    // Published: the host's port 8080 reaches the guest's port 80, 8081 a container address
    // routed through the guest (here: an address on the fake VM's loopback).
    let container = a.container(0).unwrap();
    sh(&[
        "ip",
        "-n",
        &vm,
        "addr",
        "add",
        &format!("{container}/32"),
        "dev",
        "lo",
    ]);
    let ports = [
        Published {
            spec: "8080:80".parse::<PortSpec>().unwrap(),
            target: a.guest,
        },
        Published {
            spec: "8081:81".parse::<PortSpec>().unwrap(),
            target: container,
        },
    ];
    net.set_ports(&a, &ports).unwrap();
    for (host_port, target) in [
        (8080, SocketAddrV4::new(a.guest, 80)),
        (8081, SocketAddrV4::new(container, 81)),
    ] {
        let server = serve_once(&vm, target);
        let via_host = SocketAddrV4::new(OUTSIDE_HOST, host_port);
        assert_eq!(
            connect(&lab.outside(), via_host, WAIT),
            Ok("hello".into()),
            "port {host_port}"
        );
        assert_eq!(
            server.join().unwrap().map(|p| p.ip()),
            Some(OUTSIDE_PEER.into())
        );
    }
    // A target outside the tenant's block is refused.
    let stray = Published {
        spec: "8082:80".parse().unwrap(),
        target: OUTSIDE_PEER,
    };
    let err = net.set_ports(&a, &[stray]).unwrap_err().to_string();
    assert!(
        err.contains("192.0.2.2") && err.contains("10.231.0.80/28"),
        "{err}"
    );

    net.remove_tenant(&a).unwrap();
    net.remove_tenant(&a).unwrap(); // idempotent
    assert_eq!(lab.snapshot(), before);
}

#[test]
fn spoofed_sources_and_cross_tenant_traffic_are_dropped() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let mut lab = Lab::new("iso");
    let before = lab.snapshot();
    let (a, b) = (
        TenantAddrs::for_index(1).unwrap(),
        TenantAddrs::for_index(2).unwrap(),
    );
    let (vm_a, vm_b) = (lab.vm(&a), lab.vm(&b));
    let net = lab.net();
    net.add_tenant(&a).unwrap();
    net.add_tenant(&b).unwrap();
    let outside = SocketAddrV4::new(OUTSIDE_PEER, 5000);
    let chain = "t1_in";

    // Spoofed IP: B's guest address sent from A's VM is dropped; A's own address passes.
    sh(&[
        "ip",
        "-n",
        &vm_a,
        "addr",
        "add",
        &format!("{}/32", b.guest),
        "dev",
        "eth0",
    ]);
    let seen = lab.counter(chain, "ip saddr !=");
    let receiver = first_datagram(&lab.outside(), outside);
    send_udp(&vm_a, b.guest, outside, b"spoofed-ip");
    assert!(
        lab.wait_counter_above(chain, "ip saddr !=", seen) > seen,
        "spoofed IP not counted as dropped"
    );
    send_udp(&vm_a, a.guest, outside, b"legit");
    let (payload, _) = receiver
        .join()
        .unwrap()
        .expect("the legitimate datagram arrives");
    assert_eq!(payload, b"legit");
    sh(&[
        "ip",
        "-n",
        &vm_a,
        "addr",
        "del",
        &format!("{}/32", b.guest),
        "dev",
        "eth0",
    ]);

    // Spoofed MAC: A's VM with another MAC is dropped, even from its own address.
    sh(&[
        "ip",
        "-n",
        &vm_a,
        "link",
        "set",
        "eth0",
        "address",
        "02:00:00:00:66:66",
    ]);
    let seen = lab.counter(chain, "ether saddr !=");
    let receiver = first_datagram(&lab.outside(), outside);
    send_udp(&vm_a, a.guest, outside, b"spoofed-mac");
    assert!(
        lab.wait_counter_above(chain, "ether saddr !=", seen) > seen,
        "spoofed MAC not counted as dropped"
    );
    sh(&[
        "ip",
        "-n",
        &vm_a,
        "link",
        "set",
        "eth0",
        "address",
        &a.guest_mac.to_string(),
    ]);
    send_udp(&vm_a, a.guest, outside, b"legit-again");
    assert_eq!(
        receiver.join().unwrap().map(|(p, _)| p),
        Some(b"legit-again".to_vec())
    );

    // A -> B is dropped on the host; the host itself still reaches B.
    let at_b = SocketAddrV4::new(b.guest, 6000);
    let seen = lab.counter(chain, "ip daddr @tenant_nets");
    let receiver = first_datagram(&vm_b, at_b);
    send_udp(&vm_a, a.guest, at_b, b"from-a");
    assert!(
        lab.wait_counter_above(chain, "ip daddr @tenant_nets", seen) > seen,
        "A->B not counted as dropped"
    );
    send_udp(&lab.host, b.host, at_b, b"from-host");
    assert_eq!(
        receiver.join().unwrap().map(|(p, _)| p),
        Some(b"from-host".to_vec())
    );
    // And TCP from A to B fails while TCP from A to the outside works.
    let refused = connect(
        &vm_a,
        SocketAddrV4::new(b.guest, 6001),
        Duration::from_millis(700),
    );
    assert!(refused.is_err(), "A reached B: {refused:?}");

    // Tenants do not reach host services (only replies and pings).
    let host_service = serve_once(&lab.host, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 7000));
    let to_host = connect(
        &vm_a,
        SocketAddrV4::new(a.host, 7000),
        Duration::from_millis(700),
    );
    assert!(to_host.is_err(), "A reached a host service: {to_host:?}");
    let from_outside = connect(&lab.outside(), SocketAddrV4::new(OUTSIDE_HOST, 7000), WAIT);
    assert_eq!(from_outside, Ok("hello".into()));
    host_service.join().unwrap();

    net.remove_tenant(&a).unwrap();
    // B still isolated and connected after A left; then B goes too.
    let server = serve_once(&lab.outside(), SocketAddrV4::new(OUTSIDE_PEER, 9001));
    assert_eq!(
        connect(&vm_b, SocketAddrV4::new(OUTSIDE_PEER, 9001), WAIT),
        Ok("hello".into())
    );
    server.join().unwrap();
    net.remove_tenant(&b).unwrap();
    assert_eq!(lab.snapshot(), before);
}

#[test]
fn published_port_of_another_tenant_is_refused() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let mut lab = Lab::new("port");
    let (a, b) = (
        TenantAddrs::for_index(3).unwrap(),
        TenantAddrs::for_index(4).unwrap(),
    );
    lab.vm(&a);
    lab.vm(&b);
    let net = lab.net();
    net.add_tenant(&a).unwrap();
    net.add_tenant(&b).unwrap();
    let spec: PortSpec = "8080:80".parse().unwrap();
    net.set_ports(
        &a,
        &[Published {
            spec,
            target: a.guest,
        }],
    )
    .unwrap();
    let err = net
        .set_ports(
            &b,
            &[Published {
                spec,
                target: b.guest,
            }],
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("8080:80/tcp") && err.contains("t3_ports"),
        "{err}"
    );
    // Replacing A's ports frees 8080 for B.
    net.set_ports(&a, &[]).unwrap();
    net.set_ports(
        &b,
        &[Published {
            spec,
            target: b.guest,
        }],
    )
    .unwrap();
    net.remove_tenant(&a).unwrap();
    net.remove_tenant(&b).unwrap();
    let left = sh(&["ip", "netns", "exec", &lab.host, "nft", "list", "ruleset"]);
    assert_eq!(left.trim(), "");
}

#[test]
fn persistent_tap_is_made_attached_and_removed() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let lab = Lab::new("tap");
    let net = lab.net();
    let name = "condo-test0";
    net.run_inside(|| condo_vmm::net::tap::create_persistent(name, Some(900_123)))
        .unwrap()
        .unwrap();
    let shown = sh(&["ip", "-n", &lab.host, "-d", "link", "show", name]);
    assert!(
        shown.contains("tun type tap") && shown.contains("user 900123"),
        "{shown}"
    );
    let attached = net
        .run_inside(|| condo_vmm::net::Tap::open(name))
        .unwrap()
        .unwrap();
    assert_eq!(attached.name(), name);
    // Nothing to read yet: non-blocking, WouldBlock.
    let mut buf = [0u8; 64];
    let err = attached.read_frame(&mut buf).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    // The same descriptor, wrapped again as the jailed VMM does.
    let again = condo_vmm::net::Tap::from_fd(attached.into_fd()).unwrap();
    assert_eq!(again.name(), name);
    drop(again);
    let a = TenantAddrs {
        tap: name.to_owned(),
        ..TenantAddrs::for_index(9).unwrap()
    };
    net.remove_tenant(&a).unwrap();
    let links = sh(&["ip", "-n", &lab.host, "-o", "link", "show"]);
    assert!(!links.contains(name), "{links}");
    // A descriptor that is not a tap is refused, naming it.
    let null = std::fs::File::open("/dev/null").unwrap();
    let err = condo_vmm::net::Tap::from_fd(null.into())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("TUNGETIFF") || err.contains("not a tap"),
        "{err}"
    );
}
