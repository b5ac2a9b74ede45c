//! Walking Produce requests and Fetch / ShareFetch responses up to each partition's records.
//!
//! Every field is read in the order of the version's schema (checked against the
//! `kafka-protocol` crate's generated code in the tests), and a frame is accepted only when
//! the walk ends exactly at its end: a frame that parses but leaves bytes over is read
//! differently from the peer, and a rewrite of it could not be trusted.

use super::{
    fetch_is_flexible, produce_is_flexible, RecordsField, TopicRef, TransformError, FETCH_VERSIONS,
    PRODUCE, PRODUCE_VERSIONS, SHARE_FETCH_VERSIONS,
};
use crate::kafka::{frame::LENGTH_PREFIX, wire::Reader, HeaderError, RequestHeader};

/// The walk over one frame: the reader, and the records fields found so far.
struct Walk<'a> {
    frame: &'a [u8],
    r: Reader<'a>,
    flexible: bool,
    found: Vec<RecordsField<'a>>,
}

impl<'a> Walk<'a> {
    /// Checks the frame's length prefix and positions the walk at `start`.
    fn new(frame: &'a [u8], start: usize, flexible: bool) -> Result<Self, HeaderError> {
        let declared = Reader::new(frame).i32("length prefix")?;
        if usize::try_from(declared).ok() != Some(frame.len() - LENGTH_PREFIX) {
            return Err(HeaderError::Invalid("length prefix"));
        }
        if start < LENGTH_PREFIX {
            return Err(HeaderError::Invalid("body offset"));
        }
        Ok(Self {
            frame,
            r: Reader::at(frame, start, "body")?,
            flexible,
            found: Vec::new(),
        })
    }

    /// Steps over a response header: the correlation id, and the tagged fields of header v1.
    fn response_header(&mut self, flexible_header: bool) -> Result<(), HeaderError> {
        self.r.i32("correlation id")?;
        if flexible_header {
            self.r.skip_tagged_fields("response header tagged fields")?;
        }
        Ok(())
    }

    fn topic(&mut self, by_id: bool) -> Result<TopicRef<'a>, HeaderError> {
        if by_id {
            return Ok(TopicRef::Id(self.r.uuid("topic id")?));
        }
        let range = self.r.string(self.flexible, "topic name")?;
        let bytes = self
            .frame
            .get(range)
            .ok_or(HeaderError::Truncated("topic name"))?;
        std::str::from_utf8(bytes)
            .map(TopicRef::Name)
            .map_err(|_| HeaderError::Invalid("topic name"))
    }

    /// A non-null array's count; `min_element` is the smallest encoding of one element.
    fn count(&mut self, min_element: usize, what: &'static str) -> Result<usize, HeaderError> {
        self.r.count(self.flexible, min_element, what)
    }

    fn tagged(&mut self, what: &'static str) -> Result<(), HeaderError> {
        self.r.tagged(self.flexible, what)
    }

    fn records(&mut self, topic: TopicRef<'a>, partition: i32) -> Result<(), HeaderError> {
        let start = self.r.pos();
        let content = self.r.nullable_bytes(self.flexible, "records")?;
        let end = self.r.pos();
        self.found.push(RecordsField {
            topic,
            partition,
            null: content.is_none(),
            records: content.unwrap_or(end..end),
            field: start..end,
        });
        Ok(())
    }

    /// The smallest encoding of an array count.
    fn min_count(&self) -> usize {
        if self.flexible {
            1
        } else {
            4
        }
    }

    /// The smallest encoding of a tagged-field section (none in classic versions).
    fn min_tags(&self) -> usize {
        usize::from(self.flexible)
    }

    /// The smallest encoding of a topic reference.
    fn min_topic(&self, by_id: bool) -> usize {
        match (by_id, self.flexible) {
            (true, _) => 16,
            (false, true) => 1,
            (false, false) => 2,
        }
    }

    /// The fields found, once the walk has reached the end of the frame exactly.
    fn finish(self) -> Result<Vec<RecordsField<'a>>, HeaderError> {
        if self.r.remaining() != 0 {
            return Err(HeaderError::Invalid("bytes after the body"));
        }
        Ok(self.found)
    }
}

