//! Project tasks. Every task that needs an outside tool installs it first (`deps`), so each
//! README command works on a fresh machine.
//!
//! - `deps`   Debian packages, cargo tools, the Python clients and the broker (idempotent)
//! - `build`  the kernel object (Debian rustc + bpf-linker) and the daemon
//! - `test`   everything CI runs: deps, build, lints, unit, kernel and end-to-end tests, fuzz
//! - `demo`   a real broker behind the interceptor in a network namespace, real clients
//! - `fuzz`   the cargo-fuzz targets for a bounded time
//! - `bench`  direct vs interceptor throughput and latency, appended to BENCHMARKS.md

mod bench;
mod bench_mqtt;
mod build;
mod demo;
mod deps;
mod fuzz;
mod test;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install every Debian package, cargo tool and peer the build, tests and demo need.
    Deps,
    /// Build the kernel object and the daemon.
    Build(build::BuildArgs),
    /// Run every test (what CI runs).
    Test(test::TestArgs),
    /// Run the demo.
    Demo(demo::DemoArgs),
    /// Run the fuzz targets for a bounded time.
    Fuzz(fuzz::FuzzArgs),
    /// Measure direct vs through-the-interceptor throughput and latency.
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Deps => deps::run(),
        Task::Build(args) => build::run(&args).map(|_| ()),
        Task::Test(args) => test::run(&args),
        Task::Demo(args) => demo::run(&args),
        Task::Fuzz(args) => fuzz::run(&args),
        Task::Bench(args) => bench::run(&args),
    }
}
