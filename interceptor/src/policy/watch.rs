//! The policy set in force, and keeping it current: the directory is watched (inotify through
//! the notify crate), re-read on SIGHUP and every `rescan_secs` as a fallback, and each new
//! set is published through a `watch` channel that every session reads before each request.
//! A set that fails to load leaves the last good one in force; the errors go to the log (with
//! file, line and column) and to the audit trail.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use notify::{RecursiveMode, Watcher};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::{watch, Notify},
};

use super::PolicySet;
use crate::audit::{AuditEvent, AuditLog};

/// One loaded set and when it came into force.
pub struct ActivePolicy {
    pub set: PolicySet,
    pub version: Arc<str>,
    /// Counts the sets this daemon has put in force (1 = the one it started with); what
    /// sessions compare to see that authorizations they remember are stale.
    pub generation: u64,
    pub loaded_at: String,
}

impl ActivePolicy {
    fn new(set: PolicySet, generation: u64) -> Self {
        Self {
            version: Arc::from(set.version()),
            set,
            generation,
            loaded_at: now(),
        }
    }
}

/// What `interceptor status` says about the last reload.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadStatus {
    pub reloads: u64,
    pub failed_reloads: u64,
    /// The errors of the last set that failed to load, if the last attempt failed.
    pub last_errors: Vec<String>,
    pub last_attempt: Option<String>,
}

/// Readers of the policy in force.
#[derive(Clone)]
pub struct PolicyHandle {
    rx: watch::Receiver<Arc<ActivePolicy>>,
    status: Arc<Mutex<ReloadStatus>>,
}

impl PolicyHandle {
    /// A handle on a fixed set (tests, `policy explain`).
    pub fn fixed(set: PolicySet) -> Self {
        // Receivers keep reading the last value after the sender is gone.
        let (_, rx) = watch::channel(Arc::new(ActivePolicy::new(set, 1)));
        Self {
            rx,
            status: Arc::default(),
        }
    }

    /// The set in force now.
    pub fn current(&self) -> Arc<ActivePolicy> {
        Arc::clone(&self.rx.borrow())
    }

    pub fn status(&self) -> ReloadStatus {
        match self.status.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Publishes new sets; owned by the reload task.
struct Publisher {
    dir: PathBuf,
    tx: watch::Sender<Arc<ActivePolicy>>,
    status: Arc<Mutex<ReloadStatus>>,
    audit: AuditLog,
}

/// Starts watching `dir` with `initial` in force. The returned task runs until the daemon
/// stops.
pub fn start(
    dir: &Path,
    initial: PolicySet,
    audit: AuditLog,
    rescan: Option<Duration>,
) -> Result<(PolicyHandle, tokio::task::JoinHandle<()>), notify::Error> {
    let active = Arc::new(ActivePolicy::new(initial, 1));
    audit.set_policy_version(Arc::clone(&active.version));
    let (tx, rx) = watch::channel(active);
    let status = Arc::new(Mutex::new(ReloadStatus::default()));
    let changed = Arc::new(Notify::new());
    let watcher = watch_dir(dir, Arc::clone(&changed))?;
    let publisher = Publisher {
        dir: dir.to_path_buf(),
        tx,
        status: Arc::clone(&status),
        audit,
    };
    let task = tokio::spawn(reload_loop(publisher, watcher, changed, rescan));
    Ok((PolicyHandle { rx, status }, task))
}

/// Watches the directory (recursively) and its parent (so a directory replaced by a rename,
/// as `git checkout` of a symlinked tree or a config-management tool does, is noticed).
fn watch_dir(
    dir: &Path,
    changed: Arc<Notify>,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            // Which file changed does not matter: the whole directory is one unit.
            Ok(_) => changed.notify_one(),
            Err(e) => tracing::warn!("policy directory watch: {e}"),
        }
    })?;
    watcher.watch(dir, RecursiveMode::Recursive)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Err(e) = watcher.watch(parent, RecursiveMode::NonRecursive) {
            tracing::debug!("not watching {}: {e}", parent.display());
        }
    }
    Ok(watcher)
}

/// Changes come in bursts (an editor writes, renames, touches); one reload after the burst.
const SETTLE: Duration = Duration::from_millis(150);

async fn reload_loop(
    publisher: Publisher,
    mut watcher: notify::RecommendedWatcher,
    changed: Arc<Notify>,
    rescan: Option<Duration>,
) {
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("no SIGHUP reload: {e}");
            None
        }
    };
    let mut tick = rescan.map(tokio::time::interval);
    loop {
        let why = tokio::select! {
            _ = changed.notified() => "change",
            Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => "SIGHUP",
            _ = async { match tick.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } } => "rescan",
        };
        if why == "change" {
            tokio::time::sleep(SETTLE).await;
        }
        publisher.reload(why).await;
        // A directory that was replaced is a new inode: watch it again.
        let _ = watcher.unwatch(&publisher.dir);
        if let Err(e) = watcher.watch(&publisher.dir, RecursiveMode::Recursive) {
            tracing::warn!("cannot watch {}: {e}", publisher.dir.display());
        }
    }
}

