//! End to end through the `condo` binary with `--isolation process` (root, this host): images,
//! tenants, containers, isolation between tenants, removal that leaves nothing, a supervisor
//! that dies, bad input.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod cli_support;

use std::time::{Duration, Instant};

use cli_support::{env_or_skip, loop_devices_of, mounts_mentioning, processes_mentioning};

#[test]
fn run_exec_logs_stop_ps_rm() {
    let Some(env) = env_or_skip("lifecycle") else {
        return;
    };
    let tenant = "life";
    env.tenant(tenant);
    // Foreground: output and the exit code pass through; signals are 128+N.
    let out = env.ok(&[
        "run", "--tenant", tenant, "--rm", "busybox", "echo", "hello", "world",
    ]);
    assert_eq!(out, "hello world\n");
    env.fails(
        &[
            "run", "--tenant", tenant, "--rm", "busybox", "sh", "-c", "exit 3",
        ],
        3,
    );
    let out = env.ok(&[
        "run",
        "--tenant",
        tenant,
        "--rm",
        "-e",
        "GREETING=hi",
        "-w",
        "/tmp",
        "-u",
        "1000:1000",
        "busybox",
        "sh",
        "-c",
        "echo $GREETING $(pwd) $(id -u):$(id -g)",
    ]);
    assert_eq!(out, "hi /tmp 1000:1000\n");
    // The root filesystem is writable (overlay) unless --read-only.
    env.ok(&[
        "run",
        "--tenant",
        tenant,
        "--rm",
        "busybox",
        "touch",
        "/new-file",
    ]);
    env.fails(
        &[
            "run",
            "--tenant",
            tenant,
            "--rm",
            "--read-only",
            "busybox",
            "touch",
            "/new-file",
        ],
        1,
    );

    // Detached: logs, exec, ps, stop, rm.
    let name = env.name("web");
    let script = "echo started; echo oops >&2; while true; do sleep 1; done";
    assert_eq!(
        env.ok(&["run", "-d", "--tenant", tenant, "--name", &name, "busybox", "sh", "-c", script]),
        format!("{name}\n")
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = env.condo(&["logs", &name]);
        if String::from_utf8_lossy(&out.stdout).contains("started")
            && String::from_utf8_lossy(&out.stderr).contains("oops")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no logs of {name}: {out:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(env.ok(&["exec", &name, "hostname"]), format!("{name}\n"));
    env.fails(&["exec", &name, "sh", "-c", "exit 5"], 5);
    // An exec'd process is not its pid namespace's init: it can die of a signal (128+N).
    env.fails(&["exec", &name, "sh", "-c", "kill -9 $$"], 137);
    let ps = env.ok(&["ps"]);
    assert!(ps.contains(&name) && ps.contains("running"), "{ps}");
    let out = env.ok(&["stop", "-t", "1", &name]);
    assert!(
        out.contains("SIGKILL"),
        "sh as PID 1 ignores SIGTERM, so the stop escalates: {out}"
    );
    assert!(!env.ok(&["ps"]).contains(&name));
    let ps: serde_json::Value = serde_json::from_str(&env.ok(&["ps", "-a", "--json"])).unwrap();
    assert_eq!(ps[0]["name"], name.as_str());
    assert_eq!(ps[0]["running"], false);
    let inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "--json", &name])).unwrap();
    assert_eq!(inspect["tenant"]["name"], tenant);
    assert_eq!(inspect["image"]["reference"], "busybox");
    // Logs outlive the container's end.
    assert!(env.ok(&["logs", &name]).contains("started"));
    env.ok(&["rm", &name]);
    assert_eq!(env.ok(&["ps", "-a", "--json"]).trim(), "[]");
    env.ok(&["tenant", "rm", tenant]);
}

