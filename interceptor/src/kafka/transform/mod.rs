//! Finding and replacing the `records` fields of a frame in place, for masking: Produce
//! requests (client → broker) and Fetch / ShareFetch responses (broker → consumer).
//!
//! Locating walks the frame with the bounds-checked [`Reader`](super::wire::Reader) and
//! decodes only what it must step over; the record batches themselves stay ranges into the
//! frame. Replacing builds one new frame: everything outside the replaced fields is copied
//! byte for byte (tagged fields included, KIP-482, also the ones this build has never heard
//! of), each replaced field gets a length prefix in its own encoding, and the frame's length
//! prefix is fixed. Fetch responses are the largest frames relayed, which is why nothing is
//! decoded into the crate's types and re-encoded.
//!
//! | api | versions | records field |
//! |---|---|---|
//! | Produce (0) request | 3–13 | i32 length (−1 null) to v8; compact from v9 |
//! | Fetch (1) response | 4–18 | i32 length (−1 null) to v11; compact from v12 |
//! | ShareFetch (78) response | 1 | compact |
//!
//! Topics are named as the frame names them ([`TopicRef`]): by name up to Produce v12 and
//! Fetch v12, by id (KIP-516) from Produce v13 / Fetch v13 and in ShareFetch.
//!
//! The frames are network data: no input panics, every array count is checked against the
//! bytes left before anything is sized from it, and errors name the field and the offset
//! where the parser stopped.
//!
//! ```ignore
//! let fields = fetch_records(&frame, version)?;
//! let replacements: Vec<_> = fields
//!     .into_iter()
//!     .map(|f| { let new = mask(&frame[f.records.clone()]); (f, new) })
//!     .collect();
//! let out = replace_records(&frame, fetch_is_flexible(version), &replacements)?;
//! ```

mod locate;
mod replace;
#[cfg(test)]
mod tests;

use std::ops::Range;

use thiserror::Error;

use super::HeaderError;

pub use locate::{fetch_records, produce_records, share_fetch_records};
pub use replace::replace_records;

pub const PRODUCE: i16 = 0;
pub const FETCH: i16 = 1;
pub const SHARE_FETCH: i16 = 78;

/// Produce request versions whose records this module finds.
pub const PRODUCE_VERSIONS: std::ops::RangeInclusive<i16> = 3..=13;
/// Fetch response versions whose records this module finds.
pub const FETCH_VERSIONS: std::ops::RangeInclusive<i16> = 4..=18;
/// ShareFetch response versions whose records this module finds: v1 is the first the
/// `kafka-protocol` crate (and the policy table) accepts; v0 was early access (KIP-932).
pub const SHARE_FETCH_VERSIONS: std::ops::RangeInclusive<i16> = 1..=1;

/// Whether a Produce request of `version` uses the compact (flexible) encodings.
pub const fn produce_is_flexible(version: i16) -> bool {
    version >= 9
}

/// Whether a Fetch response of `version` uses the compact (flexible) encodings.
pub const fn fetch_is_flexible(version: i16) -> bool {
    version >= 12
}

/// ShareFetch has been flexible from its first version.
pub const fn share_fetch_is_flexible(_version: i16) -> bool {
    true
}

/// How the frame names a partition's topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicRef<'a> {
    Name(&'a str),
    /// A topic id (KIP-516): resolve it through the ids learned from Metadata.
    Id([u8; 16]),
}

/// One partition's `records` field, as found in a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordsField<'a> {
    pub topic: TopicRef<'a>,
    pub partition: i32,
    /// The record batches inside the frame, without the length prefix; empty (at
    /// `field.end`) for null.
    pub records: Range<usize>,
    pub null: bool,
    /// The whole field inside the frame: length prefix and records. What a replacement
    /// overwrites.
    pub field: Range<usize>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TransformError {
    #[error("{api} v{version} is not a version whose records can be located")]
    UnsupportedVersion { api: &'static str, version: i16 },
    #[error("api key {found} is not {expected}")]
    WrongApiKey { expected: &'static str, found: i16 },
    #[error("{api} v{version}: {error} (at byte {offset} of the frame)")]
    Malformed {
        api: &'static str,
        version: i16,
        /// Where the parser stopped: the start of the field, or of the content of a
        /// length-prefixed one.
        offset: usize,
        error: HeaderError,
    },
    #[error("replacement {index} (field at byte {offset}): {reason}")]
    BadReplacement {
        index: usize,
        offset: usize,
        reason: &'static str,
    },
    #[error("a frame shorter than its length prefix")]
    ShortFrame,
    #[error("the new frame would be {0} bytes, more than a length prefix can say")]
    TooLarge(usize),
}
