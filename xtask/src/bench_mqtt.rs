//! `cargo xtask bench --mqtt`: MQTT publish throughput and latency, direct to mosquitto
//! against through the kernel-steered interceptor, measured as ratios within each round.
//!
//! Each run starts a fresh namespace, mosquitto (password file: only the interceptor's login,
//! which the direct runs use too) and, for the interceptor runs, the daemon with the full
//! audit trail (every message decided and recorded each way, group-committed fsync).
//! `mqttgen` (in `loadgen/`) publishes with one connection and receives with another:
//! - QoS 0: as fast as the publisher's socket takes them;
//! - QoS 1: at most `--window` publishes unacknowledged;
//! - latency: QoS 1 at a fixed rate, publish-to-delivery time of each message.
//!
//! The pairs alternate (direct, interceptor) so slow drifts of the shared machine hit both.

use std::{
    fmt::Write as _,
    fs,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use interceptor_e2e::{
    mqtt::start_mosquitto, run_with_timeout, BrokerUser, Interceptor, Netns, PinDir, WorkDir,
};
use serde_json::Value;

use crate::{
    bench::{command_line, cpu_seconds, loadavg, median, percent, signed, spread, BenchArgs},
    util::{self, cargo, root},
};

const BROKER: &str = "127.0.0.1:1883";
const PASSWORD: &str = "bench-broker-secret";

const POLICY: &str = "\
rules:
  - name: bench-mqtt
    effect: allow
    subjects:
      principals: [ANONYMOUS]
    resources:
      mqtt_topics: [\"#\"]
    operations: [publish, subscribe]
";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Direct,
    Interceptor,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Interceptor => "interceptor",
        }
    }
}

struct Plan {
    rounds: usize,
    warmup: bool,
    qos0: u64,
    qos1: u64,
    size: usize,
    window: u64,
    rate: u64,
    latency_secs: u64,
    write: bool,
}

struct RunResult {
    mode: Mode,
    qos0: Value,
    qos1: Value,
    latency: Value,
    /// Proxy CPU seconds of the QoS 0, QoS 1 and latency parts.
    proxy_cpu: Option<[f64; 3]>,
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let plan = Plan {
        rounds: if args.quick { 1 } else { args.pairs.max(1) },
        warmup: !args.quick,
        qos0: if args.quick { 50_000 } else { 300_000 },
        qos1: if args.quick { 30_000 } else { 200_000 },
        size: 256,
        window: 100,
        rate: args.rate,
        latency_secs: if args.quick { 3 } else { args.latency_secs },
        write: !args.quick && !args.no_write,
    };
    let release = root().join("target/release");
    if !args.no_build {
        crate::deps::run()?;
        crate::build::run(&crate::build::BuildArgs { release: true })?;
        util::run(cargo().current_dir(root()).args([
            "build",
            "--release",
            "--package",
            "loadgen",
            "--bin",
            "mqttgen",
        ]))?;
    }
    let mqttgen = release.join("mqttgen");
    let daemon = release.join("interceptor");
    for bin in [&mqttgen, &daemon, &release.join("interceptor-ebpf.o")] {
        if !bin.exists() {
            bail!("{} is missing (run without --no-build)", bin.display());
        }
    }
    std::env::set_var("INTERCEPTOR_BIN", &daemon);
    let command = command_line();
    let load_before = loadavg();
    let started = Instant::now();
    let modes = [Mode::Direct, Mode::Interceptor];
    if plan.warmup {
        eprintln!("bench: warm-up round (discarded)");
        for mode in modes {
            one_run(&plan, mode, &mqttgen).with_context(|| format!("warm-up, {}", mode.name()))?;
        }
    }
    let mut runs = Vec::new();
    for round in 1..=plan.rounds {
        for mode in modes {
            let r = one_run(&plan, mode, &mqttgen)
                .with_context(|| format!("round {round}, {}", mode.name()))?;
            eprintln!(
                "bench: round {round}/{} {}: QoS 0 {:.0} msg/s, QoS 1 {:.0} msg/s, latency p50 {} µs p99 {} µs",
                plan.rounds,
                mode.name(),
                num(&r.qos0, "msgs_per_s"),
                num(&r.qos1, "msgs_per_s"),
                num(&r.latency, "p50_us"),
                num(&r.latency, "p99_us"),
            );
            runs.push(r);
        }
    }
    let report = report(&plan, &runs, &command, started.elapsed(), &load_before);
    println!("{report}");
    if plan.write {
        let path = root().join("BENCHMARKS.md");
        let mut text = fs::read_to_string(&path).unwrap_or_default();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push('\n');
        text.push_str(&report);
        fs::write(&path, text)?;
        eprintln!("bench: appended to {}", path.display());
    }
    Ok(())
}

