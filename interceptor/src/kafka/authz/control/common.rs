//! What every parser of this family shares: checks asked once per resource, names read in
//! place, arrays remembered by their byte ranges (for splicing), and the framing of answers.

use std::{collections::HashMap, ops::Range, sync::Arc};

use bytes::Bytes;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::super::{
    response::{decode_response, encode_response, refusal_code, refusal_message},
    splice::Splice,
    AuthzError, Outcome, Request, ResponseRewrite,
};
use crate::{
    kafka::{wire::Reader, HeaderError},
    policy::{AccessCheck, Check, Operation, Resource, ResourceKind},
};

/// Asks the session's [`AccessCheck`] once per (operation, resource) of one request: the
/// session audits every call, and a request may name a resource many times.
pub(super) struct Ask {
    check: Arc<dyn AccessCheck>,
    memo: HashMap<(Operation, ResourceKind, String), Check>,
}

impl Ask {
    pub(super) fn new(check: &Arc<dyn AccessCheck>) -> Self {
        Self {
            check: Arc::clone(check),
            memo: HashMap::new(),
        }
    }

    pub(super) fn check(&mut self, op: Operation, resource: Resource<'_>) -> Check {
        let key = (op, resource.kind, resource.name.to_owned());
        if let Some(check) = self.memo.get(&key) {
            return *check;
        }
        let check = self.check.check(op, resource);
        self.memo.insert(key, check);
        check
    }
}

/// A refusal as the client sees it: its code and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Refusal {
    pub code: i16,
    pub message: &'static str,
}

impl Refusal {
    /// `None` when `check` allows.
    pub(super) fn of(check: Check, kind: ResourceKind) -> Option<Self> {
        (!check.is_allowed()).then(|| Self {
            code: refusal_code(check, kind),
            message: refusal_message(check),
        })
    }

    pub(super) fn with_code(code: i16, message: &'static str) -> Self {
        Self { code, message }
    }

    pub(super) fn message(self) -> Option<StrBytes> {
        Some(StrBytes::from_static_str(self.message))
    }
}

/// Checks `op` on a resource and turns a refusal into what the client is told.
pub(super) fn refusal(ask: &mut Ask, op: Operation, resource: Resource<'_>) -> Option<Refusal> {
    Refusal::of(ask.check(op, resource), resource.kind)
}

/// A request that is only an array of names (`what`), each checked for `op`: the names and
/// their refusals, in order.
pub(super) fn checked_names<'f>(
    request: &Request<'f>,
    ask: &mut Ask,
    what: &'static str,
    op: Operation,
    kind: ResourceKind,
) -> Result<(Array<&'f str>, Vec<Option<Refusal>>), AuthzError> {
    let body = Body::of(request);
    let names = parsed(request, || body.names(&mut body.reader(request)?, what))?;
    let refusals = (names.items.iter())
        .map(|name| {
            refusal(
                ask,
                op,
                Resource {
                    kind,
                    name: name.value,
                },
            )
        })
        .collect();
    Ok((names, refusals))
}

/// The outcome of a request that is only an array of names, each checked for `op` and
/// refused ones answered with their `entry` in the answer's `list` (see [`per_item`]).
pub(super) fn per_name<T, E>(
    request: &Request<'_>,
    check: &Arc<dyn AccessCheck>,
    what: &'static str,
    (op, kind): (Operation, ResourceKind),
    entry: impl Fn(&str, Refusal) -> E,
    list: fn(&mut T) -> &mut Vec<E>,
) -> Result<Outcome, AuthzError>
where
    T: Default + Decodable + Encodable + 'static,
    E: Send + 'static,
{
    let (names, refusals) = checked_names(request, &mut Ask::new(check), what, op, kind)?;
    per_item(
        request,
        &names,
        &refusals,
        |name, refused| entry(name, refused),
        list,
        None,
    )
}

/// Forwards a request nothing refused; otherwise the client gets `answer`, written by the
/// interceptor.
pub(super) fn forward_or_answer<T: Encodable>(
    request: &Request<'_>,
    refused: Option<Refusal>,
    answer: impl FnOnce(Refusal) -> T,
) -> Result<Outcome, AuthzError> {
    match refused {
        None => Ok(Outcome::Forward),
        Some(refused) => respond(request, &answer(refused)),
    }
}

/// `$answer` (a response or an entry of one) carrying a [`Refusal`]'s code and message: the
/// generated types share these builders but no trait.
macro_rules! refused_with_message {
    ($answer:ty, $refused:expr) => {{
        let refused = $refused;
        <$answer>::default()
            .with_error_code(refused.code)
            .with_error_message(refused.message())
    }};
}
pub(super) use refused_with_message;