#[test]
fn detached_rm_containers_are_removed_when_they_exit() {
    let Some(env) = env_or_skip("detached-rm") else {
        return;
    };
    let tenant = "auto";
    env.tenant(tenant);
    let gone = |name: &str| {
        let ps = env.ok(&["ps", "-a", "--json"]);
        assert!(!ps.contains(name), "ps -a still lists {name}: {ps}");
        let err = env.fails(&["logs", name], 1);
        assert!(err.contains(&format!("no container {name:?}")), "{err}");
    };
    // Ends by itself: `condo wait` is the bounded wait (it returns once the agent removed it,
    // or at once with the remembered code when that already happened).
    let quick = env.name("quick");
    let script = "echo bye; exit 4";
    assert_eq!(
        env.ok(&[
            "run", "-d", "--rm", "--tenant", tenant, "--name", &quick, "busybox", "sh", "-c",
            script
        ]),
        format!("{quick}\n")
    );
    assert_eq!(env.ok(&["wait", &quick]), "4\n");
    gone(&quick);
    // Its name is free again.
    env.ok(&[
        "run", "--rm", "--tenant", tenant, "--name", &quick, "busybox", "true",
    ]);
    // Stopped: `condo stop` returns once it is removed.
    let sleeper = env.name("sleeper");
    env.ok(&[
        "run", "-d", "--rm", "--tenant", tenant, "--name", &sleeper, "busybox", "sleep", "1000",
    ]);
    let ps = env.ok(&["ps"]);
    assert!(ps.contains(&sleeper) && ps.contains("running"), "{ps}");
    let state = walkdir_names(&env.tenant_dir(tenant));
    assert!(
        state.iter().any(|path| path.contains(&sleeper)),
        "no state of {sleeper} while it runs: {state:?}"
    );
    let out = env.ok(&["stop", "-t", "1", &sleeper]);
    assert!(out.contains("killed (SIGKILL)"), "{out}");
    gone(&sleeper);
    let err = env.fails(&["wait", &sleeper], 1);
    assert!(err.contains(&format!("no container {sleeper:?}")), "{err}");
    assert_eq!(env.ok(&["ps", "-a", "--json"]).trim(), "[]");
    // Nothing of them is left in the tenant: its agent's bundles and runtime state are empty.
    let leftovers: Vec<_> = walkdir_names(&env.tenant_dir(tenant))
        .into_iter()
        .filter(|path| path.contains(&quick) || path.contains(&sleeper))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new());
    env.ok(&["tenant", "rm", tenant]);
}

/// Every path under `dir`, as text.
fn walkdir_names(dir: &std::path::Path) -> Vec<String> {
    let mut paths = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(path.clone());
            }
            paths.push(path.to_string_lossy().into_owned());
        }
    }
    paths
}

