//! The streaming JSON walker. Iterative, with a fixed-size frame stack: nesting deeper than
//! [`MAX_DEPTH`] is an error, never a stack overflow, and work is linear in the input.

use super::text::{hex4, number_end, unescape};
use crate::mask::path::Seg;
use crate::mask::simd;

/// Containers open at once; serde_json's own recursion limit, so both agree on what is JSON.
pub const MAX_DEPTH: usize = 127;

/// A rule's field paths, compiled for matching one level at a time. At most 64 paths: each is
/// a bit in the masks the walker carries per level.
#[derive(Debug, Default)]
pub struct Paths {
    segs: Vec<Vec<Seg>>,
    /// Per depth: the paths that end there.
    term: Vec<u64>,
    all: u64,
}

pub const MAX_PATHS: usize = 64;

impl Paths {
    pub fn new(segs: Vec<Vec<Seg>>) -> Paths {
        assert!(segs.len() <= MAX_PATHS);
        let deepest = segs.iter().map(Vec::len).max().unwrap_or(0);
        let mut term = vec![0u64; deepest + 1];
        let mut all = 0;
        for (i, s) in segs.iter().enumerate() {
            term[s.len()] |= 1 << i;
            all |= 1 << i;
        }
        Paths { segs, term, all }
    }

    pub fn is_empty(&self) -> bool {
        self.all == 0
    }

    fn term(&self, depth: usize) -> u64 {
        self.term.get(depth).copied().unwrap_or(0)
    }

