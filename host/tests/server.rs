//! The node's HTTP server over real sockets on 127.0.0.1: every RPC in every codec, the wire
//! mapping pinned by hand-written bodies, each error path with its HTTP status, Connect code
//! and message, the curl routes, health and metrics, restart and the data-directory lock, and
//! cleartext HTTP/2.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ciborium::Value as Cbor;
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wasmkv::api::Codec;
use wasmkv::api::proto::{
    DeleteRequest, DeleteResponse, DigestRequest, DigestResponse, Entry, GetRequest, GetResponse,
    GetUpdatesRequest, GetUpdatesResponse, MultiGetRequest, MultiGetResponse, Mutation, Op,
    SetRequest, SetResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
    WriteRequest, WriteResponse,
};

use common::{HttpVersion, Reply, call, call_raw, post, request, rpc_path, start, wait_for};

const H1: HttpVersion = HttpVersion::Http1;

fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as i64
}

async fn get(base: &str, codec: Codec, key: &[u8]) -> GetResponse {
    call(
        H1,
        base,
        codec,
        "KVStore",
        "Get",
        &GetRequest {
            key: b(key),
            min_lsn: 0,
        },
    )
    .await
}

async fn set(base: &str, codec: Codec, key: &[u8], value: &[u8]) -> u64 {
    let resp: SetResponse = call(
        H1,
        base,
        codec,
        "KVStore",
        "Set",
        &SetRequest {
            key: b(key),
            value: b(value),
            ..SetRequest::default()
        },
    )
    .await;
    resp.lsn
}

async fn status(base: &str) -> StatusResponse {
    call(H1, base, Codec::Proto, "Admin", "Status", &StatusRequest {}).await
}

fn entry(lsn: u64, op: Op, key: &[u8], value: &[u8]) -> (u64, i32, Bytes, Bytes) {
    (lsn, op as i32, b(key), b(value))
}

/// Every RPC in each codec, on a fresh node per codec so LSNs are predictable; the three
/// nodes end with the same data, so their digests must agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_in_every_codec() {
    let mut digests = Vec::new();
    for codec in Codec::ALL {
        let (node, base, _dir) = start("").await;
        let c = codec;

        let s: StatusResponse = call(H1, &base, c, "Admin", "Status", &StatusRequest {}).await;
        assert_eq!((s.role.as_str(), s.lsn, s.keys), ("primary", 0, 0), "{c:?}");
        assert!(
            !s.version.is_empty() && s.failure.is_empty(),
            "{c:?}: {s:?}"
        );
        let empty: DigestResponse = call(H1, &base, c, "Admin", "Digest", &DigestRequest {}).await;
        assert_eq!((empty.keys, empty.lsn), (0, 0), "{c:?}");

        // Set then Get: the value, and a version equal to the Set's LSN.
        let value1 = b"\x00value one\xff";
        let a = set(&base, c, b"k1", value1).await;
        assert_eq!(a, 1, "{c:?}: the first write of a fresh node");
        let got = get(&base, c, b"k1").await;
        assert_eq!(
            (
                got.found,
                got.value.as_ref(),
                got.version,
                got.expires_at_ms
            ),
            (true, &value1[..], a, 0),
            "{c:?}"
        );

        // A TTL becomes an absolute expiry.
        let before = now_ms();
        let set2: SetResponse = call(
            H1,
            &base,
            c,
            "KVStore",
            "Set",
            &SetRequest {
                key: b(b"k2"),
                value: b(b"v2"),
                ttl_ms: 60_000,
                ..SetRequest::default()
            },
        )
        .await;
        let after = now_ms();
        let bb = set2.lsn;
        assert_eq!(bb, a + 1, "{c:?}");
        let got2 = get(&base, c, b"k2").await;
        assert!(got2.found && got2.version == bb, "{c:?}: {got2:?}");
        assert!(
            (before + 60_000..=after + 60_000).contains(&got2.expires_at_ms),
            "{c:?}: expires_at_ms {} not 60 s after [{before}, {after}]",
            got2.expires_at_ms
        );

        // A missing key is found=false with every field at its default.
        assert_eq!(
            get(&base, c, b"missing").await,
            GetResponse::default(),
            "{c:?}"
        );

        // MultiGet answers in request order.
        let multi: MultiGetResponse = call(
            H1,
            &base,
            c,
            "KVStore",
            "MultiGet",
            &MultiGetRequest {
                keys: vec![b(b"k2"), b(b"missing"), b(b"k1")],
            },
        )
        .await;
        let shape: Vec<_> = multi
            .results
            .iter()
            .map(|r| (r.found, r.value.clone(), r.version))
            .collect();
        assert_eq!(
            shape,
            vec![
                (true, b(b"v2"), bb),
                (false, Bytes::new(), 0),
                (true, b(value1), a)
            ],
            "{c:?}"
        );

        // Delete: found with a new LSN; again: not found, at the applied LSN.
        let del: DeleteResponse = call(
            H1,
            &base,
            c,
            "KVStore",
            "Delete",
            &DeleteRequest { key: b(b"k1") },
        )
        .await;
        let cc = del.lsn;
        assert_eq!((del.found, cc), (true, bb + 1), "{c:?}");
        assert!(!get(&base, c, b"k1").await.found, "{c:?}");
        let again: DeleteResponse = call(
            H1,
            &base,
            c,
            "KVStore",
            "Delete",
            &DeleteRequest { key: b(b"k1") },
        )
        .await;
        assert_eq!((again.found, again.lsn), (false, cc), "{c:?}");

        // Write: one LSN for the whole batch.
        let write: WriteResponse = call(
            H1,
            &base,
            c,
            "KVStore",
            "Write",
            &WriteRequest {
                mutations: vec![
                    Mutation {
                        op: Op::Set as i32,
                        key: b(b"k3"),
                        value: b(b"v3"),
                        ttl_ms: 0,
                    },
                    Mutation {
                        op: Op::Delete as i32,
                        key: b(b"k2"),
                        value: Bytes::new(),
                        ttl_ms: 0,
                    },
                    Mutation {
                        op: Op::Set as i32,
                        key: b(b"k4"),
                        value: b(b"v4"),
                        ttl_ms: 0,
                    },
                ],
                min_replicas: 0,
            },
        )
        .await;
        let d = write.lsn;
        assert_eq!(d, cc + 1, "{c:?}");
        let got3 = get(&base, c, b"k3").await;
        assert_eq!(
            (got3.found, got3.value, got3.version),
            (true, b(b"v3"), d),
            "{c:?}"
        );
        assert!(!get(&base, c, b"k2").await.found, "{c:?}");
        assert_eq!(get(&base, c, b"k4").await.version, d, "{c:?}");

        // GetUpdates from the start: every change in LSN order; a batch is one entry per
        // mutation, all with the batch's LSN.
        let updates: GetUpdatesResponse = call(
            H1,
            &base,
            c,
            "KVStore",
            "GetUpdates",
            &GetUpdatesRequest {
                since_lsn: 0,
                limit: 0,
            },
        )
        .await;
        let seen: Vec<_> = updates
            .entries
            .iter()
            .map(|e| (e.lsn, e.op, e.key.clone(), e.value.clone()))
            .collect();
        assert_eq!(
            seen,
            vec![
                entry(a, Op::Set, b"k1", value1),
                entry(bb, Op::Set, b"k2", b"v2"),
                entry(cc, Op::Delete, b"k1", b""),
                entry(d, Op::Set, b"k3", b"v3"),
                entry(d, Op::Delete, b"k2", b""),
                entry(d, Op::Set, b"k4", b"v4"),
            ],
            "{c:?}"
        );
        assert_eq!(
            (updates.last_lsn, updates.snapshot_required),
            (d, false),
            "{c:?}"
        );
        assert!(
            updates
                .entries
                .iter()
                .all(|e| e.timestamp_ms >= before - 1000),
            "{c:?}: timestamps {:?}",
            updates.entries
        );
        assert_eq!(
            updates.entries[1].expires_at_ms, got2.expires_at_ms,
            "{c:?}: the log carries the expiry"
        );
        // A limit counts log records; since_lsn is exclusive.
        let page: GetUpdatesResponse = call(
            H1,
            &base,
            c,
            "KVStore",
            "GetUpdates",
            &GetUpdatesRequest {
                since_lsn: bb,
                limit: 1,
            },
        )
        .await;
        let page_entries: Vec<&Entry> = page.entries.iter().collect();
        assert_eq!(page_entries.len(), 1, "{c:?}: {page:?}");
        assert_eq!(
            (page.entries[0].lsn, page.entries[0].op, page.last_lsn),
            (cc, Op::Delete as i32, cc),
            "{c:?}"
        );
        let caught_up: GetUpdatesResponse = call(
            H1,
            &base,
            c,
            "KVStore",
            "GetUpdates",
            &GetUpdatesRequest {
                since_lsn: d,
                limit: 0,
            },
        )
        .await;
        assert!(caught_up.entries.is_empty(), "{c:?}: {caught_up:?}");
        assert_eq!(caught_up.last_lsn, d, "{c:?}");

        // Status and Digest reflect the data.
        let s: StatusResponse = call(H1, &base, c, "Admin", "Status", &StatusRequest {}).await;
        assert_eq!((s.lsn, s.keys), (d, 2), "{c:?}: {s:?}");
        assert!(s.wal_bytes > 0 && s.wal_segments >= 1, "{c:?}: {s:?}");
        let digest: DigestResponse = call(H1, &base, c, "Admin", "Digest", &DigestRequest {}).await;
        assert_eq!((digest.keys, digest.lsn), (2, d), "{c:?}");
        assert_eq!(digest.digest.len(), 16, "{c:?}");
        assert_ne!(
            digest.digest, empty.digest,
            "{c:?}: data changes the digest"
        );
        digests.push(digest.digest);

        // Snapshot at the current LSN, with the live entries.
        let snap: SnapshotResponse =
            call(H1, &base, c, "Admin", "Snapshot", &SnapshotRequest {}).await;
        assert_eq!((snap.lsn, snap.entries), (d, 2), "{c:?}");
        assert_eq!(status(&base).await.snapshot_lsn, d, "{c:?}");

        node.shutdown().await.expect("clean shutdown");
    }
    assert!(
        digests.windows(2).all(|w| w[0] == w[1]),
        "the same data must give the same digest whatever codec wrote it: {digests:?}"
    );
}

