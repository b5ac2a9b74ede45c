//! `interceptor run`: start-up order, serving, shutdown.
//!
//! Start-up order is what keeps the door closed: the steering program is attached (or taken
//! over) first, with no listener in its socket map, so protected flows are dropped; the
//! listening sockets go into the map last, when everything behind them is ready.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use anyhow::{bail, Context, Result};
use tokio::{
    net::TcpListener,
    signal::unix::{signal, SignalKind},
    sync::watch,
};

use crate::{
    admin::{self, PolicyStatus, Status, StatusSource},
    audit::{
        export::{ExportContext, Exporters, LineMeta, Severity},
        AuditEvent, AuditLog,
    },
    config::{Config, UpstreamMechanism, VaultBackend, VaultSettings},
    detokenize::Detokenizer,
    ebpf::{self, ExemptRegistry, Steering},
    filter::FilterChain,
    kafka::{authz::TopicIds, records::RecordLimits, sasl::secrets},
    policy::{self, PolicySet},
    proxy::{self, Router, SessionContext},
    vault::{Backend, Vault, VaultConfig},
};

/// How connections reach the daemon.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Kernel steering of the protected listeners (production).
    Ebpf,
    /// Development: a plain listener on this address, no kernel programs.
    Listen(SocketAddr),
}

/// The vault settings as the vault takes them.
pub fn vault_config(settings: &VaultSettings) -> VaultConfig {
    VaultConfig {
        backend: match settings.backend {
            VaultBackend::Embedded => Backend::Embedded {
                path: settings.path.clone(),
            },
            VaultBackend::Postgres => Backend::Postgres {
                url: settings.postgres_url.clone(),
                password_file: settings.postgres_password_file.clone(),
            },
        },
        key_file: settings.key_file.clone(),
        cache_entries: settings.cache_entries,
        timeout: std::time::Duration::from_millis(settings.timeout_ms),
    }
}

/// The vault, when its keyring exists. A keyring that exists but cannot be used stops the
/// daemon (its tokens could not be made or read); no keyring is allowed, and masking rules
/// that hash or tokenize then refuse what they cover.
async fn open_vault(settings: &VaultSettings, policy: &PolicySet) -> Result<Option<Vault>> {
    let needs_keys = policy.masking_rules().iter().any(|r| r.rule.needs_key());
    if !settings.key_file.exists() {
        if needs_keys {
            tracing::error!(
                key_file = %settings.key_file.display(),
                "masking rules hash or tokenize but there is no vault keyring: the records they \
                 cover are refused until one exists (`interceptor vault init`) and the daemon restarts"
            );
        }
        return Ok(None);
    }
    let vault = Vault::open(&vault_config(settings))
        .await
        .context("opening the token vault")?;
    tracing::info!(status = ?vault.status(), "token vault open");
    Ok(Some(vault))
}

