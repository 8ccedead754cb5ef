//! `condo vm run --control PATH`: the VMM's control socket answers `status` and ends the VM on
//! `stop` (as SIGTERM does: exit 143), and is gone afterwards. Uses a test payload that waits
//! for console input for ever (runs on PVM).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{condo, kvm_or_skip, payload, scratch_dir};

fn ask(path: &std::path::Path, request: &str) -> String {
    let mut stream = UnixStream::connect(path).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(format!("{request}\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line
}

#[test]
fn status_then_stop() {
    if !kvm_or_skip("control status_then_stop") {
        return;
    }
    let dir = scratch_dir("control-socket");
    let socket = dir.join("control.sock");
    let _ = std::fs::remove_file(&socket);
    let child = condo()
        .args(["vm", "run", "--kernel"])
        .arg(payload("echo_input"))
        .args(["--memory", "64", "--vcpus", "2", "--console"])
        .arg(dir.join("console.log"))
        .arg("--control")
        .arg(&socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while UnixStream::connect(&socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "no control socket at {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let status = ask(&socket, "status");
    assert!(
        status.contains("\"state\":\"running\"") && status.contains("\"vcpus\":2"),
        "{status}"
    );
    let bad = ask(&socket, "reboot");
    assert!(bad.contains("unknown request \\\"reboot\\\""), "{bad}");
    assert_eq!(ask(&socket, "stop"), "{\"state\":\"stopping\"}\n");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("condo did not exit after stop")
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(143),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!socket.exists(), "the control socket remains");
}
