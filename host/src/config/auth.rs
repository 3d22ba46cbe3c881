//! The `auth` section: which bearer tokens the node accepts.
//!
//! ```yaml
//! auth:
//!   tokens:                       # in the file only, never plaintext: the token's SHA-256
//!     - { name: app, role: write, sha256: 9f86d08...e0 }
//!   token_file: /etc/wasmkv/tokens.yaml   # more tokens, same list form; re-read on SIGHUP
//!   protect_metrics: false        # true: /metrics needs a token too (any role)
//! ```
//!
//! `wasmkv token new --role write --name app` makes a token and prints its entry.

use std::path::{Path, PathBuf};

use serde_saphyr::Spanned;

use super::ConfigError;
use super::reader::Reader;
use super::yaml::{self, Node};
use crate::auth::{TokenEntry, TokenSet, parse_sha256};

/// The keys of one token entry.
const TOKEN_KEYS: &[&str] = &["name", "role", "sha256"];

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// `auth.tokens` of the config file.
    pub tokens: Vec<TokenEntry>,
    /// `auth.token_file`: more tokens, read when the node starts and on SIGHUP.
    pub token_file: Option<PathBuf>,
    /// Whether `/metrics` needs a token.
    pub protect_metrics: bool,
}

impl AuthConfig {
    /// Whether the node authenticates callers: some tokens are configured.
    pub fn is_enabled(&self) -> bool {
        !self.tokens.is_empty() || self.token_file.is_some()
    }

    /// Every accepted token: those of the config and those of `token_file`, read now.
    /// Two tokens with one name are refused, since errors and logs name tokens.
    pub fn token_set(&self) -> Result<TokenSet, ConfigError> {
        let mut entries = self.tokens.clone();
        if let Some(path) = &self.token_file {
            let from_file = read_token_file(path)?;
            if from_file.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "auth.token_file".into(),
                    message: format!(
                        "{} lists no tokens; with none, nobody could call this node",
                        path.display()
                    ),
                });
            }
            entries.extend(from_file);
        }
        for (i, entry) in entries.iter().enumerate() {
            if entries[..i].iter().any(|e| e.name == entry.name) {
                return Err(ConfigError::Invalid {
                    key: "auth.tokens".into(),
                    message: format!("two tokens are named {:?}; names must differ", entry.name),
                });
            }
        }
        Ok(TokenSet::new(entries))
    }
}

/// The tokens of a token file: a YAML list like `auth.tokens`.
fn read_token_file(path: &Path) -> Result<Vec<TokenEntry>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let file = path.display().to_string();
    match yaml::tree(&text, &file)? {
        Some(list) => read_tokens(&file, "tokens", list),
        None => Ok(Vec::new()),
    }
}

/// The token list at `path` of `file`.
pub(super) fn read_tokens(
    file: &str,
    path: &str,
    value: Spanned<Node>,
) -> Result<Vec<TokenEntry>, ConfigError> {
    let reader = Reader { file };
    reader.steps(path, value, TOKEN_KEYS, |entry| {
        let mut required = |key: &str| match entry.take(key) {
            Some(field) => Ok((reader.text(&field)?, field)),
            None => Err(reader.error(
                entry.at,
                &format!("{}.{key}", entry.path),
                "required".into(),
            )),
        };
        let (name, name_field) = required("name")?;
        let (role, role_field) = required("role")?;
        let (sha256, sha_field) = required("sha256")?;
        if name.trim().is_empty() {
            return Err(reader.error(name_field.at, &name_field.path, "must not be empty".into()));
        }
        if sha256.starts_with(crate::auth::TOKEN_PREFIX) {
            return Err(reader.error(
                sha_field.at,
                &sha_field.path,
                "this is a token, not its SHA-256: never put a token in a config; put \
                 the sha256 line `wasmkv token new` printed, and revoke this token"
                    .into(),
            ));
        }
        Ok(TokenEntry {
            name,
            role: role
                .parse()
                .map_err(|message| reader.error(role_field.at, &role_field.path, message))?,
            sha256: parse_sha256(&sha256)
                .map_err(|message| reader.error(sha_field.at, &sha_field.path, message))?,
        })
    })
}