/// Proto3 JSON written by hand: base64 bytes, camelCase and original field names, 64-bit
/// integers as strings (or numbers) — pins the mapping independently of our encoder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_written_json_follows_the_proto3_mapping() {
    let (node, base, _dir) = start("").await;
    let json = Some("application/json");
    let path = |m: &str| rpc_path("KVStore", m);

    // "key" = base64("k\xff"), "value" = base64("\x00v"), ttl as a camelCase string.
    let reply = post(
        &base,
        &path("Set"),
        json,
        r#"{"key":"a/8=","value":"AHY=","ttlMs":"60000"}"#,
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.content_type(), "application/json");
    assert_eq!(reply.json(), serde_json::json!({"lsn": "1"}));

    // snake_case names are accepted too; numbers may be bare.
    let reply = post(
        &base,
        &path("Get"),
        json,
        r#"{"key":"a/8=","min_lsn":0}"#,
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let got = reply.json();
    assert_eq!(got["found"], true, "{got}");
    assert_eq!(got["value"], "AHY=", "{got}");
    assert_eq!(
        got["version"], "1",
        "64-bit integers are JSON strings: {got}"
    );
    let expires: i64 = got["expiresAtMs"]
        .as_str()
        .unwrap_or_else(|| panic!("expiresAtMs is a camelCase string: {got}"))
        .parse()
        .expect("a decimal string");
    assert!(expires > now_ms(), "{got}");

    // Compare-and-set with the original name `if_version`: right version, then stale.
    let reply = post(
        &base,
        &path("Set"),
        json,
        r#"{"key":"a/8=","value":"","if_version":"1"}"#,
        &[],
    )
    .await;
    assert_eq!(
        reply.json(),
        serde_json::json!({"lsn": "2"}),
        "{}",
        reply.text()
    );
    let reply = post(
        &base,
        &path("Set"),
        json,
        r#"{"key":"a/8=","value":"","ifVersion":"1"}"#,
        &[],
    )
    .await;
    reply.expect_error(409, "aborted");

    // Enums by name; repeated bytes as arrays of base64.
    let reply = post(
        &base,
        &path("Write"),
        json,
        r#"{"mutations":[{"op":"OP_SET","key":"eDE=","value":"djE="},{"op":2,"key":"a/8="}]}"#,
        &[],
    )
    .await;
    assert_eq!(
        reply.json(),
        serde_json::json!({"lsn": "3"}),
        "{}",
        reply.text()
    );
    let reply = post(
        &base,
        &path("MultiGet"),
        json,
        r#"{"keys":["eDE=","a/8="]}"#,
        &[],
    )
    .await;
    let results = reply.json()["results"].clone();
    assert_eq!(results[0]["found"], true, "{results}");
    assert_eq!(results[0]["value"], "djE=", "{results}");
    // Fields at their defaults are omitted from proto3 JSON: an empty object.
    assert_eq!(results[1], serde_json::json!({}), "{results}");

    // An empty body is the empty message.
    let reply = post(&base, &rpc_path("Admin", "Status"), json, "", &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["role"], "primary");
    assert_eq!(reply.json()["lsn"], "3");

    let updates = post(&base, &path("GetUpdates"), json, r#"{"sinceLsn":"2"}"#, &[])
        .await
        .json();
    assert_eq!(updates["lastLsn"], "3", "{updates}");
    assert_eq!(
        updates["entries"][0]["op"], "OP_SET",
        "enums are names: {updates}"
    );
    assert_eq!(updates["entries"][1]["op"], "OP_DELETE", "{updates}");
    node.shutdown().await.expect("clean shutdown");
}

fn cbor(value: &Cbor) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("CBOR encodes");
    out
}

