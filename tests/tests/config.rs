//! The shipped configuration files, read from disk the way `wasmkv serve --config` reads them,
//! and what they turn into: `DbOptions` a store really opens with, and errors an operator can
//! act on.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use wasmkv::config::{Config, ConfigError, SyncMode};
use wasmkv::db::{Db, SetOptions};
use wasmkv::wal::SyncPolicy;

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config")
        .join(name)
}

/// The file as `Config::load` reads it, but without the environment of whoever runs the
/// tests; `load` itself is checked against this in `load_is_file_then_environment`.
fn read(name: &str) -> Config {
    let path = shipped(name);
    let text = std::fs::read_to_string(&path).expect("read the shipped file");
    Config::from_yaml_str(&text, &path.display().to_string()).expect("the shipped file loads")
}

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn seed_master_config_loads_unchanged() {
    let config = read("master-config.yaml");
    assert!(!config.is_replica());
    assert_eq!(config.listen_addr(), "0.0.0.0:8080");
    assert_eq!(config.data_dir, Path::new("/var/log/kvstore/master"));
    assert_eq!(config.wal.sync, SyncMode::Interval);
    assert_eq!(config.storage.max_entries, 1_000_000);
    assert_eq!(config.storage.eviction_policy, "lru");
    let db = config.db_options();
    assert_eq!(db.dir, Path::new("/var/log/kvstore/master"));
    assert_eq!(db.wal.sync, SyncPolicy::Interval(Duration::from_secs(1)));
    assert_eq!(db.wal.max_file_size, 100_000_000, "100MB is decimal");
    assert_eq!(db.max_entries, 1_000_000);
    assert_eq!(db.eviction_policy.name(), "lru");
    assert!(db.active_expiry);
}

#[test]
fn seed_slave_config_loads_unchanged() {
    let config = read("slave-config.yaml");
    assert!(config.is_replica());
    assert_eq!(config.primary_address(), Some("master:8080"));
    let primary = config.primary.as_ref().unwrap();
    assert_eq!(primary.sync_interval, Duration::from_secs(1));
    assert_eq!(config.listen_addr(), "0.0.0.0:8081");
    let db = config.db_options();
    assert_eq!(db.dir, Path::new("/var/log/kvstore/slave"));
    assert_eq!(db.wal.sync, SyncPolicy::Interval(Duration::from_secs(1)));
    assert_eq!(db.wal.max_file_size, 64 << 20, "default");
    assert!(!db.active_expiry, "a replica leaves expiry to its primary");
}

#[test]
fn primary_yaml() {
    let config = read("primary.yaml");
    assert!(!config.is_replica());
    assert_eq!(config.listen_addr(), "127.0.0.1:8080");
    assert_eq!(config.data_dir, Path::new("./data/primary"));
    assert_eq!(config.limits.max_key_bytes, 1024);
    assert_eq!(config.limits.max_value_bytes, 1 << 20);
    assert_eq!(config.limits.max_request_bytes, 8 << 20);
    assert_eq!(config.log.level, "info");
    let db = config.db_options();
    assert_eq!(db.wal.sync, SyncPolicy::Interval(Duration::from_secs(1)));
    assert_eq!(db.wal.max_file_size, 64 << 20);
    assert_eq!(db.max_entries, 0);
    assert_eq!(db.max_memory, 512 << 20);
    assert_eq!(db.eviction_policy.name(), "lru");
    assert_eq!(db.eviction_samples, 5);
    assert_eq!(db.disk_reserve, 64 << 20);
    assert_eq!(db.snapshot_after_bytes, 256 << 20);
    assert!(db.active_expiry);
}

#[test]
fn replica_yaml_follows_primary_yaml() {
    let replica = read("replica.yaml");
    let primary = read("primary.yaml");
    assert!(replica.is_replica());
    assert_eq!(
        replica.primary_address(),
        Some(primary.listen_addr().as_str())
    );
    assert_eq!(replica.listen_addr(), "127.0.0.1:8081");
    assert_eq!(replica.data_dir, Path::new("./data/replica"));
    assert_ne!(replica.data_dir, primary.data_dir);
    assert!(!replica.db_options().active_expiry);
}

#[test]
fn load_is_file_then_environment() {
    for name in [
        "primary.yaml",
        "replica.yaml",
        "master-config.yaml",
        "slave-config.yaml",
    ] {
        let mut expected = read(name);
        expected.apply_env(std::env::vars()).unwrap();
        let loaded = Config::load(Some(&shipped(name))).unwrap();
        assert_eq!(loaded, expected, "{name}");
    }
    let mut defaults = Config::default();
    defaults.apply_env(std::env::vars()).unwrap();
    assert_eq!(Config::load(None).unwrap(), defaults);
}

#[test]
fn environment_overrides_a_shipped_file() {
    let mut config = read("master-config.yaml");
    config
        .apply_env(env(&[
            ("WASMKV_SERVER__PORT", "9000"),
            ("WASMKV_WAL__SYNC", "always"),
            ("WASMKV_WAL__DIRECTORY", "/srv/kv"),
            ("WASMKV_ADDR", "http://127.0.0.1:9000"),
        ]))
        .unwrap();
    config.validate().unwrap();
    assert_eq!(config.listen_addr(), "0.0.0.0:9000");
    assert_eq!(config.db_options().wal.sync, SyncPolicy::Always);
    assert_eq!(config.data_dir, Path::new("/srv/kv"));
    let err = config
        .apply_env(env(&[("WASMKV_WAL__MAX_FILE_SIZE", "lots")]))
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("environment variable WASMKV_WAL__MAX_FILE_SIZE: wal.max_file_size:"),
        "{err}"
    );
}

#[test]
fn errors_name_the_file_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.yaml");
    let mut file = std::fs::File::create(&path).unwrap();
    write!(file, "server:\n  port: 8080\n  adress: 0.0.0.0\n").unwrap();
    let err = Config::load(Some(&path)).unwrap_err();
    assert!(matches!(err, ConfigError::File { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!(
            "{}:3:3: server.adress: unknown key",
            path.display()
        )),
        "{err}"
    );

    let missing = dir.path().join("missing.yaml");
    let err = Config::load(Some(&missing)).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(err.to_string().starts_with(&missing.display().to_string()));
}

#[test]
fn a_store_opens_with_the_mapped_options() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = read("primary.yaml");
    config
        .apply_env(env(&[
            ("WASMKV_DATA_DIR", dir.path().to_str().unwrap()),
            ("WASMKV_STORAGE__DISK_RESERVE", "0"),
            ("WASMKV_WAL__SYNC", "always"),
        ]))
        .unwrap();
    config.validate().unwrap();
    let db = Db::open(config.db_options()).unwrap();
    db.set(
        Bytes::from_static(b"k"),
        Bytes::from_static(b"v"),
        SetOptions::default(),
    )
    .unwrap();
    db.close().unwrap();
    drop(db);
    assert!(dir.path().join("wal").is_dir());
    let db = Db::open(config.db_options()).unwrap();
    assert_eq!(db.get(b"k").unwrap().value, Bytes::from_static(b"v"));
    db.close().unwrap();
}
