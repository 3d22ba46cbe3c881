//! Every configuration key, how its text is parsed, and what its value must satisfy.
//!
//! The YAML file and the environment both reduce to "key path = text", so one table serves
//! both: a key is accepted, parsed and checked the same way wherever it comes from, and the
//! lists of valid keys in error messages cannot drift from what is really accepted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Config, PluginLimits, PrimaryConfig, SyncMode};
use crate::storage::BUILTIN_POLICIES;
use crate::tls::{ClientTls, ServerTls};

/// One key of the configuration.
pub(super) struct Setting {
    /// The key path as written in the file: `key` at the top level, `section.key`, or
    /// `section.subsection.key` (`plugins.limits.memory`).
    pub key: &'static str,
    /// Parse `text` and store the value in the config; the error says what was expected.
    pub apply: fn(&mut Config, &str) -> Result<(), String>,
    /// The constraint on the stored value. Run right after `apply`, so a bad value is blamed
    /// on the line or variable that set it, and again by `Config::validate`.
    pub check: fn(&Config) -> Result<(), String>,
}

/// Section names the seed used for what this project calls otherwise.
const SECTION_ALIASES: &[(&str, &str)] = &[("master", "primary")];

/// Keys that are another name for a setting. `wal.directory` is the seed's key: everything
/// (WAL, snapshots, lock) lives under one directory, so it names `data_dir`. A replica's
/// link to its primary may be set in its `primary` section, where a reader of a replica's
/// config looks for it; it is the same setting as `replication.tls` and
/// `replication.token_file`, which a node started as a primary needs too.
const KEY_ALIASES: &[(&str, &str)] = &[
    ("wal.directory", "data_dir"),
    ("primary.tls.ca", "replication.tls.ca"),
    ("primary.tls.cert", "replication.tls.cert"),
    ("primary.tls.key", "replication.tls.key"),
    ("primary.tls.server_name", "replication.tls.server_name"),
    ("primary.token_file", "replication.token_file"),
];

/// Why a replica without `primary.address` is refused.
pub(super) const PRIMARY_ADDRESS_REQUIRED: &str =
    "required for a replica: the host:port of the primary to follow";

fn no_check(_: &Config) -> Result<(), String> {
    Ok(())
}