fn one_run(plan: &Plan, mode: Mode, mqttgen: &Path) -> Result<RunResult> {
    let broker: SocketAddr = BROKER.parse()?;
    let ns = Netns::new("bench-mqtt")?;
    let work = WorkDir::new("bench-mqtt")?;
    let user = BrokerUser {
        name: "interceptor".into(),
        password: PASSWORD.into(),
    };
    let _mosquitto = start_mosquitto(&ns, broker, work.path(), &user)?;
    let mut daemon: Option<Interceptor> = None;
    if mode == Mode::Interceptor {
        let secrets = work.join("mqtt-secrets.toml");
        fs::write(
            &secrets,
            format!("username = \"interceptor\"\npassword = \"{PASSWORD}\"\n"),
        )?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&secrets, fs::Permissions::from_mode(0o600))?;
        let policies = work.join("policies");
        fs::create_dir_all(&policies)?;
        fs::write(policies.join("bench.yaml"), POLICY)?;
        let body = format!(
            "[[listener]]\nprotocol = \"mqtt\"\naddress = \"{broker}\"\nsasl_mechanisms = []\n\
             allow_anonymous = true\n\n[mqtt]\nupstream_secrets_file = {:?}\n\n[policy]\ndir = {:?}\n",
            secrets.display().to_string(),
            policies.display().to_string()
        );
        let mut d = Interceptor::new(&ns, &work, &body, PinDir::new("bench"))?;
        d.start()?;
        daemon = Some(d);
    }
    let proxy_pid = daemon.as_ref().and_then(Interceptor::pid);
    let proxy_cpu = || proxy_pid.map(cpu_seconds).transpose();
    let login: Vec<String> = match mode {
        Mode::Direct => vec![
            "--username".into(),
            "interceptor".into(),
            "--password".into(),
            PASSWORD.into(),
        ],
        Mode::Interceptor => Vec::new(),
    };
    let gen = |extra: &[String]| -> Result<Value> {
        let mut cmd = ns.command(mqttgen);
        cmd.args(["--addr", BROKER, "--size", &plan.size.to_string()])
            .args(&login)
            .args(extra);
        let done = run_with_timeout(cmd, Duration::from_secs(300))?;
        let last = done.stdout.lines().rev().find(|l| !l.trim().is_empty());
        match (
            done.status.success(),
            last.and_then(|l| serde_json::from_str(l).ok()),
        ) {
            (true, Some(v)) => Ok(v),
            _ => bail!(
                "mqttgen {} failed: {}\n{}\n{}",
                extra.join(" "),
                done.status,
                done.stdout,
                done.stderr
            ),
        }
    };
    let s = |v: &[&str]| -> Vec<String> { v.iter().map(|s| s.to_string()).collect() };
    let c0 = proxy_cpu()?;
    let qos0 = gen(&s(&[
        "--qos",
        "0",
        "--count",
        &plan.qos0.to_string(),
        "--warmup",
        "5000",
        "--topic",
        "bench/q0",
    ]))?;
    let c1 = proxy_cpu()?;
    let qos1 = gen(&s(&[
        "--qos",
        "1",
        "--count",
        &plan.qos1.to_string(),
        "--window",
        &plan.window.to_string(),
        "--warmup",
        "5000",
        "--topic",
        "bench/q1",
    ]))?;
    let c2 = proxy_cpu()?;
    let latency = gen(&s(&[
        "--qos",
        "1",
        "--count",
        &(plan.rate * plan.latency_secs).to_string(),
        "--rate",
        &plan.rate.to_string(),
        "--warmup",
        &plan.rate.min(1000).to_string(),
        "--topic",
        "bench/latency",
    ]))?;
    let c3 = proxy_cpu()?;
    if let Some(d) = daemon.as_mut() {
        d.wait_audit(Duration::from_secs(10), |_| true)
            .context("the interceptor audited no connection: was the run steered?")?;
        d.stop()?;
    }
    let proxy_cpu = match (c0, c1, c2, c3) {
        (Some(a), Some(b), Some(c), Some(d)) => Some([b - a, c - b, d - c]),
        _ => None,
    };
    Ok(RunResult {
        mode,
        qos0,
        qos1,
        latency,
        proxy_cpu,
    })
}