pub async fn run(config: Config, mode: Mode) -> Result<()> {
    crate::metrics::global().mark_start();
    let config = Arc::new(config);
    // Everything that can refuse to start does so before the kernel programs are touched.
    let broker_credentials = match config.upstream_auth.mechanism {
        UpstreamMechanism::None => None,
        _ => Some(
            secrets::load(&config.upstream_auth.secrets_file)
                .context("loading the interceptor's broker credentials")?,
        ),
    };
    let mqtt_credentials = match &config.mqtt.upstream_secrets_file {
        None => None,
        Some(path) => {
            Some(secrets::load(path).context("loading the interceptor's MQTT broker credentials")?)
        }
    };
    if mqtt_credentials.is_none()
        && config
            .listeners
            .iter()
            .any(|l| l.protocol == crate::config::Protocol::Mqtt)
    {
        tracing::warn!(
            "[mqtt] upstream_secrets_file is not set: the interceptor connects to MQTT brokers \
             without credentials, so the broker cannot tell it from any other client"
        );
    }
    let authenticator =
        Arc::new(proxy::Authenticator::new(&config.identity).context("identity configuration")?);
    authenticator.start();
    // No policy, no service: a daemon that cannot load its policy does not start, and the
    // kernel keeps refusing protected connections.
    let policy_dir = config.policy.dir.clone();
    let initial = tokio::task::spawn_blocking(move || PolicySet::load_dir(&policy_dir))
        .await?
        .map_err(|errors| {
            for e in &errors.0 {
                tracing::error!("policy: {e}");
            }
            anyhow::anyhow!(
                "the policy directory {} has {} error(s)",
                config.policy.dir.display(),
                errors.0.len()
            )
        })?;
    for warning in initial.warnings() {
        tracing::warn!("policy: {warning}");
    }
    tracing::info!(
        version = initial.version(),
        files = initial.file_count(),
        rules = initial.rule_count(),
        dir = %config.policy.dir.display(),
        "policy loaded"
    );
    let vault = open_vault(&config.vault, &initial).await?;
    let exports: SharedExporters = Arc::new(std::sync::Mutex::new(None));
    let (audit, audit_writer) = start_audit(&config.audit, &exports)?;
    crate::recording::start(&config.recording).context("starting session recording")?;
    let rescan = (config.policy.rescan_secs > 0)
        .then(|| std::time::Duration::from_secs(config.policy.rescan_secs));
    let (policy, policy_task) =
        policy::watch::start(&config.policy.dir, initial, audit.clone(), rescan)
            .with_context(|| format!("watching {}", config.policy.dir.display()))?;
    let protected: Vec<SocketAddr> = config.listeners.iter().map(|l| l.address).collect();

    let (mut steering, listeners, router, exempt, mode_name) = match &mode {
        Mode::Ebpf => {
            if config.fail_open {
                tracing::warn!(
                    "fail_open = true: while this daemon is not running, protected connections \
                     go to the broker UNCHECKED"
                );
            }
            let mut steering = Steering::attach(
                &config.bpf_pin_dir,
                config.bpf_object.as_deref(),
                config.fail_open,
            )
            .context("attaching the kernel steering program")?;
            steering.set_protected(&protected)?;
            let listeners = steering_listeners(&protected).await?;
            let exempt = steering.exempt();
            (Some(steering), listeners, Router::Steered, exempt, "ebpf")
        }
        Mode::Listen(addr) => {
            let Some(first) = config.listeners.first() else {
                bail!("listen mode needs one [[listener]] to name the broker");
            };
            let target = first.upstream.unwrap_or(first.address);
            tracing::warn!(
                "LISTEN MODE (development): no kernel steering; only connections made to {addr} \
                 pass through the interceptor, anything may still reach the broker at {target} directly"
            );
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr}"))?;
            tracing::info!("listening on {}", listener.local_addr()?);
            (
                None,
                vec![listener],
                Router::Fixed(target),
                ExemptRegistry::disabled(),
                "listen",
            )
        }
    };

    if !config.audit.export.is_empty() {
        let started = Exporters::start(
            &config.audit.export,
            ExportContext {
                runtime: tokio::runtime::Handle::current(),
                exempt: exempt.clone(),
                broker_credentials: broker_credentials.clone(),
                upstream_mechanism: config.upstream_auth.mechanism,
                hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| "-".into()),
            },
        )
        .context("starting the audit exporters")?;
        if let Ok(mut slot) = exports.lock() {
            *slot = Some(started);
        }
    }
    let ctx = Arc::new(SessionContext {
        config: Arc::clone(&config),
        router,
        exempt,
        chain: FilterChain::default(),
        audit: audit.clone(),
        authenticator,
        broker_credentials,
        mqtt_credentials,
        policy: policy.clone(),
        topic_ids: Arc::new(TopicIds::new(config.policy.max_topic_ids)),
        masking: Arc::new(proxy::Masking::new(
            vault.clone(),
            config.masking.clone(),
            RecordLimits {
                max_decompressed_bytes: config.policy.max_decompressed_batch_bytes,
                max_records_per_batch: config.policy.max_records_per_batch,
            },
        )),
    });
    let source = Arc::new(StatusSource {
        base: Status {
            version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
            mode: mode_name,
            started_at: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            fail_open: config.fail_open,
            protected: protected.clone(),
            policy: PolicyStatus {
                dir: config.policy.dir.clone(),
                version: String::new(),
                generation: 0,
                loaded_at: String::new(),
                files: 0,
                rules: 0,
                reload: Default::default(),
            },
            vault: None,
            metrics: None,
            export: Vec::new(),
        },
        policy: policy.clone(),
        detokenizer: Some(Arc::new(Detokenizer {
            authenticator: Arc::clone(&ctx.authenticator),
            vault,
            policy,
            audit: audit.clone(),
        })),
        audit: Some(audit.stats()),
        exports: Some(Arc::clone(&exports)),
    });
    let admin_task = if config.admin.socket.as_os_str().is_empty() {
        None
    } else {
        Some(admin::serve(&config.admin.socket, Arc::clone(&source))?)
    };
    let metrics_task = match config.admin.http_address {
        Some(address) => {
            let task = admin::serve_http(address, Arc::clone(&source)).await?;
            tracing::info!(%address, "metrics and health on http://{address}/metrics");
            Some(task)
        }
        None => None,
    };
    drop(source);
    audit
        .emit(AuditEvent::DaemonStart {
            mode: mode_name,
            fail_open: config.fail_open,
            protected: protected.clone(),
            version: env!("CARGO_PKG_VERSION"),
        })
        .await;

    let events_task = steering
        .as_mut()
        .and_then(Steering::take_events)
        .map(|ring| tokio::spawn(ebpf::events::forward(ring, audit.clone())));
    if let Some(steering) = steering.as_mut() {
        for listener in &listeners {
            let ipv6 = listener.local_addr()?.is_ipv6();
            steering.set_listener(ipv6, listener)?;
        }
        tracing::info!(
            pin_dir = %steering.pin_dir().display(),
            protected = ?protected,
            "steering attached"
        );
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(proxy::serve(listeners, Arc::clone(&ctx), stop_rx));
    crate::metrics::global()
        .ready
        .store(true, std::sync::atomic::Ordering::Release);
    tracing::info!("interceptor ready");

    wait_for_stop_signal().await?;
    tracing::info!(
        "stopping: no new connections; the kernel drops protected flows until a daemon is back"
    );
    let _ = stop_tx.send(true);
    let open = server.await.unwrap_or(0);
    crate::metrics::global()
        .ready
        .store(false, std::sync::atomic::Ordering::Release);
    for task in [events_task, admin_task, metrics_task, Some(policy_task)]
        .into_iter()
        .flatten()
    {
        task.abort();
    }
    if !config.admin.socket.as_os_str().is_empty() {
        let _ = std::fs::remove_file(&config.admin.socket);
    }
    if let Some(steering) = &steering {
        match steering.counters() {
            Ok(c) => tracing::info!(?c, "kernel counters"),
            Err(e) => tracing::warn!("cannot read kernel counters: {e}"),
        }
    }
    audit
        .emit(AuditEvent::DaemonStop {
            sessions_open: open,
        })
        .await;
    drop(ctx);
    tokio::task::spawn_blocking(crate::recording::finish).await?;
    drop(audit);
    tokio::task::spawn_blocking(move || audit_writer.finish()).await?;
    let exporters = exports.lock().ok().and_then(|mut slot| slot.take());
    if let Some(exporters) = exporters {
        // Whatever the collectors have not confirmed by then is counted lost and logged.
        tokio::task::spawn_blocking(move || exporters.shutdown(EXPORT_FLUSH)).await?;
    }
    Ok(())
}

