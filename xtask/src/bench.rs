//! `cargo xtask bench`: produce and fetch throughput and produce latency, direct to the broker
//! vs through the interceptor (and haproxy in TCP mode, the L4 floor), in one run.
//!
//! Method (see ../shared/benchmarking.md): every run gets a fresh network namespace and a fresh
//! memory-backed tansu on 127.0.0.1:9092; the clients always connect to that address.
//! - direct: nothing in between (no steering program in that namespace);
//! - interceptor: the daemon (release build) steers 127.0.0.1:9092 to itself with sk_lookup and
//!   forwards to the broker at the same address;
//! - haproxy: the broker listens on 127.0.0.1:19092 and advertises 127.0.0.1:9092, where
//!   haproxy (TCP mode) listens.
//!
//! One warm-up round (discarded), then interleaved rounds direct, interceptor, haproxy, …
//! In each run the load tool (`loadgen`, librdkafka) produces N records as fast as it can,
//! fetches them back from the beginning, then produces at a fixed offered rate with linger 0
//! for the latency percentiles. The proxy's CPU (utime+stime of its process, /proc/PID/stat) is
//! read around each phase. Results: medians with min and max over the rounds, ratios per round
//! (proxy / direct), added latency per round (proxy − direct); printed, appended to
//! BENCHMARKS.md, and the raw results written under target/bench/.

use std::{
    fmt::Write as _,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use interceptor_e2e::{
    peers, run_with_timeout, start_tansu, DaemonConfig, Interceptor, Netns, PinDir, Proc, WorkDir,
};
use serde_json::{json, Value};

use crate::util::{self, cargo, root};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Measured rounds (each: direct, interceptor, haproxy) after the warm-up round.
    #[arg(long, default_value_t = 5)]
    pub pairs: usize,
    /// Records per throughput run (produced, then fetched back).
    #[arg(long, default_value_t = 500_000)]
    pub records: u64,
    /// Record value size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Offered rate of the latency run, records/s (linger 0, so one produce request each).
    /// Well below saturation: tansu (memory storage) spends about 250 µs of CPU per produce
    /// request and on this 2-core machine queues visibly from about 2,000 requests/s.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Duration of each latency run in seconds.
    #[arg(long, default_value_t = 15)]
    pub latency_secs: u64,
    /// Compression codec of the throughput runs: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Producer acks (all runs).
    #[arg(long, default_value = "1")]
    pub acks: String,
    /// linger.ms of the throughput runs (the latency runs use 0).
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Leave haproxy out.
    #[arg(long)]
    pub no_haproxy: bool,
    /// Smoke run: one round of 50,000 records and 3 s of latency, no warm-up, nothing
    /// appended to BENCHMARKS.md.
    #[arg(long)]
    pub quick: bool,
    /// Do not append to BENCHMARKS.md.
    #[arg(long)]
    pub no_write: bool,
    /// Skip `deps` and the builds (use what target/release holds).
    #[arg(long)]
    pub no_build: bool,
    /// Masking scenario: JSON records whose card number (partial, last four kept) and email
    /// (tokenized through the embedded vault) the interceptor masks on produce, and whose
    /// tokens it reveals again on fetch. Compression defaults to lz4 here. Also runs the
    /// masking engine's own throughput benchmark (one core).
    #[arg(long)]
    pub masking: bool,
    /// Audit scenario: the interceptor with the full trail (records events with hashes,
    /// group-committed fsync) and session recording, against the same interceptor with the
    /// trail at its minimum (no records events, no fsync, no recording).
    #[arg(long)]
    pub audit: bool,
    /// MQTT scenario: mosquitto, direct against through the interceptor (full audit trail),
    /// QoS 0 and QoS 1 publish throughput and QoS 1 latency (`mqttgen`).
    #[arg(long)]
    pub mqtt: bool,
}

