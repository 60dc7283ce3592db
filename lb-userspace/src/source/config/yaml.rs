//! A small YAML tree whose nodes remember the (1-based) line they start on.
//!
//! Built from yaml-rust2's event parser so that validation errors can point
//! at the offending value. Anchors and aliases are resolved by copying, within
//! bounds: a few bytes of nested aliases can otherwise expand to gigabytes
//! (the "billion laughs" file), so copies through aliases are limited to
//! [`MAX_ALIAS_NODES`] nodes and [`MAX_ALIAS_TEXT`] bytes of text, and nesting
//! to [`MAX_DEPTH`]. The tree is built while the events are read and the
//! reading stops at the first violation, so a hostile file costs at most about
//! those bounds in memory and time.
use std::{collections::HashMap, fmt};

use yaml_rust2::{
    parser::{Event, Parser},
    scanner::TScalarStyle,
};

/// One YAML node and the line it starts on.
#[derive(Clone, Debug)]
pub(super) struct Node {
    /// 1-based line of the node's first character.
    pub line: usize,
    pub kind: Kind,
}

/// The shape of a node.
#[derive(Clone, Debug)]
pub(super) enum Kind {
    /// A scalar; `plain` is false for quoted and block scalars.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Key/value pairs in file order (duplicates kept; the walker reports them).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A YAML null: an empty plain scalar, `~` or `null`.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The scalar's text, if this is a non-null scalar.
    pub fn scalar(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { text, .. } if !self.is_null() => Some(text),
            _ => None,
        }
    }
}

/// Short description of a node for "expected X, found Y" messages.
impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            _ if self.is_null() => f.write_str("nothing"),
            Kind::Scalar { text, .. } => write!(f, "{text:?}"),
            Kind::Seq(_) => f.write_str("a list"),
            Kind::Map(_) => f.write_str("a mapping"),
        }
    }
}

/// A YAML syntax error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    pub message: String,
}

/// Most nodes that aliases may add to the tree, all aliases together. A
/// configuration has no need of aliases at all; this leaves room for sharing
/// a list of backends among many services.
pub(super) const MAX_ALIAS_NODES: usize = 10_000;

/// Most bytes of scalar text that aliases may copy, all aliases together.
pub(super) const MAX_ALIAS_TEXT: usize = 1 << 20;

/// Deepest nesting of lists and mappings (a configuration needs five).
pub(super) const MAX_DEPTH: usize = 64;

/// Parses `text` into a tree. `Ok(None)` for a file without a document
/// (empty, or only comments). Stops at the first syntax error, at a second
/// document, or when the tree would exceed the bounds above.
pub(super) fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut builder = Builder::default();
    // Pulling events one by one (rather than `Parser::load`, which recurses
    // once per nesting level and cannot be stopped) keeps the stack flat and
    // lets a violation end the reading at once.
    let mut parser = Parser::new_from_str(text);
    loop {
        let (event, mark) = parser.next_token().map_err(|e| SyntaxError {
            // yaml-rust2 0.11 markers are 1-based (checked by the tests).
            line: e.marker().line().max(1),
            message: format!("syntax error: {}", e.info()),
        })?;
        if event == Event::StreamEnd {
            break;
        }
        builder.event(event, mark.line().max(1))?;
    }
    Ok(builder.documents.into_iter().next())
}

/// A collection being built.
#[derive(Debug)]
enum Frame {
    Seq { line: usize, anchor: usize, items: Vec<Node>, size: Size },
    Map { line: usize, anchor: usize, entries: Vec<(Node, Node)>, key: Option<Node>, size: Size },
}

/// What a subtree costs: its nodes, its scalar bytes and its depth (0 for a
/// scalar, 1 for a collection of scalars).
#[derive(Clone, Copy, Debug, Default)]
struct Size {
    nodes: usize,
    text: usize,
    depth: usize,
}

impl Size {
    /// Adds a child's size to a collection's.
    fn add_child(&mut self, child: Size) {
        self.nodes += child.nodes;
        self.text += child.text;
        self.depth = self.depth.max(child.depth + 1);
    }
}

