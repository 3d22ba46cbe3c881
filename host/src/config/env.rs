//! Reading `WASMKV_<SECTION>__<KEY>` environment variables into assignments.
//!
//! Names are case-insensitive and use a double underscore between levels, because keys
//! themselves contain single underscores (`WASMKV_WAL__SYNC_INTERVAL`); a key in a nested
//! section takes one more level (`WASMKV_PLUGINS__LIMITS__MEMORY`). Only single keys can be
//! set: lists such as the plugin chains live in the file alone. Other tools share the
//! `WASMKV_` prefix (the CLI reads `WASMKV_ADDR`), so only names that look like configuration
//! (a `__`, or a top-level key) are claimed; a typo in one of those is an error rather than a
//! silently ignored override.

use super::settings::{self, Setting};
use super::{Assignment, ConfigError};

const PREFIX: &str = "WASMKV_";

/// The configuration variables among `vars`, sorted by name so that the first error reported
/// does not depend on the order of the environment.
pub(super) fn read(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Assignment<String>>, ConfigError> {
    let mut vars: Vec<(String, String)> = vars.into_iter().collect();
    vars.sort();
    let mut assignments = Vec::new();
    for (var, value) in vars {
        if let Some((key, setting)) = classify(&var)? {
            assignments.push(Assignment {
                key,
                setting,
                value,
                origin: var,
            });
        }
    }
    Ok(assignments)
}

/// The key path (as written) and setting that `var` sets; `None` for another tool's variable.
pub(super) fn classify(var: &str) -> Result<Option<(String, &'static Setting)>, ConfigError> {
    let Some(rest) = strip_prefix_ignore_case(var, PREFIX) else {
        return Ok(None);
    };
    let rest = rest.to_ascii_lowercase();
    let parts: Vec<&str> = rest.split("__").collect();
    match parts[..] {
        [name] => match settings::find(None, name) {
            Some(setting) => Ok(Some((name.to_owned(), setting))),
            None if settings::is_section(name) => {
                let message = format!(
                    "{name} is a section; set its keys as {}__<KEY>",
                    var_name(name)
                );
                Err(env_error(var, None, message))
            }
            None => Ok(None),
        },
        [ref sections @ .., name] if settings::is_section(&sections.join(".")) => {
            let section = sections.join(".");
            let key = format!("{section}.{name}");
            match settings::find(Some(&section), name) {
                Some(setting) => Ok(Some((key, setting))),
                None if settings::is_section(&key) => {
                    let message = format!(
                        "{key} is a section; set its keys as {}__<KEY>",
                        var_name(&key)
                    );
                    Err(env_error(var, None, message))
                }
                None => {
                    let expected = settings::leaves_in(&section)
                        .iter()
                        .map(|k| var_name(&format!("{section}.{k}")))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let message = format!("unknown setting; expected one of {expected}");
                    Err(env_error(var, Some(key), message))
                }
            }
        }
        _ => {
            let sections = settings::keys_in(None)
                .into_iter()
                .filter(|k| settings::is_section(k))
                .map(|k| k.to_ascii_uppercase())
                .collect::<Vec<_>>()
                .join(", ");
            let message = format!(
                "unknown setting; expected {PREFIX}DATA_DIR or {PREFIX}<SECTION>__<KEY> with a \
                 section among {sections}"
            );
            Err(env_error(var, Some(parts.join(".")), message))
        }
    }
}

/// The variable that sets the key path `key`.
fn var_name(key: &str) -> String {
    format!("{PREFIX}{}", key.replace('.', "__").to_ascii_uppercase())
}

fn env_error(var: &str, key: Option<String>, message: String) -> ConfigError {
    ConfigError::Env {
        var: var.to_owned(),
        key,
        message,
    }
}

fn strip_prefix_ignore_case<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let head = name.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &name[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_one(var: &str, value: &str) -> Result<Vec<Assignment<String>>, ConfigError> {
        read([(var.to_owned(), value.to_owned())])
    }

    #[test]
    fn names_map_to_keys() {
        for (var, key, setting) in [
            ("WASMKV_SERVER__PORT", "server.port", "server.port"),
            ("wasmkv_server__port", "server.port", "server.port"),
            ("WASMKV_DATA_DIR", "data_dir", "data_dir"),
            ("WASMKV_WAL__DIRECTORY", "wal.directory", "data_dir"),
            (
                "WASMKV_WAL__SYNC_INTERVAL",
                "wal.sync_interval",
                "wal.sync_interval",
            ),
            (
                "WASMKV_MASTER__ADDRESS",
                "master.address",
                "primary.address",
            ),
            ("WASMKV_PLUGINS__DIR", "plugins.dir", "plugins.dir"),
            (
                "Wasmkv_Plugins__Limits__Deadline",
                "plugins.limits.deadline",
                "plugins.limits.deadline",
            ),
        ] {
            let got = read_one(var, "x").unwrap();
            assert_eq!(got.len(), 1, "{var}");
            assert_eq!(got[0].key, key);
            assert_eq!(got[0].setting.key, setting);
            assert_eq!(got[0].origin, var);
        }
    }

    #[test]
    fn other_variables_are_left_alone() {
        for var in ["WASMKV_ADDR", "WASMKV_TOKEN", "PATH", "WASMKV", "WASM"] {
            assert!(read_one(var, "x").unwrap().is_empty(), "{var}");
        }
    }

    #[test]
    fn config_like_typos_are_errors() {
        for (var, needle) in [
            ("WASMKV_SERVER__PROT", "WASMKV_SERVER__PORT"),
            ("WASMKV_SERVR__PORT", "SERVER"),
            ("WASMKV_SERVER__PORT__X", "<SECTION>__<KEY>"),
            ("WASMKV_SERVER", "WASMKV_SERVER__<KEY>"),
            ("WASMKV_LOG", "WASMKV_LOG__<KEY>"),
            ("WASMKV_PLUGINS__LIMITS", "WASMKV_PLUGINS__LIMITS__<KEY>"),
            ("WASMKV_PLUGINS__LIMITS__FUEL__X", "<SECTION>__<KEY>"),
            ("WASMKV_PLUGINS____DIR", "<SECTION>__<KEY>"),
            ("WASMKV_PLUGINS__EVICT", "WASMKV_PLUGINS__LIMITS__FUEL"),
        ] {
            let Err(err) = read_one(var, "x") else {
                panic!("{var} was accepted")
            };
            let err = err.to_string();
            assert!(
                err.starts_with(&format!("environment variable {var}: ")),
                "{err}"
            );
            assert!(err.contains(needle), "{var}: {err}");
        }
    }
}