pub(super) fn owned(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

/// The content of a string the reader has consumed. Kafka's names are UTF-8; anything else
/// is refused as malformed rather than guessed at.
fn text<'f>(
    frame: &'f [u8],
    range: Range<usize>,
    what: &'static str,
) -> Result<&'f str, HeaderError> {
    frame
        .get(range)
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .ok_or(HeaderError::Invalid(what))
}

/// A request body being read: the frame and whether the version is flexible.
#[derive(Clone, Copy)]
pub(super) struct Body<'f> {
    pub frame: &'f [u8],
    pub flexible: bool,
}

impl<'f> Body<'f> {
    pub(super) fn of(request: &Request<'f>) -> Self {
        Self {
            frame: request.frame,
            flexible: request.flexible(),
        }
    }

    pub(super) fn reader(&self, request: &Request<'_>) -> Result<Reader<'f>, HeaderError> {
        Reader::at(self.frame, request.header.body_offset, "request body")
    }

    pub(super) fn name(
        &self,
        r: &mut Reader<'f>,
        what: &'static str,
    ) -> Result<&'f str, HeaderError> {
        let range = r.string(self.flexible, what)?;
        text(self.frame, range, what)
    }

    pub(super) fn nullable_name(
        &self,
        r: &mut Reader<'f>,
        what: &'static str,
    ) -> Result<Option<&'f str>, HeaderError> {
        match r.nullable_str(self.flexible, what)? {
            None => Ok(None),
            Some(range) => text(self.frame, range, what).map(Some),
        }
    }

    /// Skips a nullable string (member ids, metadata).
    pub(super) fn skip_str(
        &self,
        r: &mut Reader<'f>,
        what: &'static str,
    ) -> Result<(), HeaderError> {
        r.nullable_str(self.flexible, what).map(|_| ())
    }

    /// Reads an array whose elements `each` reads (one element per call), remembering each
    /// element's byte range.
    pub(super) fn array<T>(
        &self,
        r: &mut Reader<'f>,
        min_element_bytes: usize,
        what: &'static str,
        each: impl FnMut(&mut Reader<'f>) -> Result<T, HeaderError>,
    ) -> Result<Array<T>, HeaderError> {
        let count_at = r.pos();
        let count = r.count(self.flexible, min_element_bytes, what)?;
        self.elements(r, count_at, count, each)
    }

    pub(super) fn nullable_array<T>(
        &self,
        r: &mut Reader<'f>,
        min_element_bytes: usize,
        what: &'static str,
        each: impl FnMut(&mut Reader<'f>) -> Result<T, HeaderError>,
    ) -> Result<Option<Array<T>>, HeaderError> {
        let count_at = r.pos();
        match r.nullable_count(self.flexible, min_element_bytes, what)? {
            None => Ok(None),
            Some(count) => self.elements(r, count_at, count, each).map(Some),
        }
    }

    /// The `count` elements of an array whose count (checked against the bytes left) was
    /// read at `count_at`.
    fn elements<T>(
        &self,
        r: &mut Reader<'f>,
        count_at: usize,
        count: usize,
        mut each: impl FnMut(&mut Reader<'f>) -> Result<T, HeaderError>,
    ) -> Result<Array<T>, HeaderError> {
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            let start = r.pos();
            let value = each(r)?;
            items.push(Item {
                range: start..r.pos(),
                value,
            });
        }
        Ok(Array {
            count_at,
            items,
            end: r.pos(),
        })
    }

    /// An array of strings (group ids, transactional ids, topic names).
    pub(super) fn names(
        &self,
        r: &mut Reader<'f>,
        what: &'static str,
    ) -> Result<Array<&'f str>, HeaderError> {
        self.array(r, 1, what, |r| self.name(r, what))
    }

    /// An array of i32 (partition indexes).
    pub(super) fn partitions(
        &self,
        r: &mut Reader<'f>,
        what: &'static str,
    ) -> Result<Vec<i32>, HeaderError> {
        Ok(self
            .array(r, 4, what, |r| r.i32(what))?
            .items
            .into_iter()
            .map(|item| item.value)
            .collect())
    }
}

pub(super) struct Item<T> {
    /// The element's bytes in the frame.
    pub range: Range<usize>,
    pub value: T,
}

pub(super) struct Array<T> {
    /// Where the array's count starts.
    pub count_at: usize,
    pub items: Vec<Item<T>>,
    /// Just after the last element.
    pub end: usize,
}