/// The masking scenario's policy, beside the allow-all one: the bench clients are anonymous.
const MASKING_POLICY: &str = "\
masking:
  - name: bench-payments
    topics: [\"bench-*\"]
    fields:
      - path: $.card.number
        action: partial
        keep_last: 4
      - path: $.customer.email
        action: tokenize
    reveal:
      principals: [ANONYMOUS]
";

/// Where the clients connect in every mode.
const BROKER: &str = "127.0.0.1:9092";
/// The broker's own listener when haproxy sits on `BROKER`.
const BEHIND_HAPROXY: &str = "127.0.0.1:19092";
const THROUGHPUT_TOPIC: &str = "bench-throughput";
const LATENCY_TOPIC: &str = "bench-latency";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Direct,
    Interceptor,
    /// The interceptor with the audit trail at its minimum (`--audit`): no records events,
    /// no fsync, no recording. Decisions are still written; they cannot be turned off.
    AuditOff,
    Haproxy,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Interceptor => "interceptor",
            Mode::AuditOff => "audit-off",
            Mode::Haproxy => "haproxy",
        }
    }
}

/// The settings of one bench run, after `--quick`.
#[derive(Clone)]
struct Plan {
    rounds: usize,
    warmup: bool,
    records: u64,
    size: usize,
    rate: u64,
    latency_secs: u64,
    compression: String,
    acks: String,
    linger_ms: u64,
    modes: Vec<Mode>,
    write: bool,
    masking: bool,
    audit: bool,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.mqtt {
        return crate::bench_mqtt::run(args);
    }
    let plan = Plan {
        rounds: if args.quick { 1 } else { args.pairs.max(1) },
        warmup: !args.quick,
        records: if args.quick { 50_000 } else { args.records },
        size: args.size,
        rate: args.rate,
        latency_secs: if args.quick { 3 } else { args.latency_secs },
        compression: if args.masking && args.compression == "none" {
            "lz4".into()
        } else {
            args.compression.clone()
        },
        acks: args.acks.clone(),
        linger_ms: args.linger_ms,
        modes: if args.audit {
            vec![Mode::Direct, Mode::AuditOff, Mode::Interceptor]
        } else if args.no_haproxy {
            vec![Mode::Direct, Mode::Interceptor]
        } else {
            vec![Mode::Direct, Mode::Interceptor, Mode::Haproxy]
        },
        write: !args.quick && !args.no_write,
        masking: args.masking,
        audit: args.audit,
    };
    let command_line = command_line();

    let release = root().join("target/release");
    if !args.no_build {
        crate::deps::run()?;
        crate::build::run(&crate::build::BuildArgs { release: true })?;
        eprintln!("bench: building loadgen (librdkafka from source; about 1.5 minutes cold)");
        util::run(cargo().current_dir(root()).args([
            "build",
            "--release",
            "--package",
            "loadgen",
        ]))?;
    }
    let loadgen = release.join("loadgen");
    let daemon = release.join("interceptor");
    for bin in [&loadgen, &daemon, &release.join("interceptor-ebpf.o")] {
        if !bin.exists() {
            bail!("{} is missing (run without --no-build)", bin.display());
        }
    }
    // The harness starts the daemon from $INTERCEPTOR_BIN; nothing else runs yet.
    std::env::set_var("INTERCEPTOR_BIN", &daemon);
    if plan.modes.contains(&Mode::Haproxy) && which("haproxy").is_none() {
        bail!("haproxy is not installed (cargo xtask deps installs it), or pass --no-haproxy");
    }

    let load_before = loadavg();
    let started = Instant::now();
    if plan.warmup {
        eprintln!("bench: warm-up round (discarded)");
        let warm = Plan {
            records: plan.records.min(100_000),
            latency_secs: 2,
            ..plan.clone()
        };
        for &mode in &plan.modes {
            one_run(&warm, mode, &loadgen).with_context(|| format!("warm-up, {}", mode.name()))?;
        }
    }
    let mut runs: Vec<RunResult> = Vec::new();
    for round in 1..=plan.rounds {
        for &mode in &plan.modes {
            let r = one_run(&plan, mode, &loadgen)
                .with_context(|| format!("round {round}, {}", mode.name()))?;
            eprintln!("bench: round {round}/{} {}", plan.rounds, r.one_line());
            runs.push(r);
        }
    }
    let elapsed = started.elapsed();

    let mut facts = Facts::gather(&runs);
    facts.load = format!("{load_before} before, {} after", loadavg());
    let mut report = report(&plan, &runs, &facts, &command_line, elapsed);
    if plan.masking {
        report.push_str(&engine_report(args.no_build)?);
    }
    println!("{report}");