pub(super) const SETTINGS: &[Setting] = &[
    Setting {
        key: "data_dir",
        apply: |c, v| {
            c.data_dir = PathBuf::from(v);
            Ok(())
        },
        check: |c| non_empty_path(&c.data_dir),
    },
    Setting {
        key: "server.address",
        apply: |c, v| {
            c.server.address = v.to_owned();
            Ok(())
        },
        check: |c| non_empty(&c.server.address),
    },
    Setting {
        key: "server.port",
        apply: |c, v| {
            c.server.port = v
                .parse()
                .map_err(|_| format!("invalid port {v:?}: expected a number from 0 to 65535"))?;
            Ok(())
        },
        check: no_check,
    },
    Setting {
        key: "wal.sync",
        apply: |c, v| {
            c.wal.sync = parse_sync_mode(v)?;
            Ok(())
        },
        check: no_check,
    },
    Setting {
        key: "wal.sync_interval",
        apply: |c, v| {
            c.wal.sync_interval = parse_duration(v)?;
            Ok(())
        },
        check: |c| positive_duration(c.wal.sync_interval),
    },
    Setting {
        key: "wal.max_file_size",
        apply: |c, v| {
            c.wal.max_file_size = parse_size(v)?;
            Ok(())
        },
        check: |c| positive_size(c.wal.max_file_size),
    },
    Setting {
        key: "storage.max_entries",
        apply: |c, v| {
            c.storage.max_entries = parse_count(v)?;
            Ok(())
        },
        check: no_check,
    },
    Setting {
        key: "storage.max_memory",
        apply: |c, v| {
            c.storage.max_memory = parse_size(v)?;
            Ok(())
        },
        check: no_check,
    },
    Setting {
        key: "storage.eviction_policy",
        apply: |c, v| {
            c.storage.eviction_policy = v.to_owned();
            Ok(())
        },
        check: |c| known_policy(&c.storage.eviction_policy),
    },
    Setting {
        key: "storage.eviction_samples",
        apply: |c, v| {
            c.storage.eviction_samples = parse_count(v)?
                .try_into()
                .map_err(|_| format!("{v} is too large"))?;
            Ok(())
        },
        check: |c| {
            if c.storage.eviction_samples == 0 {
                return Err("must be at least 1".to_owned());
            }
            Ok(())
        },
    },
    Setting {
        key: "storage.disk_reserve",
        apply: |c, v| {
            c.storage.disk_reserve = parse_size(v)?;
            Ok(())
        },
        check: no_check,
    },
    Setting {
        key: "storage.snapshot_after",
        apply: |c, v| {
            c.storage.snapshot_after = parse_size(v)?;
            Ok(())
        },
        check: no_check,
    },
    Setting {
        key: "limits.max_key_bytes",
        apply: |c, v| {
            c.limits.max_key_bytes = parse_size(v)?;
            Ok(())
        },
        check: |c| positive_size(c.limits.max_key_bytes),
    },
    Setting {
        key: "limits.max_value_bytes",
        apply: |c, v| {
            c.limits.max_value_bytes = parse_size(v)?;
            Ok(())
        },
        check: |c| positive_size(c.limits.max_value_bytes),
    },
    Setting {
        key: "limits.max_request_bytes",
        apply: |c, v| {
            c.limits.max_request_bytes = parse_size(v)?;
            Ok(())
        },
        check: |c| positive_size(c.limits.max_request_bytes),
    },
    Setting {
        key: "primary.address",
        apply: |c, v| {
            primary_mut(c).address = v.to_owned();
            Ok(())
        },
        check: |c| match &c.primary {
            Some(p) if p.address.is_empty() => Err(PRIMARY_ADDRESS_REQUIRED.to_owned()),
            _ => Ok(()),
        },
    },
    Setting {
        key: "primary.sync_interval",
        apply: |c, v| {
            primary_mut(c).sync_interval = parse_duration(v)?;
            Ok(())
        },
        check: |c| {
            c.primary
                .as_ref()
                .map_or(Ok(()), |p| positive_duration(p.sync_interval))
        },
    },
    Setting {
        key: "replication.backlog_max",
        apply: |c, v| {
            c.replication.backlog_max = parse_size(v)?;
            Ok(())
        },
        check: |c| positive_size(c.replication.backlog_max),
    },
    Setting {
        key: "replication.backlog_max_age",
        apply: |c, v| {
            c.replication.backlog_max_age = parse_duration(v)?;
            Ok(())
        },
        check: |c| positive_duration(c.replication.backlog_max_age),
    },
    Setting {
        key: "replication.labels",
        apply: |c, v| {
            c.replication.labels = parse_labels(v)?;
            Ok(())
        },
        check: |_| Ok(()),
    },
    Setting {
        key: "replication.advertise",
        apply: |c, v| {
            c.replication.advertise = v.to_owned();
            Ok(())
        },
        check: |_| Ok(()),
    },
    Setting {
        key: "replication.allow_full_resync_from_empty",
        apply: |c, v| {
            c.replication.allow_full_resync_from_empty = parse_bool(v)?;
            Ok(())
        },
        check: |_| Ok(()),
    },
    Setting {
        key: "plugins.dir",
        apply: |c, v| {
            c.plugins.dir = PathBuf::from(v);
            Ok(())
        },
        check: |c| non_empty_path(&c.plugins.dir),
    },
    Setting {
        key: "plugins.limits.memory",
        apply: |c, v| {
            c.plugins.limits.memory = parse_size(v)?;
            Ok(())
        },
        check: |c| {
            if c.plugins.limits.memory < PluginLimits::MIN_MEMORY {
                return Err("must be at least 64KiB, one WebAssembly page".to_owned());
            }
            Ok(())
        },
    },
    Setting {
        key: "plugins.limits.deadline",
        apply: |c, v| {
            c.plugins.limits.deadline = parse_duration(v)?;
            Ok(())
        },
        check: |c| {
            positive_duration(c.plugins.limits.deadline)?;
            if c.plugins.limits.deadline > PluginLimits::MAX_DEADLINE {
                return Err(
                    "must be at most 10s: a plugin call holds up the request it serves".to_owned(),
                );
            }
            Ok(())
        },
    },
    Setting {
        key: "plugins.limits.fuel",
        apply: |c, v| {
            c.plugins.limits.fuel = parse_count(v)?;
            Ok(())
        },
        check: no_check,
    },
    Setting {
        key: "server.allow_insecure_remote",
        apply: |c, v| {
            c.server.allow_insecure_remote = parse_bool(v)?;
            Ok(())
        },
        check: no_check,
    },
    Setting {
        key: "server.threads",
        apply: |c, v| {
            c.server.threads = parse_count(v)?;
            Ok(())
        },
        check: |c| {
            if c.server.threads > 1024 {
                return Err("must be at most 1024 (0 = one per CPU)".to_owned());
            }
            Ok(())
        },
    },
    Setting {
        key: "server.tls.cert",
        apply: |c, v| {
            server_tls_mut(c).cert = PathBuf::from(v);
            Ok(())
        },
        check: no_check,
    },
    Setting {
        key: "server.tls.key",
        apply: |c, v| {
            server_tls_mut(c).key = PathBuf::from(v);
            Ok(())
        },
        check: no_check,
    },
    Setting {
        key: "server.tls.client_ca",
        apply: |c, v| {
            server_tls_mut(c).client_ca = Some(PathBuf::from(v));
            Ok(())
        },
        check: no_check,
    },
    Setting {
        key: "limits.max_batch_keys",
        apply: |c, v| {
            c.limits.max_batch_keys = parse_count(v)?;
            Ok(())
        },
        check: |c| at_least_one(c.limits.max_batch_keys),
    },
    Setting {
        key: "limits.max_connections",
        apply: |c, v| {
            c.limits.max_connections = parse_count(v)?;
            Ok(())
        },
        check: no_check,
    },
    Setting {
        key: "limits.header_read_timeout",
        apply: |c, v| {
            c.limits.header_read_timeout = parse_duration(v)?;
            Ok(())
        },
        check: |c| positive_duration(c.limits.header_read_timeout),
    },
    Setting {
        key: "limits.body_read_timeout",
        apply: |c, v| {
            c.limits.body_read_timeout = parse_duration(v)?;
            Ok(())
        },
        check: |c| positive_duration(c.limits.body_read_timeout),
    },
    Setting {
        key: "limits.max_streams_per_connection",
        apply: |c, v| {
            c.limits.max_streams_per_connection = parse_count(v)?
                .try_into()
                .map_err(|_| format!("{v} is too large"))?;
            Ok(())
        },
        check: |c| at_least_one(c.limits.max_streams_per_connection.into()),
    },
    Setting {
        key: "auth.token_file",
        apply: |c, v| {
            c.auth.token_file = Some(PathBuf::from(v));
            Ok(())
        },
        check: |c| c.auth.token_file.as_deref().map_or(Ok(()), non_empty_path),
    },
    Setting {
        key: "auth.protect_metrics",
        apply: |c, v| {
            c.auth.protect_metrics = parse_bool(v)?;
            Ok(())
        },
        check: no_check,
    },
    Setting {
        key: "replication.tls.ca",
        apply: |c, v| {
            link_tls_mut(c).ca = Some(PathBuf::from(v));
            Ok(())
        },
        check: no_check,
    },
    Setting {
        key: "replication.tls.cert",
        apply: |c, v| {
            link_tls_mut(c).cert = Some(PathBuf::from(v));
            Ok(())
        },
        check: no_check,
    },
    Setting {
        key: "replication.tls.key",
        apply: |c, v| {
            link_tls_mut(c).key = Some(PathBuf::from(v));
            Ok(())
        },
        check: no_check,
    },
    Setting {
        key: "replication.tls.server_name",
        apply: |c, v| {
            link_tls_mut(c).server_name = Some(v.to_owned());
            Ok(())
        },
        check: no_check,
    },
    Setting {
        key: "replication.token_file",
        apply: |c, v| {
            c.replication.token_file = Some(PathBuf::from(v));
            Ok(())
        },
        check: |c| {
            c.replication
                .token_file
                .as_deref()
                .map_or(Ok(()), non_empty_path)
        },
    },
    Setting {
        key: "log.level",
        apply: |c, v| {
            c.log.level = v.to_owned();
            Ok(())
        },
        check: |c| {
            tracing_subscriber::EnvFilter::try_new(&c.log.level)
                .map(drop)
                .map_err(|e| format!("invalid filter {:?}: {e}", c.log.level))
        },
    },
];

