//! `KVStore/Watch` over real HTTP: live changes under a prefix, replay from an LSN, the end of
//! stream when the log no longer holds the start, and streams ending on shutdown.

mod common;

use bytes::Bytes;
use wasmkv::api::connect::{END_STREAM_FLAG, envelope};
use wasmkv::api::proto::{Entry, Mutation, Op, WatchRequest};
use wasmkv::api::{Code, Codec};
use wasmkv::client::{Client, ClientError, SetOptions, WatchStream};
use wasmkv::config::Config;
use wasmkv::node::Node;

/// Read batches until `n` entries arrived (heartbeats skipped), checking LSNs only grow.
async fn entries(stream: &mut WatchStream, n: usize) -> Vec<Entry> {
    let mut got = Vec::new();
    let mut last_lsn = 0;
    while got.len() < n {
        let batch = tokio::time::timeout(common::REQUEST_DEADLINE, stream.next())
            .await
            .expect("watch delivered nothing in time")
            .expect("the stream ended early")
            .expect("watch failed");
        assert!(batch.lsn >= last_lsn, "responses went back in LSN order");
        last_lsn = batch.lsn;
        for entry in &batch.entries {
            assert!(entry.lsn <= batch.lsn, "an entry after the response's LSN");
        }
        got.extend(batch.entries);
    }
    got
}

fn summary(entries: &[Entry]) -> Vec<(u64, &'static str, String)> {
    entries
        .iter()
        .map(|e| {
            let op = if e.op == Op::Set as i32 {
                "set"
            } else {
                "delete"
            };
            (e.lsn, op, String::from_utf8_lossy(&e.key).into_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_streams_live_changes_under_its_prefix_only() {
    let (node, base, _dir) = common::start("").await;
    let client = Client::new(&base).unwrap();
    client
        .set("user:0", "before", SetOptions::default())
        .await
        .unwrap();
    let mut stream = client.watch("user:", 0).await.unwrap();

    let l1 = client
        .set("user:1", "ada", SetOptions::default())
        .await
        .unwrap();
    client
        .set("other:1", "x", SetOptions::default())
        .await
        .unwrap();
    let l3 = client.delete("user:1").await.unwrap().lsn;
    let l4 = client
        .write(vec![
            Mutation {
                op: Op::Set as i32,
                key: Bytes::from_static(b"other:2"),
                value: Bytes::from_static(b"y"),
                ttl_ms: 0,
            },
            Mutation {
                op: Op::Set as i32,
                key: Bytes::from_static(b"user:2"),
                value: Bytes::from_static(b"grace"),
                ttl_ms: 0,
            },
        ])
        .await
        .unwrap();

    let got = entries(&mut stream, 3).await;
    assert_eq!(
        summary(&got),
        vec![
            (l1, "set", "user:1".into()),
            (l3, "delete", "user:1".into()),
            (l4, "set", "user:2".into()),
        ]
    );
    assert_eq!(got[0].value, "ada");
    assert_eq!(got[2].value, "grace");
    drop(stream);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_replays_from_an_lsn_then_follows() {
    let (node, base, _dir) = common::start("").await;
    let client = Client::new(&base).unwrap();
    for i in 1..=5 {
        client
            .set(format!("k{i}"), "v", SetOptions::default())
            .await
            .unwrap();
    }
    let mut stream = client.watch("", 2).await.unwrap();
    let replayed = entries(&mut stream, 3).await;
    assert_eq!(
        replayed.iter().map(|e| e.lsn).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    let live = client.set("k6", "v", SetOptions::default()).await.unwrap();
    assert_eq!(entries(&mut stream, 1).await[0].lsn, live);
    drop(stream);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn shutting_down_ends_the_stream_with_where_to_resume() {
    let (node, base, _dir) = common::start("").await;
    let client = Client::new(&base).unwrap();
    let lsn = client.set("a", "1", SetOptions::default()).await.unwrap();
    let mut stream = client.watch("", 0).await.unwrap();
    let shutdown = tokio::spawn(node.shutdown());
    let end = tokio::time::timeout(common::REQUEST_DEADLINE, stream.next())
        .await
        .expect("the stream did not end on shutdown")
        .expect("an end-of-stream error");
    match end {
        Err(ClientError::Rpc(e)) => {
            assert_eq!(e.code, Code::Unavailable);
            assert!(
                e.message.contains(&format!("from_lsn {lsn}")),
                "{}",
                e.message
            );
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(stream.next().await.is_none());
    shutdown.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_from_a_trimmed_lsn_ends_with_out_of_range_in_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "data_dir: {:?}\nserver:\n  port: 0\nwal:\n  sync: never\n  max_file_size: 1KiB\n\
         storage:\n  snapshot_after: 0\n",
        dir.path().display().to_string()
    );
    let node = Node::start(Config::from_yaml_str(&yaml, "test").unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", node.local_addr());
    let client = Client::new(&base).unwrap();
    for i in 0..100 {
        client
            .set(format!("key-{i}"), "some value", SetOptions::default())
            .await
            .unwrap();
    }
    client.snapshot().await.unwrap();

    match client.watch("", 1).await.unwrap().next().await {
        Some(Err(ClientError::Rpc(e))) => {
            assert_eq!(e.code, Code::OutOfRange);
            assert!(e.message.contains("from_lsn 0"), "{}", e.message);
        }
        other => panic!("expected out_of_range, got {other:?}"),
    }
    // The raw wire, in each codec: one end-of-stream envelope carrying the error as JSON.
    for codec in Codec::ALL {
        let body = envelope(
            0,
            &codec.encode(&WatchRequest {
                prefix: Bytes::new(),
                from_lsn: 1,
            }),
        );
        let reply = common::post(
            &base,
            "/kvstore.v1.KVStore/Watch",
            Some(codec.stream_content_type()),
            body,
            &[],
        )
        .await;
        assert_eq!(reply.status, 200, "{codec:?}");
        assert_eq!(reply.content_type(), codec.stream_content_type());
        assert_eq!(reply.body[0], END_STREAM_FLAG, "{codec:?}");
        let end: serde_json::Value = serde_json::from_slice(&reply.body[5..]).unwrap();
        assert_eq!(end["error"]["code"], "out_of_range", "{codec:?}");
    }
    // A unary content type on the streaming method is refused.
    let reply = common::post(
        &base,
        "/kvstore.v1.KVStore/Watch",
        Some("application/cbor"),
        Vec::new(),
        &[],
    )
    .await;
    reply.expect_error(400, "invalid_argument");
    node.shutdown().await.unwrap();
}
