//! Helpers of the CLI end-to-end tests (`--isolation process` on this host): a private run
//! and state directory per test, the busybox image imported into it, `condo` with a deadline.
#![allow(dead_code)]
// Test support: failing loudly is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Longest one condo command may take in these tests.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Why these tests cannot run here, if they cannot.
pub fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root (tenants need namespaces, mounts and loop devices)".into());
    }
    if !agent_binary().exists() {
        return Some(format!(
            "no condo-agent at {} (cargo build -p condo-guest-agent)",
            agent_binary().display()
        ));
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems.contains("erofs") && !filesystems.contains("ext4") {
        return Some("the kernel mounts neither erofs nor ext4".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control".into());
    }
    for tool in ["unshare", "busybox"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

/// Skips (returns None) with the reason printed, or gives a fresh environment.
pub fn env_or_skip(test: &str) -> Option<Env> {
    if let Some(reason) = missing_prerequisite() {
        eprintln!("SKIP {test}: {reason}");
        return None;
    }
    Some(Env::new(test))
}

/// condo-agent built next to condo.
pub fn agent_binary() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_condo")).with_file_name("condo-agent")
}

pub struct Env {
    pub dir: tempfile::TempDir,
    /// Unique per test and process: container names are host-wide (device cgroups).
    pub prefix: String,
}

impl Env {
    fn new(test: &str) -> Env {
        let dir = tempfile::Builder::new()
            .prefix(&format!("condo-cli-{test}-"))
            .tempdir()
            .unwrap();
        let env = Env {
            dir,
            prefix: format!("t{}-{}", std::process::id(), test.replace('_', "-")),
        };
        env.import_busybox();
        env
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn tenant_dir(&self, tenant: &str) -> PathBuf {
        self.run_dir().join("tenants").join(tenant)
    }

    /// A name unique to this test.
    pub fn name(&self, what: &str) -> String {
        let mut name = format!("{}-{what}", self.prefix);
        name.truncate(60);
        name
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_condo"));
        cmd.args(args)
            .env("CONDO_RUN_DIR", self.run_dir())
            .env("CONDO_STATE_DIR", self.dir.path().join("state"))
            .env("CONDO_AGENT", agent_binary())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs condo; panics when it does not finish within COMMAND_TIMEOUT.
    pub fn condo(&self, args: &[&str]) -> Output {
        run_with_deadline(self.command(args), args)
    }

    /// Runs condo with `input` on its stdin (a pipe, then its end).
    pub fn condo_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        run_with_input(self.command(args), args, Some(input))
    }

    /// Runs condo and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.condo(args);
        assert!(
            out.status.success(),
            "condo {args:?} failed ({:?}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs condo, expects failure with `code`; returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.condo(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "condo {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn import_busybox(&self) {
        let rootfs = self.dir.path().join("rootfs");
        for dir in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
            std::fs::create_dir_all(rootfs.join(dir)).unwrap();
        }
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap();
        std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "echo", "cat", "ls", "ps", "sleep", "true", "hostname", "touch", "kill", "id",
            "tty", "stty",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        self.ok(&[
            "image",
            "import",
            rootfs.to_str().unwrap(),
            "--name",
            "busybox",
        ]);
    }

    /// Creates a process-isolation tenant.
    pub fn tenant(&self, name: &str) {
        self.ok(&["tenant", "create", "--isolation", "process", name]);
    }

    /// The image file the store holds for busybox.
    pub fn image_file(&self) -> PathBuf {
        let out = self.ok(&["image", "ls"]);
        assert!(out.contains("busybox"), "{out}");
        let images = self.dir.path().join("state/images");
        std::fs::read_dir(&images)
            .unwrap()
            .flatten()
            .flat_map(|e| std::fs::read_dir(e.path()).into_iter().flatten().flatten())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "erofs" || x == "ext4"))
            .unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Whatever a failed test left: remove its tenants so no supervisor outlives it.
        if let Ok(entries) = std::fs::read_dir(self.run_dir().join("tenants")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let _ = self.condo(&["tenant", "rm", "--force", &name]);
            }
        }
    }
}

pub fn run_with_deadline(cmd: Command, what: &[&str]) -> Output {
    run_with_input(cmd, what, None)
}

/// Runs `cmd` with `input` (if any) as its stdin, waiting at most COMMAND_TIMEOUT.
pub fn run_with_input(mut cmd: Command, what: &[&str], input: Option<&[u8]>) -> Output {
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        use std::io::Write;
        stdin.write_all(input).unwrap();
    }
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(COMMAND_TIMEOUT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("condo {what:?} did not finish within {COMMAND_TIMEOUT:?}");
        }
    }
}

