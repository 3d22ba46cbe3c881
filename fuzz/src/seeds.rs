//! The seed corpus: for each target, a few valid inputs made by the real encoders, so fuzzing
//! starts from the shapes the decoders accept instead of having to discover them. Written to
//! `corpus/<target>/` by `cargo xtask fuzz --seeds`, which commits nothing by itself.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::Path;

use bytes::Bytes;
use wasmkv::api::Codec;
use wasmkv::api::connect::envelope;
use wasmkv::api::proto::{
    self, AckRequest, GetRequest, SetRequest, SubscribeRequest, SubscribeResponse, WatchRequest,
    WriteRequest,
};
use wasmkv::storage::SnapshotEntry;
use wasmkv::wal::snapshot::SnapshotWriter;
use wasmkv::wal::{Command, Mutation, encode_record};
use wasmkv_guest::abi::{self, FilterOutput, Verdict, Victims};
use wasmkv_guest::serde::Serialize;

use crate::{SEGMENT_MAGIC, scratch};

/// One seed: the target it is for, a file name saying what it is, its bytes.
pub struct Seed {
    pub target: &'static str,
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Every target's seeds. `configs` is the directory of the example configurations.
pub fn all(configs: &Path) -> std::io::Result<Vec<Seed>> {
    let mut seeds = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        seeds.push(Seed {
            target,
            name: name.to_owned(),
            bytes,
        })
    };
    for (name, command) in commands() {
        add("wal_record", name, frame(7, &command));
    }
    add("wal_record", "stream", frames(1));
    add("wal_segment", "empty", SEGMENT_MAGIC.to_vec());
    let segment = [SEGMENT_MAGIC.to_vec(), frames(1)].concat();
    add(
        "wal_segment",
        "torn_tail",
        segment[..segment.len() - 3].to_vec(),
    );
    add("wal_segment", "intact", segment.clone());
    // A live log's segment: its records, then preallocated zeros; and a record torn there.
    let zeros = vec![0u8; 256];
    add(
        "wal_segment",
        "preallocated",
        [segment.as_slice(), &zeros].concat(),
    );
    add(
        "wal_segment",
        "torn_in_preallocated",
        [&segment[..segment.len() - 3], &zeros].concat(),
    );
    // The target's notation for a second segment: its magic, the LSN naming it, its records.
    let next_lsn = commands().len() as u64 + 1;
    let second = [SEGMENT_MAGIC, &next_lsn.to_le_bytes(), &frames(next_lsn)].concat();
    add("wal_segment", "two_segments", [segment, second].concat());
    add("snapshot", "empty", snapshot(&[])?);
    add("snapshot", "three_entries", snapshot(&entries())?);
    for codec in Codec::ALL {
        let target = match codec {
            Codec::Proto => "request_proto",
            Codec::Json => "request_json",
            Codec::Cbor => "request_cbor",
        };
        for (name, body) in messages(codec) {
            add(target, &name, body);
        }
        let watch = codec.encode(&watch());
        add(
            "connect_envelope",
            &format!("watch_{}", codec.name()),
            envelope(0, &watch).to_vec(),
        );
        let subscribe = codec.encode(&subscribe());
        let name = format!("subscribe_{}", codec.name());
        add("connect_envelope", &name, envelope(0, &subscribe).to_vec());
    }
    for (name, reply) in replies() {
        add("plugin_output", name, reply);
    }
    for entry in fs::read_dir(configs)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let name = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            add("config_yaml", &name, fs::read(&path)?);
        }
    }
    add(
        "config_yaml",
        "with_env",
        b"server:\n  port: 8080\n\0WASMKV_SERVER__PORT=9090\nWASMKV_WAL__SYNC=always\n".to_vec(),
    );
    Ok(seeds)
}

/// Write `seeds` under `corpus`, replacing what their targets' directories held (so a seed
/// renamed or dropped here does not linger there).
pub fn write(corpus: &Path, seeds: &[Seed]) -> std::io::Result<()> {
    let targets: BTreeSet<&str> = seeds.iter().map(|s| s.target).collect();
    for target in targets {
        let dir = corpus.join(target);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
    }
    for seed in seeds {
        fs::write(corpus.join(seed.target).join(&seed.name), &seed.bytes)?;
    }
    Ok(())
}

/// One record of each kind.
fn commands() -> Vec<(&'static str, Command)> {
    let b = |s: &'static str| Bytes::from_static(s.as_bytes());
    vec![
        (
            "set",
            Command::Set {
                key: b("user:1"),
                value: b("alice"),
                expires_at_ms: 0,
            },
        ),
        (
            "set_ttl",
            Command::Set {
                key: b("session"),
                value: b(""),
                expires_at_ms: 1_700_000_000_000,
            },
        ),
        ("delete", Command::Delete { key: b("user:1") }),
        (
            "batch",
            Command::Batch(vec![
                Mutation::Set {
                    key: b("a"),
                    value: b("1"),
                    expires_at_ms: 5,
                },
                Mutation::Delete { key: b("b") },
            ]),
        ),
        ("expire", Command::Expire(vec![b("old"), b("older")])),
        ("evict", Command::Evict(vec![b("big")])),
    ]
}

