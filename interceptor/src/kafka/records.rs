//! TEMPORARY STUB of the record reader's API (replaced at merge).
use std::ops::ControlFlow;

#[derive(Debug, Clone, Copy)]
pub struct RecordLimits {
    pub max_decompressed_bytes: usize,
    pub max_records_per_batch: usize,
}

pub struct BatchInfo {
    pub batch_bytes: usize,
    pub control: bool,
}

pub struct RecordView<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

impl<'a> RecordView<'a> {
    pub fn size(&self) -> usize {
        0
    }
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> {
        std::iter::empty()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("stub")]
pub struct RecordsError;

pub fn batches(_records: &[u8]) -> impl Iterator<Item = Result<BatchInfo, RecordsError>> {
    std::iter::empty()
}

pub fn scan<B>(
    _records: &[u8],
    _limits: &RecordLimits,
    _scratch: &mut Vec<u8>,
    _f: impl FnMut(&BatchInfo, &RecordView<'_>) -> ControlFlow<B>,
) -> Result<Option<B>, RecordsError> {
    Ok(None)
}
