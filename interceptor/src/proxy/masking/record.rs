//! One record through a list of masking rules: each rule reads the parts it names (key, value,
//! header values) as the previous rules left them, and the parts that changed are written into
//! the rewriter's [`RecordEdit`].

use std::borrow::Cow;

use crate::{
    kafka::records::{RecordEdit, RecordView},
    mask::{MaskError, Part, Rule},
};

/// A header's value as the rules so far left it, and whether one changed it.
type HeaderValue<'a> = (Option<Cow<'a, [u8]>>, bool);

/// What a rule does to one part: `Ok(None)` leaves it as it is.
pub(super) trait PartOp {
    fn apply(
        &mut self,
        rule: &Rule,
        part: Part,
        input: &[u8],
    ) -> Result<Option<Vec<u8>>, MaskError>;
}

impl<F> PartOp for F
where
    F: FnMut(&Rule, Part, &[u8]) -> Result<Option<Vec<u8>>, MaskError>,
{
    fn apply(
        &mut self,
        rule: &Rule,
        part: Part,
        input: &[u8],
    ) -> Result<Option<Vec<u8>>, MaskError> {
        self(rule, part, input)
    }
}

/// Runs `op` for every rule over the parts it reads; returns whether anything changed (and
/// then `edit` holds the changes).
pub(super) fn edit_record<'r>(
    rules: impl Iterator<Item = &'r Rule> + Clone,
    record: &RecordView<'_>,
    edit: &mut RecordEdit,
    op: &mut impl PartOp,
) -> Result<bool, MaskError> {
    let mut key: Option<Cow<'_, [u8]>> = record.key.map(Cow::Borrowed);
    let mut value: Option<Cow<'_, [u8]>> = record.value.map(Cow::Borrowed);
    let (mut key_changed, mut value_changed) = (false, false);
    // Filled on the first rule that reads headers: most rules do not.
    let mut headers: Option<Vec<HeaderValue<'_>>> = None;
    for rule in rules {
        let parts = rule.spec().parts;
        if parts.key {
            if let Some(current) = &key {
                if let Some(new) = op.apply(rule, Part::Key, current)? {
                    key = Some(Cow::Owned(new));
                    key_changed = true;
                }
            }
        }
        if parts.value {
            if let Some(current) = &value {
                if let Some(new) = op.apply(rule, Part::Value, current)? {
                    value = Some(Cow::Owned(new));
                    value_changed = true;
                }
            }
        }
        if parts.headers {
            let hs = headers.get_or_insert_with(|| {
                record
                    .headers()
                    .map(|(_, v)| (v.map(Cow::Borrowed), false))
                    .collect()
            });
            for (current, changed) in hs.iter_mut() {
                let Some(bytes) = current.as_deref() else {
                    continue;
                };
                if let Some(new) = op.apply(rule, Part::Header, bytes)? {
                    *current = Some(Cow::Owned(new));
                    *changed = true;
                }
            }
        }
    }
    let mut any = false;
    if key_changed {
        edit.set_key(key.as_deref());
        any = true;
    }
    if value_changed {
        edit.set_value(value.as_deref());
        any = true;
    }
    for (index, (current, changed)) in headers.iter().flatten().enumerate() {
        if *changed {
            edit.set_header_value(index, current.as_deref());
            any = true;
        }
    }
    Ok(any)
}

/// Every part each rule reads, without changing anything (token lookups before a reveal).
pub(super) fn visit_record<'r>(
    rules: impl Iterator<Item = &'r Rule>,
    record: &RecordView<'_>,
    mut f: impl FnMut(&Rule, Part, &[u8]),
) {
    for rule in rules {
        let parts = rule.spec().parts;
        if let (true, Some(key)) = (parts.key, record.key) {
            f(rule, Part::Key, key);
        }
        if let (true, Some(value)) = (parts.value, record.value) {
            f(rule, Part::Value, value);
        }
        if parts.headers {
            for (_, value) in record.headers() {
                if let Some(value) = value {
                    f(rule, Part::Header, value);
                }
            }
        }
    }
}
