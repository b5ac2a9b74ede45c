//! Detectors: find sensitive values in free text.
//!
//! One pass per kind of anchor, never one per detector: a SWAR scan (8 bytes per step, no
//! allocation) for the bytes that start numeric values and addresses (digits for cards, SSNs
//! and IBAN check digits, `@` for emails, `+` for phone numbers), and one aho-corasick search
//! (SIMD prefiltered) for the literal prefixes (`eyJ`, `AKIA`, `-----BEGIN `, custom
//! prefixes…). Each candidate is then validated by its detector, which is where checksums and
//! word boundaries are checked. Clean text costs the two scans and the rejection of the
//! digit runs it carries (timestamps, ids), which the brand/length checks make cheap.

pub mod card;
pub mod email;
pub mod iban;
pub mod jwt;
pub mod keys;
pub mod phone;
pub mod run;
pub mod ssn;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, Input, MatchKind};

use self::keys::Tail;
use self::run::Groups;
use super::simd;
use super::spec::Detector;

/// A validated match: bytes [start, end) found by the detector at index `det` of the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    pub det: usize,
}

/// A compiled list of detectors.
#[derive(Debug)]
pub struct Detectors {
    card: Option<usize>,
    ssn: Option<usize>,
    iban: Option<usize>,
    email: Option<usize>,
    phone: Option<usize>,
    literals: Option<AhoCorasick>,
    /// Per literal pattern: the detector index, the prefix length and what follows it.
    lit: Vec<(usize, usize, Tail)>,
    len: usize,
}