/// Runs `body` from `start` and turns its failure into an error naming the api, the field and
/// where the walk stopped.
fn locate<'a>(
    api: &'static str,
    version: i16,
    frame: &'a [u8],
    start: usize,
    flexible: bool,
    body: impl FnOnce(&mut Walk<'a>) -> Result<(), HeaderError>,
) -> Result<Vec<RecordsField<'a>>, TransformError> {
    let malformed = |offset, error| TransformError::Malformed {
        api,
        version,
        offset,
        error,
    };
    let mut walk = match Walk::new(frame, start, flexible) {
        Ok(walk) => walk,
        Err(e @ HeaderError::Invalid("body offset")) => return Err(malformed(start, e)),
        Err(e @ HeaderError::Truncated("body")) => return Err(malformed(frame.len(), e)),
        Err(e) => return Err(malformed(0, e)),
    };
    if let Err(e) = body(&mut walk) {
        return Err(malformed(walk.r.pos(), e));
    }
    let end = walk.r.pos();
    walk.finish().map_err(|e| malformed(end, e))
}

/// The records fields of a Produce request, v3–v13, in frame order. `frame` is the whole
/// frame (length prefix included) and `header` its parsed request header.
pub fn produce_records<'a>(
    frame: &'a [u8],
    header: &RequestHeader,
) -> Result<Vec<RecordsField<'a>>, TransformError> {
    const API: &str = "Produce";
    if header.api_key != PRODUCE {
        return Err(TransformError::WrongApiKey {
            expected: API,
            found: header.api_key,
        });
    }
    let version = header.api_version;
    if !PRODUCE_VERSIONS.contains(&version) {
        return Err(TransformError::UnsupportedVersion { api: API, version });
    }
    let flexible = produce_is_flexible(version);
    let by_id = version >= 13;
    locate(API, version, frame, header.body_offset, flexible, |w| {
        w.r.nullable_str(flexible, "transactional id")?;
        w.r.i16("acks")?;
        w.r.i32("timeout")?;
        let min_topic = w.min_topic(by_id) + w.min_count() + w.min_tags();
        let topics = w.count(min_topic, "topics")?;
        for _ in 0..topics {
            let topic = w.topic(by_id)?;
            // index, records length, tags
            let min_partition = 4 + w.min_count() + w.min_tags();
            let partitions = w.count(min_partition, "partitions")?;
            for _ in 0..partitions {
                let partition = w.r.i32("partition index")?;
                w.records(topic, partition)?;
                w.tagged("partition tagged fields")?;
            }
            w.tagged("topic tagged fields")?;
        }
        w.tagged("produce tagged fields")
    })
}

