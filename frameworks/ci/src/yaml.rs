//! A YAML tree that keeps the line and column of every node.
//!
//! Built from `saphyr-parser`'s event stream. Anchors and aliases are
//! resolved here (an alias is a copy of the anchored node), with a budget on
//! the number of nodes the document may expand to, so an alias bomb is
//! refused before it takes memory. Merge keys (`<<: *a`, `<<: [*a, *b]`) are
//! applied here too; a key that appears twice in one mapping is an error.
//! Scalars stay text: what a scalar means (a bool, a number, a string)
//! depends on where it is used, which the config module decides.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use crate::diag::{Diagnostic, Pos};

/// How a scalar was written; plain scalars may be `null`, bools or numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// Unquoted.
    Plain,
    /// `'...'` or `"..."`: the text starts one column after the node.
    Quoted,
    /// `|` or `>`.
    Block,
}

/// A YAML node with its position.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) kind: Kind,
    pub(crate) pos: Pos,
    /// A local tag such as `!reference` (without the `!`).
    pub(crate) tag: Option<String>,
}

/// The three kinds of YAML node.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Scalar(String, Style),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

/// A mapping key (always a scalar here).
#[derive(Debug, Clone)]
pub(crate) struct Key {
    pub(crate) name: String,
    pub(crate) pos: Pos,
}

impl Node {
    /// The mapping's entries, if this is a mapping.
    pub(crate) fn as_map(&self) -> Option<&[(Key, Node)]> {
        match &self.kind {
            Kind::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The sequence's items, if this is a sequence.
    pub(crate) fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            Kind::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The text of a scalar that is not null.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar(s, _) if !self.is_null() => Some(s),
            _ => None,
        }
    }

