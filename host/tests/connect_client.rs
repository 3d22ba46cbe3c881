//! Interoperability with a Connect client nobody here wrote: the official Connect-ES runtime
//! (`tests/connect-client/client.mjs`, run with node) calls a real node with stubs built at
//! run time from our `FILE_DESCRIPTOR_SET`, in JSON and in protobuf. Needs Node.js >= 20 and
//! npm; `npm ci` runs first when `node_modules` is missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::process::Command;
use wasmkv::api::Codec;
use wasmkv::api::proto::{FILE_DESCRIPTOR_SET, GetRequest, GetResponse};

use common::{HttpVersion, call, start};

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/connect-client")
}

/// Run a command to completion within `deadline`, panicking with its output if it fails.
async fn run(what: &str, command: &mut Command, deadline: Duration) -> String {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {what}: {e}. This test needs Node.js >= 20 and npm on the PATH \
                 (Debian: apt-get install nodejs npm)"
            )
        });
    let output = tokio::time::timeout(deadline, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {deadline:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Install the pinned packages of a fresh clone.
async fn ensure_node_modules(dir: &Path) {
    run(
        "node --version",
        Command::new("node").arg("--version"),
        Duration::from_secs(30),
    )
    .await;
    if dir.join("node_modules/@connectrpc/connect-node").is_dir() {
        return;
    }
    run(
        "npm ci (in tests/connect-client)",
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir),
        Duration::from_secs(300),
    )
    .await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn u64_of(value: &Value) -> u64 {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a decimal string: {value}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_es_calls_the_node_in_json_and_protobuf() {
    let dir = client_dir();
    ensure_node_modules(&dir).await;
    let (node, base, data) = start("").await;
    let descriptor = data.path().join("kvstore.fds.bin");
    std::fs::write(&descriptor, FILE_DESCRIPTOR_SET).expect("write the descriptor set");

    let stdout = run(
        "node client.mjs",
        Command::new("node")
            .arg("client.mjs")
            .arg(&base)
            .arg(&descriptor)
            .current_dir(&dir),
        Duration::from_secs(60),
    )
    .await;
    let line = stdout
        .lines()
        .rfind(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line from client.mjs:\n{stdout}"));
    let out: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    println!("client.mjs: {line}");

    let methods = out["methods"].as_array().expect("methods");
    for name in ["get", "set", "delete", "getUpdates", "multiGet", "write"] {
        assert!(
            methods.iter().any(|m| m == name),
            "the descriptor gives Connect-ES the method {name}: {methods:?}"
        );
    }

    let results = out["results"].as_array().expect("results");
    let formats: Vec<&str> = results
        .iter()
        .map(|r| r["format"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(formats, ["json", "proto"], "{out}");
    let mut last_lsn = 0;
    for r in results {
        let format = r["format"].as_str().expect("format");
        let ctx = |what: &str| format!("{format}: {what}: {r}");

        // What client.mjs sent, computed here independently.
        let mut value = vec![0x00, 0xff, 0xfe];
        value.extend_from_slice(format!("value via {format}").as_bytes());
        assert_eq!(r["sent"]["value"], hex(&value), "{}", ctx("sent value"));
        assert_eq!(
            r["sent"]["key"],
            hex(format!("connect-es/{format}").as_bytes())
        );

        let set_lsn = u64_of(&r["set"]["lsn"]);
        assert!(set_lsn > last_lsn, "{}", ctx("set lsn increases"));
        assert_eq!(r["get"]["found"], true, "{}", ctx("get found"));
        assert_eq!(r["get"]["value"], hex(&value), "{}", ctx("value bytes"));
        assert_eq!(
            u64_of(&r["get"]["version"]),
            set_lsn,
            "{}",
            ctx("version = set lsn")
        );
        assert_eq!(r["delete"]["found"], true, "{}", ctx("delete found"));
        assert!(
            u64_of(&r["delete"]["lsn"]) > set_lsn,
            "{}",
            ctx("delete lsn")
        );
        assert_eq!(
            (
                &r["get_after_delete"]["found"],
                &r["get_after_delete"]["value"]
            ),
            (&Value::Bool(false), &Value::from("")),
            "{}",
            ctx("get after delete")
        );

        // Our Connect errors surface in Connect-ES with their codes and messages.
        let empty = &r["errors"]["empty_key"];
        assert_eq!(empty["code"], "InvalidArgument", "{}", ctx("empty key"));
        assert!(
            empty["message"]
                .as_str()
                .is_some_and(|m| m.contains("key is required")),
            "{}",
            ctx("empty key message")
        );
        let stale = &r["errors"]["stale_version"];
        assert_eq!(stale["code"], "Aborted", "{}", ctx("stale if_version"));
        assert!(
            stale["message"]
                .as_str()
                .is_some_and(|m| m.contains("version mismatch")),
            "{}",
            ctx("stale message")
        );

        // Connect-ES sent and received the codec it was asked for; errors are JSON.
        let (request_type, response_type) = match format {
            "json" => ("request application/json", "response application/json"),
            _ => ("request application/proto", "response application/proto"),
        };
        let seen: Vec<&str> = r["content_types"]
            .as_array()
            .expect("content_types")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            seen,
            [
                "error Aborted",
                "error InvalidArgument",
                request_type,
                response_type
            ],
            "{}",
            ctx("content types")
        );

        // What Connect-ES wrote, read back over our own HTTP client.
        let kept_key = unhex(r["sent"]["kept_key"].as_str().expect("kept_key"));
        let kept: GetResponse = call(
            HttpVersion::Http1,
            &base,
            Codec::Cbor,
            "KVStore",
            "Get",
            &GetRequest {
                key: Bytes::from(kept_key),
                min_lsn: 0,
            },
        )
        .await;
        assert_eq!(
            (kept.found, kept.value.as_ref(), kept.version),
            (true, &value[..], u64_of(&r["kept"]["lsn"])),
            "{}",
            ctx("kept key read back")
        );
        last_lsn = u64_of(&r["kept"]["lsn"]);
    }
    node.shutdown().await.expect("clean shutdown");
}