/// The daemon's listening sockets that steered connections are assigned to. Their own
/// addresses do not matter (loopback, ephemeral port); a connection made to them directly is
/// not to a protected address and is refused.
async fn steering_listeners(protected: &[SocketAddr]) -> Result<Vec<TcpListener>> {
    let mut listeners = vec![TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("binding the IPv4 steering listener")?];
    let wants_v6 = protected.iter().any(SocketAddr::is_ipv6);
    match bind_v6_only().await {
        Ok(listener) => listeners.push(listener),
        Err(e) if wants_v6 => return Err(e.context("binding the IPv6 steering listener")),
        Err(e) => tracing::info!("no IPv6 steering listener ({e:#}); no IPv6 address is protected"),
    }
    Ok(listeners)
}

async fn bind_v6_only() -> Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)?;
    socket.set_only_v6(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from((Ipv6Addr::LOCALHOST, 0)).into())?;
    socket.listen(1024)?;
    Ok(TcpListener::from_std(socket.into())?)
}

async fn wait_for_stop_signal() -> Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
    Ok(())
}

/// `interceptor detach`: removes the kernel programs and pins on purpose.
pub fn detach(config: &Config) -> Result<()> {
    let removed = ebpf::detach(&config.bpf_pin_dir)?;
    if removed.is_empty() {
        tracing::info!(pin_dir = %config.bpf_pin_dir.display(), "nothing was attached");
    } else {
        tracing::warn!(
            pin_dir = %config.bpf_pin_dir.display(),
            "detached: protected addresses are reachable directly, without the interceptor"
        );
    }
    Ok(())
}