    /// `~`, `null` or an empty plain scalar.
    pub(crate) fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar(s, Style::Plain) if matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// A plain `true`/`false`.
    pub(crate) fn as_bool(&self) -> Option<bool> {
        match &self.kind {
            Kind::Scalar(s, Style::Plain) => match s.as_str() {
                "true" | "True" | "TRUE" => Some(true),
                "false" | "False" | "FALSE" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    /// A plain integer.
    pub(crate) fn as_int(&self) -> Option<i64> {
        match &self.kind {
            Kind::Scalar(s, Style::Plain) => s.parse().ok(),
            _ => None,
        }
    }

    /// A mapping entry by key.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    /// Marks this node, its keys and its children as read from file `file`
    /// (see [`Pos`]).
    pub(crate) fn set_file(&mut self, file: u16) {
        if file == self.pos.file {
            return;
        }
        self.pos.file = file;
        match &mut self.kind {
            Kind::Scalar(..) => {}
            Kind::Seq(items) => items.iter_mut().for_each(|i| i.set_file(file)),
            Kind::Map(entries) => {
                for (k, v) in entries {
                    k.pos.file = file;
                    v.set_file(file);
                }
            }
        }
    }

    /// What kind of node this is, for error messages.
    pub(crate) fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar(..) if self.is_null() => "null",
            Kind::Scalar(..) => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    /// The column where a scalar's text starts (after an opening quote).
    pub(crate) fn text_column(&self) -> u32 {
        match &self.kind {
            Kind::Scalar(_, Style::Quoted) => self.pos.column + 1,
            _ => self.pos.column,
        }
    }
}

/// Limits on what a document may be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_bytes: usize,
    pub(crate) max_nodes: usize,
    pub(crate) max_depth: usize,
}

fn pos(span: &Span) -> Pos {
    Pos::new(
        u32::try_from(span.start.line()).unwrap_or(u32::MAX),
        u32::try_from(span.start.col() + 1).unwrap_or(u32::MAX),
    )
}

enum Frame {
    Seq {
        node: Node,
        items: Vec<Node>,
        anchor: usize,
        size: usize,
    },
    Map {
        node: Node,
        entries: Vec<(Key, Node)>,
        key: Option<Key>,
        anchor: usize,
        size: usize,
    },
}

/// Parses `text` into the nodes of its documents (usually one).
pub(crate) fn parse(text: &str, limits: Limits) -> Result<Vec<Node>, Diagnostic> {
    if text.len() > limits.max_bytes {
        return Err(Diagnostic::error(
            Pos::new(1, 1),
            format!(
                "the file is {} bytes, more than the limit of {} bytes",
                text.len(),
                limits.max_bytes
            ),
        ));
    }
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, (Node, usize)> = HashMap::new();
    let mut nodes = 0usize;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| {
            let at = Pos::new(
                u32::try_from(e.marker().line()).unwrap_or(u32::MAX),
                u32::try_from(e.marker().col() + 1).unwrap_or(u32::MAX),
            );
            syntax_error(text, at, e.info(), &stack)
        })?;
        let at = pos(&span);
        let is_seq = matches!(event, Event::SequenceStart(..));
        let done: (Node, usize, usize) = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => continue,
            Event::DocumentStart(_) => {
                anchors.clear();
                continue;
            }
            Event::DocumentEnd => continue,
            Event::Alias(id) => {
                let Some((node, size)) = anchors.get(&id) else {
                    return Err(Diagnostic::error(
                        at,
                        "an alias refers to an unknown anchor",
                    ));
                };
                nodes = nodes.saturating_add(*size);
                if nodes > limits.max_nodes {
                    return Err(too_many(at, limits));
                }
                let mut node = node.clone();
                node.pos = at;
                (node, *size, 0)
            }
            Event::Scalar(text, style, anchor, tag) => {
                nodes += 1;
                if nodes > limits.max_nodes {
                    return Err(too_many(at, limits));
                }
                let style = match style {
                    ScalarStyle::Plain => Style::Plain,
                    ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => Style::Quoted,
                    _ => Style::Block,
                };
                let node = Node {
                    kind: Kind::Scalar(text.into_owned(), style),
                    pos: at,
                    tag: tag.map(|t| t.suffix.clone()),
                };
                (node, 1, anchor)
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag) => {
                nodes += 1;
                if nodes > limits.max_nodes {
                    return Err(too_many(at, limits));
                }
                if stack.len() >= limits.max_depth {
                    return Err(Diagnostic::error(
                        at,
                        format!("the document nests deeper than {} levels", limits.max_depth),
                    ));
                }
                let node = Node {
                    kind: Kind::Scalar(String::new(), Style::Plain),
                    pos: at,
                    tag: tag.map(|t| t.suffix.clone()),
                };
                stack.push(if is_seq {
                    Frame::Seq {
                        node,
                        items: Vec::new(),
                        anchor,
                        size: 1,
                    }
                } else {
                    Frame::Map {
                        node,
                        entries: Vec::new(),
                        key: None,
                        anchor,
                        size: 1,
                    }
                });
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq {
                    mut node,
                    items,
                    anchor,
                    size,
                }) => {
                    node.kind = Kind::Seq(items);
                    (node, size, anchor)
                }
                _ => return Err(Diagnostic::error(at, "invalid YAML: unbalanced sequence")),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    mut node,
                    entries,
                    anchor,
                    size,
                    ..
                }) => {
                    node.kind = Kind::Map(apply_merge_keys(entries)?);
                    (node, size, anchor)
                }
                _ => return Err(Diagnostic::error(at, "invalid YAML: unbalanced mapping")),
            },
        };
        let (node, size, anchor) = done;
        if anchor != 0 {
            anchors.insert(anchor, (node.clone(), size));
        }
        match stack.last_mut() {
            None => docs.push(node),
            Some(Frame::Seq { items, size: s, .. }) => {
                *s += size;
                items.push(node);
            }
            Some(Frame::Map {
                entries,
                key,
                size: s,
                ..
            }) => {
                *s += size;
                match key.take() {
                    Some(k) => {
                        if k.name != "<<" && entries.iter().any(|(e, _)| e.name == k.name) {
                            return Err(Diagnostic::error(
                                k.pos,
                                format!("the key `{}` appears twice in this mapping", k.name),
                            ));
                        }
                        entries.push((k, node));
                    }
                    None => match node.kind {
                        Kind::Scalar(name, _) => {
                            *key = Some(Key {
                                name,
                                pos: node.pos,
                            })
                        }
                        _ => {
                            return Err(Diagnostic::error(
                                node.pos,
                                "mapping keys must be strings, not lists or mappings",
                            ));
                        }
                    },
                }
            }
        }
    }
    Ok(docs)
}

/// The parser's error at `at`, said in terms of what is open: an unclosed
/// quoted string or `[`/`{` is reported where it opened (a parser only
/// notices it where the file ends).
fn syntax_error(text: &str, at: Pos, info: &str, stack: &[Frame]) -> Diagnostic {
    let end = last_line(text);
    if info.contains("quoted scalar") && info.contains("end of stream") {
        // The parser's position is the opening quote.
        return Diagnostic::error(
            at,
            format!(
                "invalid YAML: the quoted string that starts here is never closed (the file ends at line {end})"
            ),
        );
    }
    let open = stack.iter().rev().find_map(|f| {
        let node = match f {
            Frame::Seq { node, .. } | Frame::Map { node, .. } => node,
        };
        let c = char_at(text, node.pos)?;
        matches!(c, '[' | '{').then_some((c, node.pos))
    });
    match open {
        Some((c, opened)) if blank_from(text, at) => Diagnostic::error(
            opened,
            format!("invalid YAML: this `{c}` is never closed (the file ends at line {end})"),
        ),
        Some((c, opened)) => Diagnostic::error(
            at,
            format!(
                "invalid YAML: {info} (inside the `{c}` opened at line {}, column {})",
                opened.line, opened.column
            ),
        ),
        None => Diagnostic::error(at, format!("invalid YAML: {info}")),
    }
}

