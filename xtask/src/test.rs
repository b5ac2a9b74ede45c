//! `cargo xtask test`: everything CI runs, in order, with a summary at the end.
//!
//! deps → fmt check → clippy (deny warnings) → build (kernel object + daemon) → cargo test
//! (unit, kernel and end-to-end tests of the default members) → a bounded fuzz run.
//!
//! A lint failure does not stop the later steps (so one run shows everything), but a failed
//! deps or build step stops what depends on it. Exits non-zero if any step failed.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::{
    build::{self, BuildArgs},
    deps, fuzz,
    util::{self, cargo, root},
};

#[derive(clap::Args)]
pub struct TestArgs {
    /// Seconds the fuzz step runs (0 skips it).
    #[arg(long, default_value_t = 20)]
    pub fuzz_seconds: u64,
    /// Skip `cargo xtask deps` (everything is known to be installed).
    #[arg(long)]
    pub no_deps: bool,
    /// Skip fmt and clippy.
    #[arg(long)]
    pub no_lint: bool,
    /// Skip the kernel and end-to-end tests explicitly (INTERCEPTOR_SKIP_KERNEL_TESTS=1).
    #[arg(long)]
    pub skip_kernel: bool,
    /// Threads per test binary (the end-to-end tests each run in their own namespace; most of
    /// their time is spent waiting on the broker, so more threads than cores pays).
    #[arg(long, default_value_t = 4)]
    pub test_threads: usize,
    /// Extra arguments for `cargo test` (e.g. a test name filter), after `--`.
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
}

/// Lets `test` call `fuzz::run` with the same arguments `cargo xtask fuzz` would parse.
#[derive(Parser)]
struct FuzzCli {
    #[command(flatten)]
    args: fuzz::FuzzArgs,
}

struct Step {
    name: String,
    outcome: Outcome,
    took: Duration,
}

enum Outcome {
    Passed,
    Failed(String),
    Skipped(&'static str),
}

struct Steps(Vec<Step>);

impl Steps {
    /// Runs a step, prints a banner, records the outcome; returns whether it passed.
    fn run(&mut self, name: &str, f: impl FnOnce() -> Result<()>) -> bool {
        eprintln!("\n==> {name}");
        let started = Instant::now();
        let result = f();
        let took = started.elapsed();
        let passed = result.is_ok();
        let outcome = match result {
            Ok(()) => Outcome::Passed,
            Err(e) => {
                eprintln!("==> {name}: FAILED: {e:#}");
                Outcome::Failed(format!("{e:#}"))
            }
        };
        self.0.push(Step {
            name: name.to_string(),
            outcome,
            took,
        });
        passed
    }

    fn skip(&mut self, name: &str, why: &'static str) {
        self.0.push(Step {
            name: name.to_string(),
            outcome: Outcome::Skipped(why),
            took: Duration::ZERO,
        });
    }

    fn failed(&self) -> usize {
        self.0
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Failed(_)))
            .count()
    }

    fn print(&self, total: Duration) {
        eprintln!("\n================ cargo xtask test: summary ================");
        for s in &self.0 {
            let (mark, note) = match &s.outcome {
                Outcome::Passed => ("ok     ", String::new()),
                Outcome::Failed(e) => ("FAILED ", first_line(e)),
                Outcome::Skipped(why) => ("skipped", why.to_string()),
            };
            eprintln!(
                "  {mark} {:<28} {:>7.1}s  {note}",
                s.name,
                s.took.as_secs_f64()
            );
        }
        let failed = self.failed();
        eprintln!(
            "  {} in {:.0}s",
            if failed == 0 {
                "all steps succeeded".to_string()
            } else {
                format!("{failed} step(s) FAILED")
            },
            total.as_secs_f64()
        );
        eprintln!("===========================================================");
    }
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.chars().count() > 100 {
        format!("{}…", line.chars().take(100).collect::<String>())
    } else {
        line.to_string()
    }
}

pub fn run(args: &TestArgs) -> Result<()> {
    let started = Instant::now();
    let mut steps = Steps(Vec::new());

    let deps_ok = if args.no_deps {
        steps.skip("deps", "--no-deps");
        true
    } else {
        steps.run("deps", deps::run)
    };

    if args.no_lint {
        steps.skip("fmt", "--no-lint");
        steps.skip("clippy", "--no-lint");
    } else {
        steps.run("fmt", || {
            util::run(
                cargo()
                    .current_dir(root())
                    .args(["fmt", "--all", "--check"]),
            )
        });
        steps.run("clippy", || {
            util::run(cargo().current_dir(root()).args([
                "clippy",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
            .context("cargo clippy --all-targets -- -D warnings")
        });
    }

    let built = if deps_ok {
        let mut built = None;
        steps.run("build (kernel + daemon)", || {
            let b = build::run(&BuildArgs::default())?;
            eprintln!(
                "built {} and {}",
                b.daemon.display(),
                b.ebpf_object.display()
            );
            built = Some(b);
            Ok(())
        });
        built
    } else {
        steps.skip("build (kernel + daemon)", "deps failed");
        None
    };

    match &built {
        Some(built) => {
            steps.run("cargo test", || {
                let mut cmd = cargo();
                cmd.current_dir(root())
                    .arg("test")
                    .env("INTERCEPTOR_BIN", &built.daemon)
                    .env("INTERCEPTOR_REPO", root());
                if args.skip_kernel {
                    cmd.env("INTERCEPTOR_SKIP_KERNEL_TESTS", "1");
                }
                cmd.arg("--");
                cmd.arg(format!("--test-threads={}", args.test_threads));
                cmd.args(&args.cargo_test_args);
                run_cargo_test(&mut cmd).context("cargo test: see the failures above")
            });
        }
        None => steps.skip("cargo test", "build failed"),
    }

    if args.fuzz_seconds == 0 {
        steps.skip("fuzz", "--fuzz-seconds 0");
    } else if !deps_ok {
        steps.skip("fuzz", "deps failed");
    } else {
        let seconds = args.fuzz_seconds.to_string();
        steps.run(&format!("fuzz ({seconds} s)"), || {
            let cli = FuzzCli::try_parse_from(["fuzz", "--seconds", &seconds])
                .map_err(|e| anyhow::anyhow!("fuzz arguments: {e}"))?;
            fuzz::run(&cli.args)
        });
    }

    steps.print(started.elapsed());
    if steps.failed() > 0 {
        bail!("{} step(s) failed", steps.failed());
    }
    Ok(())
}

/// `cargo test`, inheriting stdio (its own "test result" lines are what CI reads).
fn run_cargo_test(cmd: &mut Command) -> Result<()> {
    util::run(cmd)
}