/// The primary section, created on first use (its address still empty): any of its keys, or
/// the section alone in a file, makes a replica.
pub(super) fn primary_mut(c: &mut Config) -> &mut PrimaryConfig {
    c.primary.get_or_insert_with(|| PrimaryConfig {
        address: String::new(),
        sync_interval: PrimaryConfig::DEFAULT_SYNC_INTERVAL,
    })
}

/// `server.tls`, created on first use.
fn server_tls_mut(c: &mut Config) -> &mut ServerTls {
    c.server.tls.get_or_insert_with(ServerTls::default)
}

/// `replication.tls`, created on first use.
fn link_tls_mut(c: &mut Config) -> &mut ClientTls {
    c.replication.tls.get_or_insert_with(ClientTls::default)
}

/// The TLS settings that go together: a listener needs its certificate and its key, and a
/// link's client certificate goes with its key. Checked once a whole source was read
/// ([`Config::validate`]), since a file may well set `key` after `cert`.
pub(super) fn check_tls_complete(c: &Config) -> Result<(), (String, String)> {
    let missing = |key: &str, what: &str| Err((key.to_owned(), format!("required: {what}")));
    if let Some(tls) = &c.server.tls {
        if tls.cert.as_os_str().is_empty() {
            return missing(
                "server.tls.cert",
                "the PEM certificate chain to serve, with server.tls",
            );
        }
        if tls.key.as_os_str().is_empty() {
            return missing("server.tls.key", "the PEM private key of server.tls.cert");
        }
    }
    if let Some(tls) = &c.replication.tls {
        match (&tls.cert, &tls.key) {
            (Some(_), None) => {
                return missing(
                    "replication.tls.key",
                    "the private key of replication.tls.cert",
                );
            }
            (None, Some(_)) => {
                return missing(
                    "replication.tls.cert",
                    "the client certificate of replication.tls.key",
                );
            }
            _ => {}
        }
    }
    Ok(())
}

