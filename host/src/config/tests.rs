use super::*;
use crate::auth::{Role, TokenEntry, parse_sha256};
use crate::storage::BUILTIN_POLICIES;
use crate::tls::{ClientTls, ServerTls};

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
         server: {address: 0.0.0.0, port: 0, allow_insecure_remote: true, threads: 3,\n\
           tls: {cert: s.pem, key: s.key, client_ca: ca.pem}}\n\
         wal: {sync: always, sync_interval: 250ms, max_file_size: 100MB}\n\
         storage:\n  max_entries: 10\n  max_memory: 1GiB\n  eviction_policy: volatile-ttl\n  \
         eviction_samples: 7\n  disk_reserve: 1MB\n  snapshot_after: 0\n\
         limits: {max_key_bytes: 512, max_value_bytes: 64KiB, max_request_bytes: 1MiB,\n\
           max_batch_keys: 50, max_connections: 7, header_read_timeout: 2s,\n\
           body_read_timeout: 3s, max_streams_per_connection: 9}\n\
         primary: {address: 'p:1', sync_interval: 2m}\n\
         replication: {backlog_max: 1MB, backlog_max_age: 5m, labels: 'region=us, zone = a',\n\
           advertise: 'r1:8081', allow_full_resync_from_empty: true,\n\
           tls: {ca: ca.pem, cert: c.pem, key: c.key, server_name: db1}, token_file: rt}\n\
         auth:\n  tokens:\n    - {name: app, role: write, sha256: '{APP}'}\n  \
         token_file: t.yaml\n  protect_metrics: true\n\
         log: {level: 'wasmkv=debug,info'}\n"
            .replace("{APP}", &crate::auth::sha256_hex("app-token"))
            .as_str(),
    )
    .unwrap();
    assert_eq!(
        config,
        Config {
            data_dir: PathBuf::from("/srv/kv"),
            server: ServerConfig {
                address: "0.0.0.0".into(),
                port: 0,
                allow_insecure_remote: true,
                tls: Some(ServerTls {
                    cert: "s.pem".into(),
                    key: "s.key".into(),
                    client_ca: Some("ca.pem".into()),
                }),
                threads: 3,
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
                max_request_bytes: 1 << 20,
                max_batch_keys: 50,
                max_connections: 7,
                header_read_timeout: Duration::from_secs(2),
                body_read_timeout: Duration::from_secs(3),
                max_streams_per_connection: 9,
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
                tls: Some(ClientTls {
                    ca: Some("ca.pem".into()),
                    cert: Some("c.pem".into()),
                    key: Some("c.key".into()),
                    server_name: Some("db1".into()),
                }),
                token_file: Some("rt".into()),
            },
            plugins: PluginsConfig::default(),
            auth: AuthConfig {
                tokens: vec![TokenEntry {
                    name: "app".into(),
                    role: Role::Write,
                    sha256: parse_sha256(&crate::auth::sha256_hex("app-token")).unwrap(),
                }],
                token_file: Some("t.yaml".into()),
                protect_metrics: true,
            },
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

/// A node with one connection thread lets that thread fdatasync its own group commits; with
/// several, or one per CPU on a machine with several, the WAL's flusher gathers them.
#[test]
fn one_connection_thread_syncs_its_own_group_commits() {
    let threads = |n: u64| load(&format!("server:\n  threads: {n}\n")).unwrap();
    assert!(threads(1).db_options().wal.inline_fsync);
    assert!(!threads(2).db_options().wal.inline_fsync);
    // 0 is a thread per CPU: one connection thread only on a one-CPU machine.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_cpu = threads(0);
    assert_eq!(per_cpu.server.connection_threads(), cpus);
    assert_eq!(per_cpu.db_options().wal.inline_fsync, cpus == 1);
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

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn every_plugins_key_is_read() {
    let config = load(
        "plugins:
  dir: /opt/wasmkv/plugins
  limits:
    memory: 32MiB
    deadline: 5ms
    fuel: 1000000
  validate:
    - plugin: key-policy
      config: {allowed_prefixes: ['user:'], max_key_bytes: 256}
      on_error: allow
    - plugin: size-cap
      on_error: reject
  evict:
    plugin: lfu-evict
    config: {half_life: 10m}
    sample: 64
  replicate:
    - plugin: prefix-filter
      config: {prefixes: ['eu:']}
      replicas:
        labels: {region: eu, rack: 3}
      on_error: send
    - {plugin: audit, on_error: hold}
",
    )
    .unwrap();
    assert_eq!(
        config.plugins,
        PluginsConfig {
            dir: PathBuf::from("/opt/wasmkv/plugins"),
            limits: PluginLimits {
                memory: 32 << 20,
                deadline: Duration::from_millis(5),
                fuel: 1_000_000,
            },
            validate: vec![
                ValidateStep {
                    plugin: "key-policy".into(),
                    config: json(r#"{"allowed_prefixes": ["user:"], "max_key_bytes": 256}"#),
                    on_error: ValidateOnError::Allow,
                },
                ValidateStep {
                    plugin: "size-cap".into(),
                    config: json("{}"),
                    on_error: ValidateOnError::Reject,
                },
            ],
            evict: Some(EvictStep {
                plugin: "lfu-evict".into(),
                config: json(r#"{"half_life": "10m"}"#),
                sample: 64,
            }),
            replicate: vec![
                ReplicateStep {
                    plugin: "prefix-filter".into(),
                    config: json(r#"{"prefixes": ["eu:"]}"#),
                    labels: labels(&[("region", "eu"), ("rack", "3")]),
                    on_error: FilterOnError::Send,
                },
                ReplicateStep {
                    plugin: "audit".into(),
                    config: json("{}"),
                    labels: labels(&[]),
                    on_error: FilterOnError::Hold,
                },
            ],
        }
    );
    assert!(!config.plugins.is_empty());
}

#[test]
fn plugins_defaults() {
    let defaults = PluginsConfig::default();
    assert!(defaults.is_empty());
    assert_eq!(defaults.dir, Path::new("plugins"));
    assert_eq!(
        defaults.limits,
        PluginLimits {
            memory: 16 << 20,
            deadline: Duration::from_millis(2),
            fuel: 0
        }
    );
    // An empty section or chain is no chain.
    for text in [
        "plugins:\n",
        "plugins: {}\n",
        "plugins:\n  limits:\n  validate:\n  evict:\n  replicate:\n",
        "plugins: {validate: [], replicate: []}\n",
    ] {
        assert_eq!(load(text).unwrap(), Config::default(), "{text:?}");
    }
    // A step names its plugin; everything else has a default.
    let config = load(
        "plugins:\n  validate: [{plugin: v}]\n  evict: {plugin: e}\n  \
         replicate: [{plugin: r}, {plugin: s, replicas: }, {plugin: t, replicas: {}}]\n",
    )
    .unwrap();
    let plugins = config.plugins;
    assert_eq!(
        plugins.validate,
        [ValidateStep {
            plugin: "v".into(),
            config: json("{}"),
            on_error: ValidateOnError::Reject
        }]
    );
    assert_eq!(
        plugins.evict,
        Some(EvictStep {
            plugin: "e".into(),
            config: json("{}"),
            sample: 16
        })
    );
    for (step, name) in plugins.replicate.iter().zip(["r", "s", "t"]) {
        assert_eq!(
            *step,
            ReplicateStep {
                plugin: name.into(),
                config: json("{}"),
                labels: labels(&[]),
                on_error: FilterOnError::Hold
            }
        );
    }
    assert_eq!(plugins.limits, PluginLimits::default());
}

#[test]
fn plugin_config_keeps_yaml_types() {
    let config = load(
        "plugins:
  validate:
    - plugin: p
      config:
        string: text
        quoted_number: '10'
        duration: 10m
        int: 42
        negative: -7
        big: 18446744073709551615
        float: 1.5
        bools: [true, false]
        nothing: null
        tilde: ~
        empty:
        list: [1, two, 3.0, [nested]]
        map: {a: {b: [x, {c: 1}]}}
        empty_map: {}
        empty_list: []
    - {plugin: p, config: 5}
    - {plugin: p, config: [a, 1]}
    - {plugin: p, config: null}
    - {plugin: p, config: yes}
",
    )
    .unwrap();
    let configs: Vec<_> = config
        .plugins
        .validate
        .into_iter()
        .map(|s| s.config)
        .collect();
    assert_eq!(
        configs,
        [
            json(
                r#"{"string": "text", "quoted_number": "10", "duration": "10m", "int": 42,
                    "negative": -7, "big": 18446744073709551615, "float": 1.5,
                    "bools": [true, false], "nothing": null, "tilde": null, "empty": null,
                    "list": [1, "two", 3.0, ["nested"]], "map": {"a": {"b": ["x", {"c": 1}]}},
                    "empty_map": {}, "empty_list": []}"#
            ),
            json("5"),
            json(r#"["a", 1]"#),
            json("null"),
            json("true"),
        ]
    );
    // Integers stay integers and floats floats, as the plugin will see them.
    let first = &configs[0];
    assert!(first["int"].is_u64() && first["negative"].is_i64() && first["float"].is_f64());
    assert!(first["list"][2].is_f64());
    // JSON has no infinity: one is refused where it is written.
    for config in ["{x: [!!float .inf]}", ".nan", "-.inf"] {
        let err = load_err(&format!(
            "plugins:\n  evict:\n    plugin: e\n    config: {config}\n"
        ));
        assert!(err.starts_with("test.yaml:4:"), "{err}");
    }
}

#[test]
fn plugin_step_errors_name_position_and_key() {
    for (text, expected) in [
        (
            "plugins:\n  validate:\n    - plugin: a\n    - plugin: b\n      on_error: maybe\n",
            "test.yaml:5:7: plugins.validate[1].on_error: expected reject or allow, got \"maybe\"",
        ),
        (
            "plugins:\n  replicate:\n    - {plugin: a, on_error: reject}\n",
            "test.yaml:3:19: plugins.replicate[0].on_error: expected hold or send, got \"reject\"",
        ),
        (
            "plugins:\n  validate:\n    - plugin: a\n      on_eror: allow\n",
            "test.yaml:4:7: plugins.validate[0].on_eror: unknown key; expected one of plugin, \
             config, on_error",
        ),
        (
            "plugins:\n  evict: {plugin: a, samples: 3}\n",
            "test.yaml:2:22: plugins.evict.samples: unknown key; expected one of plugin, config, \
             sample",
        ),
        (
            "plugins:\n  replicate:\n    - plugin: a\n      on_error: hold\n      \
             replicas: {lables: {a: b}}\n",
            "test.yaml:5:18: plugins.replicate[0].replicas.lables: unknown key; expected one of \
             labels",
        ),
        (
            "plugins:\n  valdate: []\n",
            "test.yaml:2:3: plugins.valdate: unknown key; expected one of dir, limits, validate, \
             evict, replicate",
        ),
        (
            "plugins:\n  limits: {memory: 1MiB, mem: 1MiB}\n",
            "test.yaml:2:26: plugins.limits.mem: unknown key; expected one of memory, deadline, \
             fuel",
        ),
        (
            "plugins:\n  validate:\n    - plugin: a\n    - config: {x: 1}\n      on_error: allow\n",
            "test.yaml:4:7: plugins.validate[1].plugin: required: the name of a file in \
             plugins.dir without .wasm, such as key-policy for key-policy.wasm",
        ),
        (
            "plugins:\n  evict:\n    sample: 3\n",
            "test.yaml:2:3: plugins.evict.plugin: required: the name of a file in plugins.dir \
             without .wasm, such as key-policy for key-policy.wasm",
        ),
    ] {
        assert_eq!(load_err(text), expected, "{text:?}");
    }
}

#[test]
fn plugin_shape_errors_name_position_and_key() {
    for (text, expected) in [
        (
            "plugins:\n  validate: {plugin: a}\n",
            "test.yaml:2:13: plugins.validate: expected a list, each item a mapping with \
             keys plugin, config, on_error; found a mapping",
        ),
        (
            "plugins:\n  replicate: prefix-filter\n",
            "test.yaml:2:14: plugins.replicate: expected a list, each item a mapping with \
             keys plugin, config, replicas, on_error; found a single value",
        ),
        (
            "plugins:\n  evict: [{plugin: a}]\n",
            "test.yaml:2:10: plugins.evict: expected a mapping with keys plugin, config, sample, \
             found a list",
        ),
        (
            "plugins:\n  validate:\n    - key-policy\n",
            "test.yaml:3:7: plugins.validate[0]: expected a mapping with keys plugin, config, \
             on_error, found a single value",
        ),
        (
            "plugins:\n  validate:\n    -\n",
            "test.yaml:3:6: plugins.validate[0]: expected a mapping with keys plugin, config, \
             on_error, found nothing",
        ),
        (
            "plugins:\n  validate:\n    - plugin: [a, b]\n",
            "test.yaml:3:7: plugins.validate[0].plugin: expected a single value, found a list",
        ),
        (
            "plugins:\n  validate:\n    - plugin:\n",
            "test.yaml:3:7: plugins.validate[0].plugin: no value; give one or remove the key for \
             the default",
        ),
        (
            "plugins:\n  replicate:\n    - {plugin: a, replicas: eu}\n",
            "test.yaml:3:29: plugins.replicate[0].replicas: expected a mapping with keys labels, \
             found a single value",
        ),
        (
            "plugins:\n  replicate:\n    - {plugin: a, replicas: {labels: [eu]}}\n",
            "test.yaml:3:38: plugins.replicate[0].replicas.labels: expected a mapping of label \
             names to values (region: us), found a list",
        ),
        (
            "plugins:\n  replicate:\n    - {plugin: a, replicas: {labels: {region: [eu]}}}\n",
            "test.yaml:3:39: plugins.replicate[0].replicas.labels.region: expected a single \
             value, found a list",
        ),
        (
            "plugins:\n  limits: 16MiB\n",
            "test.yaml:2:11: plugins.limits: expected a mapping with keys memory, deadline, \
             fuel, found a single value",
        ),
        (
            "plugins:\n  dir: [a]\n",
            "test.yaml:2:3: plugins.dir: expected a single value, found a list",
        ),
        (
            "plugins: [validate]\n",
            "test.yaml:1:10: plugins: expected a mapping with keys dir, limits, validate, evict, \
             replicate, found a list",
        ),
    ] {
        assert_eq!(load_err(text), expected, "{text:?}");
    }
}

#[test]
fn plugin_names_are_files_in_the_plugin_dir() {
    for (name, message) in [
        (
            "''",
            "must not be empty; expected the name of a file in plugins.dir",
        ),
        (
            "key-policy.wasm",
            "\"key-policy.wasm\" would be the file key-policy.wasm.wasm; write \"key-policy\" \
             (.wasm is added)",
        ),
        ("../evil", "invalid plugin name \"../evil\"; expected"),
        ("a/b", "invalid plugin name \"a/b\""),
        ("/abs", "invalid plugin name \"/abs\""),
        ("'a\\b'", "invalid plugin name \"a\\\\b\""),
        ("..", "invalid plugin name \"..\""),
    ] {
        let err = load_err(&format!("plugins:\n  evict:\n    plugin: {name}\n"));
        assert!(
            err.starts_with(&format!("test.yaml:3:5: plugins.evict.plugin: {message}")),
            "{name}: {err}"
        );
    }
    // Names that are not YAML strings are names all the same.
    let config = load("plugins:\n  validate: [{plugin: 2024}]\n").unwrap();
    assert_eq!(config.plugins.validate[0].plugin, "2024");
}

#[test]
fn evict_sample_is_a_count_from_1_to_1024() {
    for (sample, expected) in [("1", 1), ("1024", 1024)] {
        let config = load(&format!(
            "plugins:\n  evict: {{plugin: e, sample: {sample}}}\n"
        ))
        .unwrap();
        assert_eq!(config.plugins.evict.unwrap().sample, expected);
    }
    for (sample, message) in [
        ("0", "0 is out of range; expected 1 to 1024"),
        ("1025", "1025 is out of range; expected 1 to 1024"),
        ("99999999999999999999", "invalid number"),
        ("-1", "invalid number \"-1\""),
        ("16KiB", "invalid number \"16KiB\""),
    ] {
        let err = load_err(&format!(
            "plugins:\n  evict:\n    plugin: e\n    sample: {sample}\n"
        ));
        assert!(
            err.starts_with(&format!("test.yaml:4:5: plugins.evict.sample: {message}")),
            "{sample}: {err}"
        );
    }
}

#[test]
fn plugin_limits_are_checked() {
    for (text, message) in [
        (
            "memory: 32KiB",
            "plugins.limits.memory: must be at least 64KiB",
        ),
        ("memory: 16M", "plugins.limits.memory: invalid size \"16M\""),
        (
            "deadline: 0ms",
            "plugins.limits.deadline: must be longer than 0",
        ),
        (
            "deadline: 11s",
            "plugins.limits.deadline: must be at most 10s",
        ),
        (
            "deadline: 2",
            "plugins.limits.deadline: invalid duration \"2\"",
        ),
        ("fuel: -1", "plugins.limits.fuel: invalid number \"-1\""),
        ("fuel: 1.5", "plugins.limits.fuel: invalid number \"1.5\""),
    ] {
        let err = load_err(&format!("plugins:\n  limits:\n    {text}\n"));
        assert!(
            err.starts_with(&format!("test.yaml:3:5: {message}")),
            "{text}: {err}"
        );
    }
    let config = load("plugins:\n  limits: {memory: 64KiB, deadline: 10s, fuel: 0}\n").unwrap();
    assert_eq!(
        config.plugins.limits,
        PluginLimits {
            memory: 64 << 10,
            deadline: Duration::from_secs(10),
            fuel: 0
        }
    );
}

#[test]
fn env_overrides_plugin_dir_and_limits() {
    let mut config = load("plugins:\n  dir: ./p\n  limits: {memory: 32MiB}\n").unwrap();
    config
        .apply_env(env(&[
            ("WASMKV_PLUGINS__DIR", "/srv/plugins"),
            ("WASMKV_PLUGINS__LIMITS__MEMORY", "8MiB"),
            ("wasmkv_plugins__limits__deadline", "20ms"),
            ("WASMKV_PLUGINS__LIMITS__FUEL", "500000"),
        ]))
        .unwrap();
    config.validate().unwrap();
    assert_eq!(config.plugins.dir, Path::new("/srv/plugins"));
    assert_eq!(
        config.plugins.limits,
        PluginLimits {
            memory: 8 << 20,
            deadline: Duration::from_millis(20),
            fuel: 500_000
        }
    );
    for (var, value, expected) in [
        (
            "WASMKV_PLUGINS__LIMITS__MEMORY",
            "1KiB",
            "environment variable WASMKV_PLUGINS__LIMITS__MEMORY: plugins.limits.memory: must \
             be at least 64KiB, one WebAssembly page",
        ),
        (
            "WASMKV_PLUGINS__LIMITS",
            "x",
            "environment variable WASMKV_PLUGINS__LIMITS: plugins.limits is a section; set its \
             keys as WASMKV_PLUGINS__LIMITS__<KEY>",
        ),
        (
            "WASMKV_PLUGINS__LIMITS__MEM",
            "1MiB",
            "environment variable WASMKV_PLUGINS__LIMITS__MEM: plugins.limits.mem: unknown \
             setting; expected one of WASMKV_PLUGINS__LIMITS__MEMORY, \
             WASMKV_PLUGINS__LIMITS__DEADLINE, WASMKV_PLUGINS__LIMITS__FUEL",
        ),
        (
            "WASMKV_PLUGINS__VALIDATE",
            "key-policy",
            "environment variable WASMKV_PLUGINS__VALIDATE: plugins.validate: unknown setting; \
             expected one of WASMKV_PLUGINS__DIR, WASMKV_PLUGINS__LIMITS__MEMORY, \
             WASMKV_PLUGINS__LIMITS__DEADLINE, WASMKV_PLUGINS__LIMITS__FUEL",
        ),
        (
            "WASMKV_PLUGINS",
            "x",
            "environment variable WASMKV_PLUGINS: plugins is a section; set its keys as \
             WASMKV_PLUGINS__<KEY>",
        ),
    ] {
        let err = Config::default()
            .apply_env(env(&[(var, value)]))
            .unwrap_err()
            .to_string();
        assert_eq!(err, expected);
    }
}

#[test]
fn validate_checks_chains_built_by_hand() {
    let mut config = Config::default();
    config.plugins.replicate.push(ReplicateStep {
        plugin: "../x".into(),
        config: json("{}"),
        labels: labels(&[]),
        on_error: FilterOnError::Hold,
    });
    let err = config.validate().unwrap_err().to_string();
    assert!(
        err.starts_with("invalid configuration: plugins.replicate[0].plugin: invalid plugin name"),
        "{err}"
    );
    config.plugins.replicate.clear();
    config.plugins.evict = Some(EvictStep {
        plugin: "e".into(),
        config: json("{}"),
        sample: 0,
    });
    let err = config.validate().unwrap_err().to_string();
    assert_eq!(
        err,
        "invalid configuration: plugins.evict.sample: 0 is out of range; expected 1 to 1024"
    );
}

/// The commented `plugins:` section of `config/primary.yaml`, uncommented, loads and sets
/// every key.
#[test]
fn primary_yaml_documents_the_plugins_section() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/primary.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let section: String = text
        .lines()
        .skip_while(|line| *line != "# plugins:")
        .take_while(|line| !line.is_empty())
        .map(|line| format!("{}\n", line.strip_prefix("# ").unwrap_or("")))
        .collect();
    assert!(!section.is_empty(), "no commented plugins section");
    let config = load(&section).unwrap();
    let plugins = config.plugins;
    assert_eq!(plugins.dir, Path::new("plugins"));
    assert_eq!(plugins.limits, PluginLimits::default());
    let [validate] = &plugins.validate[..] else {
        panic!("{:?}", plugins.validate)
    };
    assert_eq!(validate.on_error, ValidateOnError::Reject);
    assert_eq!(plugins.evict.unwrap().sample, EvictStep::DEFAULT_SAMPLE);
    let [replicate] = &plugins.replicate[..] else {
        panic!("{:?}", plugins.replicate)
    };
    assert_eq!(replicate.labels, labels(&[("region", "us")]));
    assert_eq!(replicate.on_error, FilterOnError::Hold);
}

#[test]
fn token_entries_are_checked_where_they_are_written() {
    let digest = crate::auth::sha256_hex("t");
    let cases = [
        (
            format!("auth:\n  tokens:\n    - {{name: a, role: boss, sha256: {digest}}}\n"),
            "test.yaml:3:17: auth.tokens[0].role: unknown role \"boss\"; expected one of read, \
             write, admin, replication",
        ),
        (
            "auth:\n  tokens:\n    - {name: a, role: read, sha256: abc}\n".to_owned(),
            "test.yaml:3:29: auth.tokens[0].sha256: expected the 64 hex digits of a SHA-256 \
             (`wasmkv token new` prints it), got 3 characters",
        ),
        (
            "auth:\n  tokens:\n    - {name: a, role: read}\n".to_owned(),
            "test.yaml:3:7: auth.tokens[0].sha256: required",
        ),
        (
            format!("auth:\n  tokens:\n    - {{name: a, role: read, sha256: {digest}, x: 1}}\n"),
            "test.yaml:3:103: auth.tokens[0].x: unknown key; expected one of name, role, sha256",
        ),
        (
            "auth:\n  tokens: 5\n".to_owned(),
            "test.yaml:2:11: auth.tokens: expected a list, each item a mapping with keys name, \
             role, sha256; found a single value",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(load_err(&text), want, "{text}");
    }
    let plaintext = load_err(&format!(
        "auth:\n  tokens:\n    - {{name: a, role: read, sha256: {}}}\n",
        crate::auth::generate().unwrap()
    ));
    assert!(
        plaintext.contains("this is a token, not its SHA-256"),
        "{plaintext}"
    );
}

#[test]
fn token_files_add_tokens_and_names_must_differ() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.yaml");
    let entry = |name: &str, role: &str, token: &str| {
        format!(
            "- {{name: {name}, role: {role}, sha256: {}}}\n",
            crate::auth::sha256_hex(token)
        )
    };
    std::fs::write(&file, entry("ops", "admin", "ops-token")).unwrap();
    let mut config = load(&format!(
        "auth:\n  token_file: {:?}\n  tokens:\n    {}",
        file.display().to_string(),
        entry("app", "read", "app-token")
    ))
    .unwrap();
    assert!(config.auth.is_enabled());
    let set = config.auth.token_set().unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(set.verify("ops-token").unwrap().role, Role::Admin);
    assert_eq!(set.verify("app-token").unwrap().name, "app");

    std::fs::write(&file, entry("app", "admin", "other")).unwrap();
    let err = config.auth.token_set().unwrap_err().to_string();
    assert!(err.contains("two tokens are named \"app\""), "{err}");

    std::fs::write(&file, "- {name: x, role: nope, sha256: 00}\n").unwrap();
    let err = config.auth.token_set().unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}:1:", file.display())) && err.contains("unknown role"),
        "{err}"
    );

    std::fs::write(&file, "").unwrap();
    let err = config.auth.token_set().unwrap_err().to_string();
    assert!(err.contains("lists no tokens"), "{err}");

    config.auth.token_file = Some(dir.path().join("missing.yaml"));
    let err = config.auth.token_set().unwrap_err().to_string();
    assert!(err.contains("missing.yaml"), "{err}");
    assert!(!Config::default().auth.is_enabled());
}

#[test]
fn tls_settings_that_go_together_are_required_together() {
    assert_eq!(
        load_err("server:\n  tls:\n    cert: a.pem\n"),
        "test.yaml: server.tls.key: required: the PEM private key of server.tls.cert"
    );
    assert_eq!(
        load_err("server:\n  tls:\n    client_ca: ca.pem\n"),
        "test.yaml: server.tls.cert: required: the PEM certificate chain to serve, with \
         server.tls"
    );
    assert_eq!(
        load_err("replication:\n  tls:\n    key: c.key\n"),
        "test.yaml: replication.tls.cert: required: the client certificate of \
         replication.tls.key"
    );
    let config = load("replication:\n  tls:\n    ca: ca.pem\n").unwrap();
    assert!(
        !config.is_replica(),
        "link settings alone do not make a replica"
    );
    let mut config = Config::default();
    config
        .apply_env(env(&[
            ("WASMKV_SERVER__TLS__CERT", "s.pem"),
            ("WASMKV_SERVER__TLS__KEY", "s.key"),
            ("WASMKV_LIMITS__MAX_CONNECTIONS", "3"),
        ]))
        .unwrap();
    config.validate().unwrap();
    assert_eq!(config.server.tls.unwrap().key, PathBuf::from("s.key"));
    assert_eq!(config.limits.max_connections, 3);
}

#[test]
fn a_replica_may_set_its_link_in_its_primary_section() {
    let config = load(
        "primary:\n  address: 'p:1'\n  tls: {ca: ca.pem, server_name: db1}\n  token_file: rt\n",
    )
    .unwrap();
    let tls = config.replication.tls.as_ref().unwrap();
    assert_eq!(tls.ca.as_deref(), Some(Path::new("ca.pem")));
    assert_eq!(tls.server_name.as_deref(), Some("db1"));
    assert_eq!(
        config.replication.token_file.as_deref(),
        Some(Path::new("rt"))
    );
    assert!(
        load_err(
            "primary:\n  address: 'p:1'\n  tls: {ca: a.pem}\nreplication:\n  tls: {ca: b.pem}\n"
        )
        .contains("conflicts with primary.tls.ca"),
    );
    let seed_style = load("master:\n  address: 'p:1'\n  tls: {server_name: db2}\n").unwrap();
    assert_eq!(
        seed_style.replication.tls.unwrap().server_name.as_deref(),
        Some("db2")
    );
    let mut config = Config::default();
    config
        .apply_env(env(&[("WASMKV_PRIMARY__TLS__CA", "ca.pem")]))
        .unwrap();
    assert_eq!(
        config.replication.tls.unwrap().ca.as_deref(),
        Some(Path::new("ca.pem"))
    );
}

#[test]
fn server_threads_are_checked() {
    assert_eq!(load("server:\n  threads: 0\n").unwrap().server.threads, 0);
    for (text, message) in [
        ("threads: 1025", "server.threads: must be at most 1024"),
        ("threads: two", "server.threads: invalid number \"two\""),
    ] {
        let err = load_err(&format!("server:\n  {text}\n"));
        assert!(
            err.starts_with(&format!("test.yaml:2:3: {message}")),
            "{text}: {err}"
        );
    }
}
