//! Reading the parts of a config file that are lists of mappings rather than single
//! settings: every entry located, unknown keys refused, errors naming `file:line:col` and the
//! key path (`plugins.validate[1].plugin`, `auth.tokens[0].role`).

use serde_saphyr::{Location, Spanned};

use super::ConfigError;
use super::yaml::{self, Node};

/// Walks lists and mappings of one file (the plugin chains, the auth tokens).
pub(super) struct Reader<'a> {
    pub file: &'a str,
}

/// The entries of a mapping whose keys were checked, for its reader to take one by one.
pub(super) struct Fields {
    /// The mapping's key path (`plugins.validate[1]`).
    pub path: String,
    /// Where the mapping is, for a required key it lacks.
    pub at: Location,
    entries: Vec<(Spanned<String>, Spanned<Node>)>,
}

/// One entry of a mapping: its key path, where its key is, and its value.
pub(super) struct Field {
    pub path: String,
    pub at: Location,
    pub value: Spanned<Node>,
}

impl Fields {
    pub fn take(&mut self, key: &str) -> Option<Field> {
        let i = self.entries.iter().position(|(k, _)| k.value == key)?;
        let (key, value) = self.entries.remove(i);
        Some(Field {
            path: format!("{}.{}", self.path, key.value),
            at: key.referenced,
            value,
        })
    }
}

impl Reader<'_> {
    pub fn error(&self, at: Location, key: &str, message: String) -> ConfigError {
        yaml::error(self.file, at, Some(key.to_owned()), message)
    }

    /// A list (nothing = an empty one) of mappings with `keys`, each read by `step`: a
    /// chain's steps, the auth tokens.
    pub fn steps<T>(
        &self,
        path: &str,
        value: Spanned<Node>,
        keys: &[&str],
        step: impl Fn(&mut Fields) -> Result<T, ConfigError>,
    ) -> Result<Vec<T>, ConfigError> {
        let items = match value.value {
            Node::Sequence(items) => items,
            Node::Null => Vec::new(),
            other => {
                let message = format!(
                    "expected a list, each item a mapping with keys {}; found {}",
                    keys.join(", "),
                    other.kind()
                );
                return Err(self.error(value.referenced, path, message));
            }
        };
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                step(&mut self.fields(format!("{path}[{i}]"), item.referenced, item, keys)?)
            })
            .collect()
    }

    /// The mapping at `path` (named at `at`), refusing keys other than `keys`.
    pub fn fields(
        &self,
        path: String,
        at: Location,
        value: Spanned<Node>,
        keys: &[&str],
    ) -> Result<Fields, ConfigError> {
        let entries = match value.value {
            Node::Mapping(entries) => entries,
            other => {
                let message = format!(
                    "expected a mapping with keys {}, found {}",
                    keys.join(", "),
                    other.kind()
                );
                return Err(self.error(value.referenced, &path, message));
            }
        };
        if let Some((key, _)) = entries
            .iter()
            .find(|(k, _)| !keys.contains(&k.value.as_str()))
        {
            let message = format!("unknown key; expected one of {}", keys.join(", "));
            return Err(self.error(key.referenced, &format!("{path}.{}", key.value), message));
        }
        Ok(Fields { path, at, entries })
    }

    /// A single value, as text.
    pub fn text(&self, field: &Field) -> Result<String, ConfigError> {
        field
            .value
            .value
            .text()
            .ok_or_else(|| self.error(field.at, &field.path, yaml::not_single(&field.value.value)))
    }
}