/// The section a name stands for, following the seed's aliases.
pub(super) fn canonical_section(name: &str) -> std::borrow::Cow<'_, str> {
    let (top, rest) = match name.split_once('.') {
        Some((top, rest)) => (top, Some(rest)),
        None => (name, None),
    };
    match SECTION_ALIASES.iter().find(|(alias, _)| *alias == top) {
        Some((_, target)) => match rest {
            Some(rest) => format!("{target}.{rest}").into(),
            None => (*target).into(),
        },
        None => name.into(),
    }
}

/// Whether `name` (or its alias), a key path such as `server` or `plugins.limits`, is a
/// section rather than a single key.
pub(super) fn is_section(name: &str) -> bool {
    all_keys().any(|key| child(Some(name), key).is_some())
}

/// The name of the key or section directly in `section` (`None` = top level) that `key`, a
/// full key path, lies in: `limits` for `plugins.limits.memory` in `plugins`, `plugins` at
/// the top level. `None` if `key` is not in `section`.
fn child<'k>(section: Option<&str>, key: &'k str) -> Option<&'k str> {
    let rest = match section {
        Some(section) => key
            .strip_prefix(canonical_section(section).as_ref())?
            .strip_prefix('.')?,
        None => key,
    };
    rest.split('.').next()
}

/// The setting `key` in `section` (`None` = top level; a key path such as `plugins.limits`
/// for a nested one), following aliases.
pub(super) fn find(section: Option<&str>, key: &str) -> Option<&'static Setting> {
    let path = match section {
        Some(section) => format!("{}.{key}", canonical_section(section)),
        None => key.to_owned(),
    };
    let path = KEY_ALIASES
        .iter()
        .find(|(alias, _)| *alias == path)
        .map_or(path.as_str(), |(_, target)| target);
    SETTINGS.iter().find(|s| s.key == path)
}

