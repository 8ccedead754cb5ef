//! The condo-agent binary (not as PID 1) on a Unix socket, driven by the protocol client, with
//! the real container runtime and a busybox rootfs. Needs root (namespaces); skips otherwise.

// Helpers of the tests below: a failure in them is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

use condo_agent::runtime::defaults::{default_spec, SpecOptions};
use condo_protocol::{
    encode, read_message, Client, ClientError, CreateContainer, Envelope, ErrorKind, ExecProcess,
    OutputStream, ProcessRef, Reply, Request, Response, StdioPipes, MAX_FRAME_LEN,
};

const TIMEOUT: Duration = Duration::from_secs(30);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("SKIP: the agent's containers need root (namespaces, mounts)");
            return;
        }
    };
}

/// A busybox rootfs built once per test run by the fixture script.
fn rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("condo-agent-rootfs-{}", std::process::id()));
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make-busybox-rootfs.sh");
        let status = Command::new("sh").arg(script).arg(&dir).status().unwrap();
        assert!(status.success(), "make-busybox-rootfs.sh failed: {status}");
        dir
    })
}

/// One agent process per test, killed when the test ends.
struct AgentProcess {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl AgentProcess {
    fn start(name: &str) -> AgentProcess {
        let dir = std::env::temp_dir().join(format!("condo-agent-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("agent.sock");
        let mut command = Command::new(env!("CARGO_BIN_EXE_condo-agent"));
        command
            .arg("--unix")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe; the agent dies with the test thread that made it.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            })
        };
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[agent] {line}");
                if line.contains("ready on") {
                    let _ = ready_tx.send(());
                }
            }
        });
        ready_rx
            .recv_timeout(TIMEOUT)
            .expect("the agent did not report ready");
        AgentProcess { child, dir, socket }
    }

    fn connect(&self) -> UnixStream {
        let stream = UnixStream::connect(&self.socket).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        stream
    }

    fn client(&self) -> Client<UnixStream> {
        Client::new(self.connect())
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spec(args: &[&str]) -> Box<oci_spec::runtime::Spec> {
    let options = SpecOptions {
        args: args.iter().map(|arg| arg.to_string()).collect(),
        ..SpecOptions::default()
    };
    Box::new(default_spec(&options).unwrap())
}

fn create_request(id: &str, args: &[&str], stdio: StdioPipes) -> CreateContainer {
    CreateContainer {
        container_id: id.into(),
        spec: spec(args),
        rootfs: rootfs().to_str().unwrap().into(),
        stdio,
        auto_remove: false,
    }
}

fn exec_request(id: &str, exec_id: &str, args: &[&str], stdio: StdioPipes) -> ExecProcess {
    let process = spec(args).process().clone().unwrap();
    ExecProcess {
        container_id: id.into(),
        exec_id: exec_id.into(),
        process: Box::new(process),
        stdio,
    }
}

fn agent_error_kind(result: Result<impl std::fmt::Debug, ClientError>) -> ErrorKind {
    match result {
        Err(ClientError::Agent { error, .. }) => error.kind,
        other => panic!("expected an agent error, got {other:?}"),
    }
}

#[test]
fn ping_and_boot_timings() {
    let agent = AgentProcess::start("ping");
    let mut client = agent.client();
    assert_eq!(client.ping().unwrap().1, condo_protocol::PROTOCOL_VERSION);
    let timings = client.boot_timings().unwrap();
    assert!(0 < timings.agent_start_ns && timings.agent_start_ns <= timings.agent_ready_ns);
    assert!(timings.agent_ready_ns <= timings.now_ns, "{timings:?}");
}

#[test]
fn container_runs_streams_output_and_reports_its_exit_code() {
    require_root!();
    let agent = AgentProcess::start("lifecycle");
    let mut client = agent.client();
    let script = "echo out; echo err >&2; hostname; exit 3";
    let pid = client
        .create(create_request(
            "life",
            &["sh", "-c", script],
            StdioPipes::ALL,
        ))
        .unwrap();
    assert!(pid > 0);
    let listed = client.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].id.as_str(), listed[0].status.as_str()),
        ("life", "created")
    );
    client.stats("life").unwrap();
    client.start("life").unwrap();
    let init = ProcessRef::init("life");
    let stdout = client
        .read_output_to_end(&init, OutputStream::Stdout)
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&stdout), "out\ncondo\n");
    let stderr = client
        .read_output_to_end(&init, OutputStream::Stderr)
        .unwrap();
    assert_eq!(stderr, b"err\n");
    let status = client.wait(init).unwrap();
    assert_eq!(
        (status.code, status.signal, status.oom_killed),
        (Some(3), None, false)
    );
    client.delete("life", false).unwrap();
    assert!(client.list().unwrap().is_empty());
    assert_eq!(agent_error_kind(client.start("life")), ErrorKind::NotFound);
}