/// Live processes whose command line mentions `text`.
pub fn processes_mentioning(text: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains(text)
                .then(|| format!("{}: {cmdline}", e.file_name().to_string_lossy()))
        })
        .collect()
}

/// Loop devices backed by `file`.
pub fn loop_devices_of(file: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file"))
                .is_ok_and(|b| Path::new(b.trim()) == file)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Lines of /proc/self/mountinfo mentioning `text`.
pub fn mounts_mentioning(text: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(text))
        .map(str::to_owned)
        .collect()
}

/// condo running with a pseudo-terminal (made here with openpty) as its stdin, stdout and
/// stderr, as in an operator's terminal.
pub struct PtySession {
    master: std::fs::File,
    /// The terminal condo sees; kept to read its settings after condo ended.
    slave: Option<std::os::fd::OwnedFd>,
    pid: nix::unistd::Pid,
    /// condo's exit status, from the thread that waits for it.
    exited: mpsc::Receiver<std::process::ExitStatus>,
    finished: bool,
    seen: std::sync::Arc<(std::sync::Mutex<Vec<u8>>, std::sync::Condvar)>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Env {
    /// Starts condo `args` on a new terminal of `rows` x `cols`.
    pub fn condo_on_pty(&self, args: &[&str], rows: u16, cols: u16) -> PtySession {
        use std::io::Read;
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).unwrap();
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::from(pty.slave.try_clone().unwrap()))
            .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
            .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
        let mut child = cmd.spawn().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let (tx, exited) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait().unwrap());
        });
        let master = std::fs::File::from(pty.master);
        let seen =
            std::sync::Arc::new((std::sync::Mutex::new(Vec::new()), std::sync::Condvar::new()));
        let reader = {
            let (mut master, seen) = (master.try_clone().unwrap(), seen.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                // Until EIO: every holder of the slave closed it.
                while let Ok(n @ 1..) = master.read(&mut buf) {
                    seen.0.lock().unwrap().extend_from_slice(&buf[..n]);
                    seen.1.notify_all();
                }
            })
        };
        PtySession {
            master,
            slave: Some(pty.slave),
            pid,
            exited,
            finished: false,
            seen,
            reader: Some(reader),
        }
    }
}

impl PtySession {
    /// What the terminal showed so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.seen.0.lock().unwrap()).into_owned()
    }

    /// Waits (at most COMMAND_TIMEOUT) until the terminal shows `text`.
    pub fn wait_for(&self, text: &str) {
        let deadline = std::time::Instant::now() + COMMAND_TIMEOUT;
        let mut seen = self.seen.0.lock().unwrap();
        while !String::from_utf8_lossy(&seen).contains(text) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(
                !left.is_zero(),
                "the terminal never showed {text:?}; it showed {:?}",
                String::from_utf8_lossy(&seen)
            );
            seen = self.seen.1.wait_timeout(seen, left).unwrap().0;
        }
    }

    /// Types `bytes` on the terminal.
    pub fn type_in(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.master.write_all(bytes).unwrap();
    }

    /// Changes the window size of condo's terminal (as a terminal emulator does when its
    /// window is resized; condo is not its session leader, so the caller signals SIGWINCH).
    pub fn resize(&self, rows: u16, cols: u16) {
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        use std::os::fd::AsRawFd;
        // SAFETY: TIOCSWINSZ reads the valid winsize; the master is open.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }

    /// The settings of condo's terminal now.
    pub fn termios(&self) -> nix::sys::termios::Termios {
        nix::sys::termios::tcgetattr(self.slave.as_ref().unwrap()).unwrap()
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        self.pid
    }

    /// Waits (at most COMMAND_TIMEOUT) for condo to end: its exit status, the terminal's
    /// settings after it and everything the terminal showed.
    pub fn finish(mut self) -> (std::process::ExitStatus, nix::sys::termios::Termios, String) {
        let status = self
            .exited
            .recv_timeout(COMMAND_TIMEOUT)
            .unwrap_or_else(|_| {
                panic!(
                    "condo on the terminal did not end within {COMMAND_TIMEOUT:?}; it showed {:?}",
                    self.output()
                )
            });
        self.finished = true;
        let after = self.termios();
        // Our last handle on the slave: the reader then sees EIO and ends.
        drop(self.slave.take());
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        (status, after, self.output())
    }
}

impl Drop for PtySession {
    /// A failed test still ends its condo.
    fn drop(&mut self) {
        if !self.finished && self.exited.try_recv().is_err() {
            let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}
