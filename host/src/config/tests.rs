use super::*;
use crate::storage::BUILTIN_POLICIES;

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml_str(text, "test.yaml")
}

fn load_err(text: &str) -> String {
    load(text).unwrap_err().to_string()
}

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn defaults_match_the_store_defaults() {
    let config = Config::default();
    config.validate().unwrap();
    let ours = config.db_options();
    let store = DbOptions::default();
    assert_eq!(ours.dir, Path::new("./data"));
    assert_eq!(store.dir, Path::new("data"));
    assert_eq!(ours.wal.sync, store.wal.sync);
    assert_eq!(ours.wal.max_file_size, store.wal.max_file_size);
    assert_eq!(ours.max_entries, store.max_entries);
    assert_eq!(ours.max_memory, store.max_memory);
    assert_eq!(ours.eviction_policy.name(), store.eviction_policy.name());
    assert_eq!(ours.eviction_samples, store.eviction_samples);
    assert_eq!(ours.disk_reserve, store.disk_reserve);
    assert_eq!(ours.snapshot_after_bytes, store.snapshot_after_bytes);
    assert_eq!(ours.active_expiry, store.active_expiry);
    assert_eq!(config.listen_addr(), "127.0.0.1:8080");
    assert_eq!(config.limits.max_key_bytes, 1024);
    assert_eq!(config.limits.max_value_bytes, 1 << 20);
    assert_eq!(config.limits.max_request_bytes, 8 << 20);
    assert_eq!(config.log.level, "info");
    assert!(!config.is_replica());
    assert_eq!(config.primary_address(), None);
}

#[test]
fn empty_documents_are_the_defaults() {
    for text in ["", "\n", "# nothing set\n", "---\n", "~\n"] {
        assert_eq!(load(text).unwrap(), Config::default(), "{text:?}");
    }
}

