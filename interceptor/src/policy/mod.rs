//! Policy: who may do what to which resource, from a directory of YAML files.
//! TEMPORARY STUB of the policy engine's API (replaced by the real engine at merge).

mod access;
pub mod watch;

use std::{net::IpAddr, path::Path, sync::Arc};

pub use access::{AccessCheck, Check, Operation, Resource, ResourceKind, Subject, CLUSTER_NAME};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
    Approve,
}

#[derive(Debug, Clone)]
pub struct RuleRef {
    pub name: Arc<str>,
    pub file: Arc<str>,
    pub line: usize,
}

#[derive(Debug, Clone)]
pub struct Decision {
    pub check: Check,
    pub effect: Option<Effect>,
    pub rule: Option<RuleRef>,
}

#[derive(Debug, Clone)]
pub struct PolicyError {
    pub file: std::path::PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

#[derive(Debug, Clone)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl std::fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for e in &self.0 {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

pub struct ContentRule {
    pub rule: RuleRef,
    pub name: Arc<str>,
    pub in_key: bool,
    pub in_value: bool,
    pub in_headers: bool,
}

impl ContentRule {
    pub fn matches(&self, _haystack: &[u8]) -> bool {
        false
    }
}

#[derive(Default)]
pub struct TopicLimits {
    pub max_record_bytes: Option<(u64, RuleRef)>,
    pub max_batch_bytes: Option<(u64, RuleRef)>,
    pub content: Vec<ContentRule>,
}

pub struct PolicySet {}

impl PolicySet {
    pub fn load_dir(_dir: &Path) -> Result<PolicySet, PolicyErrors> {
        Ok(PolicySet {})
    }
    pub fn from_files(_files: &[(std::path::PathBuf, String)]) -> Result<PolicySet, PolicyErrors> {
        Ok(PolicySet {})
    }
    pub fn empty() -> PolicySet {
        PolicySet {}
    }
    pub fn version(&self) -> &str {
        "empty"
    }
    pub fn file_count(&self) -> usize {
        0
    }
    pub fn rule_count(&self) -> usize {
        0
    }
    pub fn warnings(&self) -> &[PolicyError] {
        &[]
    }
    pub fn decide(&self, _s: &Subject<'_>, _op: Operation, _r: Resource<'_>) -> Decision {
        Decision {
            check: Check::Denied,
            effect: None,
            rule: None,
        }
    }
    pub fn topic_limits(&self, _topic: &str) -> TopicLimits {
        TopicLimits::default()
    }
}

pub mod cli {
    use super::*;
    pub fn check(_dir: &Path) -> (String, bool) {
        (String::new(), true)
    }
    #[allow(clippy::too_many_arguments)]
    pub fn explain(
        _dir: &Path,
        _principal: &str,
        _groups: &[String],
        _client_id: Option<&str>,
        _source: IpAddr,
        _op: Operation,
        _resource: Resource<'_>,
    ) -> Result<String, PolicyErrors> {
        Ok(String::new())
    }
}