#[test]
fn tty_gives_the_process_a_terminal_and_restores_ours() {
    use nix::sys::termios::LocalFlags;
    use std::os::unix::process::ExitStatusExt;
    let Some(env) = env_or_skip("tty") else {
        return;
    };
    let tenant = "term";
    env.tenant(tenant);
    let raw = |t: &nix::sys::termios::Termios| {
        !t.local_flags.contains(LocalFlags::ICANON) && !t.local_flags.contains(LocalFlags::ECHO)
    };
    // -t: stdin and stdout are the container's own pty, of our window's size.
    let script = "tty; [ -t 0 ] && [ -t 1 ] && echo both-terminals; stty size";
    let session = env.condo_on_pty(
        &[
            "run", "-t", "--rm", "--tenant", tenant, "busybox", "sh", "-c", script,
        ],
        33,
        101,
    );
    let (status, _, shown) = session.finish();
    assert_eq!(status.code(), Some(0), "{shown}");
    assert!(shown.contains("/dev/pts/"), "{shown}");
    assert!(shown.contains("both-terminals"), "{shown:?}");
    assert!(shown.contains("33 101"), "{shown}");
    // -it: ours is raw while attached (keys go to the container's terminal), then restored.
    let mut session = env.condo_on_pty(
        &["run", "-it", "--rm", "--tenant", tenant, "busybox", "sh"],
        24,
        80,
    );
    session.wait_for("# ");
    assert!(raw(&session.termios()), "not raw while attached");
    // Our window grows: condo passes the new size on to the container's terminal.
    resize_and_expect(&mut session, 50, 132);
    session.type_in(b"echo $((6*7)); exit 3\r");
    let (status, after, shown) = session.finish();
    assert_eq!(status.code(), Some(3), "{shown}");
    assert!(shown.contains("42\r\n"), "{shown}");
    assert!(!raw(&after), "the terminal was left raw");
    // Also when condo is killed while attached.
    let session = env.condo_on_pty(
        &[
            "run",
            "-it",
            "--rm",
            "--name",
            &env.name("killed"),
            "--tenant",
            tenant,
            "busybox",
            "sh",
        ],
        24,
        80,
    );
    session.wait_for("# ");
    assert!(raw(&session.termios()));
    nix::sys::signal::kill(session.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
    let (status, after, shown) = session.finish();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{shown}");
    assert!(!raw(&after), "SIGTERM left the terminal raw");
    env.ok(&["rm", "-f", &env.name("killed")]);
    // Piped input to a terminal: its end reaches the reader as the end-of-file key. cat keeps
    // the terminal canonical; a shell switching to raw mode for line editing may see the key
    // arrive in the canonical window in between, where the line discipline turns it into NUL.
    let out = env.condo_with_input(
        &[
            "run", "-i", "-t", "--rm", "--tenant", tenant, "busybox", "cat",
        ],
        b"piped-line\n",
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown:?}");
    assert!(shown.contains("piped-line\r\n"), "{shown:?}");
    // exec -t into a detached container.
    let name = env.name("detached");
    env.ok(&[
        "run", "-d", "--tenant", tenant, "--name", &name, "busybox", "sleep", "1000",
    ]);
    let script = "tty; [ -t 0 ] && echo yes";
    let session = env.condo_on_pty(&["exec", "-t", &name, "sh", "-c", script], 24, 80);
    let (status, _, shown) = session.finish();
    assert_eq!(status.code(), Some(0), "{shown}");
    assert!(
        shown.contains("/dev/pts/") && shown.contains("yes"),
        "{shown:?}"
    );
    // exec -it: its terminal follows our window too.
    let mut session = env.condo_on_pty(&["exec", "-it", &name, "sh"], 24, 80);
    session.wait_for("# ");
    resize_and_expect(&mut session, 40, 120);
    session.type_in(b"exit 5\r");
    let (status, _, shown) = session.finish();
    assert_eq!(status.code(), Some(5), "{shown}");
    env.ok(&["rm", "-f", &name]);
    // A detached one's logs are its terminal's one stream (stdout and stderr together).
    let script = "echo to-out; echo to-err >&2";
    env.ok(&[
        "run", "-d", "-t", "--tenant", tenant, "--name", &name, "busybox", "sh", "-c", script,
    ]);
    assert_eq!(env.ok(&["wait", &name]), "0\n");
    let logs = env.ok(&["logs", &name]);
    assert_eq!(logs, "to-out\r\nto-err\r\n");
    env.ok(&["rm", &name]);
    env.ok(&["tenant", "rm", tenant]);
}

/// Resizes condo's terminal, signals condo as the kernel would its session, and checks with
/// `stty size` in the container's shell that its terminal has the new size.
fn resize_and_expect(session: &mut cli_support::PtySession, rows: u16, cols: u16) {
    session.resize(rows, cols);
    nix::sys::signal::kill(session.pid(), nix::sys::signal::Signal::SIGWINCH).unwrap();
    let expected = format!("{rows} {cols}\r\n");
    // The resize and the typed line reach the agent on separate connections, so a line may
    // overtake the resize: ask again at each prompt, a bounded number of times.
    for attempt in 1..=5 {
        session.type_in(format!("stty size; echo asked-$((0+{attempt}))\r").as_bytes());
        session.wait_for(&format!("asked-{attempt}\r\n"));
        if session.output().contains(&expected) {
            return;
        }
    }
    panic!(
        "the container's terminal never became {rows}x{cols}: {}",
        session.output()
    );
}

#[test]
fn tenants_cannot_see_each_other() {
    let Some(env) = env_or_skip("isolation") else {
        return;
    };
    env.tenant("tenant-a");
    env.tenant("tenant-b");
    let a = env.name("a");
    env.ok(&[
        "run",
        "-d",
        "--tenant",
        "tenant-a",
        "--name",
        &a,
        "busybox",
        "sh",
        "-c",
        "echo secret > /tmp/secret; exec sleep 1000",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.condo(&["exec", &a, "cat", "/tmp/secret"]).stdout != b"secret\n" {
        assert!(
            Instant::now() < deadline,
            "container {a} never wrote its file"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Tenant B sees only its own processes and none of A's files.
    let out = env.ok(&[
        "run",
        "--rm",
        "--tenant",
        "tenant-b",
        "busybox",
        "sh",
        "-c",
        "ps -o pid,args; ls /tmp",
    ]);
    assert!(
        !out.contains("sleep 1000"),
        "tenant B sees A's process: {out}"
    );
    assert!(!out.contains("secret"), "tenant B sees A's file: {out}");
    assert_eq!(
        out.lines().filter(|l| !l.trim().is_empty()).count(),
        3,
        "{out}"
    );
    // Nor does another container of A (each container has its own overlay and pid namespace).
    let out = env.ok(&[
        "run",
        "--rm",
        "--tenant",
        "tenant-a",
        "busybox",
        "sh",
        "-c",
        "ls /tmp; ps -o args",
    ]);
    assert!(
        !out.contains("secret") && !out.contains("sleep 1000"),
        "{out}"
    );
    // A container name lives in one tenant: B cannot reuse it.
    let err = env.fails(
        &[
            "run", "--tenant", "tenant-b", "--name", &a, "busybox", "true",
        ],
        125,
    );
    assert!(err.contains("already in use"), "{err}");
    env.ok(&["tenant", "rm", "--force", "tenant-a", "tenant-b"]);
}

#[test]
fn tenant_rm_leaves_nothing_behind() {
    let Some(env) = env_or_skip("removal") else {
        return;
    };
    env.tenant("gone");
    let name = env.name("sleeper");
    env.ok(&[
        "run", "-d", "--tenant", "gone", "--name", &name, "busybox", "sleep", "1000",
    ]);
    let image = env.image_file();
    let dir = env.tenant_dir("gone");
    let dir_text = dir.to_string_lossy().into_owned();
    assert!(!processes_mentioning(&dir_text).is_empty());
    let cgroup = std::path::PathBuf::from("/sys/fs/cgroup/devices/condo").join(&name);
    // Refused while a container runs, unless forced.
    let err = env.fails(&["tenant", "rm", "gone"], 1);
    assert!(err.contains("running containers"), "{err}");
    env.ok(&["tenant", "rm", "--force", "gone"]);
    assert!(!dir.exists(), "the run directory remains");
    assert_eq!(processes_mentioning(&dir_text), Vec::<String>::new());
    assert_eq!(
        processes_mentioning("sleep 1000")
            .iter()
            .filter(|p| p.contains(&dir_text))
            .count(),
        0
    );
    assert_eq!(
        loop_devices_of(&image),
        Vec::<String>::new(),
        "a loop device still holds the image"
    );
    assert_eq!(mounts_mentioning(&dir_text), Vec::<String>::new());
    assert!(!cgroup.exists(), "the container's device cgroup remains");
    assert!(env.ok(&["tenant", "ls", "--json"]).trim() == "[]");
}

#[test]
fn a_dead_supervisor_is_reported_and_cleaned_up() {
    let Some(env) = env_or_skip("dead") else {
        return;
    };
    env.tenant("doomed");
    let name = env.name("victim");
    env.ok(&[
        "run", "-d", "--tenant", "doomed", "--name", &name, "busybox", "sleep", "1000",
    ]);
    // vmm.pid: "PID START_TIME".
    let pid: i32 = std::fs::read_to_string(env.tenant_dir("doomed").join("vmm.pid"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ls: serde_json::Value =
            serde_json::from_str(&env.ok(&["tenant", "ls", "--json"])).unwrap();
        if ls[0]["state"] == "dead" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed supervisor is not reported dead: {ls}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = env.fails(&["exec", &name, "true"], 125);
    assert!(err.contains("dead"), "{err}");
    let err = env.fails(&["tenant", "rm", "doomed"], 0);
    assert!(err.contains("was dead"), "{err}");
    let dir = env.tenant_dir("doomed");
    assert!(!dir.exists());
    assert_eq!(
        processes_mentioning(&dir.to_string_lossy()),
        Vec::<String>::new()
    );
    assert!(!std::path::Path::new("/sys/fs/cgroup/devices/condo")
        .join(&name)
        .exists());
}

#[test]
fn bad_input_gets_a_clear_error_and_leaves_nothing() {
    let Some(env) = env_or_skip("bad-input") else {
        return;
    };
    let tenants = || {
        env.run_dir()
            .join("tenants")
            .read_dir()
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &[
                "run",
                "--isolation",
                "process",
                "--tenant",
                "x1",
                "nosuchimage",
                "true",
            ],
            125,
            "unknown image \"nosuchimage\"",
        ),
        (
            &[
                "run",
                "--isolation",
                "process",
                "--tenant",
                "Bad_Name",
                "busybox",
                "true",
            ],
            125,
            "invalid tenant name \"Bad_Name\"",
        ),
        (
            &[
                "run",
                "--isolation",
                "process",
                "--tenant",
                "x1",
                "--memory",
                "12q",
                "busybox",
                "true",
            ],
            125,
            "invalid size \"12q\"",
        ),
        (
            &[
                "run",
                "--isolation",
                "process",
                "--tenant",
                "x1",
                "--name=.bad",
                "busybox",
                "true",
            ],
            125,
            "invalid container name \".bad\"",
        ),
        (
            &[
                "tenant",
                "create",
                "--isolation",
                "process",
                "--memory",
                "1k",
                "x1",
            ],
            1,
            "invalid --memory \"1k\"",
        ),
        (
            &["tenant", "create", "--console-limit", "1k", "x1"],
            1,
            "invalid --console-limit \"1k\": must be at least 4096 bytes",
        ),
        (
            &[
                "tenant",
                "create",
                "--isolation",
                "process",
                "--console-limit",
                "64k",
                "x1",
            ],
            1,
            "--console-limit needs --isolation vm",
        ),
        (
            &[
                "tenant",
                "create",
                "--isolation",
                "process",
                &"a".repeat(65),
            ],
            1,
            "invalid tenant name",
        ),
        (
            &["exec", "nosuchcontainer", "true"],
            125,
            "no container \"nosuchcontainer\"",
        ),
        (
            &["logs", "--tenant", "nosuchtenant", "c"],
            1,
            "no tenant \"nosuchtenant\"",
        ),
        (
            &["tenant", "rm", "nosuchtenant"],
            1,
            "no tenant \"nosuchtenant\"",
        ),
        (&["kill", "-s", "NOPE", "c"], 1, "invalid signal \"NOPE\""),
    ];
    for (args, code, message) in cases {
        let err = env.fails(args, *code);
        assert!(
            err.contains(message),
            "condo {args:?}: expected {message:?} in {err:?}"
        );
        assert_eq!(tenants(), 0, "condo {args:?} left a tenant behind");
    }
    // Duplicates: a tenant, a container name.
    env.tenant("dup");
    let err = env.fails(&["tenant", "create", "--isolation", "process", "dup"], 1);
    assert!(err.contains("tenant \"dup\" already exists"), "{err}");
    let name = env.name("one");
    env.ok(&["run", "--tenant", "dup", "--name", &name, "busybox", "true"]);
    let err = env.fails(
        &["run", "--tenant", "dup", "--name", &name, "busybox", "true"],
        125,
    );
    assert!(err.contains("already in use"), "{err}");
    // An existing tenant keeps its isolation.
    let err = env.fails(
        &[
            "run",
            "--tenant",
            "dup",
            "--isolation",
            "vm",
            "busybox",
            "true",
        ],
        125,
    );
    assert!(err.contains("exists with --isolation process"), "{err}");
    env.ok(&["rm", &name]);
    env.ok(&["tenant", "rm", "dup"]);
}
