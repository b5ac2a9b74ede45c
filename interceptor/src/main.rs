//! The `interceptor` command.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand, ValueEnum};
use interceptor::{
    admin,
    config::{self, Config, LogFormat},
    daemon::{self, Mode},
    kafka::{
        authz::table,
        sasl::scram::{ScramCredential, ScramMechanism, MAX_ITERATIONS, MIN_ITERATIONS},
    },
    policy::{self, Operation, Resource},
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
    /// Check, explain and list what the policy decides.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Ask the running daemon what it is doing (policy version, listeners).
    Status,
    /// Print the original value behind a vault token, if the policy lets the caller see it.
    /// Asks the running daemon; the caller proves who it is with an OIDC access token (from a
    /// file, or the INTERCEPTOR_ACCESS_TOKEN environment variable), checked against the
    /// token's masking rule's `reveal` list. Audited.
    Detokenize {
        token: String,
        /// A file holding the access token (kept off the command line and process list).
        #[arg(long)]
        access_token_file: Option<PathBuf>,
    },
    /// The token vault's keys.
    #[command(subcommand)]
    Vault(VaultCommand),
    /// Check (verify) or search (query) the audit trail.
    #[command(subcommand)]
    Audit(interceptor::audit::cli::AuditCommand),
    /// Print a recorded session's timeline, or re-send its produce requests to a broker.
    Replay(interceptor::recording::cli::ReplayArgs),
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

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy directory as one set: exit 0 when it loads, 1 with every error
    /// (file:line:column) when it does not. Usable in CI and as ExecStartPre.
    Check {
        /// The directory (default: the configured one, else /etc/interceptor/policies).
        dir: Option<PathBuf>,
    },
    /// Print the decision for one request and the rule that made it.
    Explain {
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long)]
        principal: String,
        /// Comma-separated groups.
        #[arg(long, value_delimiter = ',', default_value = "")]
        groups: Vec<String>,
        #[arg(long)]
        client_id: Option<String>,
        /// The client's address.
        #[arg(long, default_value = "127.0.0.1")]
        source: IpAddr,
        /// produce, consume, describe, create, delete, delete-records, alter, alter-configs,
        /// describe-configs, commit, idempotent-write, transactions, cluster-action; for MQTT
        /// topics: publish, subscribe, retain.
        #[arg(long)]
        operation: Operation,
        /// An MQTT topic name (for publish, subscribe, retain).
        #[arg(long, group = "resource")]
        mqtt_topic: Option<String>,
        #[arg(long, group = "resource")]
        topic: Option<String>,
        #[arg(long, group = "resource")]
        group: Option<String>,
        #[arg(long, group = "resource")]
        transactional_id: Option<String>,
        #[arg(long, group = "resource")]
        cluster: bool,
    },
    /// List every Kafka api key with the operations and resources it is checked for.
    ApiKeys,
}

