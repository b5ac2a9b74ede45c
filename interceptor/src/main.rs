//! The `interceptor` command.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand, ValueEnum};
use interceptor::{
    config::{self, Config, LogFormat},
    daemon::{self, Mode},
    kafka::sasl::scram::{ScramCredential, ScramMechanism, MAX_ITERATIONS, MIN_ITERATIONS},
};

#[derive(Parser)]
#[command(
    name = "interceptor",
    version,
    about = "Security checks for every Kafka request on a broker node"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// ebpf: kernel steering of the protected listeners. listen: development mode, a plain
        /// listener without kernel programs (clients must connect to --listen).
        #[arg(long, value_enum, default_value_t = ModeArg::Ebpf)]
        mode: ModeArg,
        /// Address to listen on in listen mode.
        #[arg(long, required_if_eq("mode", "listen"))]
        listen: Option<SocketAddr>,
    },
    /// Remove the kernel programs and pins: protected addresses become reachable directly.
    Detach,
    /// Print the SCRAM credential for a password read from stdin, for `[[identity.user]]`
    /// `credentials` (the password itself is never stored).
    SaslCredential {
        /// SCRAM-SHA-256 or SCRAM-SHA-512 (PLAIN accepts either).
        #[arg(long, default_value = "SCRAM-SHA-256")]
        mechanism: String,
        #[arg(long, default_value_t = 8192)]
        iterations: u32,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    Ebpf,
    Listen,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("INTERCEPTOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Needs no configuration: operators run it while writing one.
    if let Command::SaslCredential {
        mechanism,
        iterations,
    } = &cli.command
    {
        init_logging(LogFormat::Text);
        return match sasl_credential(mechanism, *iterations) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                ExitCode::from(2)
            }
        };
    }
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(e) => {
            init_logging(LogFormat::Text);
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    match execute(cli.command, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn execute(command: Command, config: Config) -> Result<()> {
    match command {
        Command::Run { mode, listen } => {
            let mode = match (mode, listen) {
                (ModeArg::Ebpf, None) => Mode::Ebpf,
                (ModeArg::Ebpf, Some(_)) => bail!("--listen applies to --mode listen only"),
                (ModeArg::Listen, Some(addr)) => Mode::Listen(addr),
                (ModeArg::Listen, None) => bail!("--mode listen needs --listen ADDR"),
            };
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            if config.worker_threads > 0 {
                runtime.worker_threads(config.worker_threads);
            }
            let runtime = runtime.enable_all().build()?;
            runtime.block_on(daemon::run(config, mode))
        }
        Command::Detach => daemon::detach(&config),
        Command::SaslCredential { .. } => Ok(()),
    }
}

fn sasl_credential(mechanism: &str, iterations: u32) -> Result<()> {
    let Some(mechanism) = ScramMechanism::parse(mechanism) else {
        bail!("--mechanism must be SCRAM-SHA-256 or SCRAM-SHA-512, not {mechanism}");
    };
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        bail!("--iterations must be {MIN_ITERATIONS}..={MAX_ITERATIONS}");
    }
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        bail!("no password on stdin");
    }
    println!(
        "{}",
        ScramCredential::generate(mechanism, password, iterations)
    );
    Ok(())
}
