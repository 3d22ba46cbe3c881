//! The sandbox against hostile plugins, written in WAT: each is refused at load or contained
//! at call time with a clear message.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::{PluginLimits, ValidateOnError, ValidateStep as ValidateConfig};

/// A plugin module: the ABI's required exports around `body`, the text of `wasmkv_validate`.
/// Memory 0 holds the reply `{"allow": true, "reason": ""}` at offset 16 (16 bytes) and a
/// bump allocator from offset 1024.
fn module(imports: &str, body: &str, extra: &str) -> String {
    format!(
        r#"(module
  {imports}
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 1024))
  (data (i32.const 16) "\a2\65allow\f5\66reason\60")
  (func (export "wasmkv_abi_v1") (result i32) (i32.const 1))
  (func (export "wasmkv_alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $len)))
    (local.get $p))
  (func (export "wasmkv_free") (param i32 i32))
  (func $validate (export "wasmkv_validate") (param $ptr i32) (param $len i32) (result i64)
    {body})
  {extra}
)"#
    )
}

/// The reply at offset 16 (16 bytes): allow.
const ALLOW: &str = "(i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 16))";

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(format!("{name}.wasm")), text).unwrap();
}

fn config(dir: &Path, names: &[&str]) -> PluginsConfig {
    PluginsConfig {
        dir: dir.to_owned(),
        limits: PluginLimits {
            deadline: Duration::from_millis(20),
            ..PluginLimits::default()
        },
        validate: names
            .iter()
            .map(|name| ValidateConfig {
                plugin: (*name).to_owned(),
                config: serde_json::json!({}),
                on_error: ValidateOnError::Reject,
            })
            .collect(),
        ..PluginsConfig::default()
    }
}

fn check(plugins: &Plugins) -> Result<(), String> {
    plugins.validate.check(&WriteCheck {
        delete: false,
        key: b"k",
        value: b"v",
        ttl_ms: 0,
    })
}

fn load_one(text: &str) -> Result<Plugins, LoadError> {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p", text);
    Plugins::load(&config(dir.path(), &["p"]), None)
}

/// A plugin that loads, and the reason its call is refused.
fn refusal(body: &str, extra: &str) -> (Plugins, String) {
    let plugins = load_one(&module("", body, extra)).expect("loads");
    let reason = check(&plugins).expect_err("refused");
    (plugins, reason)
}

#[test]
fn a_well_behaved_plugin_allows_and_is_counted() {
    let plugins = load_one(&module("", ALLOW, "")).unwrap();
    for _ in 0..3 {
        check(&plugins).unwrap();
    }
    let info = &plugins.list()[0];
    assert_eq!((info.calls, info.errors, info.traps), (3, 0, 0));
    assert_eq!(info.hooks, ["validate"]);
    assert_eq!(info.state, "loaded");
    assert_eq!(info.sha256.len(), 64);
}

#[test]
fn an_infinite_loop_hits_the_deadline() {
    let (plugins, reason) = refusal("(loop (br 0)) (unreachable)", "");
    assert!(reason.contains("deadline"), "{reason}");
    assert_eq!(plugins.list()[0].timeouts, 1);
    // The instance was discarded; the next call gets a fresh one and times out again.
    assert!(check(&plugins).unwrap_err().contains("deadline"));
}

#[test]
fn deep_recursion_traps() {
    let (plugins, reason) = refusal(
        "(call $recurse (i32.const 0)) (drop) (i64.const 0)",
        "(func $recurse (param i32) (result i32) (call $recurse (i32.add (local.get 0) (i32.const 1))))",
    );
    assert!(
        reason.contains("trapped") && reason.contains("stack"),
        "{reason}"
    );
    assert_eq!(plugins.list()[0].traps, 1);
}

#[test]
fn memory_growth_is_capped() {
    // 17 MiB more than the 16 MiB cap: memory.grow fails (-1), and the plugin traps on it.
    let (_, reason) = refusal(
        "(if (i32.eq (memory.grow (i32.const 272)) (i32.const -1)) (then (unreachable))) (i64.const 0)",
        "",
    );
    assert!(reason.contains("unreachable"), "{reason}");
    // A module that asks for more than the cap up front cannot even be instantiated.
    let text = module("", ALLOW, "").replace(
        "(memory (export \"memory\") 1)",
        "(memory (export \"memory\") 300)",
    );
    let err = load_one(&text).err().expect("refused").to_string();
    assert!(
        err.contains("wasmkv_init refused") || err.contains("memory"),
        "{err}"
    );
}

