//! Reading the YAML file into located "key path = text" assignments.
//!
//! The document is read as a generic tree whose every key and value carries its line and
//! column (serde-saphyr's `Spanned`), then walked against the settings table. Checking keys
//! here rather than through `#[serde(deny_unknown_fields)]` lets an unknown key, a value of
//! the wrong shape and a value that does not parse all be reported the same way: file, line,
//! column, the full key path, and what was expected.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, MessageFormatter, Spanned};

use super::settings::{self, Setting};
use super::{Assignment, ConfigError, Position};

/// A YAML node, reduced to what a configuration can hold.
enum Node {
    Null,
    /// Any scalar, as text: `8080`, `1s` and `"lru"` all reach the parsers the same way, so a
    /// file and an environment variable are parsed alike.
    Scalar(String),
    Sequence,
    Mapping(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Null => "nothing",
            Node::Scalar(_) => "a single value",
            Node::Sequence => "a list",
            Node::Mapping(_) => "a mapping",
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
        Ok(Node::Scalar(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_owned()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Node::Sequence)
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
    let mut options = serde_saphyr::Options::default();
    // The error is re-rendered as one `file:line:col: message` line: no source excerpt.
    options.with_snippet = false;
    let root: Option<Spanned<Node>> =
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
        })?;
    let mut walker = Walker {
        file,
        doc: Document {
            assignments: Vec::new(),
            primary_section: None,
        },
    };
    if let Some(root) = root {
        walker.root(root)?;
    }
    Ok(walker.doc)
}

struct Walker<'a> {
    file: &'a str,
    doc: Document,
}

impl Walker<'_> {
    fn error(&self, at: Location, key: Option<String>, message: String) -> ConfigError {
        ConfigError::File {
            file: self.file.to_owned(),
            position: Some(position(at)),
            key,
            message,
        }
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
        let entries = match value.value {
            Node::Mapping(entries) => entries,
            Node::Null => Vec::new(),
            other => {
                let message = format!(
                    "expected a mapping with keys {}, found {}",
                    settings::keys_in(Some(&name.value)).join(", "),
                    other.kind()
                );
                return Err(self.error(value.referenced, Some(name.value), message));
            }
        };
        for (key, value) in entries {
            let path = format!("{}.{}", name.value, key.value);
            let Some(setting) = settings::find(Some(&name.value), &key.value) else {
                let message = format!(
                    "unknown key; expected one of {}",
                    settings::keys_in(Some(&name.value)).join(", ")
                );
                return Err(self.error(key.referenced, Some(path), message));
            };
            self.leaf(path, key.referenced, setting, value)?;
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
        match value.value {
            Node::Scalar(text) => {
                self.doc.assignments.push(Assignment {
                    key: path,
                    setting,
                    value: text,
                    origin: position(at),
                });
                Ok(())
            }
            Node::Null => Err(self.error(
                at,
                Some(path),
                "no value; give one or remove the key for the default".to_owned(),
            )),
            other => {
                let message = format!("expected a single value, found {}", other.kind());
                Err(self.error(at, Some(path), message))
            }
        }
    }
}
