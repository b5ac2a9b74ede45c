//! Runs of digit groups: the shape cards and SSNs share, parsed once per run of digits.

/// More groups than a card or SSN can use; longer runs are skipped whole (a table of numbers,
/// not an identifier).
pub const MAX_GROUPS: usize = 24;

/// Digit groups separated by single spaces or dashes, starting at a digit.
pub struct Groups {
    /// (start, end) of each group.
    pub spans: [(usize, usize); MAX_GROUPS],
    /// The separator before group i (i ≥ 1).
    pub seps: [u8; MAX_GROUPS],
    pub len: usize,
    /// Where the run ends (after its last digit).
    pub end: usize,
    /// The run had more than MAX_GROUPS groups.
    pub overflow: bool,
}

impl Groups {
    pub fn parse(hay: &[u8], start: usize) -> Groups {
        let mut g = Groups {
            spans: [(0, 0); MAX_GROUPS],
            seps: [0; MAX_GROUPS],
            len: 0,
            end: start,
            overflow: false,
        };
        let n = hay.len();
        let mut i = start;
        loop {
            let gs = i;
            while i < n && hay[i].is_ascii_digit() {
                i += 1;
            }
            if g.len < MAX_GROUPS {
                g.spans[g.len] = (gs, i);
                g.len += 1;
            } else {
                g.overflow = true;
            }
            g.end = i;
            if i + 1 < n && (hay[i] == b' ' || hay[i] == b'-') && hay[i + 1].is_ascii_digit() {
                if g.len < MAX_GROUPS {
                    g.seps[g.len] = hay[i];
                }
                i += 1;
            } else {
                return g;
            }
        }
    }

    pub fn glen(&self, i: usize) -> usize {
        self.spans[i].1 - self.spans[i].0
    }
}

/// Word characters: a value bordered by one of these is part of a longer word.
#[inline]
pub fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether the run [start, end) of digits stands alone: not glued to letters, digits or a
/// decimal point with digits on its other side.
pub fn bounded(hay: &[u8], start: usize, end: usize) -> bool {
    if start > 0 {
        let p = hay[start - 1];
        if is_word(p) || (p == b'.' && start >= 2 && hay[start - 2].is_ascii_digit()) {
            return false;
        }
    }
    if end < hay.len() {
        let q = hay[end];
        if is_word(q) || (q == b'.' && end + 1 < hay.len() && hay[end + 1].is_ascii_digit()) {
            return false;
        }
    }
    true
}