#[test]
fn a_trap_in_init_refuses_the_plugin() {
    let extra = r#"(func (export "wasmkv_init") (param i32 i32) (result i64) (unreachable))"#;
    let err = load_one(&module("", ALLOW, extra))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("plugin p: wasmkv_init refused its config") && err.contains("unreachable"),
        "{err}"
    );
}

#[test]
fn garbage_and_oversized_output_are_plugin_errors() {
    // The reply is the first 3 bytes of the verdict at offset 16: not a whole CBOR item.
    let (plugins, reason) = refusal(
        "(i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 3))",
        "",
    );
    assert!(reason.contains("garbage"), "{reason}");
    assert_eq!(plugins.list()[0].errors, 1);
    // A reply far outside memory.
    let (_, reason) = refusal("(i64.const -1)", "");
    assert!(reason.contains("outside its memory"), "{reason}");
}

#[test]
fn modules_that_break_the_abi_are_refused_at_load() {
    let no_marker = module("", ALLOW, "").replace(
        r#"(func (export "wasmkv_abi_v1") (result i32) (i32.const 1))"#,
        "",
    );
    let err = load_one(&no_marker).err().unwrap().to_string();
    assert!(err.contains("does not export `wasmkv_abi_v1`"), "{err}");

    let wrong_type = module("", "(i64.const 0)", "").replace(
        "(param $ptr i32) (param $len i32) (result i64)",
        "(param $ptr i32) (result i64)",
    );
    let err = load_one(&wrong_type).err().unwrap().to_string();
    assert!(err.contains("`wasmkv_validate` has type"), "{err}");

    let wasi = module(
        r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#,
        ALLOW,
        "",
    );
    let err = load_one(&wasi).err().unwrap().to_string();
    assert!(
        err.contains("imports wasi_snapshot_preview1.fd_write"),
        "{err}"
    );

    let err = load_one("not wasm").err().unwrap().to_string();
    assert!(err.contains("not a valid WebAssembly module"), "{err}");
}

#[test]
fn a_missing_file_fails_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = Plugins::load(&config(dir.path(), &["absent"]), None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("absent.wasm does not exist"), "{err}");
}

#[test]
fn repeated_failures_back_the_plugin_off() {
    let (plugins, _) = refusal("(unreachable)", "");
    for _ in 0..10 {
        let _ = check(&plugins);
    }
    let info = &plugins.list()[0];
    assert_eq!(info.state, "backed off after repeated failures");
    assert!(info.traps >= 5 && info.traps < 10, "{info:?}");
}

#[test]
fn on_error_allow_lets_writes_through_a_failing_validator() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p", &module("", "(unreachable)", ""));
    let mut cfg = config(dir.path(), &["p"]);
    cfg.validate[0].on_error = ValidateOnError::Allow;
    let plugins = Plugins::load(&cfg, None).unwrap();
    check(&plugins).unwrap();
}

#[test]
fn reload_swaps_good_files_and_keeps_the_last_good_version() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p", &module("", ALLOW, ""));
    let plugins = Arc::new(Plugins::load(&config(dir.path(), &["p"]), None).unwrap());
    let first = plugins.list()[0].sha256.clone();
    assert!(
        !plugins.reload("p").unwrap(),
        "an unchanged file is not reloaded"
    );

    write(dir.path(), "p", "broken");
    assert!(plugins.reload("p").is_err());
    check(&plugins).unwrap();
    let info = &plugins.list()[0];
    assert_eq!(
        (info.sha256.as_str(), info.state.as_str()),
        (
            first.as_str(),
            "new file refused; running the last good version"
        )
    );
    assert!(
        info.last_error.contains("not a valid WebAssembly module"),
        "{info:?}"
    );

    // A new version that refuses: every write is now vetoed by it.
    write(dir.path(), "p", &module("", "(unreachable)", ""));
    assert!(plugins.reload("p").unwrap());
    assert_ne!(plugins.list()[0].sha256, first);
    assert!(check(&plugins).is_err());
}