/// The exporters, started once the kernel's EXEMPT registry exists (the Kafka sink's own
/// connection must not be steered back to the daemon); the writer offers them every line.
type SharedExporters = Arc<std::sync::Mutex<Option<Exporters>>>;

/// How long the exporters get at shutdown to deliver what they hold.
const EXPORT_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);
/// Lines kept for the exporters while they start (the daemon's first events).
const EXPORT_EARLY_LINES: usize = 4096;

/// Hands each durable line to the exporters; lines written before they exist are kept (a
/// bounded number) and offered first.
fn export_hook(exports: SharedExporters) -> crate::audit::AfterWrite {
    let mut early: Vec<(bytes::Bytes, LineMeta)> = Vec::new();
    let mut dropped_early = 0u64;
    Box::new(move |seq, line, record| {
        let meta = LineMeta {
            seq,
            time_ms: record.time_ms,
            severity: match record.severity_id() {
                0 | 1 => Severity::Info,
                2 => Severity::Notice,
                _ => Severity::Warning,
            },
            event: record.name(),
        };
        let line = bytes::Bytes::copy_from_slice(line);
        let Ok(slot) = exports.lock() else {
            return;
        };
        match slot.as_ref() {
            Some(exporters) => {
                for (early_line, early_meta) in early.drain(..) {
                    exporters.offer(&early_line, &early_meta);
                }
                if dropped_early > 0 {
                    tracing::warn!(
                        "{dropped_early} audit line(s) written before the exporters started \
                         were not exported (they are in the trail)"
                    );
                    dropped_early = 0;
                }
                exporters.offer(&line, &meta);
            }
            None if early.len() < EXPORT_EARLY_LINES => early.push((line, meta)),
            None => dropped_early += 1,
        }
    })
}

/// Opens the audit directory (recovering the chain's head) and starts its writer.
fn start_audit(
    config: &crate::config::AuditConfig,
    exports: &SharedExporters,
) -> Result<(AuditLog, crate::audit::AuditWriter)> {
    use crate::audit::{chain::ChainHasher, ChainedFiles, FileSettings, QueueSettings};
    let hasher = match &config.chain_key_file {
        None => ChainHasher::plain(),
        Some(path) => {
            let owners = [0, nix_euid()];
            let key = crate::vault::read_private_file(path, &owners, 4096)
                .map_err(|e| anyhow::anyhow!("audit chain key file {}: {e}", path.display()))?;
            let key = key.strip_suffix(b"\n").unwrap_or(&key).to_vec();
            if key.len() < 16 {
                anyhow::bail!(
                    "audit chain key file {}: {} bytes; use at least 16 (e.g. head -c 32 /dev/urandom)",
                    path.display(),
                    key.len()
                );
            }
            ChainHasher::keyed(key)
        }
    };
    let mut files = ChainedFiles::open(FileSettings {
        dir: config.dir.clone(),
        hasher,
        rotate_bytes: config.rotate_bytes.max(1),
        rotate_after: std::time::Duration::from_secs(config.rotate_secs.max(1)),
        fsync: config.fsync,
    })
    .with_context(|| format!("opening the audit directory {}", config.dir.display()))?;
    if !config.export.is_empty() {
        files.set_after_write(export_hook(Arc::clone(exports)));
    }
    let head = files.head();
    tracing::info!(
        dir = %config.dir.display(),
        seq = head.seq,
        hash = %crate::audit::chain::hex(&head.hash),
        "audit trail opened; the chain continues from here"
    );
    let mut settings = QueueSettings::new(config.queue);
    settings.on_failure = config.on_failure;
    Ok(AuditLog::start(files, settings))
}

fn nix_euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
