//! The agent's server and handlers over a Unix socket, with a fake backend whose "containers"
//! are plain host processes: framing, errors, stdio, waits, signals, concurrency. Runs unprivileged.

// Helpers of the tests below: a failure in them is a test failure.
#![allow(clippy::unwrap_used, clippy::panic)]

#[path = "agent_support/fake_backend.rs"]
mod fake_backend;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use condo_agent::agent::{self, Agent, ServerLimits};
use condo_protocol::{
    encode, read_message, Client, ClientError, CreateContainer, Envelope, ErrorKind, ExecProcess,
    OutputStream, ProcessRef, Reply, Request, Response, StdioPipes, MAX_FRAME_LEN,
    MAX_TERMINAL_DIMENSION,
};
use fake_backend::{FakeBackend, OOM_ANNOTATION};

/// Long enough for a loaded CI machine; a hang fails the test instead of blocking it.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

struct TestAgent {
    socket: PathBuf,
    rootfs: PathBuf,
}

/// One agent (and one reaper, which is process-wide) shared by all tests of this file.
fn test_agent() -> &'static TestAgent {
    static AGENT: OnceLock<TestAgent> = OnceLock::new();
    AGENT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("condo-agent-protocol-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        let socket = dir.join("agent.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let agent = Arc::new(Agent::new(
            FakeBackend::new(dir.join("cgroups")),
            dir.join("bundles"),
            agent::boottime_ns(),
        ));
        let reaped = Arc::clone(&agent);
        agent::reaper::start(move |pid, status| reaped.child_exited(pid, status)).unwrap();
        agent.mark_ready();
        let limits = ServerLimits {
            max_connections: 64,
            max_in_flight: 8,
        };
        std::thread::spawn(move || agent::serve(listener, agent, limits));
        TestAgent {
            socket,
            rootfs: dir.join("rootfs"),
        }
    })
}

fn connect() -> UnixStream {
    let stream = UnixStream::connect(&test_agent().socket).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

fn client() -> Client<UnixStream> {
    Client::new(connect())
}

fn spec_running(args: &[&str]) -> Box<oci_spec::runtime::Spec> {
    let mut spec = oci_spec::runtime::Spec::default();
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(args.iter().map(|arg| arg.to_string()).collect()));
    spec.set_process(Some(process));
    Box::new(spec)
}

fn create(client: &mut Client<UnixStream>, id: &str, args: &[&str], stdio: StdioPipes) -> i32 {
    client
        .create(CreateContainer {
            container_id: id.into(),
            spec: spec_running(args),
            rootfs: test_agent().rootfs.to_str().unwrap().into(),
            stdio,
            auto_remove: false,
        })
        .unwrap()
}

fn agent_error_kind(result: Result<impl std::fmt::Debug, ClientError>) -> ErrorKind {
    match result {
        Err(ClientError::Agent { error, .. }) => error.kind,
        other => panic!("expected an agent error, got {other:?}"),
    }
}

/// Sends raw bytes and reads one reply.
fn raw_exchange(stream: &mut UnixStream, bytes: &[u8]) -> Envelope<Response> {
    stream.write_all(bytes).unwrap();
    read_message(stream).unwrap()
}