    let raw_dir = root().join("target/bench");
    fs::create_dir_all(&raw_dir)?;
    let raw = raw_dir.join(format!("bench-{}.json", facts.stamp));
    let raw_runs: Vec<Value> = runs.iter().map(RunResult::to_json).collect();
    fs::write(
        &raw,
        serde_json::to_string_pretty(&json!({
            "date": facts.date, "command": command_line, "commit": facts.commit,
            "librdkafka": facts.librdkafka, "runs": raw_runs,
        }))?,
    )?;
    eprintln!("bench: raw results in {}", raw.display());

    if plan.write {
        let path = root().join("BENCHMARKS.md");
        let mut text = fs::read_to_string(&path).unwrap_or_default();
        if text.trim().is_empty() {
            text = BENCHMARKS_HEADER.to_string();
        }
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push('\n');
        text.push_str(&report);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: appended to {}", path.display());
    }
    Ok(())
}

const BENCHMARKS_HEADER: &str = "# Benchmarks\n\n\
Measured with `cargo xtask bench` (see `xtask/src/bench.rs` for the method). Each section is\n\
one run of the command; numbers from different sections were taken at different times on a\n\
shared machine and are only comparable within their own section.\n";

// ---------------------------------------------------------------------------------------------
// One run: fresh namespace, broker, proxy; produce, fetch, latency.

struct RunResult {
    mode: Mode,
    produce: Value,
    fetch: Value,
    latency: Value,
    /// CPU seconds of the proxy process during each phase (None for direct).
    proxy_cpu: Option<[f64; 3]>,
    /// CPU seconds of the broker during each phase.
    broker_cpu: [f64; 3],
}

impl RunResult {
    fn produce_mb(&self) -> f64 {
        num(&self.produce, "mb_per_s")
    }
    fn produce_rec(&self) -> f64 {
        num(&self.produce, "records_per_s")
    }
    fn fetch_mb(&self) -> f64 {
        num(&self.fetch, "mb_per_s")
    }
    fn fetch_rec(&self) -> f64 {
        num(&self.fetch, "records_per_s")
    }
    fn lat(&self, q: &str) -> f64 {
        self.latency["latency_us"][q].as_f64().unwrap_or(f64::NAN)
    }
    /// Proxy CPU seconds per GB (1e9 bytes of record values) moved in phase `i` (0 produce,
    /// 1 fetch).
    fn proxy_cpu_per_gb(&self, i: usize) -> Option<f64> {
        let cpu = self.proxy_cpu?[i];
        let bytes = if i == 0 {
            num(&self.produce, "bytes")
        } else {
            num(&self.fetch, "bytes")
        };
        Some(cpu / (bytes / 1e9))
    }
    /// Proxy CPU µs per record of the latency run (one produce request each at linger 0),
    /// warm-up records included.
    fn proxy_cpu_per_request(&self) -> Option<f64> {
        let cpu = self.proxy_cpu?[2];
        let n = num(&self.latency, "records") + num(&self.latency, "warmup");
        Some(cpu * 1e6 / n)
    }
    fn broker_cpu_per_gb(&self, i: usize) -> f64 {
        let bytes = if i == 0 {
            num(&self.produce, "bytes")
        } else {
            num(&self.fetch, "bytes")
        };
        self.broker_cpu[i] / (bytes / 1e9)
    }

    fn one_line(&self) -> String {
        let mut s = format!(
            "{:<11} produce {:7.1} MB/s {:8.0} rec/s | fetch {:7.1} MB/s | latency p50 {:6.0} p99 {:6.0} p99.9 {:6.0} µs",
            self.mode.name(),
            self.produce_mb(),
            self.produce_rec(),
            self.fetch_mb(),
            self.lat("p50"),
            self.lat("p99"),
            self.lat("p999"),
        );
        if let (Some(p), Some(f)) = (self.proxy_cpu_per_gb(0), self.proxy_cpu_per_gb(1)) {
            let _ = write!(s, " | proxy CPU {p:.2} s/GB produce, {f:.2} s/GB fetch");
        }
        s
    }

