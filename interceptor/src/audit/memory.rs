//! An in-memory sink, for tests that check which events a component emits.

use std::sync::{Arc, Mutex};

use super::{AuditError, AuditRecord, AuditSink};

/// Keeps every record; clones share the same list.
#[derive(Clone, Default)]
pub struct MemorySink(Arc<Mutex<Vec<AuditRecord>>>);

impl MemorySink {
    /// The records so far, as the JSON objects the file sink would write.
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.0
            .lock()
            .map(|records| {
                records
                    .iter()
                    .filter_map(|r| serde_json::to_value(r).ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl AuditSink for MemorySink {
    fn write_group(&mut self, group: &[AuditRecord]) -> Result<(), AuditError> {
        if let Ok(mut records) = self.0.lock() {
            records.extend_from_slice(group);
        }
        Ok(())
    }
}