fn error_of(reply: &Envelope<Response>) -> ErrorKind {
    match &reply.body {
        Response::Error(error) => error.kind,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[test]
fn ping_and_boot_timings() {
    let mut client = client();
    let (version, protocol) = client.ping().unwrap();
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    assert_eq!(protocol, condo_protocol::PROTOCOL_VERSION);
    let timings = client.boot_timings().unwrap();
    assert!(timings.agent_start_ns > 0);
    assert!(
        timings.agent_start_ns <= timings.agent_ready_ns,
        "{timings:?}"
    );
    assert!(timings.agent_ready_ns <= timings.now_ns, "{timings:?}");
    assert!(
        timings.now_unix_ns > 1_600_000_000_000_000_000,
        "{timings:?}"
    );
}

#[test]
fn create_start_stream_output_and_wait_for_exit_code() {
    let mut client = client();
    let id = "exit-code";
    let script = "echo out; echo err >&2; exit 3";
    create(&mut client, id, &["/bin/sh", "-c", script], StdioPipes::ALL);
    let list = client.list().unwrap();
    let entry = list.iter().find(|c| c.id == id).unwrap();
    assert_eq!(entry.status, "created");
    client.start(id).unwrap();
    let init = ProcessRef::init(id);
    assert_eq!(
        client
            .read_output_to_end(&init, OutputStream::Stdout)
            .unwrap(),
        b"out\n"
    );
    assert_eq!(
        client
            .read_output_to_end(&init, OutputStream::Stderr)
            .unwrap(),
        b"err\n"
    );
    let status = client.wait(init.clone()).unwrap();
    assert_eq!(
        (status.code, status.signal, status.oom_killed),
        (Some(3), None, false)
    );
    // A second wait answers at once with the same status.
    assert_eq!(client.wait(init).unwrap(), status);
    client.delete(id, false).unwrap();
    assert!(client.list().unwrap().iter().all(|c| c.id != id));
}

fn create_auto_remove(client: &mut Client<UnixStream>, id: &str, args: &[&str]) {
    client
        .create(CreateContainer {
            container_id: id.into(),
            spec: spec_running(args),
            rootfs: test_agent().rootfs.to_str().unwrap().into(),
            stdio: StdioPipes::ALL,
            auto_remove: true,
        })
        .unwrap();
}

fn bundle_of(id: &str) -> PathBuf {
    test_agent().rootfs.with_file_name("bundles").join(id)
}

#[test]
fn auto_remove_deletes_the_container_before_its_waiters_hear_of_the_exit() {
    let mut client = client();
    let id = "auto-removed";
    create_auto_remove(&mut client, id, &["/bin/sh", "-c", "echo bye; exit 4"]);
    assert!(bundle_of(id).exists());
    let init = ProcessRef::init(id);
    let waiter = {
        let init = init.clone();
        std::thread::spawn(move || client_wait(&init))
    };
    client.start(id).unwrap();
    let status = waiter.join().unwrap();
    assert_eq!((status.code, status.signal), (Some(4), None));
    // Gone by the time the wait returned: not listed, no log, no bundle.
    assert!(client.list().unwrap().iter().all(|c| c.id != id));
    let log = client.read_log(condo_protocol::ReadLog {
        container_id: id.into(),
        stream: OutputStream::Stdout,
        offset: 0,
        max_bytes: 1024,
        wait_ms: 0,
    });
    assert_eq!(agent_error_kind(log), ErrorKind::NotFound);
    assert!(!bundle_of(id).exists(), "the bundle of {id} remains");
    // A late waiter still learns how it ended; the id is free for a new container.
    assert_eq!(client.wait(init.clone()).unwrap(), status);
    create(&mut client, id, &["/bin/true"], StdioPipes::NONE);
    client.start(id).unwrap();
    assert_eq!(client.wait(init).unwrap().code, Some(0));
    client.delete(id, false).unwrap();
}

fn client_wait(process: &ProcessRef) -> condo_protocol::ExitStatus {
    client().wait(process.clone()).unwrap()
}

#[test]
fn a_signalled_auto_remove_container_is_removed_and_a_delete_first_wins() {
    let mut client = client();
    let id = "auto-signalled";
    create_auto_remove(&mut client, id, &["/bin/sleep", "1000"]);
    client.start(id).unwrap();
    client.signal(ProcessRef::init(id), libc::SIGTERM).unwrap();
    let status = client.wait(ProcessRef::init(id)).unwrap();
    assert_eq!((status.code, status.signal), (None, Some(libc::SIGTERM)));
    assert!(client.list().unwrap().iter().all(|c| c.id != id));
    // Deleted by request while running: removed once, waiters answered not_found.
    let id = "auto-deleted";
    create_auto_remove(&mut client, id, &["/bin/sleep", "1000"]);
    client.start(id).unwrap();
    client.delete(id, true).unwrap();
    assert!(client.list().unwrap().iter().all(|c| c.id != id));
    let kind = agent_error_kind(client.wait(ProcessRef::init(id)));
    assert_eq!(kind, ErrorKind::NotFound);
    assert!(!bundle_of(id).exists());
}

#[test]
fn stdin_is_streamed_and_closed() {
    let mut client = client();
    let id = "stdin-cat";
    create(&mut client, id, &["/bin/cat"], StdioPipes::ALL);
    client.start(id).unwrap();
    let init = ProcessRef::init(id);
    assert_eq!(client.write_stdin(init.clone(), b"hello ").unwrap(), 6);
    assert_eq!(client.write_stdin(init.clone(), b"world").unwrap(), 5);
    client.close_stdin(init.clone()).unwrap();
    let kind = agent_error_kind(client.write_stdin(init.clone(), b"late"));
    assert_eq!(kind, ErrorKind::InvalidState);
    assert_eq!(
        client
            .read_output_to_end(&init, OutputStream::Stdout)
            .unwrap(),
        b"hello world"
    );
    assert_eq!(client.wait(init).unwrap().code, Some(0));
    client.delete(id, false).unwrap();
}

#[test]
fn signal_kills_and_wait_reports_the_signal() {
    let mut client = client();
    let id = "signalled";
    create(&mut client, id, &["/bin/sleep", "1000"], StdioPipes::NONE);
    client.start(id).unwrap();
    let kind = agent_error_kind(client.delete(id, false));
    assert_eq!(
        kind,
        ErrorKind::InvalidState,
        "a running container is not deleted without force"
    );
    client.signal(ProcessRef::init(id), libc::SIGTERM).unwrap();
    let status = client.wait(ProcessRef::init(id)).unwrap();
    assert_eq!((status.code, status.signal), (None, Some(libc::SIGTERM)));
    client.delete(id, false).unwrap();
}

#[test]
fn exec_runs_a_second_process_with_its_own_stdio() {
    let mut client = client();
    let id = "exec-host";
    create(&mut client, id, &["/bin/sleep", "1000"], StdioPipes::NONE);
    client.start(id).unwrap();
    let mut process = spec_running(&[]).process().clone().unwrap();
    process.set_args(Some(vec![
        "/bin/sh".into(),
        "-c".into(),
        "echo from-exec; exit 7".into(),
    ]));
    let exec = ExecProcess {
        container_id: id.into(),
        exec_id: "e1".into(),
        process: Box::new(process.clone()),
        stdio: StdioPipes {
            stdout: true,
            ..StdioPipes::NONE
        },
    };
    client.exec(exec.clone()).unwrap();
    let kind = agent_error_kind(client.exec(exec));
    assert_eq!(
        kind,
        ErrorKind::AlreadyExists,
        "exec ids are unique per container"
    );
    let e1 = ProcessRef::exec(id, "e1");
    assert_eq!(
        client
            .read_output_to_end(&e1, OutputStream::Stdout)
            .unwrap(),
        b"from-exec\n"
    );
    assert_eq!(client.wait(e1.clone()).unwrap().code, Some(7));
    let kind = agent_error_kind(client.read_output(e1, OutputStream::Stderr, 100));
    assert_eq!(kind, ErrorKind::InvalidRequest, "stderr was not piped");
    client.delete(id, true).unwrap();
    let kind = agent_error_kind(client.wait(ProcessRef::init(id)));
    assert_eq!(kind, ErrorKind::NotFound);
}

#[test]
fn requests_overlap_on_one_connection_and_replies_carry_their_ids() {
    let mut setup = client();
    let id = "multiplexed";
    create(&mut setup, id, &["/bin/sleep", "1000"], StdioPipes::NONE);
    setup.start(id).unwrap();
    let mut stream = connect();
    let wait = Request::Wait {
        process: ProcessRef::init(id),
    };
    stream
        .write_all(&encode(&Envelope::new(1, wait)).unwrap())
        .unwrap();
    // The wait blocks in the agent; a ping sent after it is answered first.
    let pong = raw_exchange(
        &mut stream,
        &encode(&Envelope::new(2, Request::Ping)).unwrap(),
    );
    assert_eq!(pong.id, 2);
    assert!(matches!(pong.body, Response::Ok(Reply::Pong { .. })));
    setup.signal(ProcessRef::init(id), libc::SIGKILL).unwrap();
    let exited: Envelope<Response> = read_message(&mut stream).unwrap();
    assert_eq!(exited.id, 1);
    match exited.body {
        Response::Ok(Reply::Exited(status)) => assert_eq!(status.signal, Some(libc::SIGKILL)),
        other => panic!("expected an exit, got {other:?}"),
    }
    setup.delete(id, false).unwrap();
}

#[test]
fn garbage_json_gets_an_error_and_the_connection_goes_on() {
    let mut stream = connect();
    let mut frame = 9u32.to_be_bytes().to_vec();
    frame.extend_from_slice(b"{not json");
    let reply = raw_exchange(&mut stream, &frame);
    assert_eq!((reply.id, error_of(&reply)), (0, ErrorKind::MalformedFrame));
    let body = br#"{"v":1,"id":5,"body":{"type":"reformat","args":{}}}"#;
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    let reply = raw_exchange(&mut stream, &frame);
    assert_eq!((reply.id, error_of(&reply)), (5, ErrorKind::InvalidRequest));
    let pong = raw_exchange(
        &mut stream,
        &encode(&Envelope::new(6, Request::Ping)).unwrap(),
    );
    assert!(
        matches!(pong.body, Response::Ok(Reply::Pong { .. })),
        "{pong:?}"
    );
}

#[test]
fn unknown_version_is_refused_with_the_request_id() {
    let mut stream = connect();
    let body = br#"{"v":2,"id":77,"body":{"type":"ping"}}"#;
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    let reply = raw_exchange(&mut stream, &frame);
    assert_eq!(
        (reply.id, error_of(&reply)),
        (77, ErrorKind::UnsupportedVersion)
    );
}

#[test]
fn oversized_frame_is_refused_and_only_that_connection_closes() {
    let mut bystander = client();
    bystander.ping().unwrap();
    let mut stream = connect();
    let reply = raw_exchange(&mut stream, &(MAX_FRAME_LEN + 1).to_be_bytes());
    assert_eq!((reply.id, error_of(&reply)), (0, ErrorKind::FrameTooLarge));
    let mut rest = Vec::new();
    assert_eq!(
        stream.read_to_end(&mut rest).unwrap(),
        0,
        "the agent closed the connection"
    );
    bystander.ping().unwrap();
    client().ping().unwrap();
}

#[test]
fn invalid_requests_are_refused_with_the_field_named() {
    let mut client = client();
    let bad_id = client.create(CreateContainer {
        container_id: "../escape".into(),
        spec: spec_running(&["/bin/true"]),
        rootfs: test_agent().rootfs.to_str().unwrap().into(),
        stdio: StdioPipes::NONE,
        auto_remove: false,
    });
    let err = bad_id.unwrap_err();
    let error = err.agent_error().unwrap();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert!(error.message.contains("container_id"), "{error:?}");
    let relative = client.create(CreateContainer {
        container_id: "relative-root".into(),
        spec: spec_running(&["/bin/true"]),
        rootfs: "rootfs".into(),
        stdio: StdioPipes::NONE,
        auto_remove: false,
    });
    let err = relative.unwrap_err();
    assert!(
        err.agent_error().unwrap().message.contains("\"rootfs\""),
        "{err}"
    );
    assert_eq!(
        agent_error_kind(client.start("no-such")),
        ErrorKind::NotFound
    );
    assert_eq!(
        agent_error_kind(client.signal(ProcessRef::init("x"), 0)),
        ErrorKind::InvalidRequest
    );
    let huge = client.read_output(ProcessRef::init("x"), OutputStream::Stdout, MAX_FRAME_LEN);
    assert_eq!(agent_error_kind(huge), ErrorKind::InvalidRequest);
    // Nothing was left behind by the refused creates.
    let bundles = std::fs::read_dir(test_agent().socket.with_file_name("bundles"));
    let names: Vec<_> = bundles
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(!names.iter().any(|n| n == "relative-root"), "{names:?}");
}

#[test]
fn resize_terminal_is_validated_and_needs_a_terminal() {
    let mut client = client();
    let id = "resize-no-tty";
    create(&mut client, id, &["/bin/sleep", "100"], StdioPipes::NONE);
    let init = ProcessRef::init(id);
    for (rows, cols) in [(0, 80), (24, 0), (MAX_TERMINAL_DIMENSION + 1, 80)] {
        let err = client
            .resize_terminal(init.clone(), rows, cols)
            .unwrap_err();
        let error = err.agent_error().unwrap();
        assert_eq!(error.kind, ErrorKind::InvalidRequest, "{rows}x{cols}");
        assert!(
            error.message.contains(&format!("{rows}x{cols}")),
            "{error:?}"
        );
    }
    let bad_id = client.resize_terminal(ProcessRef::init("../x"), 24, 80);
    assert_eq!(agent_error_kind(bad_id), ErrorKind::InvalidRequest);
    let unknown = client.resize_terminal(ProcessRef::init("no-such"), 24, 80);
    assert_eq!(agent_error_kind(unknown), ErrorKind::NotFound);
    let unknown_exec = client.resize_terminal(ProcessRef::exec(id, "no-such"), 24, 80);
    assert_eq!(agent_error_kind(unknown_exec), ErrorKind::NotFound);
    // A process on pipes has no terminal to resize.
    let err = client.resize_terminal(init.clone(), 24, 80).unwrap_err();
    let error = err.agent_error().unwrap();
    assert_eq!(error.kind, ErrorKind::InvalidState);
    assert!(error.message.contains("no terminal"), "{error:?}");
    client.delete(id, true).unwrap();
}

#[test]
fn duplicate_container_id_is_refused() {
    let mut client = client();
    let id = "duplicate";
    create(&mut client, id, &["/bin/true"], StdioPipes::NONE);
    let again = client.create(CreateContainer {
        container_id: id.into(),
        spec: spec_running(&["/bin/true"]),
        rootfs: test_agent().rootfs.to_str().unwrap().into(),
        stdio: StdioPipes::NONE,
        auto_remove: false,
    });
    assert_eq!(agent_error_kind(again), ErrorKind::AlreadyExists);
    client.start(id).unwrap();
    assert_eq!(client.wait(ProcessRef::init(id)).unwrap().code, Some(0));
    client.delete(id, false).unwrap();
}

#[test]
fn oom_kill_is_reported_in_the_exit_and_as_an_event() {
    let mut client = client();
    let id = "oom-victim";
    let mut spec = spec_running(&["/bin/sleep", "1000"]);
    spec.set_annotations(Some([(OOM_ANNOTATION.to_string(), "1".to_string())].into()));
    client
        .create(CreateContainer {
            container_id: id.into(),
            spec,
            rootfs: test_agent().rootfs.to_str().unwrap().into(),
            stdio: StdioPipes::NONE,
            auto_remove: false,
        })
        .unwrap();
    client.start(id).unwrap();
    let mut watcher = self::client();
    let poller = std::thread::spawn(move || watcher.wait_oom_events(0, 15_000));
    client.signal(ProcessRef::init(id), libc::SIGKILL).unwrap();
    let status = client.wait(ProcessRef::init(id)).unwrap();
    assert!(status.oom_killed, "{status:?}");
    let events = poller.join().unwrap().unwrap();
    assert!(
        events.iter().any(|event| event.container_id == id),
        "{events:?}"
    );
    client.delete(id, false).unwrap();
}

#[test]
fn many_clients_at_once() {
    let threads: Vec<_> = (0..16)
        .map(|_| {
            std::thread::spawn(|| {
                let mut client = client();
                for _ in 0..25 {
                    client.ping().unwrap();
                }
                client.list().unwrap().len()
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn in_flight_limit_answers_busy() {
    let mut stream = connect();
    // 8 long polls fill the connection's limit (8 in this test agent); the 9th is refused.
    for id in 1..=9u64 {
        let poll = Request::WaitOomEvents {
            after: u64::MAX - 1,
            timeout_ms: 2_000,
        };
        stream
            .write_all(&encode(&Envelope::new(id, poll)).unwrap())
            .unwrap();
    }
    let first: Envelope<Response> = read_message(&mut stream).unwrap();
    assert_eq!((first.id, error_of(&first)), (9, ErrorKind::Busy));
    for _ in 1..=8 {
        let reply: Envelope<Response> = read_message(&mut stream).unwrap();
        assert!(
            matches!(reply.body, Response::Ok(Reply::OomEvents { .. })),
            "{reply:?}"
        );
    }
}
