//! Model-based property test: random sequences of sets (with TTLs and compare-and-set),
//! deletes, batches, snapshots, restarts and expiry runs over a small key space, checked after
//! every step against a `HashMap` model of values, versions and expiry times.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use wasmkv::clock::now_ms;
use wasmkv::db::{Db, DbError, DbOptions, SetOptions};
use wasmkv::wal::{Mutation, SyncPolicy};

const KEYS: u8 = 8;

/// The compare-and-set precondition of a set.
#[derive(Clone, Debug)]
enum Cas {
    /// No precondition.
    Unconditional,
    /// The key's current version according to the model: must succeed.
    Current,
    /// `if_version: Some(0)`: succeeds only if the key is absent.
    Absent,
    /// A version the key does not have (the current one shifted by this much): must fail.
    Wrong(u64),
}

/// One mutation of a batch: the key, and the value (with a TTL or not) to set, or `None` to
/// delete.
type BatchMutation = (u8, Option<(Vec<u8>, bool)>);

#[derive(Clone, Debug)]
enum Op {
    Set {
        key: u8,
        value: Vec<u8>,
        ttl: bool,
        cas: Cas,
    },
    Delete {
        key: u8,
    },
    Batch(Vec<BatchMutation>),
    Snapshot,
    Restart,
    ExpireNow,
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..8)
}

fn cas() -> impl Strategy<Value = Cas> {
    prop_oneof![
        3 => Just(Cas::Unconditional),
        2 => Just(Cas::Current),
        1 => Just(Cas::Absent),
        1 => (1..4u64).prop_map(Cas::Wrong),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..KEYS, value(), any::<bool>(), cas())
            .prop_map(|(key, value, ttl, cas)| Op::Set { key, value, ttl, cas }),
        3 => (0..KEYS).prop_map(|key| Op::Delete { key }),
        3 => prop::collection::vec(
            (0..KEYS, prop::option::weighted(0.7, (value(), any::<bool>()))),
            1..=4,
        )
        .prop_map(Op::Batch),
        1 => Just(Op::Snapshot),
        1 => Just(Op::Restart),
        1 => Just(Op::ExpireNow),
    ]
}

/// What the store must hold: per key (value, version, expires_at_ms), and the last LSN.
#[derive(Default)]
struct Model {
    items: HashMap<u8, (Vec<u8>, u64, u64)>,
    lsn: u64,
}

impl Model {
    fn version(&self, key: u8) -> u64 {
        self.items.get(&key).map_or(0, |&(_, version, _)| version)
    }
}

fn key(k: u8) -> Bytes {
    Bytes::from(format!("k{k}"))
}

fn open(dir: &Path) -> Db {
    let mut opts = DbOptions::new(dir, SyncPolicy::Never);
    opts.disk_reserve = 0;
    Db::open(opts).expect("open the store")
}

fn check(db: &Db, model: &Model, step: usize) -> Result<(), TestCaseError> {
    for k in 0..KEYS {
        let got = db
            .get(&key(k))
            .map(|item| (item.value.to_vec(), item.version, item.expires_at_ms));
        prop_assert_eq!(
            got,
            model.items.get(&k).cloned(),
            "key {} after step {}",
            k,
            step
        );
    }
    prop_assert_eq!(
        db.stats().keys,
        model.items.len() as u64,
        "after step {}",
        step
    );
    prop_assert_eq!(db.applied_lsn(), model.lsn, "after step {}", step);
    Ok(())
}

/// Run `ops` against a fresh store and the model, comparing after every step.
fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    // Far enough that nothing expires during the test.
    let far = now_ms() + Duration::from_secs(3_600).as_millis() as u64;
    let expiry = |ttl: bool| if ttl { far } else { 0 };
    let mut db = open(dir.path());
    let mut model = Model::default();
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Set {
                key: k,
                value,
                ttl,
                cas,
            } => {
                let current = model.version(*k);
                let if_version = match cas {
                    Cas::Unconditional => None,
                    Cas::Current => Some(current),
                    Cas::Absent => Some(0),
                    Cas::Wrong(d) => Some(current.checked_sub(*d).unwrap_or(current + d)),
                };
                let opts = SetOptions {
                    expires_at_ms: expiry(*ttl),
                    if_version,
                };
                let result = db.set(key(*k), Bytes::from(value.clone()), opts);
                match if_version {
                    Some(expected) if expected != current => match result {
                        Err(DbError::VersionMismatch {
                            expected: e,
                            actual,
                            ..
                        }) => prop_assert_eq!((e, actual), (expected, current)),
                        other => {
                            prop_assert!(false, "step {}: {:?} gave {:?}", step, op, other)
                        }
                    },
                    _ => {
                        let lsn = result.map_err(|e| {
                            TestCaseError::fail(format!("step {step}: {op:?} failed: {e}"))
                        })?;
                        prop_assert_eq!(lsn, model.lsn + 1, "step {}", step);
                        model.lsn = lsn;
                        model.items.insert(*k, (value.clone(), lsn, expiry(*ttl)));
                    }
                }
            }
            Op::Delete { key: k } => {
                let outcome = db.delete(key(*k)).expect("delete");
                let present = model.items.remove(k).is_some();
                prop_assert_eq!(outcome.found, present, "step {}", step);
                if present {
                    model.lsn += 1;
                }
                prop_assert_eq!(outcome.lsn, model.lsn, "step {}", step);
            }
            Op::Batch(mutations) => {
                let batch = mutations
                    .iter()
                    .map(|(k, set)| match set {
                        Some((value, ttl)) => Mutation::Set {
                            key: key(*k),
                            value: Bytes::from(value.clone()),
                            expires_at_ms: expiry(*ttl),
                        },
                        None => Mutation::Delete { key: key(*k) },
                    })
                    .collect();
                let lsn = db.write(batch).expect("batch");
                prop_assert_eq!(lsn, model.lsn + 1, "step {}", step);
                model.lsn = lsn;
                for (k, set) in mutations {
                    match set {
                        Some((value, ttl)) => {
                            model.items.insert(*k, (value.clone(), lsn, expiry(*ttl)));
                        }
                        None => {
                            model.items.remove(k);
                        }
                    }
                }
            }
            Op::Snapshot => {
                let info = db.snapshot().expect("snapshot");
                prop_assert_eq!(info.lsn, model.lsn, "step {}", step);
                prop_assert_eq!(info.entries, model.items.len() as u64, "step {}", step);
            }
            Op::Restart => {
                drop(db);
                db = open(dir.path());
                prop_assert!(db.recovery().snapshot_lsn <= model.lsn);
            }
            Op::ExpireNow => {
                prop_assert_eq!(db.expire_now().expect("expire"), 0, "step {}", step);
            }
        }
        check(&db, &model, step)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        // Leave no regression files in the source tree; failures print the minimal case.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_store_behaves_like_a_map_through_snapshots_and_restarts(
        ops in prop::collection::vec(op(), 1..60)
    ) {
        run(&ops)?;
    }
}