#[test]
fn stdin_reaches_the_container() {
    require_root!();
    let agent = AgentProcess::start("stdin");
    let mut client = agent.client();
    let upper = ["tr", "a-z", "A-Z"];
    client
        .create(create_request("tr", &upper, StdioPipes::ALL))
        .unwrap();
    client.start("tr").unwrap();
    let init = ProcessRef::init("tr");
    client.write_stdin(init.clone(), b"shout\n").unwrap();
    client.close_stdin(init.clone()).unwrap();
    let out = client
        .read_output_to_end(&init, OutputStream::Stdout)
        .unwrap();
    assert_eq!(out, b"SHOUT\n");
    assert_eq!(client.wait(init).unwrap().code, Some(0));
    client.delete("tr", false).unwrap();
}

#[test]
fn exec_signal_and_wait() {
    require_root!();
    let agent = AgentProcess::start("exec");
    let mut client = agent.client();
    client
        .create(create_request("box", &["sleep", "1000"], StdioPipes::NONE))
        .unwrap();
    client.start("box").unwrap();
    let out_only = StdioPipes {
        stdout: true,
        ..StdioPipes::NONE
    };
    let script = "echo in-$(hostname); exit 5";
    client
        .exec(exec_request("box", "e1", &["sh", "-c", script], out_only))
        .unwrap();
    let e1 = ProcessRef::exec("box", "e1");
    let out = client
        .read_output_to_end(&e1, OutputStream::Stdout)
        .unwrap();
    assert_eq!(out, b"in-condo\n");
    assert_eq!(client.wait(e1).unwrap().code, Some(5));

    client
        .exec(exec_request(
            "box",
            "e2",
            &["sleep", "1000"],
            StdioPipes::NONE,
        ))
        .unwrap();
    let e2 = ProcessRef::exec("box", "e2");
    client.signal(e2.clone(), libc::SIGTERM).unwrap();
    let status = client.wait(e2).unwrap();
    assert_eq!((status.code, status.signal), (None, Some(libc::SIGTERM)));

    assert_eq!(
        agent_error_kind(client.delete("box", false)),
        ErrorKind::InvalidState
    );
    // The container's init is PID 1 of its namespace: only SIGKILL reaches it from outside.
    client
        .signal(ProcessRef::init("box"), libc::SIGKILL)
        .unwrap();
    let status = client.wait(ProcessRef::init("box")).unwrap();
    assert_eq!((status.code, status.signal), (None, Some(libc::SIGKILL)));
    client.delete("box", false).unwrap();
}

#[test]
fn bad_rootfs_is_refused_and_nothing_is_left() {
    require_root!();
    let agent = AgentProcess::start("badroot");
    let mut client = agent.client();
    let mut request = create_request("nowhere", &["true"], StdioPipes::NONE);
    request.rootfs = "/nonexistent/rootfs".into();
    let err = client.create(request).unwrap_err();
    let error = err.agent_error().unwrap();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert!(error.message.contains("/nonexistent/rootfs"), "{error:?}");
    assert!(client.list().unwrap().is_empty());
    assert!(!agent.dir.join("state/bundles/nowhere").exists());
}