#[derive(Subcommand)]
enum VaultCommand {
    /// Create a keyring (MAC key and a first encryption key), mode 0600; never overwrites.
    Init {
        /// Where to write it (default: the configured vault.key_file).
        file: Option<PathBuf>,
    },
    /// Re-encrypt every stored value under the keyring's current key (after adding a key and
    /// making it `current`). The embedded store must not be open in a running daemon.
    Rekey,
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
    if let Command::Audit(command) = &cli.command {
        return interceptor::audit::cli::run(command);
    }
    if let Command::Replay(args) = &cli.command {
        init_logging(LogFormat::Text);
        return interceptor::recording::cli::run(args, &cli.config);
    }
    if let Command::Policy(command) = &cli.command {
        init_logging(LogFormat::Text);
        return policy_command(command, &cli.config);
    }
    if let Command::Vault(VaultCommand::Init { file }) = &cli.command {
        init_logging(LogFormat::Text);
        let file = file.clone().unwrap_or_else(|| {
            Config::load(&cli.config)
                .map(|c| c.vault.key_file)
                .unwrap_or_else(|_| PathBuf::from(config::DEFAULT_VAULT_KEYS))
        });
        return match interceptor::vault::Keyring::write_new(&file) {
            Ok(_) => {
                println!("wrote a new vault keyring to {}", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Detokenize {
        token,
        access_token_file,
    } = &cli.command
    {
        init_logging(LogFormat::Text);
        return detokenize(&cli.config, token, access_token_file.as_deref());
    }
    if let Command::Status = &cli.command {
        init_logging(LogFormat::Text);
        let socket = Config::load(&cli.config)
            .map(|c| c.admin.socket)
            .unwrap_or_else(|_| PathBuf::from(config::DEFAULT_ADMIN_SOCKET));
        return match admin::query_status(&socket) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("{e} (is the daemon running?)");
                ExitCode::FAILURE
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
        Command::Vault(VaultCommand::Rekey) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let rekeyed = runtime.block_on(async {
                let vault =
                    interceptor::vault::Vault::open(&daemon::vault_config(&config.vault)).await?;
                vault.rekey().await
            })?;
            println!("re-encrypted {rekeyed} value(s) under the current key");
            Ok(())
        }
        Command::SaslCredential { .. }
        | Command::Policy(_)
        | Command::Status
        | Command::Detokenize { .. }
        | Command::Replay(_)
        | Command::Audit(_)
        | Command::Vault(VaultCommand::Init { .. }) => Ok(()),
    }
}

/// `interceptor detokenize`: the value on stdout (text, or `base64:` and the bytes).
fn detokenize(
    config_path: &std::path::Path,
    token: &str,
    access_token_file: Option<&std::path::Path>,
) -> ExitCode {
    let access_token = match access_token_file {
        Some(file) => std::fs::read_to_string(file)
            .map(|t| t.trim().to_owned())
            .map_err(|e| format!("reading {}: {e}", file.display())),
        None => std::env::var("INTERCEPTOR_ACCESS_TOKEN").map_err(|_| {
            "give an access token: --access-token-file or INTERCEPTOR_ACCESS_TOKEN".to_owned()
        }),
    };
    let access_token = match access_token {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let socket = Config::load(config_path)
        .map(|c| c.admin.socket)
        .unwrap_or_else(|_| PathBuf::from(config::DEFAULT_ADMIN_SOCKET));
    let answer = admin::query_detokenize(&socket, token, &access_token)
        .map_err(|e| e.to_string())
        .and_then(|json| {
            serde_json::from_str::<serde_json::Value>(&json).map_err(|e| e.to_string())
        });
    match answer {
        Ok(v) => {
            match (v["value"].as_str(), v["value_base64"].as_str()) {
                (Some(text), _) => println!("{text}"),
                (None, Some(b64)) => println!("base64:{b64}"),
                _ => println!("{v}"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The policy directory: the one given, else the configured one, else the default.
fn policy_dir(dir: &Option<PathBuf>, config_path: &std::path::Path) -> PathBuf {
    dir.clone().unwrap_or_else(|| {
        Config::load(config_path)
            .map(|c| c.policy.dir)
            .unwrap_or_else(|_| PathBuf::from(config::DEFAULT_POLICY_DIR))
    })
}

fn policy_command(command: &PolicyCommand, config_path: &std::path::Path) -> ExitCode {
    match command {
        PolicyCommand::Check { dir } => {
            let dir = policy_dir(dir, config_path);
            let (report, valid) = policy::cli::check(&dir);
            print!("{report}");
            if valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        PolicyCommand::Explain {
            dir,
            principal,
            groups,
            client_id,
            source,
            operation,
            mqtt_topic,
            topic,
            group,
            transactional_id,
            cluster,
        } => {
            let dir = policy_dir(dir, config_path);
            let resource = match (topic, group, transactional_id, cluster) {
                _ if mqtt_topic.is_some() => {
                    Resource::mqtt_topic(mqtt_topic.as_deref().unwrap_or_default())
                }
                (Some(t), _, _, _) => Resource::topic(t),
                (_, Some(g), _, _) => Resource::group(g),
                (_, _, Some(t), _) => Resource::transactional_id(t),
                (_, _, _, true) => Resource::cluster(),
                _ => {
                    tracing::error!(
                        "name a resource: --topic, --group, --transactional-id, --cluster or \
                         --mqtt-topic"
                    );
                    return ExitCode::from(2);
                }
            };
            let groups: Vec<String> = groups.iter().filter(|g| !g.is_empty()).cloned().collect();
            match policy::cli::explain(
                &dir,
                principal,
                &groups,
                client_id.as_deref(),
                *source,
                *operation,
                resource,
            ) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    eprint!("{errors}");
                    ExitCode::FAILURE
                }
            }
        }
        PolicyCommand::ApiKeys => {
            let mut entries: Vec<_> = table::all().collect();
            entries.sort_by_key(|a| a.key);
            for a in entries {
                let touches: Vec<String> = a
                    .touches
                    .iter()
                    .map(|(op, kind)| format!("{op} {kind}"))
                    .collect();
                let touches = if touches.is_empty() {
                    "(not checked)".to_owned()
                } else {
                    touches.join(", ")
                };
                let note = if a.note.is_empty() {
                    String::new()
                } else {
                    format!("  — {}", a.note)
                };
                println!("{:>5}  {:<32} {touches}{note}", a.key, a.name);
            }
            ExitCode::SUCCESS
        }
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
