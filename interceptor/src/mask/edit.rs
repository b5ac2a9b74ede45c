//! Copy-on-write output: the input is copied in spans between replacements, and nothing is
//! allocated until the first replacement.

pub struct Edit<'a> {
    input: &'a [u8],
    out: Vec<u8>,
    copied: usize,
    changed: bool,
}

impl<'a> Edit<'a> {
    pub fn new(input: &'a [u8]) -> Edit<'a> {
        Edit {
            input,
            out: Vec::new(),
            copied: 0,
            changed: false,
        }
    }

    /// Replaces input[start..end] (ranges come in increasing order) with what the caller
    /// writes into the returned buffer.
    pub fn splice(&mut self, start: usize, end: usize) -> &mut Vec<u8> {
        if !self.changed {
            self.changed = true;
            self.out.reserve(self.input.len() + 64);
        }
        let start = start.max(self.copied);
        self.out.extend_from_slice(&self.input[self.copied..start]);
        self.copied = end.max(start);
        &mut self.out
    }

    pub fn finish(mut self) -> Option<Vec<u8>> {
        if !self.changed {
            return None;
        }
        self.out.extend_from_slice(&self.input[self.copied..]);
        Some(self.out)
    }
}