fn frame(lsn: u64, command: &Command) -> Vec<u8> {
    let mut out = Vec::new();
    encode_record(lsn, 1_700_000_000_000 + lsn, command, &mut out);
    out
}

/// One record of each kind with dense LSNs from `first_lsn`, back to back.
fn frames(first_lsn: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for (lsn, (_, command)) in (first_lsn..).zip(commands()) {
        encode_record(lsn, 1_700_000_000_000 + lsn, &command, &mut out);
    }
    out
}

fn entries() -> Vec<SnapshotEntry> {
    (0..3u64)
        .map(|i| SnapshotEntry {
            key: Bytes::from(format!("key-{i}")),
            value: Bytes::from(vec![b'v'; i as usize * 3]),
            expires_at_ms: i * 1000,
            version: 10 + i,
        })
        .collect()
}

/// The bytes of a snapshot of `entries`, as the real writer writes them.
fn snapshot(entries: &[SnapshotEntry]) -> std::io::Result<Vec<u8>> {
    let dir = scratch::fresh_dir("seed_snapshot");
    let mut writer = SnapshotWriter::create(&dir, 12, 1_700_000_000_000).map_err(io)?;
    for entry in entries {
        writer.write(entry).map_err(io)?;
    }
    fs::read(writer.finish().map_err(io)?)
}

fn io(e: wasmkv::wal::WalError) -> std::io::Error {
    std::io::Error::other(e)
}

fn watch() -> WatchRequest {
    WatchRequest {
        prefix: Bytes::from_static(b"user:"),
        from_lsn: 42,
    }
}

fn subscribe() -> SubscribeRequest {
    SubscribeRequest {
        replication_id: "3f2a9c".into(),
        from_lsn: 7,
        replica_id: "replica-1".into(),
        // One label: a map's encoding follows its hash order, and seeds should not change
        // from one generation to the next.
        labels: HashMap::from([("region".into(), "eu".into())]),
        address: "127.0.0.1:8081".into(),
    }
}

/// A message of each kind with fields set, encoded with `codec`.
fn messages(codec: Codec) -> Vec<(String, Vec<u8>)> {
    let set = SetRequest {
        key: Bytes::from_static(b"k\xff"),
        value: Bytes::from_static(b"\x00v"),
        ttl_ms: 1500,
        min_replicas: 1,
        if_version: Some(0),
    };
    let write = WriteRequest {
        mutations: vec![
            proto::Mutation {
                op: proto::Op::Set as i32,
                key: Bytes::from_static(b"a"),
                value: Bytes::from_static(b"1"),
                ttl_ms: 0,
            },
            proto::Mutation {
                op: proto::Op::Delete as i32,
                key: Bytes::from_static(b"b"),
                ..Default::default()
            },
        ],
        min_replicas: 0,
    };
    let records = SubscribeResponse {
        event: proto::StreamEvent::Records as i32,
        primary_lsn: 6,
        primary_time_ms: 1_700_000_000_000,
        records: Bytes::from(frames(1)),
        ..Default::default()
    };
    let snapshot_chunk = SubscribeResponse {
        event: proto::StreamEvent::Snapshot as i32,
        items: vec![proto::SnapshotItem {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            expires_at_ms: 9,
            version: 3,
        }],
        ..Default::default()
    };
    let ack = AckRequest {
        replica_id: "replica-1".into(),
        replication_id: "3f2a9c".into(),
        applied_lsn: 6,
    };
    let get = GetRequest {
        key: Bytes::from_static(b"user:1"),
        min_lsn: 3,
    };
    vec![
        ("get".into(), codec.encode(&get)),
        ("set".into(), codec.encode(&set)),
        ("write".into(), codec.encode(&write)),
        ("watch".into(), codec.encode(&watch())),
        ("subscribe".into(), codec.encode(&subscribe())),
        ("ack".into(), codec.encode(&ack)),
        ("records".into(), codec.encode(&records)),
        ("snapshot_chunk".into(), codec.encode(&snapshot_chunk)),
    ]
}

/// A reply of each kind a plugin gives, and an error message.
fn replies() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("allow", cbor(&Verdict::allow())),
        ("deny", cbor(&Verdict::deny("keys must start with user:"))),
        (
            "victims",
            cbor(&Victims {
                victims: vec![2, 0],
            }),
        ),
        (
            "keep",
            cbor(&FilterOutput {
                keep: vec![true, false, true],
            }),
        ),
        (
            "error",
            abi::encode_error("wasmkv_validate: bad input: missing field `op`"),
        ),
    ]
}

fn cbor<T: Serialize>(value: &T) -> Vec<u8> {
    abi::encode(value).expect("ABI types always encode")
}