    fn to_json(&self) -> Value {
        json!({
            "mode": self.mode.name(),
            "produce": self.produce,
            "fetch": self.fetch,
            "latency": self.latency,
            "proxy_cpu_s": self.proxy_cpu,
            "broker_cpu_s": self.broker_cpu,
        })
    }
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

fn one_run(plan: &Plan, mode: Mode, loadgen: &Path) -> Result<RunResult> {
    let broker: SocketAddr = BROKER.parse()?;
    let ns = Netns::new("bench")?;
    let work = WorkDir::new("bench")?;
    // Declared after `ns`, so dropped (killed) before the namespace goes.
    let mut _haproxy: Option<Proc> = None;
    let mut daemon: Option<Interceptor> = None;
    let tansu = match mode {
        Mode::Direct | Mode::Interceptor | Mode::AuditOff => start_tansu(&ns, broker, &work)?,
        Mode::Haproxy => {
            let behind: SocketAddr = BEHIND_HAPROXY.parse()?;
            let tansu = start_tansu_behind(&ns, behind, broker, &work)?;
            _haproxy = Some(start_haproxy(&ns, broker, behind, &work)?);
            tansu
        }
    };
    if matches!(mode, Mode::Interceptor | Mode::AuditOff) {
        let mut config = DaemonConfig::kafka(&[broker]);
        if plan.masking {
            config = masking_config(config, &work)?;
        }
        if mode == Mode::AuditOff {
            config = config.extra("[audit]\nrecords = false\nfsync = false\n");
        } else if plan.audit {
            config = config.extra(&format!(
                "[recording]\nenabled = true\ndir = {:?}\n",
                work.join("recordings").display().to_string()
            ));
        }
        let mut d = Interceptor::new(&ns, &work, &config.body(), PinDir::new("bench"))?;
        d.start()?;
        daemon = Some(d);
    }
    let proxy_pid = match mode {
        Mode::Direct => None,
        Mode::Interceptor | Mode::AuditOff => daemon.as_ref().and_then(Interceptor::pid),
        Mode::Haproxy => _haproxy.as_ref().map(Proc::pid),
    };
    let proxy_cpu = || proxy_pid.map(cpu_seconds).transpose();
    let broker_cpu = || cpu_seconds(tansu.pid());

    let size = plan.size.to_string();
    let records = plan.records.to_string();
    let timeout_s = (60 + plan.records / 5_000).to_string();
    let payload = if plan.masking { "json" } else { "random" };
    let common = |topic: &str| -> Vec<String> {
        [
            "--bootstrap",
            BROKER,
            "--topic",
            topic,
            "--size",
            &size,
            "--timeout-s",
            &timeout_s,
            "--payload",
            payload,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };

    let (p0, b0) = (proxy_cpu()?, broker_cpu()?);
    let mut args = vec!["produce".to_string()];
    args.extend(common(THROUGHPUT_TOPIC));
    args.extend(
        [
            "--records",
            &records,
            "--acks",
            &plan.acks,
            "--linger-ms",
            &plan.linger_ms.to_string(),
            "--compression",
            &plan.compression,
        ]
        .map(String::from),
    );
    let produce = run_loadgen(&ns, loadgen, &args)?;
    let (p1, b1) = (proxy_cpu()?, broker_cpu()?);

    let mut args = vec!["consume".to_string()];
    args.extend(common(THROUGHPUT_TOPIC));
    args.extend(["--records".to_string(), records.clone()]);
    let fetch = run_loadgen(&ns, loadgen, &args)?;
    let (p2, b2) = (proxy_cpu()?, broker_cpu()?);

    let mut args = vec!["produce".to_string()];
    args.extend(common(LATENCY_TOPIC));
    args.extend(
        [
            "--records",
            &(plan.rate * plan.latency_secs).to_string(),
            "--rate",
            &plan.rate.to_string(),
            "--acks",
            &plan.acks,
            "--linger-ms",
            "0",
            "--warmup",
            &plan.rate.min(1000).to_string(),
        ]
        .map(String::from),
    );
    let latency = run_loadgen(&ns, loadgen, &args)?;
    let (p3, b3) = (proxy_cpu()?, broker_cpu()?);

    if let Some(d) = daemon.as_mut() {
        // The traffic must really have gone through the daemon.
        d.wait_audit(Duration::from_secs(10), |_| true)
            .context("the interceptor audited no connection: was the run steered?")?;
        d.stop()?;
    }
    let proxy_cpu = match (p0, p1, p2, p3) {
        (Some(a), Some(b), Some(c), Some(d)) => Some([b - a, c - b, d - c]),
        _ => None,
    };
    Ok(RunResult {
        mode,
        produce,
        fetch,
        latency,
        proxy_cpu,
        broker_cpu: [b1 - b0, b2 - b1, b3 - b2],
    })
}

/// The daemon of the masking scenario: allow-all plus [`MASKING_POLICY`], and an embedded
/// vault with a fresh keyring in the run's work directory.
fn masking_config(config: DaemonConfig, work: &WorkDir) -> Result<DaemonConfig> {
    let policies = work.join("policies");
    fs::create_dir_all(&policies)?;
    fs::write(
        policies.join("allow-all.yaml"),
        interceptor_e2e::ALLOW_ALL_POLICY,
    )?;
    fs::write(policies.join("masking.yaml"), MASKING_POLICY)?;
    let keys = work.join("vault.keys");
    let made = std::process::Command::new(interceptor_e2e::interceptor_bin())
        .args(["vault", "init"])
        .arg(&keys)
        .output()?;
    if !made.status.success() {
        bail!(
            "interceptor vault init: {}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    Ok(config.policy_dir(&policies).extra(&format!(
        "[vault]\nbackend = \"embedded\"\npath = {:?}\nkey_file = {:?}\n",
        work.join("vault.redb").display().to_string(),
        keys.display().to_string()
    )))
}

/// The masking engine on its own (`examples/mask_throughput.rs`, release, one core): detector
/// scan of clean data, masking rewrite, reveal.
fn engine_report(no_build: bool) -> Result<String> {
    if !no_build {
        util::run(cargo().current_dir(root()).args([
            "build",
            "--release",
            "--package",
            "interceptor",
            "--example",
            "mask_throughput",
        ]))?;
    }
    let bin = root().join("target/release/examples/mask_throughput");
    let out = std::process::Command::new(&bin)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.trim_start().starts_with('{'));
    let v: Value = serde_json::from_str(line.unwrap_or("{}"))?;
    let scan = num(&v, "detector_scan_gb_s");
    let rewrite = num(&v, "mask_rewrite_mb_s");
    let reveal = num(&v, "reveal_mb_s");
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    Ok(format!(
        "\nMasking engine alone (`cargo run --release -p interceptor --example mask_throughput`, \
         one core, 64 MiB of ~1 KiB JSON records, median of {} runs): detector scan of clean \
         data with every built-in detector {scan:.2} GB/s (target ≥ 2 GB/s: {}); masking \
         rewrite with two fields masked {rewrite:.0} MB/s (target ≥ 500 MB/s: {}); reveal \
         {reveal:.0} MB/s.\n",
        num(&v, "runs"),
        verdict(scan >= 2.0),
        verdict(rewrite >= 500.0),
    ))
}