#[test]
fn bad_frames_disturb_no_other_client() {
    let agent = AgentProcess::start("frames");
    let mut bystander = agent.client();
    bystander.ping().unwrap();
    let mut garbage = agent.connect();
    let mut frame = 5u32.to_be_bytes().to_vec();
    frame.extend_from_slice(b"{{{{{");
    garbage.write_all(&frame).unwrap();
    let reply: Envelope<Response> = read_message(&mut garbage).unwrap();
    assert!(
        matches!(&reply.body, Response::Error(e) if e.kind == ErrorKind::MalformedFrame),
        "{reply:?}"
    );
    garbage
        .write_all(&encode(&Envelope::new(2, Request::Ping)).unwrap())
        .unwrap();
    let pong: Envelope<Response> = read_message(&mut garbage).unwrap();
    assert!(
        matches!(pong.body, Response::Ok(Reply::Pong { .. })),
        "{pong:?}"
    );

    let mut oversized = agent.connect();
    oversized
        .write_all(&(MAX_FRAME_LEN * 4).to_be_bytes())
        .unwrap();
    let reply: Envelope<Response> = read_message(&mut oversized).unwrap();
    assert!(
        matches!(&reply.body, Response::Error(e) if e.kind == ErrorKind::FrameTooLarge),
        "{reply:?}"
    );
    assert_eq!(
        oversized.read(&mut [0u8; 16]).unwrap(),
        0,
        "connection closed"
    );
    bystander.ping().unwrap();
}

#[test]
fn concurrent_clients_run_containers_side_by_side() {
    require_root!();
    let agent = AgentProcess::start("concurrent");
    let socket = agent.socket.clone();
    let workers: Vec<_> = (0..6)
        .map(|n| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let stream = UnixStream::connect(socket).unwrap();
                stream.set_read_timeout(Some(TIMEOUT)).unwrap();
                let mut client = Client::new(stream);
                let id = format!("worker-{n}");
                let script = format!("echo worker {n}");
                let stdio = StdioPipes {
                    stdout: true,
                    ..StdioPipes::NONE
                };
                client
                    .create(create_request(&id, &["sh", "-c", &script], stdio))
                    .unwrap();
                client.start(&id).unwrap();
                let init = ProcessRef::init(&id);
                let out = client
                    .read_output_to_end(&init, OutputStream::Stdout)
                    .unwrap();
                assert_eq!(String::from_utf8_lossy(&out), format!("worker {n}\n"));
                assert_eq!(client.wait(init).unwrap().code, Some(0));
                client.delete(&id, false).unwrap();
            })
        })
        .collect();
    let mut pinger = agent.client();
    for _ in 0..20 {
        pinger.ping().unwrap();
    }
    for worker in workers {
        worker.join().unwrap();
    }
    assert!(pinger.list().unwrap().is_empty());
}

#[test]
fn a_created_container_holds_no_pipe_of_another() {
    require_root!();
    let agent = AgentProcess::start("fdleak");
    let mut client = agent.client();
    client
        .create(create_request("reader", &["cat"], StdioPipes::ALL))
        .unwrap();
    client.start("reader").unwrap();
    // Created after the reader, and left waiting for start: its init must not have inherited
    // the agent's end of the reader's stdin, or the reader would never see end of input.
    client
        .create(create_request("idle", &["true"], StdioPipes::NONE))
        .unwrap();
    let reader = ProcessRef::init("reader");
    client.write_stdin(reader.clone(), b"last words\n").unwrap();
    client.close_stdin(reader.clone()).unwrap();
    let out = client
        .read_output_to_end(&reader, OutputStream::Stdout)
        .unwrap();
    assert_eq!(out, b"last words\n");
    assert_eq!(client.wait(reader).unwrap().code, Some(0));
    client.delete("reader", false).unwrap();
    client.delete("idle", true).unwrap();
}
