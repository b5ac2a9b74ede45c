//! The `interceptor` command.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand, ValueEnum};
use interceptor::{
    config::{self, Config, LogFormat},
    daemon::{self, Mode},
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
    }
}