fn run_loadgen(ns: &Netns, loadgen: &Path, args: &[String]) -> Result<Value> {
    let mut cmd = ns.command(loadgen);
    cmd.args(args);
    let done = run_with_timeout(cmd, Duration::from_secs(600))?;
    let last = done.stdout.lines().rev().find(|l| !l.trim().is_empty());
    match (
        done.status.success(),
        last.and_then(|l| serde_json::from_str(l).ok()),
    ) {
        (true, Some(v)) => Ok(v),
        _ => bail!(
            "loadgen {} failed: {}\n{}\n{}",
            args.join(" "),
            done.status,
            done.stdout,
            done.stderr
        ),
    }
}

/// tansu listening on `listen`, advertising `advertised` (where haproxy listens).
fn start_tansu_behind(
    ns: &Netns,
    listen: SocketAddr,
    advertised: SocketAddr,
    work: &WorkDir,
) -> Result<Proc> {
    let mut cmd = ns.command(peers().tansu);
    cmd.arg("broker")
        .args(["--listener-url", &format!("tcp://{listen}")])
        .args(["--advertised-listener-url", &format!("tcp://{advertised}")])
        .args(["--storage-engine", "memory://tansu/"])
        .current_dir(work.path());
    let proc = Proc::spawn("tansu", cmd, &work.join("tansu.log"))?;
    ns.wait_port(listen, Duration::from_secs(20))?;
    Ok(proc)
}

