//! A real PostgreSQL server for a test: `initdb` into a scratch directory, `pg_ctl start` on
//! 127.0.0.1 and a free port (unix socket in the scratch directory), stopped
//! (`pg_ctl stop -m immediate`) and removed on drop, also when the test panics.
//!
//! PostgreSQL refuses to run as root, and tests run as root in CI: then the scratch directory
//! is given to `nobody` and every PostgreSQL program runs through `setpriv` as that user.
//!
//! Local connections are trusted; TCP connections need the password of user `postgres`
//! ([`PostgresServer::password`], included in [`PostgresServer::url`]), so password handling
//! is exercised for real.
//!
//! The binaries (`initdb`, `pg_ctl`, `postgres`) must be on PATH: a test without them fails
//! loudly through [`require_postgres`], unless `INTERCEPTOR_SKIP_POSTGRES=1`.
//!
//! Also used by the vault's unit tests (`interceptor`'s dev-dependency on this crate).

use std::{
    ffi::OsStr,
    fs,
    net::TcpListener,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};

const BINARIES: [&str; 3] = ["initdb", "pg_ctl", "postgres"];
const DIR_PREFIX: &str = "interceptor-pg";

/// Whether PostgreSQL tests run. `INTERCEPTOR_SKIP_POSTGRES=1` skips them (returns false, says
/// so); otherwise missing binaries panic: a PostgreSQL test never passes by not running.
pub fn require_postgres() -> bool {
    if std::env::var("INTERCEPTOR_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: INTERCEPTOR_SKIP_POSTGRES=1");
        return false;
    }
    if let Err(e) = find_binaries() {
        panic!("{e:#}");
    }
    true
}

fn find_binaries() -> Result<()> {
    find_binaries_in(&std::env::var_os("PATH").unwrap_or_default())
}

fn find_binaries_in(path: &OsStr) -> Result<()> {
    let missing: Vec<&str> = BINARIES
        .iter()
        .copied()
        .filter(|b| !std::env::split_paths(path).any(|d| d.join(b).is_file()))
        .collect();
    if !missing.is_empty() {
        bail!(
            "PostgreSQL tests need {} on PATH (PostgreSQL 15 server binaries; Debian: \
             postgresql-15, then link /usr/lib/postgresql/15/bin/* into /usr/local/bin); or set \
             INTERCEPTOR_SKIP_POSTGRES=1 to skip them explicitly",
            missing.join(", ")
        );
    }
    Ok(())
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A running PostgreSQL server, stopped and deleted on drop.
#[derive(Debug)]
pub struct PostgresServer {
    dir: PathBuf,
    port: u16,
    password: String,
    /// uid and gid the server runs as when the tests run as root.
    run_as: Option<(u32, u32)>,
}

impl PostgresServer {
    /// Initializes a cluster in a new scratch directory and starts it.
    pub fn start() -> Result<PostgresServer> {
        find_binaries()?;
        sweep_stale();
        let dir = std::env::temp_dir().join(format!(
            "{DIR_PREFIX}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        let run_as = if is_root() {
            let ids = unprivileged_user()?;
            std::os::unix::fs::chown(&dir, Some(ids.0), Some(ids.1))
                .with_context(|| format!("chown {}", dir.display()))?;
            Some(ids)
        } else {
            None
        };
        let mut server = PostgresServer {
            dir,
            port: 0,
            password: random_password(),
            run_as,
        };
        // From here on, drop cleans up whatever was made.
        server.init()?;
        let mut last = None;
        for _ in 0..5 {
            server.port = free_port()?;
            match server.pg_ctl_start() {
                Ok(()) => return Ok(server),
                // Another process took the port between our probe and the server's bind.
                Err(e) if server.log().contains("could not bind") => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no free port")))
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// `postgres://postgres:<password>@127.0.0.1:<port>/postgres`
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/postgres",
            self.password, self.port
        )
    }

    /// [`PostgresServer::url`] without the password, for tests of password files.
    pub fn url_without_password(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A libpq-style connection string over the unix socket (trusted, no password): reachable
    /// from any network namespace on this host, unlike 127.0.0.1.
    pub fn socket_url(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.dir.display(),
            self.port
        )
    }

    /// The scratch directory (data directory, socket, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn init(&self) -> Result<()> {
        let pwfile = self.dir.join("pwfile");
        fs::write(&pwfile, format!("{}\n", self.password))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))?;
        }
        let mut cmd = self.command("initdb");
        cmd.arg("-D")
            .arg(self.data())
            .args(["-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()));
        run(cmd, Duration::from_secs(120)).context("initdb")?;
        let _ = fs::remove_file(&pwfile);
        Ok(())
    }

    fn pg_ctl_start(&self) -> Result<()> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={}",
                self.port,
                self.dir.display()
            ))
            .arg("start");
        run(cmd, Duration::from_secs(90))
            .with_context(|| format!("pg_ctl start\n--- server log ---\n{}", self.log()))
    }

    /// Stops the server at once (`-m immediate`, as a crash would), keeping its data.
    pub fn stop(&self) -> Result<()> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "-t", "30", "stop"]);
        run(cmd, Duration::from_secs(60)).context("pg_ctl stop")
    }

    /// Starts the stopped server again on the same port, with the same data.
    pub fn restart(&self) -> Result<()> {
        self.pg_ctl_start()
    }

    /// A command running `program` as the server's user.
    fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = match self.run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(program);
                c
            }
            None => Command::new(program),
        };
        // The server's user may not be able to enter the test's working directory.
        cmd.current_dir(&self.dir);
        cmd
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            if let Err(e) = self.stop() {
                eprintln!(
                    "warning: stopping PostgreSQL in {}: {e:#}",
                    self.dir.display()
                );
                kill_postmaster(&self.data());
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("warning: removing {}: {e}", self.dir.display());
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// uid and primary gid of `nobody`.
fn unprivileged_user() -> Result<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == "nobody")
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        })
        .flatten()
        .ok_or_else(|| {
            anyhow!("no user `nobody` in /etc/passwd to run PostgreSQL as (it refuses root)")
        })
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

