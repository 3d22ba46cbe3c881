//! Reading the YAML file into located "key path = text" assignments.
//!
//! The document is read as a generic tree whose every key and value carries its line and
//! column (serde-saphyr's `Spanned`), then walked against the settings table. Checking keys
//! here rather than through `#[serde(deny_unknown_fields)]` lets an unknown key, a value of
//! the wrong shape and a value that does not parse all be reported the same way: file, line,
//! column, the full key path, and what was expected.
//!
//! The plugin chains (`plugins.validate`, `.evict`, `.replicate`) are lists of steps rather
//! than settings; their subtrees are handed to [`super::plugins`] to walk.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, MessageFormatter, Spanned};

use super::auth;
use super::plugins::{self, Chains};
use super::settings::{self, Setting};
use super::{Assignment, ConfigError, Position};
use crate::auth::TokenEntry;

/// A YAML node. Scalars keep their YAML type, which a plugin's `config:` passes on (`10` is a
/// number, `"10"` a string); settings read every scalar as its [`Node::text`].
pub(super) enum Node {
    Null,
    Bool(bool),
    /// A whole number (`serde_json::Number` holds every `i64` and `u64` exactly).
    Integer(serde_json::Number),
    Float(f64),
    String(String),
    Sequence(Vec<Spanned<Node>>),
    Mapping(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl Node {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Node::Null => "nothing",
            Node::Bool(_) | Node::Integer(_) | Node::Float(_) | Node::String(_) => "a single value",
            Node::Sequence(_) => "a list",
            Node::Mapping(_) => "a mapping",
        }
    }

    /// A scalar as text: `8080`, `1s` and `"lru"` all reach the parsers the same way, so a
    /// file and an environment variable are parsed alike. `None` for anything else.
    pub(super) fn text(&self) -> Option<String> {
        match self {
            Node::Bool(v) => Some(v.to_string()),
            Node::Integer(v) => Some(v.to_string()),
            Node::Float(v) => Some(v.to_string()),
            Node::String(v) => Some(v.clone()),
            Node::Null | Node::Sequence(_) | Node::Mapping(_) => None,
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Integer(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Integer(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_owned()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            entries.push((key, map.next_value::<Spanned<Node>>()?));
        }
        Ok(Node::Mapping(entries))
    }
}

/// The assignments of one file, in document order.
pub(super) struct Document {
    pub assignments: Vec<Assignment<Position>>,
    /// The `primary` (or `master`) section as written and where: its presence alone makes
    /// the node a replica, even before (or without) its keys.
    pub primary_section: Option<(String, Position)>,
    /// The plugin chains the file sets.
    pub chains: Chains,
    /// `auth.tokens`, when the file has it.
    pub tokens: Option<Vec<TokenEntry>>,
}

fn position(location: Location) -> Position {
    Position {
        line: location.line(),
        column: location.column(),
    }
}

/// Parse `text` (named `file` in errors) into assignments, rejecting unknown keys and values
/// of the wrong shape. Values are not parsed yet.
pub(super) fn read(text: &str, file: &str) -> Result<Document, ConfigError> {
    let root = tree(text, file)?;
    let mut walker = Walker {
        file,
        doc: Document {
            assignments: Vec::new(),
            primary_section: None,
            chains: Chains::default(),
            tokens: None,
        },
    };
    if let Some(root) = root {
        walker.root(root)?;
    }
    Ok(walker.doc)
}

/// The YAML document in `text` as a located tree; `None` for an empty document.
pub(super) fn tree(text: &str, file: &str) -> Result<Option<Spanned<Node>>, ConfigError> {
    let mut options = serde_saphyr::Options::default();
    // The error is re-rendered as one `file:line:col: message` line: no source excerpt.
    options.with_snippet = false;
    serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let e = e.without_snippet();
        let message = match e {
            // The library's wording suggests an option to the developer, not a fix to
            // the operator.
            serde_saphyr::Error::DuplicateMappingKey { key: Some(key), .. } => {
                format!("{key:?} is given twice")
            }
            _ => serde_saphyr::DefaultMessageFormatter
                .format_message(e)
                .into_owned(),
        };
        ConfigError::File {
            file: file.to_owned(),
            position: e.location().map(position),
            key: None,
            message,
        }
    })
}

