//! Harness for the kernel and end-to-end tests (and for `cargo xtask demo` / `bench`): network
//! namespaces, bpf pin dirs, child processes, the real broker, the daemon and the real clients.
//!
//! Layout:
//! - paths: [`repo_root`], [`peers`], [`interceptor_bin`]
//! - [`require_kernel`]: kernel tests fail loudly without privileges, unless
//!   `INTERCEPTOR_SKIP_KERNEL_TESTS=1`
//! - [`Netns`]: a network namespace named `<prefix>-<pid>-<n>`, removed on drop; stale ones of
//!   dead processes are swept when a new one is made. Runs commands (`nsenter`) and closures
//!   ([`Netns::run`]: a thread that entered the namespace; sockets made there stay there).
//! - [`PinDir`], [`WorkDir`]: a unique bpf pin dir / scratch dir per test
//! - [`Proc`]: a child process, output in a log file, killed on drop, its log printed when the
//!   test fails
//! - [`start_tansu`], [`start_interceptor`] / [`Interceptor`], [`run_client`], [`kcat`]
//!
//! Everything fails with a message that carries the relevant log; tests unwrap.

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    fs,
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpStream},
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

pub mod idp;
pub mod mqtt;
pub mod postgres;

// ---------------------------------------------------------------------------------------------
// Paths

/// The repository root: `$INTERCEPTOR_REPO`, else the parent of this crate.
pub fn repo_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("INTERCEPTOR_REPO") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository")
        .to_path_buf()
}

/// The programs `cargo xtask deps` installs under `.peers/`.
#[derive(Debug, Clone)]
pub struct Peers {
    /// The venv's python, with confluent-kafka and kafka-python.
    pub python: PathBuf,
    /// The broker (memory storage, no SASL, topics created on produce).
    pub tansu: PathBuf,
    /// The broker built with SQLite storage and SCRAM (`--authentication`).
    pub tansu_sasl: PathBuf,
    /// kcat with the venv's librdkafka.
    pub kcat: PathBuf,
    /// `tests/clients/`: the Python client scripts.
    pub clients: PathBuf,
}

pub fn peers() -> Peers {
    let root = repo_root();
    let dir = std::env::var_os("INTERCEPTOR_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".peers"));
    Peers {
        python: dir.join("venv/bin/python"),
        tansu: dir.join("bin/tansu"),
        tansu_sasl: dir.join("bin/tansu-sasl"),
        kcat: dir.join("bin/kcat"),
        clients: root.join("tests/clients"),
    }
}

fn check_peer(path: &Path) -> Result<()> {
    if !path.exists() {
        bail!(
            "{} is missing: run `cargo xtask deps` first",
            path.display()
        );
    }
    Ok(())
}

/// The daemon: `$INTERCEPTOR_BIN`, else `target/debug/interceptor` (built by `cargo xtask
/// build`, which puts the kernel object next to it).
pub fn interceptor_bin() -> PathBuf {
    std::env::var_os("INTERCEPTOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug/interceptor"))
}

// ---------------------------------------------------------------------------------------------
// Privileges

/// Whether kernel tests run. `INTERCEPTOR_SKIP_KERNEL_TESTS=1` skips them (returns false, says
/// so); otherwise a process without the privileges they need panics: a kernel test never
/// passes by not running.
pub fn require_kernel() -> bool {
    if std::env::var("INTERCEPTOR_SKIP_KERNEL_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: INTERCEPTOR_SKIP_KERNEL_TESTS=1");
        return false;
    }
    // CAP_NET_ADMIN (12), CAP_SYS_ADMIN (21), CAP_BPF (39) in the effective set.
    let caps = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    let need = [
        (12, "CAP_NET_ADMIN"),
        (21, "CAP_SYS_ADMIN"),
        (39, "CAP_BPF"),
    ];
    let missing: Vec<&str> = need
        .iter()
        .filter(|(bit, _)| caps & (1u64 << bit) == 0)
        .map(|(_, name)| *name)
        .collect();
    assert!(
        missing.is_empty(),
        "kernel tests need root (missing {}); run them as root, or set \
         INTERCEPTOR_SKIP_KERNEL_TESTS=1 to skip them explicitly",
        missing.join(", ")
    );
    true
}

// ---------------------------------------------------------------------------------------------
// Unique names, sweeping what dead test processes left

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// `<prefix>-<pid>-<n>`, unique within this process and across live processes.
fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The pid in a `<prefix>-<pid>-<n>` name, if the name has that shape.
fn owner_pid(prefix: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Names in `dir` that a dead process of this prefix left behind.
fn stale_entries(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| owner_pid(prefix, n))
                .is_some_and(|pid| !pid_alive(pid))
        })
        .map(|e| e.path())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Network namespaces

const NETNS_DIR: &str = "/run/netns";

/// A network namespace with `lo` up; deleted on drop (also when the test panics).
#[derive(Debug)]
pub struct Netns {
    name: String,
    /// A fixed name (the demo's) is deleted on drop too, but not swept.
    path: PathBuf,
}

impl Netns {
    /// `ip netns add <prefix>-<pid>-<n>`, after removing namespaces of this prefix whose
    /// process is gone.
    pub fn new(prefix: &str) -> Result<Netns> {
        sweep_netns(prefix);
        Self::named(&unique_name(prefix))
    }

