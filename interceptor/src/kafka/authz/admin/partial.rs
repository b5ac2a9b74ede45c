//! What the per-item keys share: one check per distinct resource, the answer for a refused
//! item, and the three ways a request with a list of items ends (forwarded untouched, answered
//! locally, or forwarded in part with the broker's answer merged with the refused items).

pub(super) use super::super::checks::Checks;
use std::ops::Range;

use bytes::Bytes;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::{
    kafka::{
        authz::{
            response::{decode_response, encode_response, refusal_code, refusal_message},
            splice::Splice,
            AuthzError, Outcome, Request, ResponseRewrite,
        },
        wire::Reader,
        HeaderError,
    },
    policy::{Check, Operation, Resource},
};

pub(super) const INVALID_REQUEST: i16 = 42;

/// The error one refused item gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Refusal {
    pub code: i16,
    pub message: &'static str,
}

impl Refusal {
    /// `None` when the check allows.
    pub fn of(check: Check, resource: Resource<'_>) -> Option<Self> {
        (!check.is_allowed()).then(|| Self {
            code: refusal_code(check, resource.kind),
            message: refusal_message(check),
        })
    }

    pub fn message(&self) -> Option<StrBytes> {
        Some(StrBytes::from_static_str(self.message))
    }
}

/// What a check means to the admin answers: the refusal for `resource`, `None` when allowed.
pub(super) trait Refusals<'n> {
    fn refusal(&mut self, op: Operation, resource: Resource<'n>) -> Option<Refusal>;
}

impl<'n> Refusals<'n> for Checks<'_, 'n> {
    fn refusal(&mut self, op: Operation, resource: Resource<'n>) -> Option<Refusal> {
        Refusal::of(self.check(op, resource), resource)
    }
}

/// A reader at the start of the request body.
pub(super) fn reader<'f>(request: &Request<'f>) -> Result<Reader<'f>, HeaderError> {
    Reader::at(request.frame, request.header.body_offset, "request body")
}

/// A name from the frame as text. Kafka would decode bad UTF-8 lossily and so act on a
/// different name than the one checked: such requests are refused as malformed instead.
pub(super) fn text<'f>(
    frame: &'f [u8],
    range: Range<usize>,
    what: &'static str,
) -> Result<&'f str, HeaderError> {
    let bytes = frame.get(range).ok_or(HeaderError::Truncated(what))?;
    std::str::from_utf8(bytes).map_err(|_| HeaderError::Invalid(what))
}

/// A non-null string of the request as text.
pub(super) fn name<'f>(
    r: &mut Reader<'f>,
    frame: &'f [u8],
    flexible: bool,
    what: &'static str,
) -> Result<&'f str, HeaderError> {
    let range = r.string(flexible, what)?;
    text(frame, range, what)
}

/// A nullable string of the request as text.
pub(super) fn nullable_name<'f>(
    r: &mut Reader<'f>,
    frame: &'f [u8],
    flexible: bool,
    what: &'static str,
) -> Result<Option<&'f str>, HeaderError> {
    r.nullable_str(flexible, what)?
        .map(|range| text(frame, range, what))
        .transpose()
}

/// A name for a response the interceptor writes.
pub(super) fn owned(name: &str) -> StrBytes {
    StrBytes::from_string(name.to_owned())
}

/// The smallest encoding of one array element: classic and flexible versions differ (i16
/// vs varint string lengths, i32 vs varint counts, tagged fields).
pub(super) fn min_bytes(flexible: bool, classic: usize, compact: usize) -> usize {
    if flexible {
        compact
    } else {
        classic
    }
}

/// Reads a top-level array item by item with `item`, keeping where each item lies.
pub(super) fn items<'f, X>(
    r: &mut Reader<'f>,
    flexible: bool,
    min_item_bytes: usize,
    what: &'static str,
    mut item: impl FnMut(&mut Reader<'f>) -> Result<X, HeaderError>,
) -> Result<Items<X>, HeaderError> {
    let count_at = r.pos();
    let count = r.count(flexible, min_item_bytes, what)?;
    // Grows with what is actually read, never with the count the client claims.
    let mut items = Vec::new();
    for _ in 0..count {
        let start = r.pos();
        let x = item(r)?;
        items.push((start..r.pos(), x));
    }
    Ok(Items {
        count_at,
        end: r.pos(),
        items,
    })
}

/// Skips an array of `count`-checked elements, each read by `item`.
pub(super) fn skip_array<'f>(
    r: &mut Reader<'f>,
    flexible: bool,
    min_item_bytes: usize,
    what: &'static str,
    mut item: impl FnMut(&mut Reader<'f>) -> Result<(), HeaderError>,
) -> Result<(), HeaderError> {
    let count = r.count(flexible, min_item_bytes, what)?;
    for _ in 0..count {
        item(r)?;
    }
    Ok(())
}

/// Skips an array of i32 (partition indexes, broker ids).
pub(super) fn skip_i32s(
    r: &mut Reader<'_>,
    flexible: bool,
    what: &'static str,
) -> Result<(), HeaderError> {
    let count = r.count(flexible, 4, what)?;
    r.skip(count.saturating_mul(4), what)
}

