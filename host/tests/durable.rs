//! `sync: always` through the server: many connections writing at once share fsyncs (the
//! async commit path), every acknowledged write is visible at once and survives a restart.

use wasmkv::client::{Client, SetOptions};
use wasmkv::config::Config;
use wasmkv::node::{Node, NodeHandle};

async fn start_always(dir: &std::path::Path) -> (NodeHandle, Client) {
    let yaml = format!(
        "data_dir: {:?}\nserver:\n  port: 0\nwal:\n  sync: always\nstorage:\n  disk_reserve: 0\n",
        dir.display().to_string()
    );
    let node = Node::start(Config::from_yaml_str(&yaml, "durable test").unwrap())
        .await
        .unwrap();
    let client = Client::new(&format!("http://{}", node.local_addr())).unwrap();
    (node, client)
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_durable_writes_are_visible_at_once_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (node, client) = start_always(dir.path()).await;
    let writers: Vec<_> = (0..16)
        .map(|t| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    let key = format!("t{t}-{i}");
                    let lsn = client
                        .set(key.clone(), format!("v{i}"), SetOptions::default())
                        .await
                        .unwrap();
                    // Acknowledged means applied: this node's own read sees it.
                    let got = client.get(key).await.unwrap();
                    assert!(got.found && got.version == lsn, "{got:?}");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let status = client.status().await.unwrap();
    assert_eq!((status.keys, status.lsn), (400, 400));
    node.shutdown().await.unwrap();

    let (node, client) = start_always(dir.path()).await;
    for t in 0..16 {
        for i in 0..25 {
            let got = client.get(format!("t{t}-{i}")).await.unwrap();
            assert_eq!(got.value, format!("v{i}"), "t{t}-{i}");
        }
    }
    node.shutdown().await.unwrap();
}