/// Receives parser events and assembles [`Node`]s.
#[derive(Debug, Default)]
struct Builder {
    stack: Vec<Frame>,
    /// Anchored nodes by anchor id, with their sizes.
    anchors: HashMap<usize, (Node, Size)>,
    documents: Vec<Node>,
    document_count: usize,
    /// Nodes and text copied through aliases so far.
    alias_nodes: usize,
    alias_text: usize,
}

impl Builder {
    /// Adds a finished node to the enclosing collection (or the document).
    fn push(&mut self, node: Node, size: Size, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.documents.push(node),
            Some(Frame::Seq { items, size: s, .. }) => {
                s.add_child(size);
                items.push(node);
            }
            Some(Frame::Map { entries, key, size: s, .. }) => {
                s.add_child(size);
                match key.take() {
                    Some(k) => entries.push((k, node)),
                    None => *key = Some(node),
                }
            }
        }
    }

    /// Takes one parser event; `line` is 1-based.
    fn event(&mut self, ev: Event, line: usize) -> Result<(), SyntaxError> {
        match ev {
            Event::DocumentStart => {
                self.document_count += 1;
                if self.document_count == 2 {
                    return Err(SyntaxError {
                        line,
                        message: "syntax error: a second YAML document starts here; \
                                  the file must hold one document"
                            .to_owned(),
                    });
                }
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = style == TScalarStyle::Plain;
                let size = Size { nodes: 1, text: text.len(), depth: 0 };
                self.push(Node { line, kind: Kind::Scalar { text, plain } }, size, anchor);
            }
            Event::Alias(id) => {
                if let Some((_, size)) = self.anchors.get(&id) {
                    self.check_alias(*size, line)?;
                }
                let (mut node, size) = match self.anchors.get(&id) {
                    Some((node, size)) => (node.clone(), *size),
                    None => (
                        Node { line, kind: Kind::Scalar { text: String::new(), plain: true } },
                        Size { nodes: 1, ..Size::default() },
                    ),
                };
                node.line = line;
                self.push(node, size, 0);
            }
            Event::SequenceStart(anchor, _) => {
                self.check_depth(line)?;
                self.stack.push(Frame::Seq {
                    line,
                    anchor,
                    items: Vec::new(),
                    size: Size { nodes: 1, ..Size::default() },
                });
            }
            Event::MappingStart(anchor, _) => {
                self.check_depth(line)?;
                self.stack.push(Frame::Map {
                    line,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                    size: Size { nodes: 1, ..Size::default() },
                });
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq { line, anchor, items, size }) => {
                    self.push(Node { line, kind: Kind::Seq(items) }, size, anchor);
                }
                Some(Frame::Map { line, anchor, entries, size, .. }) => {
                    self.push(Node { line, kind: Kind::Map(entries) }, size, anchor);
                }
                None => {}
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
        Ok(())
    }

    /// Refuses a collection that would nest deeper than [`MAX_DEPTH`].
    fn check_depth(&self, line: usize) -> Result<(), SyntaxError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(SyntaxError {
                line,
                message: format!(
                    "lists and mappings nest more than {MAX_DEPTH} deep; \
                     a configuration needs no more than 5"
                ),
            });
        }
        Ok(())
    }

    /// Refuses an alias whose copy would exceed the nesting or alias bounds.
    fn check_alias(&mut self, size: Size, line: usize) -> Result<(), SyntaxError> {
        if self.stack.len() + size.depth > MAX_DEPTH {
            return Err(SyntaxError {
                line,
                message: format!(
                    "this alias would nest lists and mappings more than {MAX_DEPTH} deep; \
                     write the values out instead"
                ),
            });
        }
        self.alias_nodes = self.alias_nodes.saturating_add(size.nodes);
        self.alias_text = self.alias_text.saturating_add(size.text);
        if self.alias_nodes > MAX_ALIAS_NODES || self.alias_text > MAX_ALIAS_TEXT {
            return Err(SyntaxError {
                line,
                message: format!(
                    "aliases expand to more than {MAX_ALIAS_NODES} nodes or {} KiB of text \
                     (nested aliases, a \"billion laughs\" file?); write the values out \
                     or use fewer aliases",
                    MAX_ALIAS_TEXT / 1024
                ),
            });
        }
        Ok(())
    }
}