#[test]
fn every_key_is_read() {
    let config = load(
        "data_dir: /srv/kv\n\
         server: {address: 0.0.0.0, port: 0}\n\
         wal: {sync: always, sync_interval: 250ms, max_file_size: 100MB}\n\
         storage:\n  max_entries: 10\n  max_memory: 1GiB\n  eviction_policy: volatile-ttl\n  \
         eviction_samples: 7\n  disk_reserve: 1MB\n  snapshot_after: 0\n\
         limits: {max_key_bytes: 512, max_value_bytes: 64KiB, max_request_bytes: 1MiB}\n\
         primary: {address: 'p:1', sync_interval: 2m}\n\
         replication: {backlog_max: 1MB, backlog_max_age: 5m, labels: 'region=us, zone = a',\n\
           advertise: 'r1:8081', allow_full_resync_from_empty: true}\n\
         log: {level: 'wasmkv=debug,info'}\n",
    )
    .unwrap();
    assert_eq!(
        config,
        Config {
            data_dir: PathBuf::from("/srv/kv"),
            server: ServerConfig {
                address: "0.0.0.0".into(),
                port: 0
            },
            wal: WalConfig {
                sync: SyncMode::Always,
                sync_interval: Duration::from_millis(250),
                max_file_size: 100_000_000
            },
            storage: StorageConfig {
                max_entries: 10,
                max_memory: 1 << 30,
                eviction_policy: "volatile-ttl".into(),
                eviction_samples: 7,
                disk_reserve: 1_000_000,
                snapshot_after: 0
            },
            limits: LimitsConfig {
                max_key_bytes: 512,
                max_value_bytes: 64 << 10,
                max_request_bytes: 1 << 20
            },
            primary: Some(PrimaryConfig {
                address: "p:1".into(),
                sync_interval: Duration::from_secs(120)
            }),
            replication: ReplicationConfig {
                backlog_max: 1_000_000,
                backlog_max_age: Duration::from_secs(300),
                labels: [("region", "us"), ("zone", "a")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                advertise: "r1:8081".into(),
                allow_full_resync_from_empty: true,
            },
            plugins: PluginsConfig::default(),
            log: LogConfig {
                level: "wasmkv=debug,info".into()
            },
        }
    );
    let db = config.db_options();
    assert_eq!(db.wal.sync, SyncPolicy::Always);
    assert_eq!(db.eviction_policy.name(), "volatile-ttl");
    assert!(!db.active_expiry, "a replica leaves expiry to its primary");
}

#[test]
fn sync_modes_map_to_policies() {
    for (text, policy) in [
        ("always", SyncPolicy::Always),
        ("interval", SyncPolicy::Interval(Duration::from_millis(300))),
        ("never", SyncPolicy::Never),
    ] {
        let config = load(&format!("wal:\n  sync: {text}\n  sync_interval: 300ms\n")).unwrap();
        assert_eq!(config.db_options().wal.sync, policy);
    }
    assert_eq!(
        load_err("wal:\n  sync: sometimes\n"),
        "test.yaml:2:3: wal.sync: unknown sync mode \"sometimes\"; expected one of always, \
         interval, never"
    );
}

#[test]
fn every_builtin_policy_loads() {
    for name in BUILTIN_POLICIES {
        let config = load(&format!("storage:\n  eviction_policy: {name}\n")).unwrap();
        assert_eq!(config.db_options().eviction_policy.name(), *name);
    }
}

#[test]
fn unknown_policy_names_file_line_key_and_choices() {
    let text = "server:\n  port: 1\nstorage:\n  max_entries: 5\n\n  # comment\n  \
                eviction_policy: \"lru2\"\n";
    assert_eq!(
        load_err(text),
        "test.yaml:7:3: storage.eviction_policy: unknown policy \"lru2\"; expected one of lru, \
         lfu, volatile-ttl, noeviction"
    );
}

#[test]
fn unknown_keys_are_errors_with_location_and_path() {
    let err = load("storage:\n  max_entries: 1\n  eviction_polcy: lru\n").unwrap_err();
    let ConfigError::File { position, key, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*position, Some(Position { line: 3, column: 3 }));
    assert_eq!(key.as_deref(), Some("storage.eviction_polcy"));
    assert!(
        err.to_string().starts_with(
            "test.yaml:3:3: storage.eviction_polcy: unknown key; expected one of max_entries, \
             max_memory, eviction_policy,"
        ),
        "{err}"
    );
    assert!(load_err("prot: 1\n").starts_with("test.yaml:1:1: prot: unknown key; expected"));
    assert!(load_err("wal:\n  dir: x\n").contains("expected one of sync, sync_interval"));
    assert!(load_err("master:\n  adress: x\n").starts_with("test.yaml:2:3: master.adress:"));
}

#[test]
fn wrong_shapes_and_types_have_lines() {
    assert_eq!(
        load_err("server:\n  port: abc\n"),
        "test.yaml:2:3: server.port: invalid port \"abc\": expected a number from 0 to 65535"
    );
    assert!(load_err("server:\n  port: 70000\n").starts_with("test.yaml:2:3: server.port:"));
    assert_eq!(
        load_err("server:\n  port: [1, 2]\n"),
        "test.yaml:2:3: server.port: expected a single value, found a list"
    );
    assert!(
        load_err("server: 8080\n")
            .starts_with("test.yaml:1:9: server: expected a mapping with keys address, port")
    );
    assert!(load_err("data_dir: {a: 1}\n").starts_with("test.yaml:1:1: data_dir: expected a"));
    assert!(load_err("server:\n  port:\n").contains("server.port: no value"));
    assert!(load_err("- 1\n").starts_with("test.yaml:1:1: expected a mapping of settings"));
    assert!(
        load_err("storage:\n  max_entries: 1MB\n")
            .starts_with("test.yaml:2:3: storage.max_entries: invalid number \"1MB\"")
    );
}

#[test]
fn yaml_syntax_errors_have_lines() {
    let err = load("server:\n  port: 1\n port: : 2\n").unwrap_err();
    let ConfigError::File { position, key, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(position.is_some(), "{err}");
    assert_eq!(*key, None);
    assert!(err.to_string().starts_with("test.yaml:"), "{err}");
    let dup = load_err("server:\n  port: 1\n  port: 2\n");
    assert_eq!(dup, "test.yaml:3:3: \"port\" is given twice");
}

#[test]
fn bad_durations_and_sizes_show_the_accepted_forms() {
    let err = load_err("wal:\n  sync_interval: 5\n");
    assert!(err.starts_with("test.yaml:2:3: wal.sync_interval: invalid duration \"5\""));
    assert!(err.contains("250ms, 1s, 2m, 1h"), "{err}");
    let err = load_err("wal:\n  max_file_size: 100M\n");
    assert!(err.starts_with("test.yaml:2:3: wal.max_file_size: invalid size \"100M\""));
    assert!(err.contains("KiB") && err.contains("100MB"), "{err}");
}

#[test]
fn zero_values_that_would_break_the_node_are_refused() {
    for (text, key) in [
        ("wal:\n  sync_interval: 0s\n", "wal.sync_interval"),
        ("wal:\n  max_file_size: 0\n", "wal.max_file_size"),
        ("limits:\n  max_key_bytes: 0\n", "limits.max_key_bytes"),
        (
            "storage:\n  eviction_samples: 0\n",
            "storage.eviction_samples",
        ),
        (
            "primary:\n  address: a:1\n  sync_interval: 0ms\n",
            "primary.sync_interval",
        ),
        ("server:\n  address: ''\n", "server.address"),
    ] {
        let err = load_err(text);
        assert!(err.contains(&format!("{key}: must")), "{text:?}: {err}");
    }
    // Unlimited and "pick a port" are zeros on purpose.
    load("server: {port: 0}\nstorage: {max_entries: 0, max_memory: 0, snapshot_after: 0}\n")
        .unwrap();
}

#[test]
fn replication_labels_and_flags_are_checked() {
    let err = load_err("replication:\n  labels: region\n");
    assert!(
        err.contains("replication.labels: expected labels as key=value pairs"),
        "{err}"
    );
    let err = load_err("replication:\n  allow_full_resync_from_empty: maybe\n");
    assert!(
        err.contains("replication.allow_full_resync_from_empty: expected true or false"),
        "{err}"
    );
    let config = load("replication: {labels: ''}\n").unwrap();
    assert!(config.replication.labels.is_empty());
}

#[test]
fn limits_must_fit_in_a_request() {
    let err = load_err("limits:\n  max_value_bytes: 16MiB\n");
    assert!(
        err.starts_with("test.yaml: limits.max_value_bytes: 16777216 bytes exceeds"),
        "{err}"
    );
}

#[test]
fn invalid_log_filters_are_refused() {
    assert!(
        load_err("log:\n  level: 'info,wasmkv=loud'\n").starts_with("test.yaml:2:3: log.level")
    );
}

#[test]
fn data_dir_and_wal_directory_are_one_setting() {
    let config = load("wal:\n  directory: /a\n").unwrap();
    assert_eq!(config.data_dir, Path::new("/a"));
    let config = load("data_dir: /a\nwal:\n  directory: /a\n").unwrap();
    assert_eq!(config.data_dir, Path::new("/a"));
    assert_eq!(
        load_err("data_dir: /a\nwal:\n  directory: /b\n"),
        "test.yaml:3:3: wal.directory: \"/b\" conflicts with data_dir = \"/a\" (line 1, column \
         1): both name the same setting; keep one"
    );
}

#[test]
fn master_is_primary() {
    let master = load("master:\n  address: m:8080\n  sync_interval: 2s\n").unwrap();
    let primary = load("primary:\n  address: m:8080\n  sync_interval: 2s\n").unwrap();
    assert_eq!(master, primary);
    assert!(master.is_replica());
    assert_eq!(master.primary_address(), Some("m:8080"));
    let err = load_err("primary:\n  address: a:1\nmaster:\n  address: a:1\n");
    assert!(
        err.starts_with("test.yaml:3:1: master: primary (line 1) and master are the same"),
        "{err}"
    );
}

#[test]
fn a_replica_needs_an_address() {
    for text in [
        "primary:\n",
        "primary: {}\n",
        "master:\n  sync_interval: 1s\n",
    ] {
        let err = load_err(text);
        assert!(err.starts_with("test.yaml:1:1: "), "{err}");
        assert!(err.contains(".address: required"), "{err}");
    }
}

#[test]
fn env_overrides_win() {
    let mut config = load("server:\n  port: 8080\nwal:\n  sync: never\n").unwrap();
    config
        .apply_env(env(&[
            ("WASMKV_SERVER__PORT", "9000"),
            ("wasmkv_wal__sync", "ALWAYS"),
            ("WASMKV_DATA_DIR", "/x"),
            ("WASMKV_STORAGE__MAX_MEMORY", "2GB"),
            ("WASMKV_LIMITS__MAX_VALUE_BYTES", "2MiB"),
            ("WASMKV_ADDR", "not ours"),
            ("HOME", "/root"),
        ]))
        .unwrap();
    config.validate().unwrap();
    assert_eq!(config.server.port, 9000);
    assert_eq!(config.wal.sync, SyncMode::Always);
    assert_eq!(config.data_dir, Path::new("/x"));
    assert_eq!(config.storage.max_memory, 2_000_000_000);
    assert_eq!(config.limits.max_value_bytes, 2 << 20);
}

#[test]
fn env_can_make_a_replica() {
    let mut config = Config::default();
    config
        .apply_env(env(&[
            ("WASMKV_MASTER__SYNC_INTERVAL", "5s"),
            ("WASMKV_MASTER__ADDRESS", "m:1"),
        ]))
        .unwrap();
    config.validate().unwrap();
    assert_eq!(config.primary_address(), Some("m:1"));
    assert_eq!(
        config.primary.unwrap().sync_interval,
        Duration::from_secs(5)
    );

    let mut config = Config::default();
    config
        .apply_env(env(&[("WASMKV_PRIMARY__SYNC_INTERVAL", "5s")]))
        .unwrap();
    let err = config.validate().unwrap_err().to_string();
    assert!(
        err.starts_with("invalid configuration: primary.address: required"),
        "{err}"
    );
}

#[test]
fn bad_env_values_name_the_variable() {
    let mut config = Config::default();
    let err = config
        .apply_env(env(&[("WASMKV_SERVER__PORT", "http")]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "environment variable WASMKV_SERVER__PORT: server.port: invalid port \"http\": expected \
         a number from 0 to 65535"
    );
    let err = config
        .apply_env(env(&[("WASMKV_STORAGE__EVICTION_POLICY", "lru2")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("WASMKV_STORAGE__EVICTION_POLICY: storage.eviction_policy: unknown"));
    let err = config
        .apply_env(env(&[("WASMKV_WAL__SYNC_INTERVAL", "10")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("WASMKV_WAL__SYNC_INTERVAL") && err.contains("1s"),
        "{err}"
    );
    let err = config
        .apply_env(env(&[
            ("WASMKV_WAL__DIRECTORY", "/b"),
            ("WASMKV_DATA_DIR", "/a"),
        ]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "environment variable WASMKV_WAL__DIRECTORY: wal.directory: \"/b\" conflicts with \
         data_dir = \"/a\" (WASMKV_DATA_DIR): both name the same setting; keep one"
    );
    let err = config
        .apply_env(env(&[("WASMKV_SERVER__PROT", "1")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected one of WASMKV_SERVER__ADDRESS, WASMKV_SERVER__PORT"));
}

#[test]
fn listen_addr_brackets_ipv6() {
    let mut config = Config::default();
    config.server.address = "::1".into();
    config.server.port = 7;
    assert_eq!(config.listen_addr(), "[::1]:7");
    config.server.address = "localhost".into();
    assert_eq!(config.listen_addr(), "localhost:7");
}