impl Publisher {
    async fn reload(&self, why: &'static str) {
        let dir = self.dir.clone();
        let loaded = tokio::task::spawn_blocking(move || PolicySet::load_dir(&dir)).await;
        let current = Arc::clone(&self.tx.borrow());
        let mut status = ReloadStatus::default();
        {
            let guard = self.status.lock();
            if let Ok(s) = guard {
                status = s.clone();
            }
        }
        status.last_attempt = Some(now());
        match loaded {
            Ok(Ok(set)) => {
                status.last_errors.clear();
                if set.version() == &*current.version {
                    if why != "rescan" {
                        tracing::debug!("policy re-read ({why}): unchanged, {}", current.version);
                    }
                } else {
                    status.reloads += 1;
                    let next = Arc::new(ActivePolicy::new(set, current.generation + 1));
                    for warning in next.set.warnings() {
                        tracing::warn!("policy: {warning}");
                    }
                    tracing::info!(
                        version = %next.version,
                        previous = %current.version,
                        files = next.set.file_count(),
                        rules = next.set.rule_count(),
                        "policy reloaded ({why})"
                    );
                    self.audit.set_policy_version(Arc::clone(&next.version));
                    self.audit
                        .emit(AuditEvent::PolicyReload {
                            outcome: "loaded",
                            version: next.version.to_string(),
                            previous_version: Some(current.version.to_string()),
                            files: next.set.file_count(),
                            rules: next.set.rule_count(),
                            errors: Vec::new(),
                        })
                        .await;
                    let _ = self.tx.send(next);
                }
            }
            Ok(Err(errors)) => {
                status.failed_reloads += 1;
                status.last_errors = errors.0.iter().map(ToString::to_string).collect();
                for e in &status.last_errors {
                    tracing::error!("policy: {e}");
                }
                tracing::error!(
                    version = %current.version,
                    "policy directory {} has errors ({why}); the last good set stays in force",
                    self.dir.display()
                );
                self.audit
                    .emit(AuditEvent::PolicyReload {
                        outcome: "rejected",
                        version: current.version.to_string(),
                        previous_version: None,
                        files: current.set.file_count(),
                        rules: current.set.rule_count(),
                        errors: status.last_errors.clone(),
                    })
                    .await;
            }
            Err(e) => tracing::error!("policy reload task failed: {e}"),
        }
        if let Ok(mut s) = self.status.lock() {
            *s = status;
        }
    }
}

fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        audit::MemorySink,
        policy::{Check, Operation, Resource, Subject},
    };

    fn rule(topic: &str) -> String {
        format!(
            "rules:\n  - name: writers\n    effect: allow\n    subjects:\n      groups: [writers]\n    \
             resources:\n      topics: [\"{topic}\"]\n    operations: [produce]\n"
        )
    }

    fn may_produce(handle: &PolicyHandle, topic: &str) -> bool {
        let groups = vec!["writers".to_owned()];
        let subject = Subject {
            principal: "app",
            groups: &groups,
            client_id: None,
            source: "127.0.0.1".parse().unwrap(),
        };
        handle
            .current()
            .set
            .decide(&subject, Operation::Produce, Resource::topic(topic))
            .check
            == Check::Allowed
    }

    /// Waits up to `within` for `cond`.
    async fn eventually(within: Duration, cond: impl Fn() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if cond() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cond()
    }

    #[tokio::test]
    async fn edits_take_effect_within_a_second_and_a_broken_set_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("writers.yaml");
        std::fs::write(&file, rule("orders")).unwrap();
        let initial = PolicySet::load_dir(dir.path()).unwrap();
        let (audit, _writer) = AuditLog::start(MemorySink::default(), 64);
        let (handle, task) = start(dir.path(), initial, audit, None).unwrap();
        assert!(may_produce(&handle, "orders"));
        let first = handle.current().version.clone();

        // An edit: the right moves from orders to payments.
        std::fs::write(&file, rule("payments")).unwrap();
        assert!(
            eventually(Duration::from_secs(1), || may_produce(&handle, "payments")).await,
            "the edit was not picked up within a second"
        );
        assert!(!may_produce(&handle, "orders"));
        let second = handle.current();
        assert_eq!(second.generation, 2);
        assert_ne!(second.version, first);

        // A broken file: the set stays, the errors are reported.
        std::fs::write(
            dir.path().join("broken.yaml"),
            "rules: [ {name: x, effect: allow",
        )
        .unwrap();
        assert!(
            eventually(Duration::from_secs(2), || !handle
                .status()
                .last_errors
                .is_empty())
            .await,
            "the broken set was not reported"
        );
        assert_eq!(handle.current().version, second.version);
        assert!(may_produce(&handle, "payments"));
        assert!(handle.status().last_errors[0].contains("broken.yaml"));

        // Fixing it clears the errors and loads the new set.
        std::fs::remove_file(dir.path().join("broken.yaml")).unwrap();
        std::fs::write(&file, rule("orders")).unwrap();
        assert!(eventually(Duration::from_secs(2), || may_produce(&handle, "orders")).await);
        assert!(handle.status().last_errors.is_empty());
        task.abort();
    }
}