/// The records fields of a Fetch response, v4–v18, in frame order. `frame` is the whole
/// response frame (length prefix and response header included).
pub fn fetch_records(
    frame: &[u8],
    api_version: i16,
) -> Result<Vec<RecordsField<'_>>, TransformError> {
    const API: &str = "Fetch";
    let version = api_version;
    if !FETCH_VERSIONS.contains(&version) {
        return Err(TransformError::UnsupportedVersion { api: API, version });
    }
    let flexible = fetch_is_flexible(version);
    let by_id = version >= 13;
    locate(API, version, frame, LENGTH_PREFIX, flexible, |w| {
        w.response_header(flexible)?;
        w.r.i32("throttle time")?;
        if version >= 7 {
            w.r.i16("error code")?;
            w.r.i32("session id")?;
        }
        let min_topic = w.min_topic(by_id) + w.min_count() + w.min_tags();
        let topics = w.count(min_topic, "responses")?;
        // index, error, high watermark, last stable offset, log start offset (v5+), aborted
        // transactions count, preferred read replica (v11+), records length, tags
        let min_partition = 4
            + 2
            + 8
            + 8
            + if version >= 5 { 8 } else { 0 }
            + w.min_count()
            + if version >= 11 { 4 } else { 0 }
            + w.min_count()
            + w.min_tags();
        let min_aborted = 16 + w.min_tags();
        for _ in 0..topics {
            let topic = w.topic(by_id)?;
            let partitions = w.count(min_partition, "partitions")?;
            for _ in 0..partitions {
                let partition = w.r.i32("partition index")?;
                w.r.i16("partition error code")?;
                w.r.i64("high watermark")?;
                w.r.i64("last stable offset")?;
                if version >= 5 {
                    w.r.i64("log start offset")?;
                }
                let aborted =
                    w.r.nullable_count(flexible, min_aborted, "aborted transactions")?;
                for _ in 0..aborted.unwrap_or(0) {
                    w.r.i64("aborted producer id")?;
                    w.r.i64("aborted first offset")?;
                    w.tagged("aborted transaction tagged fields")?;
                }
                if version >= 11 {
                    w.r.i32("preferred read replica")?;
                }
                w.records(topic, partition)?;
                // diverging epoch, current leader, snapshot id (v12+): tagged, copied as sent.
                w.tagged("partition tagged fields")?;
            }
            w.tagged("topic tagged fields")?;
        }
        // node endpoints (v16+): tagged, copied as sent.
        w.tagged("fetch tagged fields")
    })
}

/// The records fields of a ShareFetch response (KIP-932), v1, in frame order. `frame` is the
/// whole response frame (length prefix and response header included).
pub fn share_fetch_records(
    frame: &[u8],
    api_version: i16,
) -> Result<Vec<RecordsField<'_>>, TransformError> {
    const API: &str = "ShareFetch";
    let version = api_version;
    if !SHARE_FETCH_VERSIONS.contains(&version) {
        return Err(TransformError::UnsupportedVersion { api: API, version });
    }
    locate(API, version, frame, LENGTH_PREFIX, true, |w| {
        w.response_header(true)?;
        w.r.i32("throttle time")?;
        w.r.i16("error code")?;
        w.r.compact_nullable_string("error message")?;
        w.r.i32("acquisition lock timeout")?;
        // id, partition count, tags
        let topics = w.count(16 + 1 + 1, "responses")?;
        for _ in 0..topics {
            let topic = w.topic(true)?;
            // index, error, message, acknowledge error, message, current leader (id, epoch,
            // tags), records length, acquired records count, tags
            let partitions = w.count(4 + 2 + 1 + 2 + 1 + 9 + 1 + 1 + 1, "partitions")?;
            for _ in 0..partitions {
                let partition = w.r.i32("partition index")?;
                w.r.i16("partition error code")?;
                w.r.compact_nullable_string("partition error message")?;
                w.r.i16("acknowledge error code")?;
                w.r.compact_nullable_string("acknowledge error message")?;
                w.r.i32("current leader id")?;
                w.r.i32("current leader epoch")?;
                w.tagged("current leader tagged fields")?;
                w.records(topic, partition)?;
                // first offset, last offset, delivery count, tags
                let acquired = w.count(8 + 8 + 2 + 1, "acquired records")?;
                for _ in 0..acquired {
                    w.r.skip(18, "acquired records")?;
                    w.tagged("acquired records tagged fields")?;
                }
                w.tagged("partition tagged fields")?;
            }
            w.tagged("topic tagged fields")?;
        }
        // node id, host, port, rack, tags
        let endpoints = w.count(4 + 1 + 4 + 1 + 1, "node endpoints")?;
        for _ in 0..endpoints {
            w.r.i32("node id")?;
            w.r.compact_string("node host")?;
            w.r.i32("node port")?;
            w.r.compact_nullable_string("node rack")?;
            w.tagged("node endpoint tagged fields")?;
        }
        w.tagged("share fetch tagged fields")
    })
}
