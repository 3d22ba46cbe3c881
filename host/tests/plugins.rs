//! Plugins in a running node: the shipped plugins (built for wasm32 by `cargo xtask plugins`)
//! end to end, a hostile plugin contained, hot reload under load, and `wasmkv plugin check`.
//!
//! The shipped plugins come from `WASMKV_PLUGIN_DIR` (which `cargo xtask test` sets), else from
//! `<target dir>/plugins`; when neither has them they are built there once per test process.
//! Each node gets a plugin directory of its own, with copies, since a node watches its
//! directory and some tests change files in it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use tempfile::TempDir;
use wasmkv::api::Code;
use wasmkv::api::proto::{Mutation, Op, PluginInfo};
use wasmkv::client::{Client, ClientError, SetOptions};

/// The shipped plugins the tests use.
const SHIPPED: [&str; 3] = ["key-policy", "lfu-evict", "ttl-first-evict"];

/// How long a test waits for something that normally takes milliseconds.
const PATIENCE: Duration = Duration::from_secs(10);

/// Where cargo builds (as `cargo xtask` computes it).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host lives in the workspace")
        .to_owned()
}

/// The directory holding the built shipped plugins, building them on first use if needed.
fn shipped_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let complete = |dir: &Path| {
            SHIPPED
                .iter()
                .all(|name| dir.join(format!("{name}.wasm")).is_file())
        };
        if let Some(dir) = std::env::var_os("WASMKV_PLUGIN_DIR").map(PathBuf::from)
            && complete(&dir)
        {
            return dir;
        }
        let dir = target_dir().join("plugins");
        if !complete(&dir) {
            let status = Command::new(env!("CARGO"))
                .current_dir(workspace())
                .args(["run", "--quiet", "-p", "xtask", "--", "plugins", "--out"])
                .arg(&dir)
                .status()
                .expect("run cargo xtask plugins");
            assert!(status.success(), "cargo xtask plugins failed ({status})");
            assert!(
                complete(&dir),
                "cargo xtask plugins did not build {SHIPPED:?}"
            );
        }
        dir
    })
}

/// A fresh plugin directory holding copies of the shipped plugins `names`.
fn plugin_dir(names: &[&str]) -> TempDir {
    let dir = tempfile::tempdir().expect("create a plugin directory");
    for name in names {
        let file = format!("{name}.wasm");
        std::fs::copy(shipped_dir().join(&file), dir.path().join(&file))
            .unwrap_or_else(|e| panic!("copy {file}: {e}"));
    }
    dir
}

/// The `plugins:` section for `dir` with `limits` and `chains` (YAML lines indented by two).
fn plugins_yaml(dir: &Path, limits: &str, chains: &str) -> String {
    format!(
        "plugins:\n  dir: {:?}\n  limits: {limits}\n{chains}",
        dir.display().to_string()
    )
}

fn client(base: &str) -> Client {
    Client::new(base)
        .expect("a valid base URL")
        .with_timeout(common::REQUEST_DEADLINE)
}

/// The message of a `permission_denied` refusal; panics on anything else.
#[track_caller]
fn denied<T: std::fmt::Debug>(result: Result<T, ClientError>) -> String {
    match result {
        Err(ClientError::Rpc(e)) if e.code == Code::PermissionDenied => e.message,
        other => panic!("expected permission_denied, got {other:?}"),
    }
}

async fn plugin(client: &Client, name: &str) -> PluginInfo {
    client
        .list_plugins()
        .await
        .expect("ListPlugins")
        .into_iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("plugin {name} is not listed"))
}

async fn value(client: &Client, key: &str) -> Option<Bytes> {
    let resp = client.get(key.to_owned()).await.expect("get");
    resp.found.then_some(resp.value)
}