    /// A namespace with exactly this name; an existing one of that name is deleted first.
    pub fn named(name: &str) -> Result<Netns> {
        let path = Path::new(NETNS_DIR).join(name);
        if path.exists() {
            let _ = ip(&["netns", "delete", name]);
        }
        ip(&["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
            path,
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `nsenter --net=/run/netns/<name> -- program`: the program runs in the namespace with
    /// the host's mount namespace (so /sys/fs/bpf pins are the host's).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        netns_command(&self.path, program)
    }

    /// Runs `f` on a thread that entered the namespace and returns its result. Sockets made in
    /// `f` belong to the namespace for good and can be used from any thread afterwards.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path.clone();
        std::thread::scope(|s| {
            s.spawn(move || {
                enter_netns(&path).expect("entering the network namespace");
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// Spawns a long-lived thread inside the namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = self.path.clone();
        std::thread::spawn(move || {
            enter_netns(&path).expect("entering the network namespace");
            f()
        })
    }

    /// A TCP connection made from inside the namespace.
    pub fn connect(&self, addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
        self.run(|| TcpStream::connect_timeout(&addr, timeout))
    }

    /// Waits until something in the namespace accepts TCP connections on `addr`.
    pub fn wait_port(&self, addr: SocketAddr, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.connect(addr, Duration::from_millis(500)) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    bail!(
                        "{addr} in netns {} did not accept within {timeout:?}: {e}",
                        self.name
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "delete", &self.name]) {
            eprintln!("warning: deleting netns {}: {e:#}", self.name);
        }
    }
}

/// `nsenter --net=PATH -- program`.
pub fn netns_command(netns_path: &Path, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns_path.display()))
        .arg("--")
        .arg(program);
    cmd
}

/// Moves the calling thread into the namespace at `path` (only this thread).
pub fn enter_netns(path: &Path) -> Result<()> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: setns on a valid fd; CLONE_NEWNET affects only the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setns({})", path.display()));
    }
    Ok(())
}

fn sweep_netns(prefix: &str) {
    for path in stale_entries(Path::new(NETNS_DIR), prefix) {
        if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            eprintln!("removing stale netns {name}");
            let _ = ip(&["netns", "delete", name]);
        }
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (iproute2; `cargo xtask deps` installs it)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Pin dirs and scratch dirs

const BPF_FS: &str = "/sys/fs/bpf";

/// A unique directory under /sys/fs/bpf for one daemon's pins (`<prefix>-<pid>-<n>`, not
/// created: the daemon creates it); removed with everything in it on drop.
#[derive(Debug)]
pub struct PinDir {
    path: PathBuf,
}

impl PinDir {
    pub fn new(prefix: &str) -> PinDir {
        for stale in stale_entries(Path::new(BPF_FS), prefix) {
            eprintln!("removing stale pin dir {}", stale.display());
            let _ = fs::remove_dir_all(&stale);
        }
        PinDir {
            path: Path::new(BPF_FS).join(unique_name(prefix)),
        }
    }

    /// A fixed path (the demo's).
    pub fn at(path: impl Into<PathBuf>) -> PinDir {
        PinDir { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if self.path.exists() {
            if let Err(e) = fs::remove_dir_all(&self.path) {
                eprintln!("warning: removing {}: {e}", self.path.display());
            }
        }
    }
}

/// A scratch directory (config, logs, audit file) under the system temp dir; removed on drop
/// when the test passed, kept (and named on stderr) when it failed.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    pub fn new(name: &str) -> Result<WorkDir> {
        let path = std::env::temp_dir()
            .join("interceptor-e2e")
            .join(unique_name(name));
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(WorkDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl AsRef<Path> for WorkDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// A child process whose stdout and stderr go to a log file. Killed (SIGKILL, by pid) on drop
/// if still running; when the test is failing, the tail of its log is printed.
///
/// The child also gets SIGKILL if the thread that spawned it ends (PR_SET_PDEATHSIG), so a
/// killed test run leaves no broker or daemon behind: spawn it from a thread that outlives it.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: std::process::Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Proc> {
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        // SAFETY: prctl and setpgid are async-signal-safe; nothing else runs between fork and
        // exec. Its own process group keeps a terminal's Ctrl-C away from it: whoever started
        // it stops it, in order.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::setpgid(0, 0);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything it wrote so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of its log, framed with its name.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log();
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        format!(
            "--- {} (pid {}) log {}, last {} lines ---\n{}\n--- end of {} log ---",
            self.name,
            self.pid(),
            self.log.display(),
            all.len() - from,
            all[from..].join("\n"),
            self.name
        )
    }

    /// Whether it is still running (reaps it if not).
    pub fn is_running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.status = Some(status);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Whether it is still running, without reaping it (works through a shared reference).
    pub fn alive(&self) -> bool {
        if self.status.is_some() {
            return false;
        }
        // /proc/<pid>/stat: "pid (comm) S ...": anything but a zombie (Z) or dead (X) runs.
        fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.trim_start().chars().next())
            })
            .is_some_and(|state| state != 'Z' && state != 'X')
    }

    /// Its exit status, once it has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.is_running();
        self.status
    }

    /// Waits until its log contains `needle`; fails (with the log) if it exits or time runs out.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return Ok(());
            }
            if !self.is_running() {
                bail!(
                    "{} exited ({:?}) before logging {needle:?}\n{}",
                    self.name,
                    self.status,
                    self.log_tail(80)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not log {needle:?} within {timeout:?}\n{}",
                    self.name,
                    self.log_tail(80)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits for it to exit.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{} still running after {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&mut self, signal: libc::c_int) {
        if self.is_running() {
            // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
            unsafe {
                libc::kill(self.pid() as libc::pid_t, signal);
            }
        }
    }

    /// SIGTERM, then waits up to `timeout` for a clean exit (SIGKILL after that, and an error).
    pub fn stop(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.signal(libc::SIGTERM);
        match self.wait(timeout) {
            Ok(status) => Ok(status),
            Err(_) => {
                self.kill();
                bail!(
                    "{} ignored SIGTERM for {timeout:?}; killed\n{}",
                    self.name,
                    self.log_tail(40)
                )
            }
        }
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.wait(Duration::from_secs(10));
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(60));
        }
    }
}