fn start_haproxy(
    ns: &Netns,
    listen: SocketAddr,
    upstream: SocketAddr,
    work: &WorkDir,
) -> Result<Proc> {
    let cfg = work.join("haproxy.cfg");
    fs::write(
        &cfg,
        format!(
            "global\n    maxconn 1000\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    \
             timeout client 120s\n    timeout server 120s\n\nlisten kafka\n    bind {listen}\n    \
             server broker {upstream}\n"
        ),
    )?;
    let mut cmd = ns.command("haproxy");
    cmd.arg("-db").arg("-f").arg(&cfg);
    let proc = Proc::spawn("haproxy", cmd, &work.join("haproxy.log"))?;
    ns.wait_port(listen, Duration::from_secs(10))?;
    Ok(proc)
}

/// utime + stime of a process (all its threads), in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is field 3.
    let rest = stat.rsplit_once(')').context("odd /proc/PID/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((utime + stime) / ticks)
}

// ---------------------------------------------------------------------------------------------
// Report

struct Facts {
    date: String,
    stamp: String,
    commit: String,
    nproc: usize,
    kernel: String,
    cpu: String,
    mem_gib: f64,
    librdkafka: String,
    haproxy: String,
    /// 1-minute load average before and after the bench.
    load: String,
}

impl Facts {
    fn gather(runs: &[RunResult]) -> Facts {
        let sh = |program: &str, args: &[&str]| -> String {
            Command::new(program)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_else(|| "?".into())
        };
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
            .unwrap_or_else(|| "?".into());
        let mem_gib = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .map(|kb| kb / 1024.0 / 1024.0)
            .unwrap_or(f64::NAN);
        // Changes to the code measured, not to the results file this command appends to.
        let dirty = !sh(
            "git",
            &[
                "-C",
                &root().display().to_string(),
                "status",
                "--porcelain",
                "--",
                ".",
                ":(exclude)BENCHMARKS.md",
            ],
        )
        .is_empty();
        let commit = format!(
            "{}{}",
            sh(
                "git",
                &[
                    "-C",
                    &root().display().to_string(),
                    "rev-parse",
                    "--short",
                    "HEAD"
                ]
            ),
            if dirty {
                " (with uncommitted changes)"
            } else {
                ""
            }
        );
        Facts {
            date: sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            stamp: sh("date", &["-u", "+%Y%m%dT%H%M%SZ"]),
            commit,
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: sh("uname", &["-r"]),
            cpu,
            mem_gib,
            librdkafka: runs
                .first()
                .and_then(|r| r.produce["librdkafka"].as_str())
                .unwrap_or("?")
                .to_string(),
            haproxy: sh("haproxy", &["-v"])
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(2))
                .unwrap_or("?")
                .to_string(),
            load: String::new(),
        }
    }
}

/// The 1-minute load average.
pub(crate) fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// "median (min–max)" with `prec` decimals.
pub(crate) fn spread(v: &[f64], prec: usize) -> String {
    let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if f.is_empty() {
        return "–".into();
    }
    let min = f.iter().copied().fold(f64::INFINITY, f64::min);
    let max = f.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let med = median(f.clone());
    if f.len() == 1 {
        format!("{med:.prec$}")
    } else {
        format!("{med:.prec$} ({min:.prec$}–{max:.prec$})")
    }
}

pub(crate) fn percent(v: &[f64]) -> String {
    let p: Vec<f64> = v.iter().map(|x| x * 100.0).collect();
    let s = spread(&p, 1);
    // 97.1 (95.0–99.2) -> 97.1 % (95.0–99.2)
    match s.split_once(' ') {
        Some((a, b)) => format!("{a} % {b}"),
        None => format!("{s} %"),
    }
}

pub(crate) fn signed(v: &[f64], prec: usize) -> String {
    let s = spread(v, prec);
    if s.starts_with('-') || s == "–" {
        s
    } else {
        format!("+{s}")
    }
}