fn random_password() -> String {
    let mut bytes = [0u8; 12];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut bytes);
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("pw{hex}")
}

/// Runs `cmd` to completion within `timeout`; fails with its output.
fn run(mut cmd: Command, timeout: Duration) -> Result<()> {
    let described = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {described}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            bail!(
                "{described} timed out after {timeout:?}\n{}",
                output_text(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{described} failed: {}\n{}", out.status, output_text(&out));
    }
    Ok(())
}

fn output_text(out: &Output) -> String {
    format!(
        "--- stdout ---\n{}--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Kills the postmaster of a data directory (our own server, which `pg_ctl stop` failed to
/// stop), checking that the pid is a postgres process first.
fn kill_postmaster(data: &Path) {
    let Some(pid) = fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
    else {
        return;
    };
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() == "postgres" {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Removes scratch directories, and stops servers, left by test processes that died.
fn sweep_stale() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|n| n.strip_prefix('-'))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        kill_postmaster(&entry.path().join("data"));
        let _ = fs::remove_dir_all(entry.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_are_an_error_that_says_how_to_skip() {
        let err = find_binaries_in(OsStr::new("/nonexistent:/also/not"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("initdb, pg_ctl, postgres"), "{err}");
        assert!(err.contains("INTERCEPTOR_SKIP_POSTGRES=1"), "{err}");
    }

    #[test]
    fn a_server_starts_accepts_tcp_and_is_gone_after_drop() {
        if !require_postgres() {
            return;
        }
        let server = PostgresServer::start().unwrap();
        let dir = server.dir().to_path_buf();
        assert!(std::net::TcpStream::connect(("127.0.0.1", server.port())).is_ok());
        assert!(server.url().contains(server.password()));
        assert!(!server.url_without_password().contains(server.password()));
        server.stop().unwrap();
        assert!(std::net::TcpStream::connect(("127.0.0.1", server.port())).is_err());
        server.restart().unwrap();
        assert!(std::net::TcpStream::connect(("127.0.0.1", server.port())).is_ok());
        drop(server);
        assert!(!dir.exists());
    }
}
