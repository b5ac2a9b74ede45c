//! `cargo xtask fuzz [--seconds N] [--target NAME]`: builds the cargo-fuzz targets in `fuzz/`
//! and runs each for N seconds (libFuzzer's `-max_total_time`); fails on the first crash,
//! naming the input that caused it.
//!
//! - Needs the nightly toolchain and cargo-fuzz; `deps` installs either if missing.
//! - New corpus entries go to `fuzz/corpus/TARGET` (kept between runs, not in git); the
//!   committed seeds in `fuzz/seeds/TARGET` are read as well, so a short run starts from
//!   valid frames instead of rediscovering the protocol.
//! - Crashing inputs land in `fuzz/artifacts/TARGET` (not in git).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::util::{output, root, run as run_cmd};

/// The cargo-fuzz release `cargo xtask deps` installs; the same one is installed here when
/// missing, so either task leaves the machine in the same state.
/// A single input taking longer than this is reported as a hang.
const INPUT_TIMEOUT_SECONDS: u32 = 10;

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds each target runs.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Run only this target (repeatable); default: every target in fuzz/.
    #[arg(long = "target")]
    pub targets: Vec<String>,
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    crate::deps::fuzz_tools()?;
    let fuzz_dir = root().join("fuzz");
    let targets = if args.targets.is_empty() {
        list_targets(&fuzz_dir)?
    } else {
        args.targets.clone()
    };
    let started = Instant::now();
    run_cmd(&mut cargo_fuzz(&fuzz_dir, "build"))?;
    eprintln!("fuzz: built in {:.0?}", started.elapsed());
    for target in &targets {
        run_target(&fuzz_dir, target, args.seconds)?;
    }
    Ok(())
}

/// `cargo +nightly fuzz SUBCOMMAND --fuzz-dir DIR`. Through rustup's `cargo` proxy, not
/// `$CARGO`: under `cargo xtask` that is the stable cargo, which knows no `+nightly`.
fn cargo_fuzz(fuzz_dir: &Path, subcommand: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args(["+nightly", "fuzz", subcommand, "--fuzz-dir"])
        .arg(fuzz_dir)
        .current_dir(root());
    if system_zstd() {
        // zstd-sys (under kafka-protocol) otherwise compiles libzstd from source: over three
        // minutes of a cold fuzz build on two cores. Debian's libzstd-dev (`deps`) has it.
        cmd.env("ZSTD_SYS_USE_PKG_CONFIG", "1");
    }
    cmd
}

fn system_zstd() -> bool {
    Command::new("pkg-config")
        .args(["--exists", "libzstd"])
        .status()
        .is_ok_and(|s| s.success())
}

fn list_targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let targets: Vec<String> = output(&mut cargo_fuzz(fuzz_dir, "list"))?
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(String::from)
        .collect();
    if targets.is_empty() {
        bail!("no fuzz targets in {}", fuzz_dir.display());
    }
    Ok(targets)
}

fn run_target(fuzz_dir: &Path, target: &str, seconds: u64) -> Result<()> {
    let corpus = fuzz_dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("cannot create {}", corpus.display()))?;
    let seeds = fuzz_dir.join("seeds").join(target);
    let mut cmd = cargo_fuzz(fuzz_dir, "run");
    cmd.arg(target).arg(&corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds); // read-only: libFuzzer writes new entries to the first directory
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
        .arg("-print_final_stats=1");
    eprintln!("fuzz: {target} for {seconds} s");
    let started = Instant::now();
    run_cmd(&mut cmd).with_context(|| crash_help(fuzz_dir, target))?;
    eprintln!("fuzz: {target}: no crash in {:.0?}", started.elapsed());
    Ok(())
}

fn crash_help(fuzz_dir: &Path, target: &str) -> String {
    let artifacts: PathBuf = fuzz_dir.join("artifacts").join(target);
    format!(
        "fuzz target {target} failed; the input is in {} \
         (reproduce: cargo +nightly fuzz run --fuzz-dir fuzz {target} ARTIFACT)",
        artifacts.display()
    )
}
