//! STUB: topic id → name, learned from Metadata responses, shared by every session.

use std::sync::Arc;

pub struct TopicIds {}

impl TopicIds {
    /// Remembers at most `capacity` topics.
    pub fn new(_capacity: usize) -> Self {
        Self {}
    }

    pub fn name(&self, _id: &[u8; 16]) -> Option<Arc<str>> {
        None
    }

    pub fn learn(&self, _id: [u8; 16], _name: &str) {}
}