fn set(key: &str, value: &str) -> Mutation {
    Mutation {
        op: Op::Set as i32,
        key: Bytes::from(key.to_owned()),
        value: Bytes::from(value.to_owned()),
        ttl_ms: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_policy_vetoes_writes_with_its_reason_and_batches_whole() {
    let plugins = plugin_dir(&["key-policy"]);
    let yaml = plugins_yaml(
        plugins.path(),
        "{deadline: 1s}",
        "  validate:\n    - plugin: key-policy\n      config: {allowed_prefixes: [\"user:\"], \
         denied_prefixes: [\"user:admin\"]}\n",
    );
    let (node, base, _data) = common::start(&yaml).await;
    let client = client(&base);

    client
        .set("user:1", "ann", SetOptions::default())
        .await
        .expect("an allowed write succeeds");
    assert_eq!(value(&client, "user:1").await.as_deref(), Some(&b"ann"[..]));

    let message = denied(client.set("other", "x", SetOptions::default()).await);
    assert_eq!(
        message,
        "refused by plugin key-policy: key \"other\" does not start with an allowed prefix: user:"
    );
    let message = denied(client.delete("user:admin").await);
    assert_eq!(
        message,
        "refused by plugin key-policy: key \"user:admin\" starts with the denied prefix \
         \"user:admin\""
    );

    // One bad mutation refuses the whole batch: nothing of it is stored.
    let keys_before = client.status().await.unwrap().keys;
    let message = denied(
        client
            .write(vec![
                set("user:2", "a"),
                set("bad", "b"),
                set("user:3", "c"),
            ])
            .await,
    );
    assert_eq!(
        message,
        "mutation 1: refused by plugin key-policy: key \"bad\" does not start with an allowed \
         prefix: user:"
    );
    assert_eq!(value(&client, "user:2").await, None);
    assert_eq!(value(&client, "user:3").await, None);
    assert_eq!(client.status().await.unwrap().keys, keys_before);
    client
        .write(vec![set("user:2", "a"), set("user:3", "c")])
        .await
        .expect("a batch the policy allows is applied");
    assert_eq!(value(&client, "user:3").await.as_deref(), Some(&b"c"[..]));

    let info = plugin(&client, "key-policy").await;
    assert_eq!(
        (info.hooks.clone(), info.chains.clone()),
        (vec!["validate".to_owned()], vec!["validate".to_owned()])
    );
    assert!(
        info.calls >= 5 && info.errors + info.traps + info.timeouts == 0,
        "{info:?}"
    );
    assert_eq!(info.state, "loaded");

    // /metrics has the same figures.
    let metrics = common::request(Method::GET, &format!("{base}/metrics"), "")
        .await
        .text();
    let calls = format!(
        "wasmkv_plugin_calls_total{{plugin=\"key-policy\"}} {}",
        info.calls
    );
    assert!(metrics.contains(&calls), "{calls} in {metrics}");
    assert!(
        metrics.contains("wasmkv_plugin_healthy{plugin=\"key-policy\",state=\"loaded\"} 1"),
        "{metrics}"
    );

    // The CLI shows the same.
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_wasmkv"))
            .args(["plugin", "list", "--addr", &base])
            .output()
            .expect("run wasmkv plugin list")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("plugin: key-policy\n")
            && text.contains("\n  chains: validate\n")
            && text.contains("\n  state: loaded\n"),
        "{text}"
    );
    node.shutdown().await.unwrap();
}

/// A node whose store keeps at most 4 keys and evicts with `plugin`.
async fn evicting_node(
    plugin: &str,
    config: &str,
) -> (wasmkv::node::NodeHandle, Client, TempDir, TempDir) {
    let plugins = plugin_dir(&[plugin]);
    let yaml = format!(
        "storage:\n  max_entries: 4\n{}",
        plugins_yaml(
            plugins.path(),
            "{deadline: 1s}",
            &format!("  evict: {{plugin: {plugin}, config: {config}, sample: 16}}\n"),
        )
    );
    let (node, base, data) = common::start(&yaml).await;
    (node, client(&base), data, plugins)
}

async fn present(client: &Client, keys: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for key in keys {
        if value(client, key).await.is_some() {
            out.push((*key).to_owned());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_first_evict_evicts_the_nearest_expiry_first() {
    let (node, client, _data, _plugins) = evicting_node("ttl-first-evict", "{}").await;
    let ttl = |minutes: u64| SetOptions {
        ttl: Some(Duration::from_secs(60 * minutes)),
        ..SetOptions::default()
    };
    // The oldest keys have no TTL: LRU would evict them; this policy takes the volatile ones.
    client.set("p1", "v", SetOptions::default()).await.unwrap();
    client.set("p2", "v", SetOptions::default()).await.unwrap();
    client.set("t-late", "v", ttl(120)).await.unwrap();
    client.set("t-soon", "v", ttl(60)).await.unwrap();
    let all = ["p1", "p2", "t-late", "t-soon", "p3", "p4"];

    client.set("p3", "v", SetOptions::default()).await.unwrap();
    assert_eq!(present(&client, &all).await, ["p1", "p2", "t-late", "p3"]);
    client.set("p4", "v", SetOptions::default()).await.unwrap();
    assert_eq!(present(&client, &all).await, ["p1", "p2", "p3", "p4"]);

    let info = plugin(&client, "ttl-first-evict").await;
    assert!(
        info.calls > 0 && info.errors + info.traps + info.timeouts == 0,
        "{info:?}"
    );
    assert_eq!(info.chains, ["evict"]);
    assert_eq!(client.status().await.unwrap().evicted_keys, 2);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lfu_evict_keeps_keys_read_often_and_evicts_never_read_ones() {
    let (node, client, _data, _plugins) =
        evicting_node("lfu-evict", "{half_life_ms: 600000}").await;
    for key in ["a", "b", "c"] {
        client.set(key, "v", SetOptions::default()).await.unwrap();
    }
    for _ in 0..20 {
        for key in ["a", "b", "c"] {
            assert!(value(&client, key).await.is_some());
        }
    }
    // d is the most recently used key (LRU would keep it and evict a) but was never read.
    client.set("d", "v", SetOptions::default()).await.unwrap();
    client.set("e", "v", SetOptions::default()).await.unwrap();
    // Reading a key counts as a use, so e is not read until f has landed.
    assert_eq!(
        present(&client, &["a", "b", "c", "d"]).await,
        ["a", "b", "c"]
    );
    client.set("f", "v", SetOptions::default()).await.unwrap();
    assert_eq!(present(&client, &["d", "e", "f"]).await, ["f"]);
    assert_eq!(present(&client, &["a", "b", "c"]).await, ["a", "b", "c"]);

    let info = plugin(&client, "lfu-evict").await;
    assert!(
        info.calls > 0 && info.errors + info.traps + info.timeouts == 0,
        "{info:?}"
    );
    assert_eq!(info.chains, ["evict"]);
    node.shutdown().await.unwrap();
}

/// A validator in WAT that answers every call with the CBOR `reply` (or runs `body` instead).
/// Its allocator hands out the same buffer each time: the host writes one input per call.
fn wat_validator(reply: &[u8], body: Option<&str>) -> String {
    let data: String = reply.iter().map(|b| format!("\\{b:02x}")).collect();
    let answer = format!(
        "(i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const {}))",
        reply.len()
    );
    format!(
        r#"(module
  (memory (export "memory") 1)
  (data (i32.const 16) "{data}")
  (func (export "wasmkv_abi_v1") (result i32) (i32.const 1))
  (func (export "wasmkv_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "wasmkv_free") (param i32 i32))
  (func (export "wasmkv_validate") (param i32 i32) (result i64)
    {}))"#,
        body.unwrap_or(&answer)
    )
}

/// The CBOR verdict `{"allow": allow, "reason": reason}` (reason shorter than 256 bytes).
fn verdict(allow: bool, reason: &str) -> Vec<u8> {
    let mut out = vec![0xa2, 0x65];
    out.extend(b"allow");
    out.push(if allow { 0xf5 } else { 0xf4 });
    out.push(0x66);
    out.extend(b"reason");
    match reason.len() {
        n @ 0..24 => out.push(0x60 + n as u8),
        n => out.extend([0x78, u8::try_from(n).expect("a short reason")]),
    }
    out.extend(reason.as_bytes());
    out
}

/// Replace `dir/NAME.wasm` with `contents` in one step (a rename), as a deploy should.
fn install(dir: &Path, name: &str, contents: &[u8]) {
    let staged = dir.join(format!(".{name}.staged"));
    std::fs::write(&staged, contents).unwrap();
    std::fs::rename(&staged, dir.join(format!("{name}.wasm"))).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_validator_is_contained_and_the_node_keeps_serving() {
    // Data written before the plugin is installed, to read back while it misbehaves.
    let data = tempfile::tempdir().unwrap();
    let (node, base) = common::start_in(data.path(), "").await.unwrap();
    client(&base)
        .set("seeded", "still here", SetOptions::default())
        .await
        .unwrap();
    node.shutdown().await.unwrap();

    let plugins = tempfile::tempdir().unwrap();
    install(
        plugins.path(),
        "hostile",
        wat_validator(&[], Some("(loop (br 0)) (unreachable)")).as_bytes(),
    );
    let yaml = plugins_yaml(
        plugins.path(),
        "{deadline: 50ms}",
        "  validate:\n    - plugin: hostile\n",
    );
    let (node, base) = common::start_in(data.path(), &yaml).await.unwrap();
    let client = client(&base);

    let message = denied(client.set("k", "v", SetOptions::default()).await);
    assert_eq!(
        message,
        "plugin hostile failed (exceeded its 50ms deadline) and its chain step rejects on error \
         (on_error: reject)"
    );
    // Every later write is refused too (by the deadline, then by the back-off it earns), and
    // none of them takes the node down.
    for i in 0..8 {
        let message = denied(
            client
                .set(format!("k{i}"), "v", SetOptions::default())
                .await,
        );
        assert!(message.starts_with("plugin hostile failed"), "{message}");
    }
    assert_eq!(
        value(&client, "seeded").await.as_deref(),
        Some(&b"still here"[..])
    );
    assert_eq!(value(&client, "k").await, None);
    let health = common::request(Method::GET, &format!("{base}/healthz"), "").await;
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(client.status().await.unwrap().keys, 1);
    let info = plugin(&client, "hostile").await;
    assert!(info.timeouts >= 5, "{info:?}");
    assert_eq!(info.state, "backed off after repeated failures");
    node.shutdown().await.unwrap();
}

/// What one write of the writer task saw.
struct Outcome {
    started: Instant,
    finished: Instant,
    result: Result<(), String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_under_load_swaps_versions_and_ignores_broken_files_and_deletion() {
    const REASON: &str = "gate v2 refuses every write";
    let plugins = tempfile::tempdir().unwrap();
    let dir = plugins.path().to_owned();
    install(
        &dir,
        "gate",
        wat_validator(&verdict(true, ""), None).as_bytes(),
    );
    let yaml = plugins_yaml(&dir, "{deadline: 1s}", "  validate:\n    - plugin: gate\n");
    let (node, base, _data) = common::start(&yaml).await;
    let client = client(&base);
    let first_sha = plugin(&client, "gate").await.sha256;

    // A writer that writes until told to stop, recording every outcome.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let (client, stop, done) = (client.clone(), Arc::clone(&stop), Arc::clone(&done));
        async move {
            let mut outcomes = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let result = client
                    .set(format!("w{i}"), "v", SetOptions::default())
                    .await
                    .map(drop)
                    .map_err(|e| match e {
                        ClientError::Rpc(e) if e.code == Code::PermissionDenied => e.message,
                        other => format!("UNEXPECTED {other}"),
                    });
                outcomes.push(Outcome {
                    started,
                    finished: Instant::now(),
                    result,
                });
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            outcomes
        }
    });
    let progress = |from: usize| {
        let done = Arc::clone(&done);
        async move {
            common::wait_for("the writer to make progress", PATIENCE, || {
                let n = done.load(Ordering::Relaxed);
                async move { (n >= from + 20).then_some(()) }
            })
            .await
        }
    };
    progress(0).await;

    // The new version: every write is refused with its reason within a second of landing.
    let swapped = Instant::now();
    install(
        &dir,
        "gate",
        wat_validator(&verdict(false, REASON), None).as_bytes(),
    );
    let expected = format!("refused by plugin gate: {REASON}");
    common::wait_for("the new version to refuse writes", PATIENCE, || {
        let client = client.clone();
        let expected = expected.clone();
        async move {
            match client.set("probe", "x", SetOptions::default()).await {
                Err(ClientError::Rpc(e)) if e.message == expected => Some(()),
                _ => None,
            }
        }
    })
    .await;
    let visible = Instant::now();
    let took = visible - swapped;
    assert!(
        took < Duration::from_secs(1),
        "the new version took {took:?}"
    );
    let new_sha = plugin(&client, "gate").await.sha256;
    assert_ne!(new_sha, first_sha);
    progress(done.load(Ordering::Relaxed)).await;

    // A broken file is refused; the running version stays, and the list says why.
    install(&dir, "gate", b"this is not wasm");
    let info = common::wait_for("the broken file to be refused", PATIENCE, || {
        let client = client.clone();
        async move {
            let info = plugin(&client, "gate").await;
            (!info.last_error.is_empty()).then_some(info)
        }
    })
    .await;
    assert!(
        info.last_error.contains("not a valid WebAssembly module"),
        "{info:?}"
    );
    assert_eq!(
        (info.state.as_str(), info.sha256.as_str()),
        (
            "new file refused; running the last good version",
            new_sha.as_str()
        )
    );
    progress(done.load(Ordering::Relaxed)).await;

    // Deleting the file changes nothing either.
    std::fs::remove_file(dir.join("gate.wasm")).unwrap();
    let info = common::wait_for("the deletion to be noticed", PATIENCE, || {
        let client = client.clone();
        async move {
            let info = plugin(&client, "gate").await;
            (info.state == "file removed; running the last good version").then_some(info)
        }
    })
    .await;
    assert_eq!(info.sha256, new_sha);
    progress(done.load(Ordering::Relaxed)).await;

    stop.store(true, Ordering::Relaxed);
    let outcomes = writer.await.unwrap();
    let (mut before, mut after) = (0, 0);
    for (i, o) in outcomes.iter().enumerate() {
        if o.finished < swapped {
            assert_eq!(o.result, Ok(()), "write {i} before the swap");
            before += 1;
        } else if o.started > visible {
            assert_eq!(
                o.result.as_ref(),
                Err(&expected),
                "write {i} after the swap"
            );
            after += 1;
        } else {
            assert!(
                o.result.is_ok() || o.result.as_ref() == Err(&expected),
                "write {i} during the swap: {:?}",
                o.result
            );
        }
    }
    assert!(
        before >= 20 && after >= 60,
        "{before} writes before, {after} after"
    );
    node.shutdown().await.unwrap();
}

/// A validator whose `wasmkv_validate` loops forever, as binary wasm (the `wasmkv` binary, a
/// release build, need not read WAT): `(loop (br 0)) (unreachable)`.
fn stuck_validator() -> Vec<u8> {
    fn section(id: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![id, u8::try_from(body.len()).expect("a small section")];
        out.extend(body);
        out
    }
    fn export(name: &str, kind: u8, index: u8) -> Vec<u8> {
        let mut out = vec![name.len() as u8];
        out.extend(name.as_bytes());
        out.extend([kind, index]);
        out
    }
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    // () -> i32, (i32) -> i32, (i32 i32) -> (), (i32 i32) -> i64
    module.extend(section(
        1,
        &[
            4, 0x60, 0, 1, 0x7f, 0x60, 1, 0x7f, 1, 0x7f, 0x60, 2, 0x7f, 0x7f, 0, 0x60, 2, 0x7f,
            0x7f, 1, 0x7e,
        ],
    ));
    module.extend(section(3, &[4, 0, 1, 2, 3]));
    module.extend(section(5, &[1, 0, 1]));
    let mut exports = vec![5];
    exports.extend(export("memory", 2, 0));
    for (i, name) in [
        "wasmkv_abi_v1",
        "wasmkv_alloc",
        "wasmkv_free",
        "wasmkv_validate",
    ]
    .iter()
    .enumerate()
    {
        exports.extend(export(name, 0, i as u8));
    }
    module.extend(section(7, &exports));
    module.extend(section(
        10,
        &[
            4, // bodies
            4, 0, 0x41, 1, 0x0b, // i32.const 1
            5, 0, 0x41, 0x80, 0x08, 0x0b, // i32.const 1024
            2, 0, 0x0b, // nothing
            8, 0, 0x03, 0x40, 0x0c, 0, 0x0b, 0x00, 0x0b, // loop br 0 end unreachable
        ],
    ));
    module
}

/// `wasmkv plugin check ARGS...`: exit status, stdout, stderr.
fn plugin_check(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wasmkv"))
        .args(["plugin", "check"])
        .args(args)
        // Generous, for a loaded machine; the stuck validator shows it still applies.
        .args(["--deadline", "1s"])
        .output()
        .expect("run wasmkv plugin check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plugin_check_passes_good_plugins_and_names_what_is_wrong_with_bad_ones() {
    let dir = plugin_dir(&SHIPPED);
    let file = |name: &str| {
        dir.path()
            .join(format!("{name}.wasm"))
            .display()
            .to_string()
    };

    let (code, out, err) = plugin_check(&[
        &file("key-policy"),
        "--config",
        "{allowed_prefixes: [\"sample-\"]}",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ok: exports the hooks: validate\n")
            && out.contains("wasmkv_init accepted the config")
            && out.contains("ok: validate: set \"sample-key\" = \"v\" -> allowed")
            && out.ends_with("plugin key-policy passed (1 sample call(s))\n"),
        "{out}"
    );

    let config = dir.path().join("lfu.yaml");
    std::fs::write(&config, "half_life_ms: 1000\n").unwrap();
    let (code, out, err) =
        plugin_check(&[&file("lfu-evict"), "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ok: evict: ") && out.contains("victims [cold"),
        "{out}"
    );

    // A config the plugin refuses: its own words.
    let (code, _, err) = plugin_check(&[&file("lfu-evict"), "--config", "half_life: 10m"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("wasmkv_init refused its config") && err.contains("unknown field `half_life`"),
        "{err}"
    );

    // A hook the module does not have.
    let (code, _, err) = plugin_check(&[&file("ttl-first-evict"), "--hook", "validate"]);
    assert_eq!(code, 2);
    assert!(err.contains("does not export wasmkv_validate"), "{err}");

    // Not wasm at all.
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, "not wasm").unwrap();
    let (code, out, err) = plugin_check(&[broken.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(
        err.starts_with("error: plugin broken: not a valid WebAssembly module"),
        "{err}"
    );

    // A validator that never answers fails its sample call, naming the deadline.
    let stuck = dir.path().join("stuck.wasm");
    std::fs::write(&stuck, stuck_validator()).unwrap();
    let (code, out, err) = plugin_check(&[stuck.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("ok: exports the hooks: validate"), "{out}");
    assert!(
        err.contains("the sample wasmkv_validate call") && err.contains("deadline"),
        "{err}"
    );
}

/// SIGHUP's work: chains replaced at run time from a new `plugins:` section; a bad one leaves
/// the running chains alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_are_replaced_at_run_time_and_a_bad_reload_changes_nothing() {
    let plugins = plugin_dir(&["key-policy"]);
    let chain = |prefix: &str| {
        format!(
            "  validate:\n    - plugin: key-policy\n      config: {{allowed_prefixes: [\"{prefix}\"]}}\n"
        )
    };
    let yaml = plugins_yaml(plugins.path(), "{deadline: 1s}", &chain("a:"));
    let (node, base, _data) = common::start(&yaml).await;
    let client = client(&base);
    client
        .set("a:1", "x", SetOptions::default())
        .await
        .expect("allowed");
    denied(client.set("b:1", "x", SetOptions::default()).await);

    let reloaded = |yaml: String| {
        wasmkv::config::Config::from_yaml_str(&yaml, "reload.yaml")
            .expect("valid config")
            .plugins
    };
    node.reload_plugins(&reloaded(plugins_yaml(
        plugins.path(),
        "{deadline: 1s}",
        &chain("b:"),
    )))
    .await
    .expect("reload");
    client
        .set("b:1", "x", SetOptions::default())
        .await
        .expect("allowed after the reload");
    denied(client.set("a:2", "x", SetOptions::default()).await);

    let missing = "  validate:\n    - plugin: absent\n";
    let err = node
        .reload_plugins(&reloaded(plugins_yaml(
            plugins.path(),
            "{deadline: 1s}",
            missing,
        )))
        .await
        .expect_err("a chain naming a missing plugin is refused");
    assert!(
        err.to_string().contains("absent.wasm does not exist"),
        "{err}"
    );
    client
        .set("b:2", "x", SetOptions::default())
        .await
        .expect("the old chain still runs");

    node.reload_plugins(&reloaded(String::new()))
        .await
        .expect("no chains");
    client
        .set("c:1", "x", SetOptions::default())
        .await
        .expect("no validator any more");
    node.shutdown().await.expect("clean shutdown");
}

/// prefix-filter on a primary: a replica labelled `region=us` never receives `eu:` keys, in
/// the copy of a full resync or in the log after it, yet holds every other key and the same
/// LSN as its primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_replica_never_receives_filtered_keys_and_converges_on_the_rest() {
    let plugins = plugin_dir(&["prefix-filter"]);
    let yaml = plugins_yaml(
        plugins.path(),
        "{deadline: 1s}",
        "  replicate:\n    - plugin: prefix-filter\n      config: {rules: [{labels: {region: us}, \
         deny_prefixes: [\"eu:\"]}]}\n      replicas: {labels: {region: us}}\n",
    );
    let (primary, base, _data) = common::start(&yaml).await;
    let writer = client(&base);
    let keys = |round: u32| -> Vec<String> {
        (0..20)
            .flat_map(|i| [format!("eu:{round}:{i}"), format!("us:{round}:{i}")])
            .collect()
    };
    // Round 0 reaches the replica in its full resync, round 1 through the log.
    for key in keys(0) {
        writer
            .set(key, "v", SetOptions::default())
            .await
            .expect("set");
    }
    let addr = base.trim_start_matches("http://");
    let (replica, replica_base, _replica_data) = common::start(&format!(
        "primary: {{address: \"{addr}\", sync_interval: 50ms}}\nreplication: {{labels: \"region=us\"}}\n"
    ))
    .await;
    for key in keys(1) {
        writer
            .set(key, "v", SetOptions::default())
            .await
            .expect("set");
    }
    writer
        .delete("us:0:0")
        .await
        .expect("a delete of a kept key reaches the replica too");
    let reader = client(&replica_base);
    let lsn = writer.status().await.expect("status").lsn;
    common::wait_for(
        "the replica to reach the primary's LSN",
        Duration::from_secs(20),
        || async { (reader.status().await.ok()?.lsn >= lsn).then_some(()) },
    )
    .await;
    for round in [0, 1] {
        for key in keys(round) {
            let expected = key.starts_with("us:") && key != "us:0:0";
            assert_eq!(
                value(&reader, &key).await.is_some(),
                expected,
                "{key} on the replica"
            );
            assert_eq!(
                value(&writer, &key).await.is_some(),
                key != "us:0:0",
                "{key} on the primary"
            );
        }
    }
    assert!(plugin(&writer, "prefix-filter").await.calls > 0);
    replica.shutdown().await.expect("clean shutdown");
    primary.shutdown().await.expect("clean shutdown");
}