fn cbor_map(entries: Vec<(&str, Cbor)>) -> Cbor {
    Cbor::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

fn cbor_field<'a>(map: &'a Cbor, name: &str) -> Option<&'a Cbor> {
    map.as_map()
        .unwrap_or_else(|| panic!("not a CBOR map: {map:?}"))
        .iter()
        .find(|(k, _)| k.as_text() == Some(name))
        .map(|(_, v)| v)
}

fn cbor_reply(reply: &Reply) -> Cbor {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.content_type(), "application/cbor");
    ciborium::from_reader(&reply.body[..]).expect("the response is CBOR")
}

/// CBOR built with `ciborium::Value`: a map keyed by the proto field names, bytes as byte
/// strings, integers and enums as integers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_built_cbor_follows_the_field_name_mapping() {
    let (node, base, _dir) = start("").await;
    let ct = Some("application/cbor");
    let path = |m: &str| rpc_path("KVStore", m);

    let set = cbor_map(vec![
        ("key", Cbor::Bytes(b"k\xff".to_vec())),
        ("value", Cbor::Bytes(b"\x00v".to_vec())),
        ("ttl_ms", 60_000.into()),
        ("a_field_from_the_future", "ignored".into()),
    ]);
    let reply = post(&base, &path("Set"), ct, cbor(&set), &[]).await;
    let lsn = cbor_reply(&reply);
    assert_eq!(cbor_field(&lsn, "lsn"), Some(&Cbor::from(1)), "{lsn:?}");

    let get = cbor_map(vec![("key", Cbor::Bytes(b"k\xff".to_vec()))]);
    let got = cbor_reply(&post(&base, &path("Get"), ct, cbor(&get), &[]).await);
    assert_eq!(
        cbor_field(&got, "found"),
        Some(&Cbor::Bool(true)),
        "{got:?}"
    );
    assert_eq!(
        cbor_field(&got, "value"),
        Some(&Cbor::Bytes(b"\x00v".to_vec())),
        "{got:?}"
    );
    assert_eq!(cbor_field(&got, "version"), Some(&Cbor::from(1)), "{got:?}");
    let expires = cbor_field(&got, "expires_at_ms")
        .and_then(Cbor::as_integer)
        .unwrap_or_else(|| panic!("expires_at_ms is an integer: {got:?}"));
    assert!(i128::from(expires) > i128::from(now_ms()), "{got:?}");

    let write = cbor_map(vec![(
        "mutations",
        Cbor::Array(vec![
            cbor_map(vec![
                ("op", 1.into()),
                ("key", Cbor::Bytes(b"x".to_vec())),
                ("value", Cbor::Bytes(b"y".to_vec())),
            ]),
            cbor_map(vec![
                ("op", 2.into()),
                ("key", Cbor::Bytes(b"k\xff".to_vec())),
            ]),
        ]),
    )]);
    let written = cbor_reply(&post(&base, &path("Write"), ct, cbor(&write), &[]).await);
    assert_eq!(
        cbor_field(&written, "lsn"),
        Some(&Cbor::from(2)),
        "{written:?}"
    );

    let updates = cbor_reply(
        &post(
            &base,
            &path("GetUpdates"),
            ct,
            cbor(&cbor_map(vec![("since_lsn", 1.into())])),
            &[],
        )
        .await,
    );
    let entries = cbor_field(&updates, "entries")
        .and_then(Cbor::as_array)
        .unwrap_or_else(|| panic!("entries is an array: {updates:?}"));
    let ops: Vec<_> = entries
        .iter()
        .map(|e| (cbor_field(e, "op").cloned(), cbor_field(e, "key").cloned()))
        .collect();
    assert_eq!(
        ops,
        vec![
            (Some(1.into()), Some(Cbor::Bytes(b"x".to_vec()))),
            (Some(2.into()), Some(Cbor::Bytes(b"k\xff".to_vec())))
        ],
        "enums are integers: {updates:?}"
    );
    assert_eq!(cbor_field(&updates, "last_lsn"), Some(&Cbor::from(2)));

    // Text where bytes belong is refused, not coerced.
    let wrong = cbor_map(vec![("key", "k".into())]);
    let reply = post(&base, &path("Get"), ct, cbor(&wrong), &[]).await;
    let message = reply.expect_error(400, "invalid_argument");
    assert!(message.contains("cbor"), "{message}");
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_invalid_argument_in_every_codec() {
    let (node, base, _dir) = start("").await;
    let bodies: [(Codec, &[u8]); 3] = [
        (Codec::Proto, b"\xff\xfe garbage"),
        (Codec::Json, b"{\"key\": "),
        (Codec::Cbor, b"\xff\xfe garbage"),
    ];
    for (codec, body) in bodies {
        let reply = post(
            &base,
            &rpc_path("KVStore", "Set"),
            Some(codec.unary_content_type()),
            b(body),
            &[],
        )
        .await;
        let message = reply.expect_error(400, "invalid_argument");
        assert!(
            message.contains(codec.name()) && message.contains("kvstore.v1.SetRequest"),
            "{codec:?}: the message names the codec and the message type: {message}"
        );
    }
    // Valid JSON of the wrong shape, and an unknown JSON field, are refused too.
    for body in [
        r#"{"key": 5}"#,
        r#"{"nope": 1}"#,
        r#"{"key":"a2V5"} trailing"#,
    ] {
        let reply = post(
            &base,
            &rpc_path("KVStore", "Get"),
            Some("application/json"),
            body,
            &[],
        )
        .await;
        reply.expect_error(400, "invalid_argument");
    }
    assert_eq!(status(&base).await.lsn, 0, "nothing was written");
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_type_must_name_a_codec() {
    let (node, base, _dir) = start("").await;
    let body = Codec::Json.encode(&GetRequest {
        key: b(b"k"),
        min_lsn: 0,
    });
    for content_type in [None, Some("text/plain"), Some("application/connect+json")] {
        let reply = post(
            &base,
            &rpc_path("KVStore", "Get"),
            content_type,
            body.clone(),
            &[],
        )
        .await;
        let message = reply.expect_error(400, "invalid_argument");
        assert!(
            message.contains("Content-Type") && message.contains("application/cbor"),
            "{content_type:?}: the message lists the supported types: {message}"
        );
    }
    // Parameters and case are ignored.
    let reply = post(
        &base,
        &rpc_path("KVStore", "Get"),
        Some("Application/JSON; charset=utf-8"),
        body,
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.content_type(), "application/json");
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_values_are_validated_against_the_limits() {
    let (node, base, _dir) = start("").await;
    for codec in Codec::ALL {
        let empty = call_raw(
            &base,
            codec,
            "KVStore",
            "Get",
            &GetRequest {
                key: Bytes::new(),
                min_lsn: 0,
            },
        )
        .await;
        let message = empty.expect_error(400, "invalid_argument");
        assert!(message.contains("key is required"), "{codec:?}: {message}");

        let long_key = SetRequest {
            key: Bytes::from(vec![b'k'; 1025]),
            value: b(b"v"),
            ..SetRequest::default()
        };
        let message = call_raw(&base, codec, "KVStore", "Set", &long_key)
            .await
            .expect_error(400, "invalid_argument");
        assert!(
            message.contains("1025") && message.contains("limits.max_key_bytes"),
            "{codec:?}: {message}"
        );

        let big_value = SetRequest {
            key: b(b"k"),
            value: Bytes::from(vec![7u8; (1 << 20) + 1]),
            ..SetRequest::default()
        };
        let message = call_raw(&base, codec, "KVStore", "Set", &big_value)
            .await
            .expect_error(400, "invalid_argument");
        assert!(
            message.contains("1048577") && message.contains("limits.max_value_bytes"),
            "{codec:?}: {message}"
        );
    }
    // Exactly at the limits is fine.
    let at_limit = SetRequest {
        key: Bytes::from(vec![b'k'; 1024]),
        value: Bytes::from(vec![7u8; 1 << 20]),
        ..SetRequest::default()
    };
    let _: SetResponse = call(H1, &base, Codec::Proto, "KVStore", "Set", &at_limit).await;

    // The same checks apply inside MultiGet and Write.
    let multi = MultiGetRequest {
        keys: vec![b(b"ok"), Bytes::new()],
    };
    call_raw(&base, Codec::Cbor, "KVStore", "MultiGet", &multi)
        .await
        .expect_error(400, "invalid_argument");
    let write = WriteRequest {
        mutations: vec![
            Mutation {
                op: Op::Set as i32,
                key: b(b"fine"),
                value: b(b"v"),
                ttl_ms: 0,
            },
            Mutation {
                op: Op::Set as i32,
                key: Bytes::from(vec![b'k'; 2000]),
                value: b(b"v"),
                ttl_ms: 0,
            },
        ],
        min_replicas: 0,
    };
    let message = call_raw(&base, Codec::Proto, "KVStore", "Write", &write)
        .await
        .expect_error(400, "invalid_argument");
    assert!(
        message.contains("mutation 1") && message.contains("limits.max_key_bytes"),
        "{message}"
    );
    let empty_write = WriteRequest::default();
    call_raw(&base, Codec::Proto, "KVStore", "Write", &empty_write)
        .await
        .expect_error(400, "invalid_argument");
    assert_eq!(
        status(&base).await.lsn,
        1,
        "only the at-limit Set was written"
    );
    node.shutdown().await.expect("clean shutdown");
}

/// Send raw bytes on a fresh connection and read one HTTP/1.1 response head (and its body,
/// when it declares a length), without waiting for the connection to close.
async fn raw_http1(addr: std::net::SocketAddr, bytes: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("send the request");
    let (status, head, body) = read_response(&mut stream, &mut Vec::new()).await;
    (status, head + &String::from_utf8_lossy(&body))
}

/// Read the next HTTP/1.1 response on `stream` (within 5 s): its status, its head up to and
/// including the blank line, and its body of `Content-Length` bytes. `pending` holds what was
/// read past the previous response.
async fn read_response(stream: &mut TcpStream, pending: &mut Vec<u8>) -> (u16, String, Vec<u8>) {
    let exchange = async {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(head_end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&pending[..head_end + 4]).into_owned();
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if pending.len() >= head_end + 4 + length {
                    let body = pending[head_end + 4..head_end + 4 + length].to_vec();
                    pending.drain(..head_end + 4 + length);
                    let status = head[9..12].parse().expect("a status code");
                    return (status, head, body);
                }
            }
            let n = stream.read(&mut chunk).await.expect("read the response");
            assert!(
                n > 0,
                "the server closed the connection without a response: {:?}",
                String::from_utf8_lossy(pending)
            );
            pending.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("the server answered within 5 s")
}

/// A connection that has been answered once and is kept alive.
async fn kept_alive(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let (status, ..) = read_response(&mut stream, &mut Vec::new()).await;
    assert_eq!(status, 200);
    stream
}

/// Whether the node closes `stream` within 5 s (having sent nothing more).
async fn closed_by_the_node(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await,
        Ok(Ok(0))
    )
}

/// One connection as HTTP/1.1 clients use it, through the node's own HTTP/1.1 loop
/// (`api/h1.rs`) and hyper, which takes the connection over for what that loop leaves to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_connections_pipeline_dribble_and_carry_on_under_hyper() {
    let (node, _base, _dir) = start("").await;
    let mut conn = TcpStream::connect(node.local_addr()).await.unwrap();
    let mut pending = Vec::new();

    // Three requests in one write are answered in order.
    conn.write_all(
        b"PUT /v1/kv/p HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\n\r\none\
          PUT /v1/kv/p HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\n\r\ntwo\
          GET /v1/kv/p HTTP/1.1\r\nhost: t\r\n\r\n",
    )
    .await
    .unwrap();
    for version in ["1", "2"] {
        let (status, head, body) = read_response(&mut conn, &mut pending).await;
        assert_eq!(status, 200, "{head}");
        assert!(String::from_utf8_lossy(&body).contains(&format!("\"lsn\":{version}")));
    }
    let (status, head, body) = read_response(&mut conn, &mut pending).await;
    assert_eq!((status, &body[..]), (200, &b"two"[..]), "{head}");
    assert!(head.contains("x-wasmkv-version: 2\r\n"), "{head}");
    assert!(head.contains("\r\ndate: "), "{head}");

    // A request dribbled in pieces: its head in two writes, then its body in two.
    for piece in [
        &b"PUT /v1/kv/d HTTP/1.1\r\nhost: t\r\ncont"[..],
        b"ent-length: 6\r\n\r\n",
        b"dri",
        b"ble",
    ] {
        conn.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, head, _) = read_response(&mut conn, &mut pending).await;
    assert_eq!(status, 200, "{head}");

    // HEAD: the length of what a GET would send, and no body.
    conn.write_all(b"HEAD /v1/kv/d HTTP/1.1\r\nhost: t\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let (status, head, body) = read_response(&mut conn, &mut pending).await;
    assert!(head.contains("content-length: 6\r\n"), "{head}");
    // The HEAD answer's declared length is not followed by a body: the bytes read as its body
    // are the next answer's.
    pending.splice(0..0, body);
    assert_eq!(status, 200);
    let (status, _, body) = read_response(&mut conn, &mut pending).await;
    assert_eq!((status, &body[..]), (200, &b"ok\n"[..]));

    // A chunked request is hyper's; the connection carries on under hyper.
    conn.write_all(
        b"PUT /v1/kv/c HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n\
          3\r\nchu\r\n4\r\nnked\r\n0\r\n\r\n\
          GET /v1/kv/c HTTP/1.1\r\nhost: t\r\n\r\n",
    )
    .await
    .unwrap();
    let (status, head, _) = read_response(&mut conn, &mut pending).await;
    assert_eq!(status, 200, "{head}");
    let (status, _, body) = read_response(&mut conn, &mut pending).await;
    assert_eq!((status, &body[..]), (200, &b"chunked"[..]));

    // `Connection: close` on the node's own loop: answered, said, and closed.
    let mut closing = TcpStream::connect(node.local_addr()).await.unwrap();
    closing
        .write_all(b"GET /v1/kv/p HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let (status, head, body) = read_response(&mut closing, &mut Vec::new()).await;
    assert_eq!((status, &body[..]), (200, &b"two"[..]), "{head}");
    assert!(head.contains("connection: close\r\n"), "{head}");
    assert!(closed_by_the_node(&mut closing).await);

    // A target that is not a URI: 400, and the connection is closed, as hyper does.
    let mut bad = TcpStream::connect(node.local_addr()).await.unwrap();
    bad.write_all(b"GET /a<b HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let (status, head, _) = read_response(&mut bad, &mut Vec::new()).await;
    assert_eq!(status, 400, "{head}");
    assert!(closed_by_the_node(&mut bad).await);

    node.shutdown().await.expect("clean shutdown");
}

/// The node's own HTTP/1.1 loop reads a call's header lines where they lie in its buffer:
/// names in any case, the first of a repeated line, a media type with parameters, and a
/// Connect deadline it cannot read refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_calls_on_the_node_s_own_loop_read_header_lines_in_any_case() {
    let (node, _base, _dir) = start("").await;
    let mut conn = TcpStream::connect(node.local_addr()).await.unwrap();
    let mut pending = Vec::new();
    let mut call = async |method: &str, lines: &str, body: &str| {
        let request = format!(
            "POST /kvstore.v1.KVStore/{method} HTTP/1.1\r\nHost: t\r\n{lines}\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(request.as_bytes()).await.unwrap();
        read_response(&mut conn, &mut pending).await
    };

    // "key" = base64("k"), "value" = base64("v").
    let (status, head, body) = call(
        "Set",
        "CONTENT-TYPE: Application/JSON; charset=utf-8\r\ncontent-type: text/plain\r\n\
         Connect-Protocol-Version: 1\r\nCONNECT-TIMEOUT-MS: 5000\r\n",
        r#"{"key":"aw==","value":"dg=="}"#,
    )
    .await;
    assert_eq!(status, 200, "{head}{}", String::from_utf8_lossy(&body));
    assert!(
        head.contains("content-type: application/json\r\n"),
        "{head}"
    );

    let (status, head, body) = call(
        "Get",
        "content-TYPE: application/json\r\n",
        r#"{"key":"aw=="}"#,
    )
    .await;
    assert_eq!(status, 200, "{head}");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["value"], "dg==", "{body}");

    let (status, head, body) = call(
        "Get",
        "Content-Type: application/json\r\nConnect-Timeout-Ms: soon\r\n",
        r#"{"key":"aw=="}"#,
    )
    .await;
    assert_eq!(status, 400, "{head}");
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("invalid_argument")
            && text.contains("Connect-Timeout-Ms")
            && text.contains("soon"),
        "{text}"
    );

    node.shutdown().await.expect("clean shutdown");
}

/// A kept-alive connection idle for `header_read_timeout` is closed, as one that never sends
/// its first request is, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_connections_idle_past_the_header_timeout_are_closed() {
    let (node, base, _dir) = start("limits:\n  header_read_timeout: 1s\n").await;
    let mut idle = kept_alive(node.local_addr()).await;
    let started = std::time::Instant::now();
    assert!(closed_by_the_node(&mut idle).await);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed after {:?}, before the timeout",
        started.elapsed()
    );
    let metrics = request(Method::GET, &format!("{base}/metrics"), Bytes::new()).await;
    assert!(
        metrics
            .text()
            .contains("wasmkv_limit_refusals_total{limit=\"header_read_timeout\"} 1"),
        "{}",
        metrics.text()
    );
    node.shutdown().await.expect("clean shutdown");
}

