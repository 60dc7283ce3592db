//! The generic walker over the marked YAML tree: typed access to mappings,
//! scalars, integers and addresses, each problem recorded with its line and
//! field path. It keeps going after an error so that one run reports all of
//! them; the configuration's own rules (`validate`, `addresses`) are built
//! on it.
use std::{collections::HashMap, net::IpAddr, num::IntErrorKind};

use super::{
    yaml::{Kind, Node},
    ConfigError,
};

/// `path.key`, or `key` at the top level.
pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A mapping value and the line of its key.
struct Entry<'n> {
    key_line: usize,
    value: &'n Node,
}

/// The checked keys of one mapping.
pub(super) struct Fields<'n> {
    /// Line of the mapping itself (for missing keys).
    line: usize,
    /// Field path of the mapping.
    path: String,
    entries: HashMap<&'n str, Entry<'n>>,
}

impl<'n> Fields<'n> {
    /// The value of `key`, or `None` if it is absent or null.
    pub(super) fn optional(&self, key: &str) -> Option<&'n Node> {
        self.entries.get(key).map(|e| e.value).filter(|v| !v.is_null())
    }

    /// The value of `key`; reports it as missing (with `hint`) otherwise.
    pub(super) fn required(&self, walker: &mut Walker, key: &str, hint: &str) -> Option<&'n Node> {
        let field = join(&self.path, key);
        match self.entries.get(key) {
            None => walker.error(self.line, field, format!("missing required key {key}; {hint}")),
            Some(e) if e.value.is_null() => {
                walker.error(e.key_line, field, format!("{key} has no value; {hint}"));
            }
            Some(e) => return Some(e.value),
        }
        None
    }
}

/// Collects errors while walking.
pub(super) struct Walker<'f> {
    pub(super) file: &'f str,
    pub(super) errors: Vec<ConfigError>,
}

impl Walker<'_> {
    pub(super) fn error(&mut self, line: usize, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line,
            field: field.into(),
            message: message.into(),
        });
    }

    /// Checks that `node` is a mapping with only `allowed` keys, each once.
    pub(super) fn mapping<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        allowed: &[&str],
        what: &str,
    ) -> Option<Fields<'n>> {
        let Kind::Map(pairs) = &node.kind else {
            let field = if path.is_empty() { "file" } else { path };
            self.error(node.line, field, format!("expected {what}, found {node}"));
            return None;
        };
        let mut fields = Fields { line: node.line, path: path.to_owned(), entries: HashMap::new() };
        for (key, value) in pairs {
            let Some(name) = key.scalar() else {
                let field = if path.is_empty() { "file" } else { path };
                let message = format!("a key must be a plain word, found {key}");
                self.error(key.line, field, message);
                continue;
            };
            let field = join(path, name);
            if !allowed.contains(&name) {
                let message = format!("unknown key {name:?}; allowed keys are {}", allowed.join(", "));
                self.error(key.line, field, message);
            } else if let Some(first) = fields.entries.get(name) {
                let message = format!("{name} is given twice (first on line {}); give each key once", first.key_line);
                self.error(key.line, field, message);
            } else {
                fields.entries.insert(name, Entry { key_line: key.line, value });
            }
        }
        Some(fields)
    }

    /// The text of a non-null scalar; reports other nodes as not `what`.
    pub(super) fn string<'n>(&mut self, node: &'n Node, field: &str, what: &str) -> Option<&'n str> {
        let text = node.scalar();
        if text.is_none() {
            self.error(node.line, field, format!("expected {what}, found {node}"));
        }
        text
    }

    /// A plain integer in `min..=max`; `what` names it for messages.
    pub(super) fn integer(&mut self, node: &Node, field: &str, what: &str, min: i128, max: i128) -> Option<i128> {
        let range = format!("{min}..={max}");
        let Kind::Scalar { text, plain } = &node.kind else {
            self.error(node.line, field, format!("expected {what} in {range}, found {node}"));
            return None;
        };
        let message = match text.parse::<i128>() {
            Ok(n) if !plain => {
                format!("\"{n}\" is quoted text; write {what} as a plain integer in {range}")
            }
            Ok(n) if (min..=max).contains(&n) => return Some(n),
            Ok(n) => format!("{n} is outside {range}"),
            Err(e) if matches!(e.kind(), IntErrorKind::PosOverflow | IntErrorKind::NegOverflow) => {
                format!("{text} is outside {range}")
            }
            Err(_) => format!("{node} is not an integer; use {what} in {range}"),
        };
        self.error(node.line, field, message);
        None
    }

    /// One of the keywords of `choices` (two or more), as its value;
    /// `noun` names what it is for messages ("a protocol").
    pub(super) fn choice<T: Copy>(&mut self, node: &Node, field: &str, noun: &str, choices: &[(&str, T)]) -> Option<T> {
        let words: Vec<&str> = choices.iter().map(|(w, _)| *w).collect();
        let (last, rest) = words.split_last().expect("two or more choices");
        let list = format!("{} or {last}", rest.join(", "));
        let text = self.string(node, field, &format!("{noun} ({list})"))?;
        let found = choices.iter().find(|(w, _)| *w == text).map(|(_, v)| *v);
        if found.is_none() {
            self.error(node.line, field, format!("{text:?} is not {noun}; use {list}"));
        }
        found
    }

    /// An IPv4 or IPv6 address.
    pub(super) fn ip(&mut self, node: &Node, field: &str) -> Option<IpAddr> {
        let text = self.string(node, field, "an IPv4 or IPv6 address")?;
        let ip = text.parse().ok();
        if ip.is_none() {
            let message = format!(
                "{text:?} is not an IP address; use an IPv4 or IPv6 address such as 192.0.2.10 or 2001:db8::10"
            );
            self.error(node.line, field, message);
        }
        ip
    }
}

/// An optional field's outcome: absent (`None`) is fine, given but invalid
/// (`Some(None)`) fails, given and valid yields the value.
#[expect(clippy::option_option, reason = "absent, invalid or valid: three outcomes")]
pub(super) fn optional_ok<T>(field: Option<Option<T>>) -> Option<Option<T>> {
    match field {
        None => Some(None),
        Some(None) => None,
        Some(Some(v)) => Some(Some(v)),
    }
}
