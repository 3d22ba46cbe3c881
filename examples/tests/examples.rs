//! The examples run against a real node, so they never rot: the Rust client example, the
//! Python/CBOR example (needs `cbor2`, which `cargo xtask test` installs), and the embedded
//! tour.

use std::path::Path;
use std::process::Command;

use wasmkv::config::Config;
use wasmkv::node::Node;

fn node_config(dir: &Path) -> Config {
    let yaml = format!(
        "data_dir: {}\nserver:\n  port: 0\nwal:\n  sync: never\nstorage:\n  disk_reserve: 0\n",
        dir.display()
    );
    Config::from_yaml_str(&yaml, "examples-test.yaml").expect("test config")
}

fn check(what: &str, output: std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_and_python_clients_run_against_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(node_config(dir.path())).await.unwrap();
    let addr = format!("http://{}", node.local_addr());

    let out = check(
        "examples client",
        tokio::process::Command::new(env!("CARGO_BIN_EXE_client"))
            .arg(&addr)
            .output()
            .await
            .unwrap(),
    );
    assert!(
        out.contains("get rs:greeting -> \"hello from rust\""),
        "{out}"
    );
    assert!(out.contains("stale compare-and-set -> aborted"), "{out}");
    assert!(out.contains("found [true, false, true]"), "{out}");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/kv_cbor.py");
    let python = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(&addr)
        .output()
        .await
        .expect("python3 is needed for the Python example (cargo xtask test installs cbor2)");
    let out = check("examples/python/kv_cbor.py (is cbor2 installed?)", python);
    assert!(
        out.contains("get py:greeting -> hello from python"),
        "{out}"
    );
    assert!(out.contains("stale compare-and-set -> aborted"), "{out}");
    assert!(out.contains("multi-get -> ['1', '2', None]"), "{out}");
    assert!(out.contains("status -> primary"), "{out}");

    node.shutdown().await.unwrap();
}

#[test]
fn the_embedded_tour_runs() {
    let out = check(
        "embedded tour",
        Command::new(env!("CARGO_BIN_EXE_embedded"))
            .arg("--exit")
            .output()
            .unwrap(),
    );
    assert!(out.contains("same as before the crash"), "{out}");
    // 3 live keys, plus the expired session key if active expiry has not deleted it yet.
    assert!(
        out.contains("entries from the snapshot, replayed 0 records after it"),
        "{out}"
    );
    assert!(out.contains("get session    = (not found)"), "{out}");
}