    /// (selected path, paths still alive below) for the value at `depth` reached from a
    /// container whose live paths are `live`, by member `key` or element `index`.
    #[inline]
    fn step(
        &self,
        live: u64,
        depth: usize,
        key: Option<&[u8]>,
        index: usize,
    ) -> (Option<u16>, u64) {
        let mut m = 0u64;
        let mut bits = live;
        while bits != 0 {
            let p = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let ok = match (&self.segs[p][depth - 1], key) {
                (Seg::Any, _) => true,
                (Seg::Name(n), Some(k)) => n == k,
                (Seg::Index(i), None) => *i == index,
                _ => false,
            };
            if ok {
                m |= 1 << p;
            }
        }
        let t = m & self.term(depth);
        let sel = (t != 0).then(|| t.trailing_zeros() as u16);
        (sel, m & !self.term(depth))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaf {
    /// A string; `escaped` when its content has backslash escapes.
    String {
        escaped: bool,
    },
    Number,
    Bool,
    Null,
}

/// What the walker reports. Ranges are byte offsets into the input; strings include quotes.
pub trait Visit {
    /// Which selected paths want a whole object/array handed over as one value (bit per path);
    /// other selected containers have their leaves reported with the path.
    fn whole_mask(&self) -> u64;
    /// Whether unselected strings are wanted (detectors run over them).
    fn wants_strings(&self) -> bool;
    fn leaf(&mut self, input: &[u8], sel: Option<u16>, kind: Leaf, start: usize, end: usize);
    fn whole(&mut self, input: &[u8], field: u16, start: usize, end: usize);
}

#[derive(Clone, Copy, Default)]
struct Frame {
    obj: bool,
    /// Paths that can still match below.
    live: u64,
    /// Leaves below are selected by this path (a container selected leaf-wise).
    sel: Option<u16>,
    /// Inside a subtree handed over whole: nothing below is reported.
    muted: bool,
    /// This container is handed over whole: (path, start).
    whole: Option<(u16, usize)>,
    index: usize,
}

#[derive(Clone, Copy)]
struct Ctx {
    sel: Option<u16>,
    live: u64,
    muted: bool,
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bit of each byte that is `"`, `\` or a control character.
#[inline(always)]
fn string_stop(w: u64) -> u64 {
    let eq = |c: u8| {
        let x = w ^ (LO * u64::from(c));
        !(((x & !HI) + !HI) | x) & HI
    };
    let ctl = (LO * 0x9f).wrapping_sub(w & !HI) & !w & HI;
    eq(b'"') | eq(b'\\') | ctl
}

fn err<T>(what: &str, at: usize) -> Result<T, String> {
    Err(format!("{what} at byte {at}"))
}

#[inline]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\n' | b'\r' | b'\t') {
        i += 1;
    }
    i
}

/// The end (after the closing quote) of the string whose opening quote is at `i`, and
/// whether it has escapes.
#[inline]
pub fn string_end(b: &[u8], i: usize) -> Result<(usize, bool), String> {
    // Most strings are short and plain: their closing quote is the first stop in the next 16
    // bytes. Anything else (longer, escapes, errors, the end of the input) takes the loop.
    if let Some(chunk) = b.get(i + 1..i + 17) {
        if let Ok(chunk) = <&[u8; 16]>::try_from(chunk) {
            let m = simd::string_stops16(chunk);
            if m != 0 {
                let j = i + 1 + m.trailing_zeros() as usize;
                if b[j] == b'"' {
                    return Ok((j + 1, false));
                }
            }
        }
    }
    string_end_slow(b, i)
}

/// `string_end` from the start, escapes and errors included.
#[inline(never)]
fn string_end_slow(b: &[u8], i: usize) -> Result<(usize, bool), String> {
    let n = b.len();
    let mut j = i + 1;
    let mut escaped = false;
    loop {
        // 16 bytes at a time while they last, then 8, then one by one.
        let mut stopped = false;
        while let Some(chunk) = b.get(j..j + 16) {
            let Ok(chunk) = <&[u8; 16]>::try_from(chunk) else {
                break;
            };
            let m = simd::string_stops16(chunk);
            if m == 0 {
                j += 16;
            } else {
                j += m.trailing_zeros() as usize;
                stopped = true;
                break;
            }
        }
        while !stopped && j + 8 <= n {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[j..j + 8]);
            let m = string_stop(u64::from_le_bytes(w));
            if m == 0 {
                j += 8;
            } else {
                j += (m.trailing_zeros() / 8) as usize;
                break;
            }
        }
        match b.get(j) {
            None => return err("unterminated string", i),
            Some(b'"') => return Ok((j + 1, escaped)),
            Some(b'\\') => {
                escaped = true;
                match b.get(j + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => j += 2,
                    Some(b'u') => {
                        let cp = hex4(b, j + 2);
                        if cp == u32::MAX {
                            return err("bad \\u escape", j);
                        }
                        j += 6;
                        if (0xD800..0xDC00).contains(&cp) {
                            let lo = if b.get(j) == Some(&b'\\') && b.get(j + 1) == Some(&b'u') {
                                hex4(b, j + 2)
                            } else {
                                u32::MAX
                            };
                            if !(0xDC00..0xE000).contains(&lo) {
                                return err("lone leading surrogate", j);
                            }
                            j += 6;
                        } else if (0xDC00..0xE000).contains(&cp) {
                            return err("lone trailing surrogate", j);
                        }
                    }
                    _ => return err("bad escape", j),
                }
            }
            Some(_) if b[j] < 0x20 => return err("control character in string", j),
            Some(_) => j += 1,
        }
    }
}

/// Walks `input`, reporting to `v`. `Err` with a description when it is not JSON; `v` may
/// have been told about a prefix by then.
pub fn walk(input: &[u8], paths: &Paths, v: &mut impl Visit) -> Result<(), String> {
    if !simd::is_ascii(input) {
        if let Err(e) = std::str::from_utf8(input) {
            return err("invalid UTF-8", e.valid_up_to());
        }
    }
    let whole = v.whole_mask();
    let strings = v.wants_strings();
    // Grown on demand: zeroing MAX_DEPTH frames per record costs more than the walk of a
    // small record.
    let mut stack: Vec<Frame> = Vec::new();
    let mut depth = 0usize;
    let mut key_buf = Vec::new();
    let n = input.len();
    let t0 = paths.term(0);
    let mut ctx = Ctx {
        sel: (t0 != 0).then(|| t0.trailing_zeros() as u16),
        live: paths.all & !t0,
        muted: false,
    };
    let mut i = skip_ws(input, 0);

    // Context of the child of `f` (at depth `d`, 1-based) named `key` or at `index`.
    let child = |f: &Frame, d: usize, key: Option<&[u8]>, index: usize| -> Ctx {
        if f.muted {
            Ctx {
                sel: None,
                live: 0,
                muted: true,
            }
        } else if f.sel.is_some() {
            Ctx {
                sel: f.sel,
                live: 0,
                muted: false,
            }
        } else if f.live == 0 {
            Ctx {
                sel: None,
                live: 0,
                muted: false,
            }
        } else {
            let (sel, live) = paths.step(f.live, d, key, index);
            Ctx {
                sel,
                live,
                muted: false,
            }
        }
    };

    'value: loop {
        let Some(&c) = input.get(i) else {
            return err("unexpected end", i);
        };
        match c {
            b'{' | b'[' => {
                if depth == MAX_DEPTH {
                    return err("nesting too deep", i);
                }
                let mut f = Frame {
                    obj: c == b'{',
                    live: ctx.live,
                    sel: None,
                    muted: ctx.muted,
                    whole: None,
                    index: 0,
                };
                if let (Some(s), false) = (ctx.sel, ctx.muted) {
                    if whole & (1 << s) != 0 {
                        f.whole = Some((s, i));
                        f.muted = true;
                    } else {
                        f.sel = Some(s);
                    }
                }
                stack.truncate(depth);
                stack.push(f);
                depth += 1;
                i = skip_ws(input, i + 1);
                let close = if c == b'{' { b'}' } else { b']' };
                if input.get(i) == Some(&close) {
                    i += 1;
                } else {
                    if c == b'{' {
                        i = member_key(
                            input,
                            i,
                            &stack[depth - 1],
                            depth,
                            &mut key_buf,
                            &mut ctx,
                            &child,
                        )?;
                    } else {
                        ctx = child(&stack[depth - 1], depth, None, 0);
                    }
                    continue 'value;
                }
                // An empty container: closed below like any other.
                depth -= 1;
                if let Some((s, start)) = stack[depth].whole {
                    v.whole(input, s, start, i);
                }
            }
            b'"' => {
                let (e, escaped) = string_end(input, i)?;
                if !ctx.muted && (strings || ctx.sel.is_some()) {
                    v.leaf(input, ctx.sel, Leaf::String { escaped }, i, e);
                }
                i = e;
            }
            b'-' | b'0'..=b'9' => {
                let Some(e) = number_end(input, i) else {
                    return err("bad number", i);
                };
                if !ctx.muted && ctx.sel.is_some() {
                    v.leaf(input, ctx.sel, Leaf::Number, i, e);
                }
                i = e;
            }
            b't' | b'f' | b'n' => {
                let (lit, kind): (&[u8], _) = match c {
                    b't' => (b"true", Leaf::Bool),
                    b'f' => (b"false", Leaf::Bool),
                    _ => (b"null", Leaf::Null),
                };
                if !input[i..].starts_with(lit) {
                    return err("bad literal", i);
                }
                let e = i + lit.len();
                if !ctx.muted && ctx.sel.is_some() {
                    v.leaf(input, ctx.sel, kind, i, e);
                }
                i = e;
            }
            _ => return err("expected a value", i),
        }
        // After a value: a separator, a close, or the end.
        loop {
            i = skip_ws(input, i);
            if depth == 0 {
                if i != n {
                    return err("trailing characters", i);
                }
                return Ok(());
            }
            let f = &mut stack[depth - 1];
            match input.get(i) {
                Some(b',') => {
                    i = skip_ws(input, i + 1);
                    if f.obj {
                        let f = stack[depth - 1];
                        i = member_key(input, i, &f, depth, &mut key_buf, &mut ctx, &child)?;
                    } else {
                        f.index += 1;
                        ctx = child(f, depth, None, f.index);
                    }
                    continue 'value;
                }
                Some(b'}') if f.obj => {}
                Some(b']') if !f.obj => {}
                _ => return err("expected `,` or a close", i),
            }
            i += 1;
            depth -= 1;
            if let Some((s, start)) = stack[depth].whole {
                v.whole(input, s, start, i);
            }
        }
    }
}

/// Parses `"key" :` at `i` and sets `ctx` for the member's value; returns where it starts.
fn member_key(
    input: &[u8],
    i: usize,
    f: &Frame,
    depth: usize,
    key_buf: &mut Vec<u8>,
    ctx: &mut Ctx,
    child: &impl Fn(&Frame, usize, Option<&[u8]>, usize) -> Ctx,
) -> Result<usize, String> {
    if input.get(i) != Some(&b'"') {
        return err("expected a member name", i);
    }
    let (e, escaped) = string_end(input, i)?;
    *ctx = if f.live != 0 && !f.muted && f.sel.is_none() {
        let raw = &input[i + 1..e - 1];
        if escaped {
            key_buf.clear();
            unescape(raw, key_buf);
            child(f, depth, Some(key_buf), 0)
        } else {
            child(f, depth, Some(raw), 0)
        }
    } else {
        child(f, depth, Some(b""), 0)
    };
    let j = skip_ws(input, e);
    if input.get(j) != Some(&b':') {
        return err("expected `:`", j);
    }
    Ok(skip_ws(input, j + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::path::parse;

    #[derive(Default)]
    struct Rec {
        whole: u64,
        got: Vec<(Option<u16>, String)>,
    }
    impl Visit for Rec {
        fn whole_mask(&self) -> u64 {
            self.whole
        }
        fn wants_strings(&self) -> bool {
            false
        }
        fn leaf(&mut self, input: &[u8], sel: Option<u16>, _: Leaf, s: usize, e: usize) {
            self.got
                .push((sel, String::from_utf8_lossy(&input[s..e]).into()));
        }
        fn whole(&mut self, input: &[u8], f: u16, s: usize, e: usize) {
            self.got.push((
                Some(f),
                format!("whole {}", String::from_utf8_lossy(&input[s..e])),
            ));
        }
    }

    fn sel(paths: &[&str], whole: u64, doc: &str) -> Vec<(Option<u16>, String)> {
        let p = Paths::new(paths.iter().map(|p| parse(p).unwrap()).collect());
        let mut r = Rec {
            whole,
            ..Rec::default()
        };
        walk(doc.as_bytes(), &p, &mut r).unwrap();
        r.got
    }

    fn s(f: u16, v: &str) -> (Option<u16>, String) {
        (Some(f), v.to_string())
    }

    #[test]
    fn selects_by_path() {
        let doc = r#"{"card":{"number":"4111","cvv":123},"users":[{"email":"a@b.c","n":1},{"email":"d@e.f"}],"a b":true,"x":null,"k\u0065y":"esc"}"#;
        assert_eq!(sel(&["$.card.number"], 0, doc), vec![s(0, r#""4111""#)]);
        assert_eq!(
            sel(&["$.users[*].email"], 0, doc),
            vec![s(0, r#""a@b.c""#), s(0, r#""d@e.f""#)]
        );
        assert_eq!(sel(&["$.users[1].email"], 0, doc), vec![s(0, r#""d@e.f""#)]);
        assert_eq!(sel(&["$['a b']"], 0, doc), vec![s(0, "true")]);
        assert_eq!(sel(&["$.key"], 0, doc), vec![s(0, r#""esc""#)]);
        assert_eq!(sel(&["$.x"], 0, doc), vec![s(0, "null")]);
        assert_eq!(
            sel(&["$.card"], 0, doc),
            vec![s(0, r#""4111""#), s(0, "123")]
        );
        assert_eq!(
            sel(&["$.card"], 1, doc),
            vec![s(0, r#"whole {"number":"4111","cvv":123}"#)]
        );
        assert_eq!(
            sel(&["$.card.*", "$.card.cvv"], 0, doc),
            vec![s(0, r#""4111""#), s(0, "123")]
        );
        assert_eq!(
            sel(&["$.card.cvv", "$.card.*"], 0, doc),
            vec![s(1, r#""4111""#), s(0, "123")]
        );
        assert_eq!(sel(&["$"], 1, "[1, {}]"), vec![s(0, "whole [1, {}]")]);
        assert_eq!(sel(&["$[0]"], 1, "[[], 2]"), vec![s(0, "whole []")]);
        assert!(sel(&["$.nope", "$[0]"], 0, doc).is_empty());
    }

    #[test]
    fn rejects_what_serde_rejects() {
        let p = Paths::default();
        for bad in [
            "",
            " ",
            "{",
            "[1,]",
            "{\"a\":}",
            "{\"a\" 1}",
            "{a:1}",
            "01",
            "1 2",
            "\"\\x\"",
            "\"\u{1}\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "tru",
            "nul",
            "[1]]",
            "{\"a\":1,}",
            "\"abc",
            "[\"a\\u12\"]",
            "-",
            "1.",
            "[",
            "]",
            "{}}",
            "\u{feff}1",
        ] {
            let mut r = Rec::default();
            assert!(walk(bad.as_bytes(), &p, &mut r).is_err(), "{bad:?}");
            assert!(
                serde_json::from_str::<serde_json::Value>(bad).is_err(),
                "{bad:?}"
            );
        }
        assert!(walk(b"\"\xff\"", &p, &mut Rec::default()).is_err());
        let deep = "[".repeat(100_000);
        assert!(walk(deep.as_bytes(), &p, &mut Rec::default()).is_err());
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(walk(ok.as_bytes(), &p, &mut Rec::default()).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(&ok).is_ok());
        let over = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(walk(over.as_bytes(), &p, &mut Rec::default()).is_err());
        assert!(serde_json::from_str::<serde_json::Value>(&over).is_err());
    }
}