/// Runs `cmd` to completion with a timeout (killing it after), stdout and stderr kept apart.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Finished> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let mut out_pipe = child.stdout.take().expect("piped");
    let mut err_pipe = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out_pipe, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err_pipe, &mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    if timed_out {
        bail!(
            "{what} timed out after {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            tail(&stdout, 30),
            tail(&stderr, 60)
        );
    }
    Ok(Finished {
        status,
        stdout,
        stderr,
    })
}

pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// The broker

/// tansu (memory storage) listening on `addr` in the namespace, advertising `addr`; returns
/// once the port accepts connections.
pub fn start_tansu(ns: &Netns, addr: SocketAddr, work: impl AsRef<Path>) -> Result<Proc> {
    let work = work.as_ref();
    let tansu = peers().tansu;
    check_peer(&tansu)?;
    let url = format!("tcp://{addr}");
    let cmd = tansu_broker_command(ns, &tansu, &url, "memory://tansu/", work);
    let log = work.join(format!("tansu-{}.log", addr.port()));
    let proc = Proc::spawn("tansu", cmd, &log)?;
    accepting(ns, addr, proc, "tansu", Duration::from_secs(20))
}

/// `tansu broker` on `url` with this storage, run in `work`, ignoring tansu's env settings.
fn tansu_broker_command(
    ns: &Netns,
    tansu: &Path,
    url: &str,
    storage: &str,
    work: &Path,
) -> Command {
    tansu_broker_advertising(ns, tansu, (url, url), storage, work)
}

