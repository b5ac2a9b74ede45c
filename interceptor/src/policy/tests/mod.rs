//! Tests of the policy engine as a whole: file errors with positions, decisions, the example
//! directory and the documentation, and a property test against a reference evaluation.

mod decisions;
mod docs;
mod errors;
mod examples;
mod masking;
mod mqtt;
mod property;
mod version;

use std::{net::IpAddr, path::PathBuf};

use super::{PolicyError, PolicyErrors, PolicySet, Subject};

/// Loads one file named `t.yaml`.
pub(super) fn load(src: &str) -> Result<PolicySet, PolicyErrors> {
    PolicySet::from_files(&[(PathBuf::from("t.yaml"), src.to_string())])
}

/// The errors of one file, which must be invalid.
pub(super) fn errors(src: &str) -> Vec<PolicyError> {
    match load(src) {
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(e) => e.0,
    }
}

/// Asserts that one error sits at (line, column) and its message contains `needle`.
#[track_caller]
pub(super) fn assert_error(src: &str, line: usize, column: usize, needle: &str) {
    let errs = errors(src);
    assert!(
        errs.iter()
            .any(|e| e.line == line && e.column == column && e.message.contains(needle)),
        "no error at {line}:{column} containing {needle:?}; got:\n{}",
        PolicyErrors(errs.clone())
    );
}

pub(super) struct Who {
    pub principal: &'static str,
    pub groups: Vec<String>,
    pub client_id: Option<&'static str>,
    pub source: IpAddr,
}

impl Who {
    pub fn new(principal: &'static str, groups: &[&str]) -> Self {
        Who {
            principal,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            client_id: None,
            source: "10.1.2.3".parse().unwrap(),
        }
    }

    pub fn client(mut self, id: &'static str) -> Self {
        self.client_id = Some(id);
        self
    }

    pub fn from(mut self, ip: &str) -> Self {
        self.source = ip.parse().unwrap();
        self
    }

    pub fn subject(&self) -> Subject<'_> {
        Subject {
            principal: self.principal,
            groups: &self.groups,
            client_id: self.client_id,
            source: self.source,
        }
    }
}