/// The keys accepted in `section` (`None` = top level; nested sections count as keys), for
/// "expected one of" messages. Aliases are listed too: they are accepted.
pub(super) fn keys_in(section: Option<&str>) -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = Vec::new();
    for key in all_keys() {
        let Some(name) = child(section, key) else {
            continue;
        };
        if !keys.contains(&name) {
            keys.push(name);
        }
    }
    if section.is_none() {
        keys.extend(SECTION_ALIASES.iter().map(|(alias, _)| *alias));
    }
    keys
}

/// The single keys anywhere below `section`, as paths relative to it (`limits.memory` in
/// `plugins`), for messages about environment variables, which name single keys only.
pub(super) fn leaves_in(section: &str) -> Vec<&'static str> {
    all_keys()
        .filter_map(|key| {
            key.strip_prefix(canonical_section(section).as_ref())?
                .strip_prefix('.')
        })
        .collect()
}

/// Every key path, then the aliases (which are accepted too).
fn all_keys() -> impl Iterator<Item = &'static str> {
    let aliases = KEY_ALIASES.iter().map(|(alias, _)| *alias);
    SETTINGS.iter().map(|s| s.key).chain(aliases)
}

/// What `parse_duration` accepts, for error messages.
const DURATION_FORMS: &str = "a number with a unit: 250ms, 1s, 2m, 1h (also us, ns, d, and \
                              combinations such as 1m30s)";

/// What `parse_size` accepts, for error messages.
const SIZE_FORMS: &str = "a number of bytes (512) or a number with a unit: KB, MB, GB, TB are \
                          powers of 1000 (100MB), KiB, MiB, GiB, TiB powers of 1024 (64KiB)";

/// A duration such as `250ms`, `1s`, `2m` or `1h` (humantime's syntax). A bare number is
/// refused: whether `5` meant seconds or milliseconds is exactly the mistake to catch.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid duration {text:?}: a bare number has no unit; expected {DURATION_FORMS}"
        ));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("invalid duration {text:?} ({e}); expected {DURATION_FORMS}"))
}

/// `true` or `false`.
fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("expected true or false, got {other:?}")),
    }
}

/// `key=value` pairs separated by commas, e.g. `region=us,zone=a` (empty = no labels).
fn parse_labels(text: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
            _ => Err(format!(
                "expected labels as key=value pairs separated by commas (region=us,zone=a), \
                 got {pair:?}"
            )),
        })
        .collect()
}

/// A byte size: `512` (bytes), `100MB` (1 MB = 1,000,000 bytes) or `64KiB` (1 KiB = 1024
/// bytes), the unit case-insensitive, an optional space, fractions allowed (`1.5GB`).
///
/// Single-letter units (`64M`) are refused even though the parser knows them: operators
/// read `M` as MiB as often as MB, and a config should not need a footnote.
pub(super) fn parse_size(text: &str) -> Result<u64, String> {
    let unit = text.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.' || c == ' ');
    let starts_with_number = text.starts_with(|c: char| c.is_ascii_digit());
    if !starts_with_number || !(unit.is_empty() || unit.ends_with(['b', 'B'])) {
        return Err(format!("invalid size {text:?}: expected {SIZE_FORMS}"));
    }
    let size: bytesize::ByteSize = text
        .parse()
        .map_err(|_| format!("invalid size {text:?}: expected {SIZE_FORMS}"))?;
    // bytesize saturates instead of failing on overflow.
    if size.as_u64() == u64::MAX {
        return Err(format!("size {text:?} is too large"));
    }
    Ok(size.as_u64())
}

/// A plain count such as `1000000` (entries, samples): not a size, so no units.
pub(super) fn parse_count(text: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("invalid number {text:?}: expected a whole number such as 1000"))
}

fn parse_sync_mode(text: &str) -> Result<SyncMode, String> {
    match text.to_ascii_lowercase().as_str() {
        "always" => Ok(SyncMode::Always),
        "interval" => Ok(SyncMode::Interval),
        "never" => Ok(SyncMode::Never),
        _ => Err(format!(
            "unknown sync mode {text:?}; expected one of always, interval, never"
        )),
    }
}

fn known_policy(name: &str) -> Result<(), String> {
    if BUILTIN_POLICIES.contains(&name) {
        return Ok(());
    }
    Err(format!(
        "unknown policy {name:?}; expected one of {}",
        BUILTIN_POLICIES.join(", ")
    ))
}

