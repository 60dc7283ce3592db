//! A small YAML tree whose nodes remember the (1-based) line they start on.
//!
//! Built from yaml-rust2's event parser so that validation errors can point
//! at the offending value. Anchors and aliases are resolved by copying.
use std::{collections::HashMap, fmt};

use yaml_rust2::{
    parser::{Event, MarkedEventReceiver, Parser},
    scanner::{Marker, TScalarStyle},
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

/// Parses `text` into a tree. `Ok(None)` for a file without a document
/// (empty, or only comments).
pub(super) fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut builder = Builder::default();
    Parser::new_from_str(text)
        .load(&mut builder, true)
        .map_err(|e| SyntaxError {
            // yaml-rust2 0.11 markers are 1-based (checked by the tests).
            line: e.marker().line().max(1),
            message: e.info().to_owned(),
        })?;
    if let Some(line) = builder.second_document {
        return Err(SyntaxError {
            line,
            message: "a second YAML document starts here; the file must hold one document"
                .to_owned(),
        });
    }
    Ok(builder.documents.into_iter().next())
}

/// A collection being built.
#[derive(Debug)]
enum Frame {
    Seq {
        line: usize,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        line: usize,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

/// Receives parser events and assembles [`Node`]s.
#[derive(Debug, Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    documents: Vec<Node>,
    document_count: usize,
    /// Line of the second document's start, if there is one.
    second_document: Option<usize>,
}

impl Builder {
    /// Adds a finished node to the enclosing collection (or the document).
    fn push(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.documents.push(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                Some(k) => entries.push((k, node)),
                None => *key = Some(node),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::DocumentStart => {
                self.document_count += 1;
                if self.document_count == 2 {
                    self.second_document = Some(line);
                }
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = style == TScalarStyle::Plain;
                self.push(
                    Node {
                        line,
                        kind: Kind::Scalar { text, plain },
                    },
                    anchor,
                );
            }
            Event::Alias(id) => {
                let mut node = self.anchors.get(&id).cloned().unwrap_or(Node {
                    line,
                    kind: Kind::Scalar {
                        text: String::new(),
                        plain: true,
                    },
                });
                node.line = line;
                self.push(node, 0);
            }
            Event::SequenceStart(anchor, _) => {
                self.stack.push(Frame::Seq {
                    line,
                    anchor,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map {
                    line,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    line,
                    anchor,
                    items,
                }) => {
                    self.push(
                        Node {
                            line,
                            kind: Kind::Seq(items),
                        },
                        anchor,
                    );
                }
                Some(Frame::Map {
                    line,
                    anchor,
                    entries,
                    ..
                }) => {
                    self.push(
                        Node {
                            line,
                            kind: Kind::Map(entries),
                        },
                        anchor,
                    );
                }
                None => {}
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}
