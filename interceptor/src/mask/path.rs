//! Field paths: the JSONPath subset policies use to select values. `$` is the document;
//! `.name` and `['name']` (or `["name"]`) an object member; `[N]` an array element; `.*` and
//! `[*]` every member or element. No recursive descent or filters: a path selects values at
//! one depth, which is what lets the streaming scanner match it with one step per level.

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Name(Vec<u8>),
    Index(usize),
    Any,
}

/// Longest path accepted: deeper than the scanner's nesting limit could never match.
pub const MAX_SEGS: usize = 128;

pub fn parse(path: &str) -> Result<Vec<Seg>, String> {
    let b = path.trim().as_bytes();
    if b.first() != Some(&b'$') {
        return Err(format!("field path {path:?} must start with `$`"));
    }
    let mut segs = Vec::new();
    let mut i = 1;
    while i < b.len() {
        if segs.len() == MAX_SEGS {
            return Err(format!(
                "field path {path:?} is deeper than {MAX_SEGS} levels"
            ));
        }
        match b[i] {
            b'.' => {
                i += 1;
                if b.get(i) == Some(&b'*') {
                    segs.push(Seg::Any);
                    i += 1;
                    continue;
                }
                let s = i;
                while i < b.len() && !matches!(b[i], b'.' | b'[' | b']' | b'\'' | b'"' | b' ') {
                    i += 1;
                }
                if i == s {
                    return Err(format!(
                        "field path {path:?}: expected a member name after `.` at {s} \
                         (recursive descent `..` is not supported)"
                    ));
                }
                segs.push(Seg::Name(b[s..i].to_vec()));
            }
            b'[' => {
                i += 1;
                match b.get(i) {
                    Some(b'*') => {
                        segs.push(Seg::Any);
                        i += 1;
                    }
                    Some(&q @ (b'\'' | b'"')) => {
                        i += 1;
                        let mut name = Vec::new();
                        loop {
                            match b.get(i) {
                                None => {
                                    return Err(format!("field path {path:?}: unterminated name"))
                                }
                                Some(b'\\') if i + 1 < b.len() => {
                                    name.push(b[i + 1]);
                                    i += 2;
                                }
                                Some(&c) if c == q => {
                                    i += 1;
                                    break;
                                }
                                Some(&c) => {
                                    name.push(c);
                                    i += 1;
                                }
                            }
                        }
                        segs.push(Seg::Name(name));
                    }
                    Some(c) if c.is_ascii_digit() => {
                        let s = i;
                        while i < b.len() && b[i].is_ascii_digit() {
                            i += 1;
                        }
                        let n = std::str::from_utf8(&b[s..i])
                            .ok()
                            .and_then(|t| t.parse::<usize>().ok())
                            .ok_or_else(|| format!("field path {path:?}: index too large"))?;
                        segs.push(Seg::Index(n));
                    }
                    _ => {
                        return Err(format!(
                            "field path {path:?}: expected an index, `*` or a quoted name \
                             after `[` at {i}"
                        ))
                    }
                }
                if b.get(i) != Some(&b']') {
                    return Err(format!("field path {path:?}: expected `]` at {i}"));
                }
                i += 1;
            }
            c => {
                return Err(format!(
                    "field path {path:?}: unexpected {:?} at {i}",
                    char::from(c)
                ))
            }
        }
    }
    Ok(segs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Seg {
        Seg::Name(s.as_bytes().to_vec())
    }

    #[test]
    fn parses() {
        assert_eq!(parse("$").unwrap(), vec![]);
        assert_eq!(
            parse("$.card.number").unwrap(),
            vec![n("card"), n("number")]
        );
        assert_eq!(
            parse("$.users[*].email").unwrap(),
            vec![n("users"), Seg::Any, n("email")]
        );
        assert_eq!(parse("$['a b']").unwrap(), vec![n("a b")]);
        assert_eq!(parse(r#"$["it's"]"#).unwrap(), vec![n("it's")]);
        assert_eq!(parse(r"$['it\'s']").unwrap(), vec![n("it's")]);
        assert_eq!(parse("$[3].*").unwrap(), vec![Seg::Index(3), Seg::Any]);
        assert_eq!(
            parse("$.a[0][1]").unwrap(),
            vec![n("a"), Seg::Index(0), Seg::Index(1)]
        );
    }

    #[test]
    fn rejects() {
        for p in [
            "",
            "a.b",
            "$..a",
            "$.",
            "$[",
            "$[a]",
            "$['a'",
            "$[1",
            "$.a]",
            "$[-1]",
            "$[99999999999999999999999]",
        ] {
            assert!(parse(p).is_err(), "{p}");
        }
        assert!(parse(&format!("${}", ".a".repeat(129))).is_err());
    }
}