/// A problem at `at` in `file`.
pub(super) fn error(file: &str, at: Location, key: Option<String>, message: String) -> ConfigError {
    ConfigError::File {
        file: file.to_owned(),
        position: Some(position(at)),
        key,
        message,
    }
}

struct Walker<'a> {
    file: &'a str,
    doc: Document,
}

impl Walker<'_> {
    fn error(&self, at: Location, key: Option<String>, message: String) -> ConfigError {
        error(self.file, at, key, message)
    }

    fn root(&mut self, root: Spanned<Node>) -> Result<(), ConfigError> {
        let Node::Mapping(entries) = root.value else {
            if matches!(root.value, Node::Null) {
                return Ok(());
            }
            let message = format!(
                "expected a mapping of settings ({}), found {}",
                settings::keys_in(None).join(", "),
                root.value.kind()
            );
            return Err(self.error(root.referenced, None, message));
        };
        for (key, value) in entries {
            if let Some(setting) = settings::find(None, &key.value) {
                self.leaf(key.value.clone(), key.referenced, setting, value)?;
            } else if settings::is_section(&key.value) {
                self.section(key, value)?;
            } else {
                let message = format!(
                    "unknown key; expected one of {}",
                    settings::keys_in(None).join(", ")
                );
                return Err(self.error(key.referenced, Some(key.value), message));
            }
        }
        Ok(())
    }

    fn section(&mut self, name: Spanned<String>, value: Spanned<Node>) -> Result<(), ConfigError> {
        let at = position(name.referenced);
        if settings::canonical_section(&name.value) == "primary" {
            if let Some((first, first_at)) = &self.doc.primary_section {
                let message = format!(
                    "{first} (line {}) and {} are the same section; keep one",
                    first_at.line, name.value
                );
                return Err(self.error(name.referenced, Some(name.value), message));
            }
            self.doc.primary_section = Some((name.value.clone(), at));
        }
        self.mapping(name.value, value)
    }

    /// The keys of the section at `path` (as written: `master`, `plugins.limits`).
    fn mapping(&mut self, path: String, value: Spanned<Node>) -> Result<(), ConfigError> {
        let entries = match value.value {
            Node::Mapping(entries) => entries,
            Node::Null => Vec::new(),
            other => {
                let message = format!(
                    "expected a mapping with keys {}, found {}",
                    keys_in(&path).join(", "),
                    other.kind()
                );
                return Err(self.error(value.referenced, Some(path), message));
            }
        };
        for (key, value) in entries {
            let child = format!("{path}.{}", key.value);
            if let Some(setting) = settings::find(Some(&path), &key.value) {
                self.leaf(child, key.referenced, setting, value)?;
            } else if settings::is_section(&child) {
                self.mapping(child, value)?;
            } else if path == "auth" && key.value == "tokens" {
                self.doc.tokens = Some(auth::read_tokens(self.file, &child, value)?);
            } else if path == "plugins"
                && plugins::read_chain(self.file, &mut self.doc.chains, &key, value)?
            {
                // A chain, read.
            } else {
                let message = format!("unknown key; expected one of {}", keys_in(&path).join(", "));
                return Err(self.error(key.referenced, Some(child), message));
            }
        }
        Ok(())
    }

    /// Record `path = value`. Errors about the value point at its key, where a reader looks
    /// first.
    fn leaf(
        &mut self,
        path: String,
        at: Location,
        setting: &'static Setting,
        value: Spanned<Node>,
    ) -> Result<(), ConfigError> {
        match value.value.text() {
            Some(text) => {
                self.doc.assignments.push(Assignment {
                    key: path,
                    setting,
                    value: text,
                    origin: position(at),
                });
                Ok(())
            }
            None => Err(self.error(at, Some(path), not_single(&value.value))),
        }
    }
}

/// Why `node`, which is not a scalar, cannot be a single value.
pub(super) fn not_single(node: &Node) -> String {
    match node {
        Node::Null => "no value; give one or remove the key for the default".to_owned(),
        other => format!("expected a single value, found {}", other.kind()),
    }
}

/// The keys accepted in the section at `path`, for messages: its settings and sections, and
/// in `plugins` the chains too.
fn keys_in(path: &str) -> Vec<&'static str> {
    let mut keys = settings::keys_in(Some(path));
    if path == "plugins" {
        keys.extend(plugins::CHAINS);
    }
    if path == "auth" {
        keys.push("tokens");
    }
    keys
}