fn positive_duration(d: Duration) -> Result<(), String> {
    if d.is_zero() {
        return Err("must be longer than 0".to_owned());
    }
    Ok(())
}

fn at_least_one(n: u64) -> Result<(), String> {
    if n == 0 {
        return Err("must be at least 1".to_owned());
    }
    Ok(())
}

fn positive_size(n: u64) -> Result<(), String> {
    if n == 0 {
        return Err("must be at least 1 byte".to_owned());
    }
    Ok(())
}

fn non_empty(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(())
}

fn non_empty_path(path: &Path) -> Result<(), String> {
    if path.as_os_str().is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_show_the_accepted_forms() {
        for bad in ["5", "1000", "", "1 sec ago", "1x", "-1s", "1.5.s"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("250ms, 1s, 2m, 1h"), "{bad:?}: {err}");
            assert!(err.contains(&format!("{bad:?}")), "{bad:?}: {err}");
        }
        assert!(parse_duration("5").unwrap_err().contains("bare number"));
    }

    #[test]
    fn sizes_in_decimal_and_binary_units() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("1KB"), Ok(1_000));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1mib"), Ok(1 << 20));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2 TB"), Ok(2_000_000_000_000));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn bad_sizes_show_the_accepted_forms() {
        for bad in [
            "", "MB", "-5MB", "64M", "1Ki", "10XB", "1.2.3MB", "ten", " 5MB", "5 MBs",
        ] {
            let err = parse_size(bad).unwrap_err();
            assert!(
                err.contains("KiB") && err.contains("100MB"),
                "{bad:?}: {err}"
            );
        }
        assert!(parse_size("99999999EB").unwrap_err().contains("too large"));
    }

    #[test]
    fn counts_have_no_units() {
        assert_eq!(parse_count("1000000"), Ok(1_000_000));
        assert!(parse_count("1MB").is_err());
        assert!(parse_count("-1").is_err());
    }

    #[test]
    fn every_builtin_policy_is_accepted() {
        for name in BUILTIN_POLICIES {
            assert_eq!(known_policy(name), Ok(()));
        }
        let err = known_policy("lru2").unwrap_err();
        assert_eq!(
            err,
            "unknown policy \"lru2\"; expected one of lru, lfu, volatile-ttl, noeviction"
        );
    }

    #[test]
    fn aliases_resolve() {
        assert_eq!(find(None, "data_dir").map(|s| s.key), Some("data_dir"));
        assert_eq!(
            find(Some("wal"), "directory").map(|s| s.key),
            Some("data_dir")
        );
        assert_eq!(
            find(Some("master"), "address").map(|s| s.key),
            Some("primary.address")
        );
        assert!(find(Some("server"), "prot").is_none());
        assert!(find(None, "server").is_none());
        assert!(is_section("server") && is_section("master") && !is_section("data_dir"));
        assert!(is_section("plugins") && is_section("plugins.limits"));
        assert!(!is_section("plugins.dir") && !is_section("plugins.limits.memory"));
        assert!(!is_section("plugins.limit") && !is_section("plugins."));
        assert_eq!(
            find(Some("plugins.limits"), "memory").map(|s| s.key),
            Some("plugins.limits.memory")
        );
        assert!(find(Some("plugins"), "limits").is_none());
    }

    #[test]
    fn key_lists_for_messages() {
        assert_eq!(
            keys_in(None),
            [
                "data_dir",
                "server",
                "wal",
                "storage",
                "limits",
                "primary",
                "replication",
                "plugins",
                "auth",
                "log",
                "master"
            ]
        );
        assert_eq!(keys_in(Some("plugins")), ["dir", "limits"]);
        assert_eq!(
            keys_in(Some("plugins.limits")),
            ["memory", "deadline", "fuel"]
        );
        assert_eq!(
            leaves_in("plugins"),
            ["dir", "limits.memory", "limits.deadline", "limits.fuel"]
        );
        assert_eq!(
            leaves_in("wal"),
            ["sync", "sync_interval", "max_file_size", "directory"]
        );
        assert_eq!(
            keys_in(Some("wal")),
            ["sync", "sync_interval", "max_file_size", "directory"]
        );
        assert_eq!(
            keys_in(Some("master")),
            ["address", "sync_interval", "tls", "token_file"]
        );
    }
}
