//! MQTT 3.1.1 and 5: the packets, topic names and filters, and the session that puts every
//! CONNECT, PUBLISH and SUBSCRIBE through the same identity, policy, masking and audit as Kafka.
//!
//! Layout:
//! - [`codec`]: framing (fixed header, variable-length integers, size limits) and every packet
//!   of both versions, decoded zero-copy and encoded back.
//! - [`topic`]: topic names and filters: validation, matching, overlap and coverage, shared
//!   subscriptions and `$` topics.

pub mod codec;
pub mod topic;