/// Reads an array of i32 (partition indexes).
pub(super) fn i32s(
    r: &mut Reader<'_>,
    flexible: bool,
    what: &'static str,
) -> Result<Vec<i32>, HeaderError> {
    let count = r.count(flexible, 4, what)?;
    (0..count).map(|_| r.i32(what)).collect()
}

/// A response whose main content is one list with an entry per request item, in request
/// order.
pub(super) trait ListResponse: Default + Encodable + Decodable + Send + 'static {
    type Item: Send + 'static;
    fn list(&mut self) -> &mut Vec<Self::Item>;
}

macro_rules! list_response {
    ($($ty:ty => $field:ident: $item:ty),* $(,)?) => {$(
        impl $crate::kafka::authz::admin::partial::ListResponse for $ty {
            type Item = $item;
            fn list(&mut self) -> &mut Vec<$item> {
                &mut self.$field
            }
        }
    )*};
}
pub(super) use list_response;

/// The top-level array of a request: where it lies and, per item, its bytes and what the
/// interceptor knows of it (what it names, then the answer it gets when refused).
pub(super) struct Items<X> {
    /// Where the array's count starts.
    pub count_at: usize,
    /// Where the array's last item ends.
    pub end: usize,
    pub items: Vec<(Range<usize>, X)>,
}

impl<X> Items<X> {
    pub fn map<Y>(self, mut f: impl FnMut(X) -> Y) -> Items<Y> {
        Items {
            count_at: self.count_at,
            end: self.end,
            items: self.items.into_iter().map(|(r, x)| (r, f(x))).collect(),
        }
    }
}

/// Forwards the request untouched when every item is allowed, answers it locally when none
/// is, and otherwise forwards the allowed items and merges the broker's answer with the
/// refused ones in their request positions.
pub(super) fn decide<T: ListResponse>(
    request: &Request<'_>,
    items: Items<Option<T::Item>>,
) -> Result<Outcome, AuthzError> {
    let kept = items.items.iter().filter(|(_, r)| r.is_none()).count();
    if kept == items.items.len() {
        return Ok(Outcome::Forward);
    }
    if kept == 0 {
        let mut body = T::default();
        *body.list() = items.items.into_iter().filter_map(|(_, r)| r).collect();
        return respond(request, &body);
    }
    tracing::debug!(
        api = request.api_name(),
        forwarded = kept,
        refused = items.items.len() - kept,
        "forwarding the allowed part of a request"
    );
    let mut splice = Splice::new(request.frame);
    splice.copy_to(items.count_at);
    splice.put_count(kept, request.flexible());
    let mut refused = Vec::with_capacity(items.items.len() - kept);
    for (index, (range, refusal)) in items.items.into_iter().enumerate() {
        match refusal {
            None => splice.copy(range),
            Some(item) => refused.push((index, item)),
        }
    }
    splice.skip_to(items.end);
    Ok(Outcome::Rewrite {
        frame: splice.finish(),
        response: Some(merge::<T>(request, refused)),
    })
}

/// Answers the request locally with `body`.
pub(super) fn respond<T: Encodable>(
    request: &Request<'_>,
    body: &T,
) -> Result<Outcome, AuthzError> {
    let h = request.header;
    encode_response(
        h.api_key,
        h.api_version,
        h.correlation_id,
        body,
        request.api_name(),
    )
    .map(Outcome::Respond)
}

fn merge<T: ListResponse>(
    request: &Request<'_>,
    refused: Vec<(usize, T::Item)>,
) -> ResponseRewrite {
    let (key, version, api) = (
        request.header.api_key,
        request.header.api_version,
        request.api_name(),
    );
    Box::new(move |frame: Bytes| {
        let (correlation_id, mut body) = decode_response::<T>(key, version, &frame, api)?;
        let list = body.list();
        let broker = std::mem::take(list);
        *list = interleave(broker, refused);
        encode_response(key, version, correlation_id, &body, api)
    })
}

/// The broker's entries (one per forwarded item, in order) with the refused entries put back
/// at their request positions. Entries the broker adds beyond that stay at the end.
pub(super) fn interleave<T>(broker: Vec<T>, refused: Vec<(usize, T)>) -> Vec<T> {
    let mut out = Vec::with_capacity(broker.len() + refused.len());
    let mut broker = broker.into_iter();
    for (index, item) in refused {
        while out.len() < index {
            match broker.next() {
                Some(entry) => out.push(entry),
                None => break,
            }
        }
        out.push(item);
    }
    out.extend(broker);
    out
}

#[cfg(test)]
mod tests {
    use super::interleave;

    #[test]
    fn refused_entries_go_back_to_their_request_positions() {
        assert_eq!(
            interleave(vec!["b", "d"], vec![(0, "a"), (2, "c"), (4, "e")]),
            ["a", "b", "c", "d", "e"]
        );
        // A broker answering fewer entries than forwarded still loses none of ours.
        assert_eq!(
            interleave(vec!["b"], vec![(0, "a"), (3, "d")]),
            ["a", "b", "d"]
        );
        assert_eq!(interleave(vec!["x", "y"], vec![]), ["x", "y"]);
    }
}