fn report(
    plan: &Plan,
    runs: &[RunResult],
    facts: &Facts,
    command: &str,
    elapsed: Duration,
) -> String {
    let of = |mode: Mode| -> Vec<&RunResult> { runs.iter().filter(|r| r.mode == mode).collect() };
    let direct = of(Mode::Direct);
    let proxies: Vec<Mode> = plan
        .modes
        .iter()
        .copied()
        .filter(|m| *m != Mode::Direct)
        .collect();

    let mut s = String::new();
    let _ = writeln!(s, "## {} — `{command}`\n", facts.date);
    let _ = writeln!(
        s,
        "- Machine: {} vCPU ({}), {:.0} GiB RAM, Linux {}; broker, proxy and client share the \
         CPUs, all on loopback in a network namespace per run. Load average (1 min): {}.",
        facts.nproc, facts.cpu, facts.mem_gib, facts.kernel, facts.load
    );
    let _ = writeln!(
        s,
        "- Broker: tansu 0.6.0, memory storage, started fresh for every run; topics \
         auto-created (4 partitions)."
    );
    let _ = writeln!(
        s,
        "- Client: `loadgen` (librdkafka {} via the rdkafka crate 0.39), one producer or \
         consumer per run.",
        facts.librdkafka
    );
    let payload = if plan.masking {
        "JSON payments, one of 64 card numbers and emails each"
    } else {
        "pseudo-random, incompressible"
    };
    let _ = writeln!(
        s,
        "- Throughput: {} records of {} B ({payload}), compression {}, \
         acks={}, linger.ms={}, as fast as possible; then the same records fetched from the \
         beginning (assign, no group; librdkafka's default fetch sizes).",
        plan.records, plan.size, plan.compression, plan.acks, plan.linger_ms
    );
    if plan.masking {
        let _ = writeln!(
            s,
            "- Masking: the interceptor masks `$.card.number` (partial, last four kept) and \
             `$.customer.email` (tokenized, embedded vault) in every produced record, and \
             reveals the email tokens again in every fetch (the bench's anonymous client is in \
             the rule's `reveal`); direct and haproxy move the records unmasked. The vault \
             holds 64 distinct emails: after the first request each token is a cache hit, so \
             this measures masking, not the vault's disk (one durable write per produce \
             request with new tokens: 4.6 ms embedded, 1.0 ms PostgreSQL per one-token store in `cargo test -p interceptor --lib store_latency -- --nocapture`, debug build)."
        );
    }
    let _ = writeln!(
        s,
        "- Latency: produce at {} records/s offered for {} s, linger.ms=0, acks={}; per record \
         from enqueue to delivery report.",
        plan.rate, plan.latency_secs, plan.acks
    );
    let _ = writeln!(
        s,
        "- Rounds: {}{}, interleaved {}; cells are median (min–max) over the rounds; ratios and \
         added latency are taken per round, then summarised. CPU: utime+stime of the proxy \
         process per GB (10⁹ B) of record values moved.",
        plan.rounds,
        if plan.warmup {
            " after one discarded warm-up round"
        } else {
            ""
        },
        plan.modes
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        s,
        "- Interceptor: release build of {}{}. Bench wall time {:.0} s.\n",
        facts.commit,
        if proxies.contains(&Mode::Haproxy) {
            format!(
                "; haproxy {} (TCP mode, default threads) as the L4 floor",
                facts.haproxy
            )
        } else {
            String::new()
        },
        elapsed.as_secs_f64()
    );

    // Header.
    let mut head = "| | direct |".to_string();
    let mut rule = "|---|---|".to_string();
    for m in &proxies {
        let _ = write!(head, " {} | {} vs direct |", m.name(), m.name());
        rule.push_str("---|---|");
    }
    let _ = writeln!(s, "{head}\n{rule}");

    type Get = fn(&RunResult) -> f64;
    let rows: [(&str, Get, usize, bool); 7] = [
        ("produce MB/s", RunResult::produce_mb, 1, true),
        ("produce records/s", RunResult::produce_rec, 0, true),
        ("fetch MB/s", RunResult::fetch_mb, 1, true),
        ("fetch records/s", RunResult::fetch_rec, 0, true),
        ("latency p50 µs", |r| r.lat("p50"), 0, false),
        ("latency p99 µs", |r| r.lat("p99"), 0, false),
        ("latency p99.9 µs", |r| r.lat("p999"), 0, false),
    ];
    for (label, get, prec, is_ratio) in rows {
        let d: Vec<f64> = direct.iter().map(|r| get(r)).collect();
        let mut line = format!("| {label} | {} |", spread(&d, prec));
        for m in &proxies {
            let p = of(*m);
            let v: Vec<f64> = p.iter().map(|r| get(r)).collect();
            // Per round: the i-th proxy run against the i-th direct run.
            let per_round: Vec<f64> = p
                .iter()
                .zip(&direct)
                .map(|(a, b)| {
                    if is_ratio {
                        get(a) / get(b)
                    } else {
                        get(a) - get(b)
                    }
                })
                .collect();
            let cmp = if is_ratio {
                percent(&per_round)
            } else {
                format!("{} µs", signed(&per_round, 0))
            };
            let _ = write!(line, " {} | {cmp} |", spread(&v, prec));
        }
        let _ = writeln!(s, "{line}");
    }
    for (label, i) in [("proxy CPU s/GB, produce", 0), ("proxy CPU s/GB, fetch", 1)] {
        let mut line = format!("| {label} | – |");
        for m in &proxies {
            let v: Vec<f64> = of(*m)
                .iter()
                .filter_map(|r| r.proxy_cpu_per_gb(i))
                .collect();
            let _ = write!(line, " {} | |", spread(&v, 2));
        }
        let _ = writeln!(s, "{line}");
    }
    {
        let mut line = "| proxy CPU µs per request, latency run | – |".to_string();
        for m in &proxies {
            let v: Vec<f64> = of(*m)
                .iter()
                .filter_map(|r| r.proxy_cpu_per_request())
                .collect();
            let _ = write!(line, " {} | |", spread(&v, 0));
        }
        let _ = writeln!(s, "{line}");
    }
    for (label, i) in [
        ("broker CPU s/GB, produce", 0),
        ("broker CPU s/GB, fetch", 1),
    ] {
        let d: Vec<f64> = direct.iter().map(|r| r.broker_cpu_per_gb(i)).collect();
        let mut line = format!("| {label} | {} |", spread(&d, 2));
        for m in &proxies {
            let v: Vec<f64> = of(*m).iter().map(|r| r.broker_cpu_per_gb(i)).collect();
            let _ = write!(line, " {} | |", spread(&v, 2));
        }
        let _ = writeln!(s, "{line}");
    }

    // Against the targets.
    let icpt = of(Mode::Interceptor);
    let ratio = |get: Get| -> f64 {
        median(
            icpt.iter()
                .zip(&direct)
                .map(|(a, b)| get(a) / get(b))
                .collect(),
        )
    };
    let added_p99 = median(
        icpt.iter()
            .zip(&direct)
            .map(|(a, b)| a.lat("p99") - b.lat("p99"))
            .collect(),
    );
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    let (rp, rf) = (ratio(RunResult::produce_mb), ratio(RunResult::fetch_mb));
    if plan.audit {
        let off = of(Mode::AuditOff);
        let vs_off = |get: Get| -> f64 {
            median(
                icpt.iter()
                    .zip(&off)
                    .map(|(a, b)| get(a) / get(b))
                    .collect(),
            )
        };
        let (ap, af) = (vs_off(RunResult::produce_mb), vs_off(RunResult::fetch_mb));
        let added = median(
            icpt.iter()
                .zip(&off)
                .map(|(a, b)| a.lat("p99") - b.lat("p99"))
                .collect(),
        );
        let _ = writeln!(
            s,
            "\nTarget (full audit trail and session recording, against the same interceptor \
             with the trail at its minimum): ≥ 95 % of audit-off throughput — produce {:.1} % \
             ({}), fetch {:.1} % ({}); p99 latency {:+.0} µs. Against direct: produce {:.1} %, \
             fetch {:.1} %.",
            ap * 100.0,
            verdict(ap >= 0.95),
            af * 100.0,
            verdict(af >= 0.95),
            added,
            rp * 100.0,
            rf * 100.0,
        );
        return s;
    }
    if plan.masking {
        let _ = writeln!(
            s,
            "\nTarget (interceptor masking two JSON fields of every 1 KiB record, {}): ≥ 90 % \
             of direct throughput — produce {:.1} % ({}), fetch with reveal {:.1} % ({}).",
            plan.compression,
            rp * 100.0,
            verdict(rp >= 0.90),
            rf * 100.0,
            verdict(rf >= 0.90),
        );
        return s;
    }
    let _ = writeln!(
        s,
        "\nTargets (interceptor): ≥ 98 % of direct throughput — produce {:.1} % ({}), fetch \
         {:.1} % ({}); ≤ 100 µs added p99 — {:+.0} µs ({}).",
        rp * 100.0,
        verdict(rp >= 0.98),
        rf * 100.0,
        verdict(rf >= 0.98),
        added_p99,
        verdict(added_p99 <= 100.0)
    );
    s
}

pub(crate) fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
}

pub(crate) fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}