impl Detectors {
    /// Fails with (index, message) for a detector that cannot be searched for.
    pub fn new(list: &[Detector]) -> Result<Detectors, (usize, String)> {
        let mut d = Detectors {
            card: None,
            ssn: None,
            iban: None,
            email: None,
            phone: None,
            literals: None,
            lit: Vec::new(),
            len: list.len(),
        };
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut add = |pats: &[&[u8]], i: usize, tail: Tail, lit: &mut Vec<_>| {
            for p in pats {
                patterns.push(p.to_vec());
                lit.push((i, p.len(), tail));
            }
        };
        for (i, det) in list.iter().enumerate() {
            let slot = match det {
                Detector::CreditCard => &mut d.card,
                Detector::UsSsn => &mut d.ssn,
                Detector::Iban => &mut d.iban,
                Detector::Email => &mut d.email,
                Detector::Phone => &mut d.phone,
                Detector::Jwt => {
                    add(&[b"eyJ"], i, Tail::Jwt, &mut d.lit);
                    continue;
                }
                Detector::AwsAccessKey => {
                    let t = Tail::Exact(16, keys::upper_alnum);
                    add(&[b"AKIA", b"ASIA"], i, t, &mut d.lit);
                    continue;
                }
                Detector::GcpApiKey => {
                    add(&[b"AIza"], i, Tail::Exact(35, keys::b64url), &mut d.lit);
                    continue;
                }
                Detector::GithubToken => {
                    let t = Tail::Exact(36, keys::alnum);
                    add(
                        &[b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_"],
                        i,
                        t,
                        &mut d.lit,
                    );
                    add(
                        &[b"github_pat_"],
                        i,
                        Tail::Exact(82, keys::word),
                        &mut d.lit,
                    );
                    continue;
                }
                Detector::SlackToken => {
                    let t = Tail::AtLeast(10, keys::alnum_dash);
                    let p: [&[u8]; 5] = [b"xoxb-", b"xoxa-", b"xoxp-", b"xoxr-", b"xoxs-"];
                    add(&p, i, t, &mut d.lit);
                    continue;
                }
                Detector::StripeKey => {
                    let t = Tail::AtLeast(24, keys::alnum);
                    add(&[b"sk_live_", b"rk_live_"], i, t, &mut d.lit);
                    continue;
                }
                Detector::PrivateKey => {
                    add(&[b"-----BEGIN "], i, Tail::Pem, &mut d.lit);
                    continue;
                }
                Detector::Custom {
                    prefix,
                    chars,
                    length,
                    ..
                } => {
                    if prefix.is_empty() {
                        return Err((i, "a custom detector needs a non-empty prefix".into()));
                    }
                    if *length == 0 || *length > 4096 {
                        return Err((i, "a custom detector's length must be 1..=4096".into()));
                    }
                    let t = Tail::Exact(*length, keys::class(*chars));
                    add(&[prefix.as_bytes()], i, t, &mut d.lit);
                    continue;
                }
            };
            slot.get_or_insert(i);
        }
        if !patterns.is_empty() {
            let ac = AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostFirst)
                .build(&patterns)
                .map_err(|e| (0, format!("detector prefixes: {e}")))?;
            d.literals = Some(ac);
        }
        Ok(d)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends the matches in `hay` to `out`, ordered by start, none overlapping (the
    /// leftmost, then the longest, wins). Allocates nothing when nothing matches.
    pub fn find(&self, hay: &[u8], out: &mut Vec<Found>) {
        let first = out.len();
        self.scan_bytes(hay, out);
        if let Some(ac) = &self.literals {
            self.scan_literals(ac, hay, out);
        }
        let added = &mut out[first..];
        if added.len() > 1 {
            added.sort_unstable_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
            let mut keep = first;
            for i in first..out.len() {
                if keep == first || out[i].start >= out[keep - 1].end {
                    out[keep] = out[i];
                    keep += 1;
                }
            }
            out.truncate(keep);
        }
    }

    fn scan_literals(&self, ac: &AhoCorasick, hay: &[u8], out: &mut Vec<Found>) {
        let mut pos = 0;
        while pos < hay.len() {
            let Some(m) = ac.find(Input::new(hay).range(pos..)) else {
                return;
            };
            let (det, plen, tail) = self.lit[m.pattern().as_usize()];
            let s = m.start();
            match keys::at(hay, s, plen, tail) {
                Some(e) => {
                    out.push(Found {
                        start: s,
                        end: e,
                        det,
                    });
                    pos = e;
                }
                None => pos = s + 1,
            }
        }
    }

    /// Digits, `@` and `+`, classified 64 bytes at a time into bit masks. Most digit runs in
    /// clean text cannot start anything (too short and not followed by another group, or glued
    /// to a word): the masks pick out the runs that might, so the others cost no branch.
    /// Events are taken in order of position, each only if its run starts at or after where
    /// the scan resumes, which is what a byte-by-byte scan visiting every digit run would do.
    fn scan_bytes(&self, hay: &[u8], out: &mut Vec<Found>) {
        let digits = self.card.is_some() || self.ssn.is_some() || self.iban.is_some();
        let groups = self.card.is_some() || self.ssn.is_some();
        let iban = self.iban.is_some();
        let at = self.email.is_some();
        let plus = self.phone.is_some();
        if !(digits || at || plus) {
            return;
        }
        let dmask = if digits { u64::MAX } else { 0 };
        // `@` and `+` share a mask: one whose detector is off is a candidate that `candidate`
        // passes over, as if the scan had not stopped there.
        let omask = if at || plus { u64::MAX } else { 0 };
        let n = hay.len();
        // Where the scan resumes: every candidate before it has been dealt with.
        let mut i = 0;
        let mut base = 0;
        while base < n {
            let m = match hay.get(base..base + 64) {
                Some(b) => match <&[u8; 64]>::try_from(b) {
                    Ok(b) => simd::anchors64(b),
                    Err(_) => return,
                },
                None => {
                    // The tail, padded with zeros (in no class).
                    let mut buf = [0u8; 64];
                    buf[..n - base].copy_from_slice(&hay[base..]);
                    simd::anchors64(&buf)
                }
            };
            let before = |k: usize| if base >= k { hay[base - k] } else { 0 };
            let d = m.digit & dmask;
            let carry_d = u64::from(before(1).is_ascii_digit()) & dmask;
            let starts = d & !((d << 1) | carry_d);
            let mut ev = m.other & omask;
            if digits {
                // Runs reaching the end of the block: checked exactly.
                ev |= d & (0b11 << 62);
            }
            if groups {
                // Last digits of runs followed by a separator and a digit.
                ev |= d & !(d >> 1) & (m.sep >> 1) & (d >> 2);
                // Starts of runs of 13 digits or more.
                let d2 = d & (d >> 1);
                let d4 = d2 & (d2 >> 2);
                let d8 = d4 & (d4 >> 4);
                ev |= starts & d8 & (d4 >> 8) & (d >> 12);
            }
            if iban {
                // Runs after two uppercase letters.
                let u1 = u64::from(before(1).is_ascii_uppercase());
                let u2 = u64::from(before(2).is_ascii_uppercase());
                let prev1 = (m.upper << 1) | u1;
                let prev2 = (m.upper << 2) | (u1 << 1) | u2;
                ev |= starts & prev1 & prev2;
            }
            while ev != 0 && i < base + 64 {
                if i > base {
                    ev &= u64::MAX << (i - base);
                    if ev == 0 {
                        break;
                    }
                }
                let off = ev.trailing_zeros() as usize;
                ev &= ev - 1;
                if d & (1 << off) == 0 {
                    i = self.candidate(hay, base + off, out);
                    continue;
                }
                // The start of the event's run; none in this block: the run began in an
                // earlier block, whose last digits were an event there.
                let below = starts & (u64::MAX >> (63 - off));
                if below == 0 {
                    continue;
                }
                let s = 63 - below.leading_zeros() as usize;
                if base + s < i {
                    // Resumed inside this run: the rest of it is glued to its digits.
                    continue;
                }
                i = self.digit_fast(hay, base + s, d >> s, base + 64, out);
            }
            base = (base + 64).max(i);
        }
    }

    /// The digit run at `p`: `run` is the digit mask from `p` on, valid up to `block_end`.
    /// Dismisses what `digit_run` would dismiss without parsing; the rest goes to it.
    #[inline(always)]
    fn digit_fast(
        &self,
        hay: &[u8],
        p: usize,
        run: u64,
        block_end: usize,
        out: &mut Vec<Found>,
    ) -> usize {
        let prev = if p > 0 { hay[p - 1] } else { 0 };
        if self.iban.is_some() && prev.is_ascii_uppercase() {
            return self.digit_run(hay, p, out);
        }
        let mut e = p + (!run).trailing_zeros() as usize;
        if e >= block_end {
            e = block_end;
            while e < hay.len() && hay[e].is_ascii_digit() {
                e += 1;
            }
        }
        let glued = run::is_word(prev);
        if (self.card.is_none() && self.ssn.is_none()) || glued {
            return e;
        }
        let grouped =
            e + 1 < hay.len() && matches!(hay[e], b' ' | b'-') && hay[e + 1].is_ascii_digit();
        if !grouped && e - p < 13 {
            return e;
        }
        self.digit_run(hay, p, out)
    }

    /// Validates the candidate at `p`; returns where the scan resumes (> p).
    fn candidate(&self, hay: &[u8], p: usize, out: &mut Vec<Found>) -> usize {
        match hay[p] {
            b'@' => {
                if let Some(det) = self.email {
                    if let Some((s, e)) = email::around(hay, p) {
                        out.push(Found {
                            start: s,
                            end: e,
                            det,
                        });
                        return e;
                    }
                }
                p + 1
            }
            b'+' => {
                if let Some(det) = self.phone {
                    if let Some(e) = phone::at(hay, p) {
                        out.push(Found {
                            start: p,
                            end: e,
                            det,
                        });
                        return e;
                    }
                }
                p + 1
            }
            _ => self.digit_run(hay, p, out),
        }
    }

    fn digit_run(&self, hay: &[u8], p: usize, out: &mut Vec<Found>) -> usize {
        if let Some(det) = self.iban {
            if p >= 2 && hay[p - 1].is_ascii_uppercase() && hay[p - 2].is_ascii_uppercase() {
                if let Some(e) = iban::at(hay, p - 2) {
                    out.push(Found {
                        start: p - 2,
                        end: e,
                        det,
                    });
                    return e;
                }
            }
        }
        let mut e = p;
        while e < hay.len() && hay[e].is_ascii_digit() {
            e += 1;
        }
        // Most digit runs in clean data (ids, timestamps, hex) are one short group, or glued
        // to a word: no card or SSN can start there, and no group parse is needed.
        let grouped =
            e + 1 < hay.len() && matches!(hay[e], b' ' | b'-') && hay[e + 1].is_ascii_digit();
        let glued = p > 0 && run::is_word(hay[p - 1]);
        if (self.card.is_none() && self.ssn.is_none()) || glued || (!grouped && e - p < 13) {
            return e;
        }
        let g = Groups::parse(hay, p);
        // Short runs (most numbers in clean data) cannot be a card or an SSN.
        let digits_upper_bound = g.end - p;
        if digits_upper_bound < 11 || g.overflow || !run::bounded(hay, p, g.end) {
            return g.end;
        }
        let first = out.len();
        if let Some(det) = self.card {
            card::find_in_groups(hay, &g, |start, end| out.push(Found { start, end, det }));
        }
        if let Some(det) = self.ssn {
            let cards = first..out.len();
            let mut found = Vec::new();
            ssn::find_in_groups(hay, &g, |start, end| found.push((start, end)));
            for (start, end) in found {
                let overlaps = out[cards.clone()]
                    .iter()
                    .any(|c| c.start < end && start < c.end);
                if !overlaps {
                    out.push(Found { start, end, det });
                }
            }
        }
        g.end
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The matched texts of `dets` in `s`.
    pub fn found(dets: &[Detector], s: &str) -> Vec<String> {
        let d = Detectors::new(dets).unwrap();
        let mut out = Vec::new();
        d.find(s.as_bytes(), &mut out);
        out.iter().map(|f| s[f.start..f.end].to_string()).collect()
    }

    /// The byte scan as it was before the block masks: every digit, `@` and `+` from where
    /// the scan resumes is a candidate.
    fn scan_bytes_reference(d: &Detectors, hay: &[u8], out: &mut Vec<Found>) {
        let digits = d.card.is_some() || d.ssn.is_some() || d.iban.is_some();
        let (at, plus) = (d.email.is_some(), d.phone.is_some());
        let mut i = 0;
        while i < hay.len() {
            let b = hay[i];
            if (digits && b.is_ascii_digit()) || (at && b == b'@') || (plus && b == b'+') {
                i = match b {
                    b'@' | b'+' => d.candidate(hay, i, out),
                    _ => d.digit_run(hay, i, out),
                };
            } else {
                i += 1;
            }
        }
    }

    fn detector_sets() -> Vec<Detectors> {
        use Detector::*;
        [
            Detector::builtins(),
            vec![CreditCard],
            vec![UsSsn],
            vec![Iban],
            vec![CreditCard, UsSsn],
            vec![Email],
            vec![Phone, Iban],
            vec![Email, Phone],
        ]
        .iter()
        .map(|l| Detectors::new(l).unwrap())
        .collect()
    }

    proptest::proptest! {
        #[test]
        fn block_scan_agrees_with_bytewise_scan(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![
                    4 => b'0'..=b'9',
                    1 => proptest::prelude::Just(b' '),
                    1 => proptest::prelude::Just(b'-'),
                    1 => b'A'..=b'Z',
                    1 => b'a'..=b'z',
                    1 => proptest::prop_oneof![
                        proptest::prelude::Just(b'@'),
                        proptest::prelude::Just(b'+'),
                        proptest::prelude::Just(b'.'),
                        proptest::prelude::Just(b'_'),
                        proptest::prelude::Just(0x80u8),
                        proptest::prelude::Just(0xffu8),
                        proptest::prelude::Just(0u8),
                    ],
                    1 => proptest::prelude::any::<u8>(),
                ],
                0..300,
            ),
            // Real cards, SSNs and IBANs now and then, so matches are exercised too.
            inserts in proptest::collection::vec(
                (0usize..300, 0usize..6), 0..4),
        ) {
            const PLANTED: [&str; 6] = [
                "4111 1111 1111 1111",
                "123-45-6789",
                "GB82WEST12345698765432",
                "alice@example.com",
                "+14155552671",
                "4111111111111111",
            ];
            let mut hay = bytes;
            for (at, k) in inserts {
                let at = at.min(hay.len());
                hay.splice(at..at, PLANTED[k].bytes());
            }
            for d in detector_sets() {
                let (mut got, mut want) = (Vec::new(), Vec::new());
                d.scan_bytes(&hay, &mut got);
                scan_bytes_reference(&d, &hay, &mut want);
                proptest::prop_assert_eq!(got, want, "{:?}", String::from_utf8_lossy(&hay));
            }
        }
    }

    #[test]
    fn all_builtins_together() {
        let text = "user alice@example.com paid with 4111 1111 1111 1111 on \
                    1700000000000, ssn 123-45-6789, iban GB82WEST12345698765432, \
                    phone +14155552671, key AKIAIOSFODNN7EXAMPLE, order 12345678.";
        let got = found(&Detector::builtins(), text);
        assert_eq!(
            got,
            vec![
                "alice@example.com",
                "4111 1111 1111 1111",
                "123-45-6789",
                "GB82WEST12345698765432",
                "+14155552671",
                "AKIAIOSFODNN7EXAMPLE"
            ]
        );
    }

    #[test]
    fn clean_text_has_no_matches() {
        let text = r#"{"ts":1700000000123,"id":"9f8e7d6c-5b4a-3210-fedc-ba9876543210","order":100234567,"note":"Delivered on 2024-01-15 at 10:30, 3 items, total 129.99 EUR + tax","version":"v1.2.3"}"#;
        assert!(found(&Detector::builtins(), text).is_empty());
    }

    #[test]
    fn never_panics_on_edges() {
        let d = Detectors::new(&Detector::builtins()).unwrap();
        let mut out = Vec::new();
        for s in [
            "",
            "@",
            "+",
            "+1",
            "4",
            "GB8",
            "eyJ",
            "-----BEGIN ",
            "a@",
            "@b.c",
            "AKIA",
            "GB82 ",
        ] {
            d.find(s.as_bytes(), &mut out);
        }
    }
}