/// A request that only hyper serves, arriving once shutdown has begun (hyper's connections
/// are draining by then), is refused with the reason rather than dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_hyper_during_shutdown_is_told_why() {
    let (node, _base, _dir) = start("").await;
    let addr = node.local_addr();
    let mut conn = TcpStream::connect(addr).await.unwrap();
    // Half a head: the connection is not idle, so shutdown lets it finish its request. It
    // follows a whole request in the same write, whose answer shows that the node has read
    // both: a head still in flight when shutdown began would find the connection idle.
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\nPUT /v1/kv/x HTTP/1.1\r\nhost: t\r\n")
        .await
        .unwrap();
    let mut pending = Vec::new();
    let (status, head, _) = read_response(&mut conn, &mut pending).await;
    assert_eq!(status, 200, "{head}");
    let shutdown = tokio::spawn(node.shutdown());
    wait_for(
        "the node to stop accepting",
        Duration::from_secs(5),
        || async { TcpStream::connect(addr).await.is_err().then_some(()) },
    )
    .await;
    conn.write_all(b"transfer-encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n")
        .await
        .unwrap();
    let (status, head, body) = read_response(&mut conn, &mut pending).await;
    assert_eq!(status, 503, "{head}");
    assert!(head.contains("connection: close\r\n"), "{head}");
    assert!(
        String::from_utf8_lossy(&body).contains("shutting down"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(closed_by_the_node(&mut conn).await);
    shutdown.await.unwrap().expect("clean shutdown");
}

/// A body that stops arriving is answered once `body_read_timeout` has passed, even when
/// that is shorter than the header timeout the connection's clock was last set for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_its_own_shorter_deadline() {
    let (node, _base, _dir) =
        start("limits:\n  header_read_timeout: 30s\n  body_read_timeout: 1s\n").await;
    let mut conn = TcpStream::connect(node.local_addr()).await.unwrap();
    let started = std::time::Instant::now();
    conn.write_all(b"PUT /v1/kv/s HTTP/1.1\r\nhost: t\r\ncontent-length: 10\r\n\r\nab")
        .await
        .unwrap();
    let (status, head, body) = read_response(&mut conn, &mut Vec::new()).await;
    assert_eq!(status, 504, "{head}");
    assert!(
        String::from_utf8_lossy(&body).contains("limits.body_read_timeout"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    node.shutdown().await.expect("clean shutdown");
}

/// Shutdown does not wait for kept-alive connections that are idle: it closes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_kept_alive_connections_at_once() {
    let (node, _base, _dir) = start("").await;
    let mut idle = kept_alive(node.local_addr()).await;
    let started = std::time::Instant::now();
    node.shutdown().await.expect("clean shutdown");
    // Drained connections are waited for up to 10 s.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(closed_by_the_node(&mut idle).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_bodies_are_resource_exhausted() {
    let (node, base, _dir) = start(
        "limits:\n  max_key_bytes: 256\n  max_value_bytes: 8192\n  max_request_bytes: 16384\n",
    )
    .await;
    let addr = node.local_addr();

    // A declared length over the limit.
    let request = SetRequest {
        key: b(b"k"),
        value: Bytes::from(vec![1u8; 20_000]),
        ..SetRequest::default()
    };
    let message = call_raw(&base, Codec::Proto, "KVStore", "Set", &request)
        .await
        .expect_error(429, "resource_exhausted");
    assert!(
        message.contains("16384") && message.contains("limits.max_request_bytes"),
        "{message}"
    );

    // A chunked body (no declared length) is cut off once it passes the limit.
    let chunk = vec![b'x'; 10_000];
    let mut chunked = b"POST /kvstore.v1.KVStore/Set HTTP/1.1\r\nhost: test\r\ncontent-type: \
          application/proto\r\ntransfer-encoding: chunked\r\n\r\n"
        .to_vec();
    for _ in 0..2 {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status_code, text) = raw_http1(addr, &chunked).await;
    assert_eq!(status_code, 429, "{text}");
    assert!(text.contains("resource_exhausted"), "{text}");

    // A huge declared length is refused without reading the body: only a few bytes are ever
    // sent, so a server that waited for the body would never answer.
    let started = std::time::Instant::now();
    let (status_code, text) = raw_http1(
        addr,
        b"POST /kvstore.v1.KVStore/Set HTTP/1.1\r\nhost: test\r\ncontent-type: \
          application/proto\r\ncontent-length: 100000000\r\n\r\n\x0a\x01k",
    )
    .await;
    assert_eq!(status_code, 429, "{text}");
    assert!(
        text.contains("resource_exhausted") && text.contains("limits.max_request_bytes"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the refusal took {:?}",
        started.elapsed()
    );

    // The node is fine afterwards.
    assert_eq!(set(&base, Codec::Json, b"k", b"small").await, 1);
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_compare_and_set_is_aborted() {
    let (node, base, _dir) = start("").await;
    for codec in Codec::ALL {
        let key = format!("cas-{}", codec.name()).into_bytes();
        let cas = |if_version: u64, value: &'static [u8]| SetRequest {
            key: b(&key),
            value: b(value),
            if_version: Some(if_version),
            ..SetRequest::default()
        };
        // 0 = must not exist.
        let first: SetResponse = call(H1, &base, codec, "KVStore", "Set", &cas(0, b"v1")).await;
        let message = call_raw(&base, codec, "KVStore", "Set", &cas(0, b"again"))
            .await
            .expect_error(409, "aborted");
        assert!(message.contains("version mismatch"), "{codec:?}: {message}");
        let second: SetResponse =
            call(H1, &base, codec, "KVStore", "Set", &cas(first.lsn, b"v2")).await;
        let message = call_raw(&base, codec, "KVStore", "Set", &cas(first.lsn, b"stale"))
            .await
            .expect_error(409, "aborted");
        assert!(
            message.contains(&format!("expected {}", first.lsn))
                && message.contains(&format!("version {}", second.lsn)),
            "{codec:?}: the message gives both versions: {message}"
        );
        let got = get(&base, codec, &key).await;
        assert_eq!(
            (got.value, got.version),
            (b(b"v2"), second.lsn),
            "{codec:?}"
        );
    }
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_paths_and_bad_timeouts() {
    let (node, base, _dir) = start("").await;
    let body = Codec::Json.encode(&GetRequest {
        key: b(b"k"),
        min_lsn: 0,
    });
    let reply = post(
        &base,
        "/kvstore.v1.KVStore/Nope",
        Some("application/json"),
        body.clone(),
        &[],
    )
    .await;
    let message = reply.expect_error(501, "unimplemented");
    assert!(message.contains("kvstore.v1.KVStore"), "{message}");

    let reply = request(Method::GET, &format!("{base}/nope"), "").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text());
    assert!(reply.text().contains("/nope"), "{}", reply.text());

    for bad in ["abc", "-1", "12345678901"] {
        let reply = post(
            &base,
            &rpc_path("KVStore", "Get"),
            Some("application/json"),
            body.clone(),
            &[("connect-timeout-ms", bad)],
        )
        .await;
        let message = reply.expect_error(400, "invalid_argument");
        assert!(message.contains("Connect-Timeout-Ms"), "{bad}: {message}");
    }
    // A valid deadline is accepted.
    let reply = post(
        &base,
        &rpc_path("KVStore", "Get"),
        Some("application/json"),
        body,
        &[("connect-timeout-ms", "5000")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_cannot_be_applied_write_nothing() {
    let (node, base, _dir) = start("").await;
    for codec in Codec::ALL {
        let write = WriteRequest {
            mutations: vec![
                Mutation {
                    op: Op::Set as i32,
                    key: b(b"a"),
                    value: b(b"1"),
                    ttl_ms: 0,
                },
                Mutation {
                    op: Op::Unspecified as i32,
                    key: b(b"b"),
                    value: b(b"2"),
                    ttl_ms: 0,
                },
            ],
            min_replicas: 0,
        };
        let message = call_raw(&base, codec, "KVStore", "Write", &write)
            .await
            .expect_error(400, "invalid_argument");
        assert!(
            message.contains("mutation 1") && message.contains("OP_SET"),
            "{codec:?}: the message names the mutation and the valid ops: {message}"
        );
    }
    for key in [b"a", b"b"] {
        assert!(!get(&base, Codec::Proto, key).await.found);
    }
    let s = status(&base).await;
    assert_eq!((s.lsn, s.keys), (0, 0), "nothing reached the log: {s:?}");
    // WAIT semantics: a write asking for more replicas than confirm it in time is applied
    // anyway, and the error says so.
    let reply = post(
        &base,
        &rpc_path("KVStore", "Set"),
        Some("application/json"),
        r#"{"key":"Yw==","value":"Mw==","minReplicas":1}"#,
        &[("Connect-Timeout-Ms", "300")],
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        reply.text()
    );
    assert!(
        reply
            .text()
            .contains("applied on the primary but confirmed by only 0 of the 1"),
        "{}",
        reply.text()
    );
    assert!(get(&base, Codec::Proto, b"c").await.found);
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_with_noeviction_is_resource_exhausted() {
    let (node, base, _dir) =
        start("storage:\n  max_entries: 2\n  eviction_policy: noeviction\n").await;
    set(&base, Codec::Proto, b"a", b"1").await;
    set(&base, Codec::Proto, b"b", b"2").await;
    let message = call_raw(
        &base,
        Codec::Json,
        "KVStore",
        "Set",
        &SetRequest {
            key: b(b"c"),
            value: b(b"3"),
            ..SetRequest::default()
        },
    )
    .await
    .expect_error(429, "resource_exhausted");
    assert!(
        message.contains("full") && message.contains("noeviction"),
        "{message}"
    );
    // The curl route says the same.
    let reply = request(Method::PUT, &format!("{base}/v1/kv/c"), "3").await;
    reply.expect_error(429, "resource_exhausted");
    // Overwriting and deleting still work; then there is room again.
    set(&base, Codec::Proto, b"a", b"1b").await;
    let del: DeleteResponse = call(
        H1,
        &base,
        Codec::Proto,
        "KVStore",
        "Delete",
        &DeleteRequest { key: b(b"b") },
    )
    .await;
    assert!(del.found);
    set(&base, Codec::Proto, b"c", b"3").await;
    let s = status(&base).await;
    assert_eq!((s.keys, s.evicted_keys), (2, 0), "{s:?}");
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_routes_carry_raw_bytes() {
    let (node, base, _dir) = start("").await;
    let value: &[u8] = b"\x00\x01raw \xff\xfe bytes\n";

    // %2F is part of the key, not a path separator.
    let put = request(Method::PUT, &format!("{base}/v1/kv/dir%2Fname"), b(value)).await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text());
    let lsn = put.json()["lsn"]
        .as_u64()
        .unwrap_or_else(|| panic!("PUT answers {{\"lsn\": n}}: {}", put.text()));
    assert!(lsn > 0);
    let got = request(Method::GET, &format!("{base}/v1/kv/dir%2Fname"), "").await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.body.as_ref(), value);
    assert_eq!(
        got.header("x-wasmkv-version"),
        Some(lsn.to_string().as_str())
    );
    assert_eq!(got.header("x-wasmkv-expires-at-ms"), Some("0"));
    // The RPC sees the decoded key.
    let rpc = get(&base, Codec::Proto, b"dir/name").await;
    assert_eq!((rpc.value.as_ref(), rpc.version), (value, lsn));

    // Keys that are not UTF-8.
    let put = request(
        Method::PUT,
        &format!("{base}/v1/kv/%FF%00bin"),
        "binary key",
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text());
    let rpc = get(&base, Codec::Cbor, b"\xff\x00bin").await;
    assert_eq!(rpc.value.as_ref(), b"binary key");
    let got = request(Method::GET, &format!("{base}/v1/kv/%ff%00bin"), "").await;
    assert_eq!(
        got.body.as_ref(),
        b"binary key",
        "percent-decoding ignores case"
    );

    // DELETE: 200, then 404; GET of a missing key: 404 as a Connect error.
    let del = request(Method::DELETE, &format!("{base}/v1/kv/dir%2Fname"), "").await;
    assert_eq!(del.status, StatusCode::OK, "{}", del.text());
    assert_eq!(del.json()["found"], true, "{}", del.text());
    let del = request(Method::DELETE, &format!("{base}/v1/kv/dir%2Fname"), "").await;
    del.expect_error(404, "not_found");
    let got = request(Method::GET, &format!("{base}/v1/kv/dir%2Fname"), "").await;
    let message = got.expect_error(404, "not_found");
    assert!(
        message.contains("dir/name"),
        "the message names the key: {message}"
    );

    // An empty key and a bad ttl are invalid arguments.
    let reply = request(Method::PUT, &format!("{base}/v1/kv/"), "v").await;
    reply.expect_error(400, "invalid_argument");
    let reply = request(Method::PUT, &format!("{base}/v1/kv/t?ttl=soon"), "v").await;
    let message = reply.expect_error(400, "invalid_argument");
    assert!(message.contains("ttl"), "{message}");
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_put_with_a_ttl_expires() {
    let (node, base, _dir) = start("").await;
    let url = format!("{base}/v1/kv/short-lived");
    let before = now_ms();
    let put = request(Method::PUT, &format!("{url}?ttl=400ms"), "soon gone").await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text());
    let got = request(Method::GET, &url, "").await;
    if got.status == StatusCode::OK {
        let expires: i64 = got
            .header("x-wasmkv-expires-at-ms")
            .and_then(|v| v.parse().ok())
            .expect("an expiry header");
        assert!(
            (before + 400..=now_ms() + 400).contains(&expires),
            "expires_at_ms {expires}"
        );
    }
    let gone = wait_for("the key to expire", Duration::from_secs(10), || async {
        let got = request(Method::GET, &url, "").await;
        (got.status != StatusCode::OK).then_some(got)
    })
    .await;
    gone.expect_error(404, "not_found");
    assert!(
        now_ms() >= before + 400,
        "the key vanished before its TTL passed"
    );
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_put_over_the_value_limit_is_resource_exhausted() {
    let (node, base, _dir) = start(
        "limits:\n  max_key_bytes: 256\n  max_value_bytes: 8192\n  max_request_bytes: 16384\n",
    )
    .await;
    let reply = request(Method::PUT, &format!("{base}/v1/kv/big"), vec![1u8; 8193]).await;
    let message = reply.expect_error(429, "resource_exhausted");
    assert!(message.contains("limits.max_value_bytes"), "{message}");
    let reply = request(Method::PUT, &format!("{base}/v1/kv/big"), vec![1u8; 8192]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let (node, base, _dir) = start("").await;
    let health = request(Method::GET, &format!("{base}/healthz"), "").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.text());
    let ready = request(Method::GET, &format!("{base}/readyz"), "").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text());

    set(&base, Codec::Proto, b"m", b"1").await;
    get(&base, Codec::Json, b"m").await;
    call_raw(
        &base,
        Codec::Cbor,
        "KVStore",
        "Get",
        &GetRequest {
            key: Bytes::new(),
            min_lsn: 0,
        },
    )
    .await
    .expect_error(400, "invalid_argument");

    let metrics = request(Method::GET, &format!("{base}/metrics"), "").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = metrics.text();
    let has_line = |prefix: &str, parts: &[&str]| {
        text.lines()
            .any(|l| l.starts_with(prefix) && parts.iter().all(|p| l.contains(p)))
    };
    for method in ["Set", "Get"] {
        assert!(
            has_line(
                "wasmkv_request_duration_seconds_count",
                &[&format!("method=\"{method}\"")]
            ),
            "no latency for {method}:\n{text}"
        );
    }
    let get_count = text
        .lines()
        .find(|l| {
            l.starts_with("wasmkv_request_duration_seconds_count") && l.contains("method=\"Get\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok());
    assert_eq!(get_count, Some(2.0), "two Gets were served:\n{text}");
    assert!(
        has_line(
            "wasmkv_request_errors_total",
            &["method=\"Get\"", "code=\"invalid_argument\"", " 1"]
        ),
        "the error is counted by code:\n{text}"
    );
    assert!(
        !has_line("wasmkv_request_errors_total", &["method=\"Set\""]),
        "no Set failed:\n{text}"
    );
    for name in [
        "wasmkv_keys 1",
        "wasmkv_wal_bytes ",
        "wasmkv_wal_fsync_seconds",
        "wasmkv_applied_lsn 1",
    ] {
        assert!(has_line(name, &[]), "no {name}:\n{text}");
    }
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_a_restart_and_the_directory_is_locked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (node, base) = common::start_in(dir.path(), "").await.expect("start");
    set(&base, Codec::Cbor, b"durable", b"yes").await;
    let put = request(Method::PUT, &format!("{base}/v1/kv/also"), "curl").await;
    assert_eq!(put.status, StatusCode::OK);
    let before: DigestResponse = call(
        H1,
        &base,
        Codec::Proto,
        "Admin",
        "Digest",
        &DigestRequest {},
    )
    .await;

    // A second node on the same directory is refused while the first runs.
    let err = match common::start_in(dir.path(), "").await {
        Ok((second, _)) => {
            second.shutdown().await.ok();
            panic!("a second node opened a data directory in use");
        }
        Err(e) => e.to_string(),
    };
    assert!(err.contains("in use"), "{err}");
    // The first one is unaffected.
    assert_eq!(
        get(&base, Codec::Json, b"durable").await.value.as_ref(),
        b"yes"
    );

    node.shutdown().await.expect("clean shutdown");
    let (node, base) = common::start_in(dir.path(), "")
        .await
        .expect("restart on the same directory");
    let got = get(&base, Codec::Json, b"durable").await;
    assert_eq!(
        (got.found, got.value.as_ref(), got.version),
        (true, &b"yes"[..], 1)
    );
    let got = request(Method::GET, &format!("{base}/v1/kv/also"), "").await;
    assert_eq!(got.body.as_ref(), b"curl");
    let after: DigestResponse = call(
        H1,
        &base,
        Codec::Proto,
        "Admin",
        "Digest",
        &DigestRequest {},
    )
    .await;
    assert_eq!(before, after);
    // New writes continue the LSN sequence.
    assert_eq!(set(&base, Codec::Proto, b"next", b"3").await, 3);
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_http2_with_prior_knowledge() {
    let (node, base, _dir) = start("").await;
    let h2 = HttpVersion::Http2;
    let set: SetResponse = call(
        h2,
        &base,
        Codec::Proto,
        "KVStore",
        "Set",
        &SetRequest {
            key: b(b"h2"),
            value: b(b"over http/2"),
            ..SetRequest::default()
        },
    )
    .await;
    let got: GetResponse = call(
        h2,
        &base,
        Codec::Json,
        "KVStore",
        "Get",
        &GetRequest {
            key: b(b"h2"),
            min_lsn: 0,
        },
    )
    .await;
    assert_eq!(
        (got.value.as_ref(), got.version),
        (&b"over http/2"[..], set.lsn)
    );
    // Errors come back the same way.
    let reply = common::post_with(
        h2,
        &base,
        &rpc_path("KVStore", "Get"),
        Some("text/plain"),
        "x",
        &[],
    )
    .await;
    reply.expect_error(400, "invalid_argument");
    assert_eq!(
        reply.version,
        http::Version::HTTP_2,
        "the exchange used HTTP/2"
    );
    node.shutdown().await.expect("clean shutdown");
}

/// Regressions found in review: each edge behaved differently from the rest of the API.
#[tokio::test(flavor = "multi_thread")]
async fn edge_cases_behave_like_the_rest_of_the_api() {
    let (node, base, _dir) = start("").await;

    // A TTL too large for the wire's signed expiry is refused, not wrapped negative.
    let reply = call_raw(
        &base,
        Codec::Json,
        "KVStore",
        "Set",
        &SetRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            ttl_ms: u64::MAX,
            ..SetRequest::default()
        },
    )
    .await;
    let message = reply.expect_error(400, "invalid_argument");
    assert!(message.contains("ttl_ms"), "{message}");

    // An empty body is the empty message in CBOR too, as in JSON and protobuf.
    for codec in Codec::ALL {
        let reply = post(
            &base,
            &rpc_path("Admin", "Status"),
            Some(codec.unary_content_type()),
            Vec::new(),
            &[],
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{codec:?}: {}", reply.text());
    }

    // `?ttl=0s` means "never expires", as ttl_ms 0 does on the RPC.
    let put = request(Method::PUT, &format!("{base}/v1/kv/forever?ttl=0s"), "v").await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text());
    let got: GetResponse = call(
        HttpVersion::Http1,
        &base,
        Codec::Cbor,
        "KVStore",
        "Get",
        &GetRequest {
            key: Bytes::from_static(b"forever"),
            min_lsn: 0,
        },
    )
    .await;
    assert!(got.found && got.expires_at_ms == 0, "{got:?}");

    // Asking for updates beyond this node's log is an error, not "caught up".
    let reply = call_raw(
        &base,
        Codec::Cbor,
        "KVStore",
        "GetUpdates",
        &GetUpdatesRequest {
            since_lsn: 100,
            limit: 0,
        },
    )
    .await;
    let message = reply.expect_error(400, "out_of_range");
    assert!(message.contains("since_lsn 100"), "{message}");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_timeout_ms_bounds_the_call() {
    let (node, base, _dir) = start("").await;
    // A deadline that has already passed stops the call before it does anything.
    let reply = post(
        &base,
        &rpc_path("KVStore", "Set"),
        Some("application/json"),
        r#"{"key":"aw==","value":"dg=="}"#,
        &[("Connect-Timeout-Ms", "0")],
    )
    .await;
    let message = reply.expect_error(504, "deadline_exceeded");
    assert!(message.contains("nothing was done"), "{message}");
    let status: StatusResponse = call(
        HttpVersion::Http1,
        &base,
        Codec::Cbor,
        "Admin",
        "Status",
        &StatusRequest {},
    )
    .await;
    assert_eq!(status.keys, 0);
    // A generous deadline does not get in the way.
    let reply = post(
        &base,
        &rpc_path("KVStore", "Set"),
        Some("application/json"),
        r#"{"key":"aw==","value":"dg=="}"#,
        &[("Connect-Timeout-Ms", "10000")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_serves_reads_refuses_writes_and_reports_its_link() {
    // Port 9 (discard) refuses connections: the replica keeps trying and says so.
    let (node, base, _dir) = common::start("primary:\n  address: 127.0.0.1:9\n").await;
    let reply = post(
        &base,
        &rpc_path("KVStore", "Set"),
        Some("application/json"),
        r#"{"key":"aw==","value":"dg=="}"#,
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    assert!(
        reply.text().contains("failed_precondition"),
        "{}",
        reply.text()
    );
    assert!(
        reply.text().contains("primary at 127.0.0.1:9"),
        "{}",
        reply.text()
    );
    assert_eq!(reply.header("wasmkv-primary"), Some("127.0.0.1:9"));
    assert!(!get(&base, Codec::Proto, b"k").await.found);
    common::wait_for(
        "the link to be reported down",
        Duration::from_secs(10),
        || async {
            let s = status(&base).await;
            let link = s.primary.unwrap_or_default();
            (s.role == "replica" && link.state == "disconnected" && !link.last_error.is_empty())
                .then_some(())
        },
    )
    .await;
    node.shutdown().await.unwrap();
}