/// The character at `pos`.
fn char_at(text: &str, pos: Pos) -> Option<char> {
    let line = text
        .split('\n')
        .nth(usize::try_from(pos.line).ok()?.checked_sub(1)?)?;
    line.chars()
        .nth(usize::try_from(pos.column).ok()?.checked_sub(1)?)
}

/// Whether nothing but blanks and comments follows `pos`.
fn blank_from(text: &str, pos: Pos) -> bool {
    let skip = usize::try_from(pos.line)
        .unwrap_or(usize::MAX)
        .saturating_sub(1);
    let column = usize::try_from(pos.column)
        .unwrap_or(usize::MAX)
        .saturating_sub(1);
    text.split('\n').skip(skip).enumerate().all(|(i, line)| {
        let rest: String = if i == 0 {
            line.chars().skip(column).collect()
        } else {
            line.to_string()
        };
        let rest = rest.trim();
        rest.is_empty() || rest.starts_with('#')
    })
}

/// The number of the file's last line.
fn last_line(text: &str) -> usize {
    text.lines().count().max(1)
}

fn too_many(at: Pos, limits: Limits) -> Diagnostic {
    Diagnostic::error(
        at,
        format!(
            "the document expands to more than {} nodes (are aliases nested to multiply it?)",
            limits.max_nodes
        ),
    )
}

/// Replaces `<<` entries by the entries of the mapping(s) they name; keys
/// written in the mapping itself win, then earlier merged mappings.
fn apply_merge_keys(entries: Vec<(Key, Node)>) -> Result<Vec<(Key, Node)>, Diagnostic> {
    if !entries.iter().any(|(k, _)| k.name == "<<") {
        return Ok(entries);
    }
    let mut own = Vec::new();
    let mut merged: Vec<(Key, Node)> = Vec::new();
    for (key, value) in entries {
        if key.name != "<<" {
            own.push((key, value));
            continue;
        }
        let sources: Vec<Node> = match value.kind {
            Kind::Map(_) => vec![value],
            Kind::Seq(items) => items,
            _ => {
                return Err(Diagnostic::error(
                    value.pos,
                    "a merge key `<<` needs a mapping or a list of mappings",
                ));
            }
        };
        for source in sources {
            let Kind::Map(m) = source.kind else {
                return Err(Diagnostic::error(
                    source.pos,
                    "a merge key `<<` needs a mapping or a list of mappings",
                ));
            };
            for (k, v) in m {
                if !merged.iter().any(|(e, _)| e.name == k.name) {
                    merged.push((k, v));
                }
            }
        }
    }
    for (k, v) in merged {
        if !own.iter().any(|(e, _)| e.name == k.name) {
            own.push((k, v));
        }
    }
    Ok(own)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_bytes: 1 << 20,
        max_nodes: 10_000,
        max_depth: 64,
    };

    #[test]
    fn positions_are_one_based() {
        let docs = parse("a:\n  b: [x, 'y']\n", LIMITS).unwrap();
        let b = docs[0].get("a").unwrap().get("b").unwrap();
        assert_eq!(b.pos, Pos::new(2, 6));
        let y = &b.as_seq().unwrap()[1];
        assert_eq!(y.pos, Pos::new(2, 10));
        assert_eq!(y.text_column(), 11);
    }

    #[test]
    fn anchors_and_merge_keys() {
        let text = "base: &b {x: 1, y: 2}\nother: &o {z: 3}\nj:\n  <<: [*b, *o]\n  y: 9\n";
        let docs = parse(text, LIMITS).unwrap();
        let j = docs[0].get("j").unwrap();
        assert_eq!(j.get("x").unwrap().as_str(), Some("1"));
        assert_eq!(j.get("y").unwrap().as_str(), Some("9"));
        assert_eq!(j.get("z").unwrap().as_str(), Some("3"));
    }

    #[test]
    fn duplicate_key_is_an_error() {
        let e = parse("a: 1\nb: 2\na: 3\n", LIMITS).unwrap_err();
        assert_eq!(e.pos, Pos::new(3, 1));
        assert!(e.message.contains("appears twice"), "{e}");
    }

    #[test]
    fn unknown_alias_is_an_error() {
        assert!(parse("a: *nope\n", LIMITS).is_err());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = "[".repeat(100) + &"]".repeat(100);
        let e = parse(&text, LIMITS).unwrap_err();
        assert!(e.message.contains("deeper"), "{e}");
    }

    #[test]
    fn tags_are_kept() {
        let docs = parse("a: !reference [.x, script]\n", LIMITS).unwrap();
        assert_eq!(docs[0].get("a").unwrap().tag.as_deref(), Some("reference"));
    }
}