impl<T> Array<T> {
    /// Writes this array into `splice` with only the elements `keep` accepts (given their
    /// index), each written
    /// by `write` (which copies it, whole or in parts).
    pub(super) fn splice_kept(
        &self,
        splice: &mut Splice<'_>,
        flexible: bool,
        mut keep: impl FnMut(usize, &T) -> bool,
        mut write: impl FnMut(&mut Splice<'_>, usize, &Item<T>),
    ) {
        splice.copy_to(self.count_at);
        let kept: Vec<(usize, &Item<T>)> = (self.items.iter().enumerate())
            .filter(|(at, item)| keep(*at, &item.value))
            .collect();
        splice.put_count(kept.len(), flexible);
        for (at, item) in kept {
            splice.skip_to(item.range.start);
            write(splice, at, item);
        }
        splice.skip_to(self.end);
    }
}

/// Copies a kept element as it is.
pub(super) fn whole<T>(splice: &mut Splice<'_>, _at: usize, item: &Item<T>) {
    splice.copy(item.range.clone());
}

/// Inserts the refused entries at their positions in the request (ascending), so the client
/// sees its items in the order it sent them.
pub(super) fn insert_at<T>(items: &mut Vec<T>, refused: Vec<(usize, T)>) {
    for (at, item) in refused {
        let at = at.min(items.len());
        items.insert(at, item);
    }
}

/// The whole answer, written by the interceptor.
pub(super) fn respond<T: Encodable>(
    request: &Request<'_>,
    body: &T,
) -> Result<Outcome, AuthzError> {
    encode_response(
        request.header.api_key,
        request.header.api_version,
        request.header.correlation_id,
        body,
        request.api_name(),
    )
    .map(Outcome::Respond)
}

/// A rewrite of the broker's answer: decoded, changed by `change`, encoded again.
pub(super) fn rewrite<T>(
    request: &Request<'_>,
    change: impl FnOnce(&mut T) + Send + 'static,
) -> ResponseRewrite
where
    T: Decodable + Encodable + 'static,
{
    let key = request.header.api_key;
    let version = request.header.api_version;
    let api = request.api_name();
    Box::new(move |frame: Bytes| {
        let (correlation_id, mut body) = decode_response::<T>(key, version, &frame, api)?;
        change(&mut body);
        encode_response(key, version, correlation_id, &body, api)
    })
}

/// Forwards the spliced `frame`, and merges the broker's answer with `change`.
pub(super) fn forward_part<T>(
    request: &Request<'_>,
    frame: Bytes,
    change: impl FnOnce(&mut T) + Send + 'static,
) -> Outcome
where
    T: Decodable + Encodable + 'static,
{
    Outcome::Rewrite {
        frame,
        response: Some(rewrite(request, change)),
    }
}

/// Parses with `parse`, turning a parse failure into the request's malformed error.
pub(super) fn parsed<T>(
    request: &Request<'_>,
    parse: impl FnOnce() -> Result<T, HeaderError>,
) -> Result<T, AuthzError> {
    parse().map_err(|e| request.malformed(e))
}

/// A response change run after the merge (or on the whole answer when nothing was refused).
pub(super) type After<T> = Option<Box<dyn FnOnce(&mut T) + Send>>;

/// The outcome for a request whose one array is checked item by item (group ids, topics of
/// a commit...): all allowed → forward; all refused → answer `entry` for each; otherwise
/// forward the allowed items and insert the refused ones' entries into the broker's `list`
/// at their positions.
pub(super) fn per_item<V, T, E>(
    request: &Request<'_>,
    names: &Array<V>,
    refusals: &[Option<Refusal>],
    entry: impl Fn(&V, Refusal) -> E,
    list: fn(&mut T) -> &mut Vec<E>,
    after: After<T>,
) -> Result<Outcome, AuthzError>
where
    T: Default + Decodable + Encodable + 'static,
    E: Send + 'static,
{
    let refused: Vec<(usize, E)> = names
        .items
        .iter()
        .zip(refusals)
        .enumerate()
        .filter_map(|(at, (item, refusal))| refusal.map(|r| (at, entry(&item.value, r))))
        .collect();
    if refused.is_empty() {
        return Ok(match after {
            None => Outcome::Forward,
            Some(after) => Outcome::FilterResponse(rewrite(request, after)),
        });
    }
    if refused.len() == names.items.len() {
        let mut body = T::default();
        list(&mut body).extend(refused.into_iter().map(|(_, e)| e));
        return respond(request, &body);
    }
    let mut splice = Splice::new(request.frame);
    names.splice_kept(
        &mut splice,
        request.flexible(),
        |at, _| refusals.get(at).is_some_and(Option::is_none),
        whole,
    );
    Ok(forward_part(
        request,
        splice.finish(),
        move |body: &mut T| {
            insert_at(list(body), refused);
            if let Some(after) = after {
                after(body);
            }
        },
    ))
}