fn report(plan: &Plan, runs: &[RunResult], command: &str, elapsed: Duration, load: &str) -> String {
    let of = |mode: Mode| -> Vec<&RunResult> { runs.iter().filter(|r| r.mode == mode).collect() };
    let (direct, through) = (of(Mode::Direct), of(Mode::Interceptor));
    let ratios = |part: fn(&RunResult) -> &Value| -> Vec<f64> {
        direct
            .iter()
            .zip(&through)
            .map(|(d, i)| num(part(i), "msgs_per_s") / num(part(d), "msgs_per_s"))
            .collect()
    };
    let values = |rs: &[&RunResult], part: fn(&RunResult) -> &Value, key: &str| -> Vec<f64> {
        rs.iter().map(|r| num(part(r), key)).collect()
    };
    let deltas = |key: &str| -> Vec<f64> {
        direct
            .iter()
            .zip(&through)
            .map(|(d, i)| num(&i.latency, key) - num(&d.latency, key))
            .collect()
    };
    let q0 = ratios(|r| &r.qos0);
    let q1 = ratios(|r| &r.qos1);
    let date = time_now();
    let mut s = String::new();
    let _ = writeln!(s, "## {date} — `{command}`\n");
    let _ = writeln!(
        s,
        "- MQTT: mosquitto 2.0.11 (password file), `mqttgen` publisher and subscriber \
         (MQTT 3.1.1, {} B payloads), all on loopback in a network namespace per run; the \
         interceptor with the full audit trail (every message decided and recorded each way, \
         allowed messages of one read counted in one decision event with their bytes and \
         digest; fsync on). {} measured round(s) of direct then interceptor{}. Load average \
         before: {load}. Took {:.0} s.",
        plan.size,
        plan.rounds,
        if plan.warmup {
            " after a discarded warm-up round"
        } else {
            ""
        },
        elapsed.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "\n| | direct | interceptor | interceptor / direct |\n|---|---|---|---|"
    );
    let _ = writeln!(
        s,
        "| QoS 0 publish, msg/s ({} messages) | {} | {} | {} |",
        plan.qos0,
        spread(&values(&direct, |r| &r.qos0, "msgs_per_s"), 0),
        spread(&values(&through, |r| &r.qos0, "msgs_per_s"), 0),
        percent(&q0)
    );
    let _ = writeln!(
        s,
        "| QoS 1 publish, msg/s ({} messages, window {}) | {} | {} | {} |",
        plan.qos1,
        plan.window,
        spread(&values(&direct, |r| &r.qos1, "msgs_per_s"), 0),
        spread(&values(&through, |r| &r.qos1, "msgs_per_s"), 0),
        percent(&q1)
    );
    for (label, key) in [("p50", "p50_us"), ("p99", "p99_us"), ("p99.9", "p999_us")] {
        let _ = writeln!(
            s,
            "| QoS 1 latency {label} at {} msg/s, µs | {} | {} | {} µs |",
            plan.rate,
            spread(&values(&direct, |r| &r.latency, key), 0),
            spread(&values(&through, |r| &r.latency, key), 0),
            signed(&deltas(key), 0)
        );
    }
    let cpu: Vec<[f64; 3]> = through.iter().filter_map(|r| r.proxy_cpu).collect();
    if !cpu.is_empty() {
        let per =
            |i: usize, n: u64| -> Vec<f64> { cpu.iter().map(|c| c[i] / n as f64 * 1e6).collect() };
        let _ = writeln!(
            s,
            "\nInterceptor CPU per message: QoS 0 {} µs, QoS 1 {} µs.",
            spread(&per(0, plan.qos0), 1),
            spread(&per(1, plan.qos1), 1)
        );
    }
    let target = median(q1.clone());
    let _ = writeln!(
        s,
        "\nTarget: QoS 1 throughput at least 95 % of direct: {} (median {:.1} %).",
        if target >= 0.95 { "met" } else { "NOT met" },
        target * 100.0
    );
    s
}

fn time_now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output();
    out.ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
