//! The hot paths' heap allocations do not grow with the keys a request carries.
//!
//! Counted per thread by `allocation-counter`'s global allocator, on the calling thread only
//! (with `sync: never` a write is logged and applied on the thread that makes it). Each case
//! runs once to warm up buffers that are kept for reuse, then compares a request of 16 keys
//! with one of 64: a copy per key anywhere on the path shows up as 48 more allocations.

use allocation_counter::measure;
use bytes::Bytes;
use wasmkv::api::Codec;
use wasmkv::api::proto::{Mutation as WireMutation, Op, WriteRequest};
use wasmkv::db::{Db, DbOptions};
use wasmkv::wal::{Mutation, SyncPolicy};

fn key(i: usize) -> Bytes {
    Bytes::from(format!("key:{i:012}"))
}

/// An open store without fsync, in a directory that lives as long as the returned guard.
fn store() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = DbOptions::new(dir.path(), SyncPolicy::Never);
    opts.disk_reserve = 0;
    let db = Db::open(opts).unwrap();
    (dir, db)
}

/// Sets of `key(0)` to `key(n - 1)` to 64 bytes of `fill`.
fn sets(n: usize, fill: u8) -> Vec<Mutation> {
    (0..n)
        .map(|i| Mutation::Set {
            key: key(i),
            value: Bytes::from(vec![fill; 64]),
            expires_at_ms: 0,
        })
        .collect()
}

/// The allocations of `run(n)` for 16 and for 64 keys, after one warm-up run of each.
fn for_16_and_64_keys(mut run: impl FnMut(usize)) -> (u64, u64) {
    run(16);
    run(64);
    let sixteen = measure(|| run(16)).count_total;
    let sixty_four = measure(|| run(64)).count_total;
    (sixteen, sixty_four)
}

#[test]
fn decoding_a_write_shares_the_body_instead_of_copying_each_key_and_value() {
    let body = |n: usize| {
        let request = WriteRequest {
            mutations: (0..n)
                .map(|i| WireMutation {
                    op: Op::Set.into(),
                    key: key(i),
                    value: Bytes::from(vec![b'v'; 64]),
                    ttl_ms: 0,
                })
                .collect(),
            min_replicas: 0,
        };
        Bytes::from(Codec::Cbor.encode(&request))
    };
    let bodies = [body(16), body(64)];
    let (sixteen, sixty_four) = for_16_and_64_keys(|n| {
        let body = &bodies[usize::from(n == 64)];
        let request: WriteRequest = Codec::Cbor.decode_shared(body).unwrap();
        assert_eq!(request.mutations.len(), n);
    });
    assert_eq!(sixteen, sixty_four, "allocations grow with the keys");
}

#[test]
fn a_write_of_same_size_overwrites_allocates_nothing_per_key() {
    let (_dir, db) = store();
    // Every key exists before anything is counted: the writes below overwrite.
    db.write(sets(64, b'a')).unwrap();
    let batches = [sets(16, b'b'), sets(64, b'c')];
    let (sixteen, sixty_four) = for_16_and_64_keys(|n| {
        db.write(batches[usize::from(n == 64)].clone()).unwrap();
    });
    assert_eq!(sixteen, sixty_four, "allocations grow with the keys");
    assert_eq!(db.get(&key(63)).unwrap().value, vec![b'c'; 64]);
}

#[test]
fn a_multi_get_copies_its_values_into_one_buffer() {
    let (_dir, db) = store();
    db.write(sets(64, b'v')).unwrap();
    let keys: Vec<Bytes> = (0..64).map(key).collect();
    let (sixteen, sixty_four) = for_16_and_64_keys(|n| {
        let found = db.get_many(&keys[..n]);
        assert!(found.iter().all(Option::is_some));
    });
    assert_eq!(sixteen, sixty_four, "allocations grow with the keys");
}