/// `(listener, advertised)` URLs.
fn tansu_broker_advertising(
    ns: &Netns,
    tansu: &Path,
    (url, advertised): (&str, &str),
    storage: &str,
    work: &Path,
) -> Command {
    let mut cmd = ns.command(tansu);
    cmd.arg("broker")
        .args(["--listener-url", url])
        .args(["--advertised-listener-url", advertised])
        .args(["--storage-engine", storage])
        .current_dir(work);
    for var in [
        "CLUSTER_ID",
        "LISTENER_URL",
        "ADVERTISED_LISTENER_URL",
        "STORAGE_ENGINE",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// tansu with in-memory storage listening on `listen` but telling clients to connect to
/// `advertised` (a proxy in front of it, in listen mode).
pub fn start_tansu_advertised(
    ns: &Netns,
    listen: SocketAddr,
    advertised: SocketAddr,
    work: impl AsRef<Path>,
) -> Result<Proc> {
    let work = work.as_ref();
    let tansu = peers().tansu;
    check_peer(&tansu)?;
    let cmd = tansu_broker_advertising(
        ns,
        &tansu,
        (&format!("tcp://{listen}"), &format!("tcp://{advertised}")),
        "memory://tansu/",
        work,
    );
    let log = work.join(format!("tansu-{}.log", listen.port()));
    let proc = Proc::spawn("tansu", cmd, &log)?;
    accepting(ns, listen, proc, "tansu", Duration::from_secs(30))
}

/// The records of `topic` as the SQLite-backed broker (`start_tansu_scram`) stored them, read
/// from its database file in `work` without any client or proxy in between:
/// `[{partition, offset, key, value, headers}]`.
pub fn broker_storage(work: impl AsRef<Path>, topic: &str) -> Result<Vec<Value>> {
    let peers = peers();
    check_peer(&peers.python)?;
    let db = work.as_ref().join("tansu.db");
    let mut cmd = Command::new(&peers.python);
    cmd.arg(peers.clients.join("broker_storage.py"))
        .arg(&db)
        .arg(topic);
    let done = run_with_timeout(cmd, Duration::from_secs(60))?;
    if !done.status.success() {
        bail!(
            "reading {}: {}\n{}",
            db.display(),
            done.status,
            tail(&done.stderr, 20)
        );
    }
    let v: Value = serde_json::from_str(done.stdout.trim()).context("broker_storage.py output")?;
    Ok(v["records"].as_array().cloned().unwrap_or_default())
}

/// Returns `proc` once `addr` accepts connections; fails with its log if it exits or times out.
pub(crate) fn accepting(
    ns: &Netns,
    addr: SocketAddr,
    mut proc: Proc,
    what: &str,
    timeout: Duration,
) -> Result<Proc> {
    let deadline = Instant::now() + timeout;
    loop {
        if ns.connect(addr, Duration::from_millis(500)).is_ok() {
            return Ok(proc);
        }
        if !proc.is_running() {
            bail!("{what} exited at start\n{}", proc.log_tail(40));
        }
        if Instant::now() >= deadline {
            bail!("{what} did not accept on {addr}\n{}", proc.log_tail(40));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A broker user (SCRAM-SHA-256): the interceptor's own credentials in the identity tests.
#[derive(Debug, Clone)]
pub struct BrokerUser {
    pub name: String,
    pub password: String,
}

/// The daemon's login to the broker, in a file only its owner may read.
pub fn write_broker_secrets(work: &WorkDir, user: &BrokerUser) -> PathBuf {
    let secrets = work.join("secrets.toml");
    let text = format!(
        "username = \"{}\"\npassword = \"{}\"\n",
        user.name, user.password
    );
    fs::write(&secrets, text).expect("writing the broker secrets");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&secrets, fs::Permissions::from_mode(0o600)).expect("chmod secrets");
    secrets
}

/// Daemon settings: `idp` as the OIDC issuer (short clock skew and JWKS refetch intervals so
/// tests need not wait) and a SCRAM login to the broker from `secrets`.
pub fn oidc_and_scram_settings(idp: &idp::Idp, secrets: &Path) -> String {
    let issuer = format!(
        "[[identity.issuer]]\nissuer = \"{}\"\naudiences = [\"{}\"]\n",
        idp.issuer(),
        idp::AUDIENCE
    );
    let upstream = format!(
        "[upstream_auth]\nmechanism = \"scram-sha-256\"\nsecrets_file = \"{}\"\n",
        secrets.display()
    );
    format!("[identity]\nclock_skew_secs = 1\njwks_min_refetch_secs = 1\n{issuer}{upstream}")
}

/// tansu built with SQLite storage and SCRAM (`.peers/bin/tansu-sasl`) on `addr`, requiring
/// SCRAM-SHA-256 authentication of `user`, with `topics` created (3 partitions each; this
/// tansu does not create topics on produce). tansu creates users and topics through the Kafka
/// API only, so the broker first runs without authentication on the same SQLite file, which is
/// filled and then reopened with `--authentication`. Returns once the port accepts.
pub fn start_tansu_scram(
    ns: &Netns,
    addr: SocketAddr,
    work: impl AsRef<Path>,
    user: &BrokerUser,
    topics: &[&str],
) -> Result<Proc> {
    let work = work.as_ref();
    let tansu = peers().tansu_sasl;
    check_peer(&tansu)?;
    let url = format!("tcp://{addr}");
    let broker = |authentication: bool, phase: &str| -> Result<Proc> {
        // A relative path: tansu's sqlite URLs take the path after the scheme.
        let mut cmd = tansu_broker_command(ns, &tansu, &url, "sqlite://tansu.db", work);
        if authentication {
            cmd.arg("--authentication");
        }
        let log = work.join(format!("tansu-sasl-{}-{phase}.log", addr.port()));
        let proc = Proc::spawn("tansu", cmd, &log)?;
        accepting(
            ns,
            addr,
            proc,
            &format!("tansu ({phase})"),
            Duration::from_secs(30),
        )
    };
    let tool = |args: &[&str]| -> Result<()> {
        let mut cmd = ns.command(&tansu);
        cmd.args(args).current_dir(work);
        let done = run_with_timeout(cmd, Duration::from_secs(60))?;
        if !done.status.success() {
            bail!(
                "tansu {} failed: {}\n{}",
                args.join(" "),
                done.status,
                tail(&done.stderr, 20)
            );
        }
        Ok(())
    };
    let mut setup = broker(false, "setup")?;
    tool(&[
        "user",
        "create",
        "--broker",
        &url,
        "--mechanism",
        "scram256",
        &user.name,
        &user.password,
    ])?;
    for topic in topics {
        tool(&[
            "topic",
            "create",
            "--broker",
            &url,
            "--partitions",
            "3",
            topic,
        ])?;
    }
    setup.stop(Duration::from_secs(10))?;
    broker(true, "auth")
}

// ---------------------------------------------------------------------------------------------
// The daemon

/// What a test says about the daemon's configuration: the rest (pin dir, audit file) the
/// harness fills in.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub listeners: Vec<(SocketAddr, Option<SocketAddr>)>,
    pub fail_open: bool,
    /// TOML appended to every `[[listener]]` (its SASL settings). By default anonymous
    /// clients are let in with no SASL: the data-path tests are not about identity.
    pub listener_settings: String,
    /// Extra TOML appended at the end (tables such as `[limits]`).
    pub extra: String,
    /// The policy directory; `None`: the harness writes [`ALLOW_ALL_POLICY`] into the work
    /// directory (the data-path tests are not about policy).
    pub policy_dir: Option<PathBuf>,
    /// More keys of the `[policy]` table (e.g. `rescan_secs = 1`); only with `policy_dir`.
    pub policy_settings: String,
}

/// A policy that lets every identity, anonymous included, do everything a client can.
pub const ALLOW_ALL_POLICY: &str = "\
# Written by the test harness: the tests that use it are not about policy.
rules:
  - name: allow-everything
    effect: allow
    subjects:
      principals: [\"*\", ANONYMOUS]
    resources:
      topics: [\"*\"]
      groups: [\"*\"]
      transactional_ids: [\"*\"]
      cluster: true
    operations: [\"*\"]
";

/// Listener settings that let clients in without authentication.
pub const ANONYMOUS_LISTENER: &str = "sasl_mechanisms = []\nallow_anonymous = true\n";

impl DaemonConfig {
    /// Kafka listeners protecting these addresses (upstream = the original destination).
    pub fn kafka(addresses: &[SocketAddr]) -> DaemonConfig {
        DaemonConfig {
            listeners: addresses.iter().map(|a| (*a, None)).collect(),
            fail_open: false,
            listener_settings: ANONYMOUS_LISTENER.into(),
            extra: String::new(),
            policy_dir: None,
            policy_settings: String::new(),
        }
    }

    pub fn policy_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.policy_dir = Some(dir.into());
        self
    }

    pub fn policy_settings(mut self, toml: &str) -> Self {
        self.policy_settings.push_str(toml);
        self.policy_settings.push('\n');
        self
    }

    pub fn fail_open(mut self, on: bool) -> Self {
        self.fail_open = on;
        self
    }

    /// Replaces the SASL settings of every listener.
    pub fn listener_settings(mut self, toml: &str) -> Self {
        self.listener_settings = toml.to_owned();
        if !self.listener_settings.ends_with('\n') {
            self.listener_settings.push('\n');
        }
        self
    }

    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    /// The TOML body (without pin dir and audit file).
    pub fn body(&self) -> String {
        let mut s = format!("fail_open = {}\n", self.fail_open);
        for (address, upstream) in &self.listeners {
            s.push_str(&format!(
                "\n[[listener]]\nprotocol = \"kafka\"\naddress = \"{address}\"\n"
            ));
            if let Some(up) = upstream {
                s.push_str(&format!("upstream = \"{up}\"\n"));
            }
            s.push_str(&self.listener_settings);
        }
        if !self.extra.is_empty() {
            s.push('\n');
            s.push_str(&self.extra);
        }
        // Settings apply with a directory of the test's own; without one the harness
        // writes the allow-all policy and its own table.
        if let Some(dir) = &self.policy_dir {
            s.push_str(&format!(
                "\n[policy]\ndir = {:?}\n{}",
                dir.display().to_string(),
                self.policy_settings
            ));
        }
        s
    }
}

/// A running (or stopped) daemon with its own pin dir, config, audit file and log. On drop:
/// killed, `interceptor detach`, pin dir removed.
pub struct Interceptor {
    netns: PathBuf,
    config: PathBuf,
    audit: PathBuf,
    log_dir: PathBuf,
    pins: PinDir,
    proc: Option<Proc>,
    starts: usize,
    run_args: Vec<String>,
}

/// How long the daemon may take to say `interceptor ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the daemon in eBPF mode in `ns` with `config_body` (TOML: top-level keys first, then
/// `[[listener]]` tables). The harness adds `bpf_pin_dir` (unique, under /sys/fs/bpf) and the
/// `[audit]` file in `work`. Waits for `interceptor ready`.
pub fn start_interceptor(
    ns: &Netns,
    work: impl AsRef<Path>,
    config_body: &str,
) -> Result<Interceptor> {
    let mut daemon = Interceptor::new(ns, work, config_body, PinDir::new("itest"))?;
    daemon.start()?;
    Ok(daemon)
}

impl Interceptor {
    /// Writes the config; does not start anything.
    pub fn new(
        ns: &Netns,
        work: impl AsRef<Path>,
        config_body: &str,
        pins: PinDir,
    ) -> Result<Self> {
        let work = work.as_ref();
        let bin = interceptor_bin();
        if !bin.exists() {
            bail!(
                "{} is missing: run `cargo xtask build` first (or set INTERCEPTOR_BIN)",
                bin.display()
            );
        }
        let config = work.join("interceptor.toml");
        let audit = work.join("audit");
        let audit_dir = format!("dir = {:?}\n", audit.display().to_string());
        // A body with its own [audit] settings gets the directory in that table.
        let mut text = if config_body.contains("\n[audit]\n") {
            format!(
                "bpf_pin_dir = {:?}\n{}\n",
                pins.path().display().to_string(),
                config_body.replacen("\n[audit]\n", &format!("\n[audit]\n{audit_dir}"), 1)
            )
        } else {
            format!(
                "bpf_pin_dir = {:?}\n{config_body}\n\n[audit]\n{audit_dir}",
                pins.path().display().to_string()
            )
        };
        // Every daemon has a policy directory; tests that are not about policy get one that
        // allows everything.
        if !text.contains("\n[policy]\n") {
            let dir = work.join("policies");
            fs::create_dir_all(&dir)?;
            fs::write(dir.join("allow-all.yaml"), ALLOW_ALL_POLICY)?;
            text.push_str(&format!(
                "\n[policy]\ndir = {:?}\n",
                dir.display().to_string()
            ));
        }
        // Daemons of parallel tests must not share the default admin socket.
        let admin_socket = work.join("admin.sock");
        let socket_line = format!("socket = {:?}\n", admin_socket.display().to_string());
        if text.contains("\n[admin]\n") {
            text = text.replacen("\n[admin]\n", &format!("\n[admin]\n{socket_line}"), 1);
        } else {
            text.push_str(&format!("\n[admin]\n{socket_line}"));
        }
        fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        Ok(Interceptor {
            netns: ns.path().to_path_buf(),
            config,
            audit,
            log_dir: work.to_path_buf(),
            pins,
            proc: None,
            starts: 0,
            run_args: Vec::new(),
        })
    }

    /// Extra arguments for `interceptor run` from the next start on (e.g. `--mode listen
    /// --listen 127.0.0.1:19092` for the development mode without kernel programs).
    pub fn set_run_args(&mut self, args: &[&str]) {
        self.run_args = args.iter().map(|a| a.to_string()).collect();
    }

    /// Starts (or restarts, with the same pin dir) the daemon; waits for `interceptor ready`.
    pub fn start(&mut self) -> Result<()> {
        if let Some(p) = self.proc.as_mut() {
            if p.is_running() {
                bail!("the daemon is already running (pid {})", p.pid());
            }
        }
        self.starts += 1;
        let mut cmd = netns_command(&self.netns, interceptor_bin());
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config)
            .args(&self.run_args);
        // Plain text logs (tracing-subscriber honours NO_COLOR), so tests can search them.
        cmd.env("NO_COLOR", "1");
        let log = self
            .log_dir
            .join(format!("interceptor-{}.log", self.starts));
        let mut proc = Proc::spawn("interceptor", cmd, &log)?;
        let ready = proc.wait_for_log("interceptor ready", READY_TIMEOUT);
        self.proc = Some(proc);
        ready.context("the daemon did not become ready")
    }

    /// The running process (panics if never started).
    pub fn proc(&mut self) -> &mut Proc {
        self.proc.as_mut().expect("daemon started")
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Proc::is_running)
    }

    /// Whether the current run is alive (without reaping; through a shared reference).
    pub fn alive(&self) -> bool {
        self.proc.as_ref().is_some_and(Proc::alive)
    }

    /// SIGTERM; waits for the exit and checks it was clean.
    pub fn stop(&mut self) -> Result<()> {
        let proc = self.proc.as_mut().context("daemon not started")?;
        let status = proc.stop(Duration::from_secs(15))?;
        if !status.success() {
            bail!(
                "the daemon exited with {status} on SIGTERM\n{}",
                proc.log_tail(40)
            );
        }
        Ok(())
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.kill();
        }
    }

    /// The log of the current (last) run.
    pub fn log(&self) -> String {
        self.proc.as_ref().map(Proc::log).unwrap_or_default()
    }

    /// The log file of the current (last) run.
    pub fn log_path(&self) -> Option<&Path> {
        self.proc.as_ref().map(Proc::log_path)
    }

    /// The logs of every run so far, in order.
    pub fn all_logs(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                fs::read_to_string(self.log_dir.join(format!("interceptor-{n}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("")
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.proc
            .as_ref()
            .map(|p| p.log_tail(lines))
            .unwrap_or_default()
    }

    /// Waits until the current run's log contains `needle`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        self.proc().wait_for_log(needle, timeout)
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The audit directory.
    pub fn audit_path(&self) -> &Path {
        &self.audit
    }

    /// Every audit file's text, oldest first, as one string.
    pub fn audit_text(&self) -> String {
        audit_files(&self.audit)
            .iter()
            .filter_map(|f| fs::read_to_string(f).ok())
            .collect()
    }

    /// `interceptor status` against this daemon: its JSON answer.
    pub fn status(&self) -> Result<Value> {
        let out = Command::new(interceptor_bin())
            .arg("status")
            .arg("--config")
            .arg(&self.config)
            .output()
            .context("running interceptor status")?;
        if !out.status.success() {
            bail!(
                "interceptor status failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout).context("interceptor status printed no JSON")
    }

    pub fn pin_dir(&self) -> &Path {
        self.pins.path()
    }

    /// Runs `interceptor ARGS --config <this daemon's config>` (the admin socket is found
    /// through it); its exit status, stdout and stderr.
    pub fn cli(&self, args: &[&str]) -> Result<std::process::Output> {
        Command::new(interceptor_bin())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .with_context(|| format!("running interceptor {}", args.join(" ")))
    }

    /// Every complete audit event so far.
    pub fn audit_events(&self) -> Vec<Value> {
        read_audit(&self.audit)
    }

    /// Waits until an audit event satisfies `pred`; returns it. Fails with the events seen.
    pub fn wait_audit(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.audit_events();
            if let Some(e) = events.iter().find(|e| pred(e)) {
                return Ok(e.clone());
            }
            if Instant::now() >= deadline {
                let shown: Vec<String> = events
                    .iter()
                    .rev()
                    .take(30)
                    .map(|e| e.to_string())
                    .collect();
                bail!(
                    "no matching audit event within {timeout:?}; last events (newest first):\n{}\n{}",
                    shown.join("\n"),
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `interceptor detach --config …` in the namespace.
    pub fn detach(&self) -> Result<()> {
        let mut cmd = netns_command(&self.netns, interceptor_bin());
        cmd.arg("detach").arg("--config").arg(&self.config);
        let done = run_with_timeout(cmd, Duration::from_secs(20))?;
        if !done.status.success() {
            bail!(
                "interceptor detach failed: {}\n{}",
                done.status,
                done.stderr
            );
        }
        Ok(())
    }
}

impl Drop for Interceptor {
    fn drop(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.kill();
        }
        if self.pins.path().exists() {
            if let Err(e) = self.detach() {
                eprintln!("warning: {e:#}");
            }
        }
    }
}

/// The files of an audit directory (`audit-<first seq>.jsonl`), oldest first.
pub fn audit_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    files
}

/// The complete JSON lines of an audit directory, oldest first (a line being written is left
/// out).
pub fn read_audit(dir: &Path) -> Vec<Value> {
    audit_files(dir)
        .iter()
        .filter_map(|f| fs::File::open(f).ok())
        .flat_map(|file| {
            BufReader::new(file)
                .lines()
                .map_while(|l| l.ok())
                .filter_map(|l| serde_json::from_str(&l).ok())
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// Counts of audit events by `event` (and `kind` for kernel events), for summaries.
pub fn audit_summary(events: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for e in events {
        let event = e["event"].as_str().unwrap_or("?");
        let key = match e["kind"].as_str() {
            Some(kind) => format!("{event}/{kind}"),
            None => event.to_string(),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

// ---------------------------------------------------------------------------------------------
// Clients

/// Which Python client library a script uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lib {
    /// confluent-kafka (librdkafka).
    Confluent,
    /// kafka-python (pure Python).
    KafkaPython,
}

impl Lib {
    pub fn script(self) -> &'static str {
        match self {
            Lib::Confluent => "confluent_client.py",
            Lib::KafkaPython => "kafka_python_client.py",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Lib::Confluent => "confluent-kafka",
            Lib::KafkaPython => "kafka-python",
        }
    }
}

/// Runs a client script (`tests/clients/<lib>`) with the venv's python in the namespace:
/// `script <args>`. Returns the JSON summary it prints as its last stdout line; fails with its
/// output if it exits non-zero (a mismatch) or runs past `timeout`.
pub fn run_client(ns: &Netns, lib: Lib, args: &[&str], timeout: Duration) -> Result<Value> {
    let peers = peers();
    check_peer(&peers.python)?;
    let mut cmd = ns.command(&peers.python);
    cmd.arg("-u")
        .arg(peers.clients.join(lib.script()))
        .args(args);
    let done = run_with_timeout(cmd, timeout)
        .with_context(|| format!("{} {}", lib.name(), args.join(" ")))?;
    let last = done.stdout.lines().rev().find(|l| !l.trim().is_empty());
    let summary = last.and_then(|l| serde_json::from_str::<Value>(l).ok());
    match (done.status.success(), summary) {
        (true, Some(v)) => Ok(v),
        (ok, v) => Err(anyhow!(
            "{} {} {}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            lib.name(),
            args.join(" "),
            if ok { "printed no summary" } else { "failed" },
            done.status,
            v.map(|v| v.to_string())
                .unwrap_or_else(|| tail(&done.stdout, 20)),
            tail(&done.stderr, 60)
        )),
    }
}

/// Runs kcat in the namespace; returns its stdout, fails with stderr.
pub fn kcat(ns: &Netns, args: &[&str], timeout: Duration) -> Result<String> {
    let kcat = peers().kcat;
    check_peer(&kcat)?;
    let mut cmd = ns.command(&kcat);
    cmd.args(args);
    let done =
        run_with_timeout(cmd, timeout).with_context(|| format!("kcat {}", args.join(" ")))?;
    if !done.status.success() {
        bail!(
            "kcat {} failed: {}\n{}\n{}",
            args.join(" "),
            done.status,
            tail(&done.stdout, 20),
            tail(&done.stderr, 40)
        );
    }
    Ok(done.stdout)
}

// ---------------------------------------------------------------------------------------------
// Raw Kafka frames and sockets, for tests that speak the wire themselves

/// Resident memory of a process in KiB (0 if it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

pub mod wire {
    //! Hand-made Kafka frames and TCP sockets with a chosen source address.

    use std::{
        io::{Read, Write},
        net::{SocketAddr, TcpStream},
        time::Duration,
    };

    use socket2::{Domain, Protocol, SockAddr, Socket, Type};

    /// A Metadata v1 request frame asking for no topics (api key 3; header v1; not flexible).
    pub fn metadata_v1_request(correlation_id: i32, client_id: &str) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&3i16.to_be_bytes()); // request_api_key: Metadata
        body.extend_from_slice(&1i16.to_be_bytes()); // request_api_version: 1
        body.extend_from_slice(&correlation_id.to_be_bytes()); // correlation_id
        body.extend_from_slice(&(client_id.len() as i16).to_be_bytes()); // client_id length
        body.extend_from_slice(client_id.as_bytes()); // client_id
        body.extend_from_slice(&0i32.to_be_bytes()); // topics: empty array (no topics)
        frame(&body)
    }

    /// `[i32 length][body]`.
    pub fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    /// Reads one length-prefixed frame; returns its body (without the prefix).
    pub fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len)?;
        let len = i32::from_be_bytes(len);
        if !(0..=64 * 1024 * 1024).contains(&len) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("frame length {len}"),
            ));
        }
        let mut body = vec![0u8; len as usize];
        stream.read_exact(&mut body)?;
        Ok(body)
    }

    /// Sends a Metadata v1 request and reads the response; returns the response body after the
    /// correlation id, checking that id.
    pub fn metadata_round_trip(
        stream: &mut TcpStream,
        correlation_id: i32,
    ) -> std::io::Result<Vec<u8>> {
        round_trip(
            stream,
            &metadata_v1_request(correlation_id, "itest-raw"),
            correlation_id,
        )
    }

    /// A request the interceptor forwards without reading its answer: GetTelemetrySubscriptions
    /// v0 (KIP-714), which carries no resource, so no policy rewrites it or its response. For
    /// tests whose server is not a Kafka broker and answers every frame its own way.
    pub fn opaque_request(correlation_id: i32, client_id: &str) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&71i16.to_be_bytes()); // GetTelemetrySubscriptions
        body.extend_from_slice(&0i16.to_be_bytes()); // v0 (flexible: request header v2)
        body.extend_from_slice(&correlation_id.to_be_bytes());
        body.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
        body.extend_from_slice(client_id.as_bytes());
        body.push(0); // header tagged fields
        body.extend_from_slice(&[0; 16]); // client_instance_id: none yet
        body.push(0); // body tagged fields
        frame(&body)
    }

    /// [`opaque_request`] and its answer's body after the correlation id.
    pub fn opaque_round_trip(
        stream: &mut TcpStream,
        correlation_id: i32,
    ) -> std::io::Result<Vec<u8>> {
        round_trip(
            stream,
            &opaque_request(correlation_id, "itest-raw"),
            correlation_id,
        )
    }

    fn round_trip(
        stream: &mut TcpStream,
        request: &[u8],
        correlation_id: i32,
    ) -> std::io::Result<Vec<u8>> {
        stream.write_all(request)?;
        let body = read_frame(stream)?;
        if body.len() < 4 || body[..4] != correlation_id.to_be_bytes() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "response for another correlation id: {:?}",
                    &body[..body.len().min(4)]
                ),
            ));
        }
        Ok(body[4..].to_vec())
    }

    /// A TCP connection to `dst` from `src` (port 0: any), with a connect timeout. Call it in
    /// the right network namespace ([`crate::Netns::run`]). Also returns the local address the
    /// socket had before connecting (known even when the connect fails).
    pub fn connect_from(
        src: SocketAddr,
        dst: SocketAddr,
        timeout: Duration,
    ) -> (SocketAddr, std::io::Result<TcpStream>) {
        let socket = match Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))
        {
            Ok(s) => s,
            Err(e) => return (src, Err(e)),
        };
        let _ = socket.set_reuse_address(true);
        if let Err(e) = socket.bind(&SockAddr::from(src)) {
            return (src, Err(e));
        }
        let local = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(src);
        let result = socket
            .connect_timeout(&SockAddr::from(dst), timeout)
            .map(|()| TcpStream::from(socket));
        if let Ok(s) = &result {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
        }
        (local, result)
    }

    /// A request frame with header v1 (api key, version, correlation id, client id) and body.
    pub fn request_v1(api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&api_key.to_be_bytes());
        f.extend_from_slice(&version.to_be_bytes());
        f.extend_from_slice(&correlation_id.to_be_bytes());
        f.extend_from_slice(&9i16.to_be_bytes()); // client id length
        f.extend_from_slice(b"itest-raw");
        f.extend_from_slice(body);
        frame(&f)
    }

    /// SaslHandshake v1 (api key 17) for `mechanism`.
    pub fn sasl_handshake(correlation_id: i32, mechanism: &str) -> Vec<u8> {
        let mut body = (mechanism.len() as i16).to_be_bytes().to_vec();
        body.extend_from_slice(mechanism.as_bytes());
        request_v1(17, 1, correlation_id, &body)
    }

    /// SaslAuthenticate v1 (api key 36) carrying `auth_bytes`.
    pub fn sasl_authenticate(correlation_id: i32, auth_bytes: &[u8]) -> Vec<u8> {
        let mut body = (auth_bytes.len() as i32).to_be_bytes().to_vec();
        body.extend_from_slice(auth_bytes);
        request_v1(36, 1, correlation_id, &body)
    }

    /// RFC 7628 client initial response as Kafka clients send it.
    pub fn oauthbearer_initial(token: &str) -> Vec<u8> {
        format!("n,,\x01auth=Bearer {token}\x01\x01").into_bytes()
    }

    /// A SaslHandshake v1 response: error code and the enabled mechanisms.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct HandshakeAnswer {
        pub error_code: i16,
        pub mechanisms: Vec<String>,
    }

    /// A SaslAuthenticate v1 response.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct AuthenticateAnswer {
        pub error_code: i16,
        pub error_message: Option<String>,
        pub session_lifetime_ms: i64,
    }

    fn invalid(what: &str) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
    }

    /// Reads `n` bytes at `at`, advancing it.
    fn take<'a>(body: &'a [u8], at: &mut usize, n: usize) -> std::io::Result<&'a [u8]> {
        let out = body
            .get(*at..*at + n)
            .ok_or_else(|| invalid("short response"))?;
        *at += n;
        Ok(out)
    }

    fn i16_at(body: &[u8], at: &mut usize) -> std::io::Result<i16> {
        let b = take(body, at, 2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32_at(body: &[u8], at: &mut usize) -> std::io::Result<i32> {
        let b = take(body, at, 4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn check_id(body: &[u8], correlation_id: i32) -> std::io::Result<usize> {
        let mut at = 0;
        if i32_at(body, &mut at)? != correlation_id {
            return Err(invalid("response for another correlation id"));
        }
        Ok(at)
    }

    /// Sends SaslHandshake v1 and reads its answer.
    pub fn handshake(
        stream: &mut TcpStream,
        correlation_id: i32,
        mechanism: &str,
    ) -> std::io::Result<HandshakeAnswer> {
        stream.write_all(&sasl_handshake(correlation_id, mechanism))?;
        let body = read_frame(stream)?;
        let mut at = check_id(&body, correlation_id)?;
        let error_code = i16_at(&body, &mut at)?;
        let count = i32_at(&body, &mut at)?;
        let mut mechanisms = Vec::new();
        for _ in 0..count.max(0) {
            let len = i16_at(&body, &mut at)?;
            let name = take(&body, &mut at, len.max(0) as usize)?;
            mechanisms.push(String::from_utf8_lossy(name).into_owned());
        }
        Ok(HandshakeAnswer {
            error_code,
            mechanisms,
        })
    }

    /// Sends SaslAuthenticate v1 and reads its answer.
    pub fn authenticate(
        stream: &mut TcpStream,
        correlation_id: i32,
        auth_bytes: &[u8],
    ) -> std::io::Result<AuthenticateAnswer> {
        stream.write_all(&sasl_authenticate(correlation_id, auth_bytes))?;
        let body = read_frame(stream)?;
        let mut at = check_id(&body, correlation_id)?;
        let error_code = i16_at(&body, &mut at)?;
        let len = i16_at(&body, &mut at)?;
        let error_message = if len < 0 {
            None
        } else {
            let m = take(&body, &mut at, len as usize)?;
            Some(String::from_utf8_lossy(m).into_owned())
        };
        let auth_len = i32_at(&body, &mut at)?;
        take(&body, &mut at, auth_len.max(0) as usize)?;
        let b = take(&body, &mut at, 8)?;
        let mut lifetime = [0u8; 8];
        lifetime.copy_from_slice(b);
        Ok(AuthenticateAnswer {
            error_code,
            error_message,
            session_lifetime_ms: i64::from_be_bytes(lifetime),
        })
    }

    /// Handshake + OAUTHBEARER authenticate with `token`.
    pub fn oauthbearer(
        stream: &mut TcpStream,
        first_correlation_id: i32,
        token: &str,
    ) -> std::io::Result<AuthenticateAnswer> {
        let shake = handshake(stream, first_correlation_id, "OAUTHBEARER")?;
        if shake.error_code != 0 {
            return Err(invalid(&format!("handshake refused: {shake:?}")));
        }
        authenticate(
            stream,
            first_correlation_id + 1,
            &oauthbearer_initial(token),
        )
    }

    /// Whether the peer has closed: the next read gets end of stream or a reset (not a
    /// timeout, not data).
    pub fn is_closed(stream: &mut TcpStream) -> bool {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => true,
            Err(e) => matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe),
            Ok(_) => false,
        }
    }

    /// Closes with a reset (SO_LINGER 0) instead of a FIN.
    pub fn reset(stream: TcpStream) {
        let socket = Socket::from(stream);
        let _ = socket.set_linger(Some(Duration::ZERO));
        drop(socket);
    }
}

/// Polls `f` until it returns `Some`, or fails after `timeout`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_only_our_shape() {
        assert_eq!(owner_pid("itest", "itest-123-4"), Some(123));
        assert_eq!(owner_pid("itest", "itest-123"), None);
        assert_eq!(owner_pid("itest", "other-123-4"), None);
        assert_eq!(owner_pid("itest", "itest-x-4"), None);
        assert_eq!(owner_pid("ik", "ikx-1-2"), None);
    }

    #[test]
    fn config_body_is_toml_with_listeners_first_level_keys_first() {
        let body = DaemonConfig::kafka(&["127.0.0.1:9092".parse().unwrap()])
            .fail_open(true)
            .extra("[limits]\nmax_frame_bytes = 1024")
            .body();
        assert!(body.starts_with("fail_open = true\n"));
        assert!(body.contains("[[listener]]\nprotocol = \"kafka\"\naddress = \"127.0.0.1:9092\"\n"));
        assert!(body.ends_with("[limits]\nmax_frame_bytes = 1024\n"));
    }
}
