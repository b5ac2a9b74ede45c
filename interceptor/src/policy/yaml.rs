//! A small YAML tree in which every node remembers its line and column, built from
//! `yaml-rust2`'s event parser (its own document type forgets positions).
//!
//! Policy files need no more of YAML than mappings, sequences and scalars: anchors, aliases
//! and tags are refused (an alias would make one place in a file stand for another, so an
//! error could not point at the text that caused it), as is more than one document per file.

use std::collections::HashMap;

use yaml_rust2::{
    parser::{Event, Parser},
    scanner::{Marker, TScalarStyle},
};

/// Nesting deeper than any policy file needs; bounds the builder's stack.
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    pub line: usize,
    pub column: usize,
}

impl Mark {
    fn min_by_position(self, other: Mark) -> Mark {
        if (other.line, other.column) < (self.line, self.column) {
            other
        } else {
            self
        }
    }

    fn from_marker(m: Marker) -> Self {
        // yaml-rust2's columns count from 0, its lines from 1.
        Mark {
            line: m.line().max(1),
            column: m.col() + 1,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    /// `plain` is false for quoted and block scalars: `"true"` is a string, `true` is not.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

#[derive(Debug, Clone)]
pub(crate) struct Key {
    pub text: String,
    pub mark: Mark,
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub mark: Mark,
    pub value: Value,
}

impl Node {
    /// A plain `~`, `null` or nothing at all.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            _ if self.is_null() => "nothing",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// What parsing one file gives: the document (None for a file with no document, e.g. only
/// comments) and the problems found. A syntax error ends the parse; duplicate keys, anchors and
/// tags are reported and parsing goes on, so one run shows them all.
pub(crate) struct Parsed {
    pub root: Option<Node>,
    pub errors: Vec<(Mark, String)>,
}

enum Frame {
    Seq(Mark, Vec<Node>),
    /// The entries so far, the key waiting for its value, and where each key was first seen
    /// (a map, so a mapping with many keys is not checked for duplicates in quadratic time).
    Map(Mark, Vec<(Key, Node)>, Option<Key>, HashMap<String, Mark>),
}

pub(crate) fn parse(src: &str) -> Parsed {
    let mut parser = Parser::new_from_str(src);
    let mut errors = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    loop {
        let (event, marker) = match parser.next_token() {
            Ok(ev) => ev,
            Err(e) => {
                errors.push((
                    Mark::from_marker(*e.marker()),
                    format!("YAML syntax: {}", e.info()),
                ));
                return Parsed { root: None, errors };
            }
        };
        let mark = Mark::from_marker(marker);
        let node = match event {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => continue,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    errors.push((
                        mark,
                        "only one YAML document per file (a second `---`)".into(),
                    ));
                    break;
                }
                continue;
            }
            Event::Alias(_) => {
                errors.push((
                    mark,
                    "YAML aliases (*name) are not supported in policy files".into(),
                ));
                Node {
                    mark,
                    value: Value::Scalar {
                        text: String::new(),
                        plain: true,
                    },
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                refuse_anchor_and_tag(anchor, tag.is_some(), mark, &mut errors);
                Node {
                    mark,
                    value: Value::Scalar {
                        text,
                        plain: style == TScalarStyle::Plain,
                    },
                }
            }
            Event::SequenceStart(anchor, tag) => {
                refuse_anchor_and_tag(anchor, tag.is_some(), mark, &mut errors);
                if !open(&mut stack, Frame::Seq(mark, Vec::new()), &mut errors) {
                    return Parsed { root: None, errors };
                }
                continue;
            }
            Event::MappingStart(anchor, tag) => {
                refuse_anchor_and_tag(anchor, tag.is_some(), mark, &mut errors);
                if !open(
                    &mut stack,
                    Frame::Map(mark, Vec::new(), None, HashMap::new()),
                    &mut errors,
                ) {
                    return Parsed { root: None, errors };
                }
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(m, items)) => Node {
                    mark: m,
                    value: Value::Seq(items),
                },
                _ => {
                    errors.push((mark, "unbalanced YAML sequence".into()));
                    return Parsed { root: None, errors };
                }
            },
            Event::MappingEnd => match stack.pop() {
                // The parser marks a block mapping's start after its first key; the first key
                // is where a reader sees the mapping begin.
                Some(Frame::Map(m, entries, _, _)) => Node {
                    mark: entries
                        .first()
                        .map_or(m, |(k, _)| k.mark)
                        .min_by_position(m),
                    value: Value::Map(entries),
                },
                _ => {
                    errors.push((mark, "unbalanced YAML mapping".into()));
                    return Parsed { root: None, errors };
                }
            },
        };
        if let Err(fatal) = attach(&mut stack, &mut root, node, &mut errors) {
            errors.push(fatal);
            return Parsed { root: None, errors };
        }
    }
    Parsed { root, errors }
}

fn frame_mark(frame: &Frame) -> Mark {
    match frame {
        Frame::Seq(m, _) | Frame::Map(m, _, _, _) => *m,
    }
}

/// Pushes a new collection; false (with an error) when nesting is too deep.
fn open(stack: &mut Vec<Frame>, frame: Frame, errors: &mut Vec<(Mark, String)>) -> bool {
    if stack.len() >= MAX_DEPTH {
        errors.push((
            frame_mark(&frame),
            format!("nested more than {MAX_DEPTH} levels deep"),
        ));
        return false;
    }
    stack.push(frame);
    true
}

fn refuse_anchor_and_tag(
    anchor: usize,
    tagged: bool,
    mark: Mark,
    errors: &mut Vec<(Mark, String)>,
) {
    if anchor != 0 {
        errors.push((
            mark,
            "YAML anchors (&name) are not supported in policy files".into(),
        ));
    }
    if tagged {
        errors.push((
            mark,
            "YAML tags (!tag) are not supported in policy files".into(),
        ));
    }
}

/// Puts a finished node into its parent: a list item, a mapping key, or a mapping value.
/// Err is fatal (a key that is not a scalar).
fn attach(
    stack: &mut [Frame],
    root: &mut Option<Node>,
    node: Node,
    errors: &mut Vec<(Mark, String)>,
) -> Result<(), (Mark, String)> {
    match stack.last_mut() {
        None => *root = Some(node),
        Some(Frame::Seq(_, items)) => items.push(node),
        Some(Frame::Map(_, entries, pending, seen)) => match pending.take() {
            None => match node.value {
                Value::Scalar { text, .. } => {
                    *pending = Some(Key {
                        text,
                        mark: node.mark,
                    })
                }
                _ => return Err((node.mark, "mapping keys must be plain strings".into())),
            },
            Some(key) => {
                let mut node = node;
                // `key:` with nothing after it: the parser marks the empty value at the next
                // token, often lines later; the key is where the reader must look.
                if node.is_null() && node.mark.line > key.mark.line {
                    node.mark = key.mark;
                }
                if let Some(first) = seen.get(&key.text) {
                    errors.push((
                        key.mark,
                        format!(
                            "duplicate key `{}` (first at line {}, column {})",
                            key.text, first.line, first.column
                        ),
                    ));
                } else {
                    seen.insert(key.text.clone(), key.mark);
                    entries.push((key, node));
                }
            }
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(p: &Parsed, i: usize) -> (usize, usize, &str) {
        let (m, msg) = &p.errors[i];
        (m.line, m.column, msg.as_str())
    }

    #[test]
    fn nodes_carry_line_and_column() {
        let p = parse("a: 1\nlist:\n  - x\n  - \"y\"\n");
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let Some(Node {
            value: Value::Map(entries),
            ..
        }) = p.root
        else {
            panic!()
        };
        assert_eq!(entries[0].0.text, "a");
        assert_eq!((entries[0].0.mark.line, entries[0].0.mark.column), (1, 1));
        assert_eq!((entries[0].1.mark.line, entries[0].1.mark.column), (1, 4));
        let Value::Seq(items) = &entries[1].1.value else {
            panic!()
        };
        assert_eq!((items[1].mark.line, items[1].mark.column), (4, 5));
        assert!(matches!(&items[1].value, Value::Scalar { text, plain: false } if text == "y"));
        assert!(matches!(&items[0].value, Value::Scalar { text, plain: true } if text == "x"));
    }

    #[test]
    fn duplicate_keys_point_at_the_second_and_name_the_first() {
        let p = parse("a: 1\nb: 2\n  \na: 3\n");
        assert_eq!(p.errors.len(), 1);
        let (line, col, msg) = at(&p, 0);
        assert_eq!((line, col), (4, 1));
        assert!(
            msg.contains("duplicate key `a`") && msg.contains("line 1, column 1"),
            "{msg}"
        );
        assert!(p.root.is_some());
    }

    #[test]
    fn anchors_aliases_and_tags_are_refused_with_positions() {
        let p = parse("a: &x 1\nb: *x\nc: !!str 3\n");
        let got: Vec<_> = (0..p.errors.len()).map(|i| at(&p, i)).collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!((got[0].0, got[0].2.contains("anchors")), (1, true));
        assert_eq!(
            (got[1].0, got[1].1, got[1].2.contains("aliases")),
            (2, 4, true)
        );
        assert_eq!((got[2].0, got[2].2.contains("tags")), (3, true));
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let p = parse("a: [1, 2\nb: 3\n");
        assert!(p.root.is_none());
        assert_eq!(p.errors.len(), 1);
        assert!(p.errors[0].1.starts_with("YAML syntax"), "{:?}", p.errors);
        assert!(p.errors[0].0.line >= 1);
    }

    #[test]
    fn deep_nesting_and_second_documents_are_refused() {
        let deep = "[".repeat(100) + &"]".repeat(100);
        let p = parse(&deep);
        assert!(p.root.is_none());
        assert!(p.errors[0].1.contains("nested"));
        let p = parse("a: 1\n---\nb: 2\n");
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.errors[0].0.line, 2);
    }

    #[test]
    fn comment_only_files_have_no_document_and_complex_keys_are_refused() {
        let p = parse("# nothing here\n");
        assert!(p.root.is_none() && p.errors.is_empty());
        let p = parse("? [a]\n: 1\n");
        assert!(p.errors[0].1.contains("keys"), "{:?}", p.errors);
    }
}
