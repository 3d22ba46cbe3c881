//! The sharded map: reads, writes, accounting and iteration.

use std::fmt;
use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::{Bytes, BytesMut};
use foldhash::fast::RandomState;
use smallvec::SmallVec;

use super::entry::{AccessClock, Entry, entry_cost};
use super::shard::{Replaced, Shard, ShardData};

/// Upper bound on the shard count: beyond it shards only cost memory and iteration time.
const MAX_SHARDS: usize = 1 << 16;

/// How to build an [`Engine`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineOptions {
    /// Number of shards, clamped to 1..=65536. 0 picks the next power of two at or above
    /// 16 x the available parallelism: enough shards that threads rarely wait for the same
    /// lock, few enough that per-shard overhead stays negligible.
    pub shards: usize,
}

/// A live value, as returned by [`Engine::get`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub value: Bytes,
    pub version: u64,
    /// Absolute wall-clock expiry in ms; 0 means none.
    pub expires_at_ms: u64,
}

/// Metadata of a live entry, as returned by [`Engine::peek`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peek {
    pub version: u64,
    pub expires_at_ms: u64,
    /// [`entry_cost`] of the entry.
    pub cost: u64,
}

/// A stored entry copied out by [`Engine::for_each_chunk`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotEntry {
    pub key: Bytes,
    pub value: Bytes,
    pub expires_at_ms: u64,
    pub version: u64,
}

/// Entry and memory counts, updated together by every write. Kept on their own cache line so
/// that readers of the shard array do not share it with writers bumping the counters.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Counters {
    len: AtomicU64,
    memory: AtomicU64,
}

/// The in-memory key-value map, shared by all threads.
///
/// Each key lives in one shard chosen by hashing it; each shard has its own lock, so there is no
/// global lock. Reads take a shard's read lock only, even though they update access metadata.
pub struct Engine {
    shards: Box<[Shard]>,
    /// Chooses a key's shard. Seeded apart from the shards' map hashers: if both used the same
    /// hash, all keys of a shard would agree on the hash bits that chose the shard.
    router: RandomState,
    counters: Counters,
    clock: AccessClock,
}

impl Engine {
    pub fn new(opts: EngineOptions) -> Self {
        let count = if opts.shards == 0 {
            let cpus = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
            cpus.saturating_mul(16).min(MAX_SHARDS).next_power_of_two()
        } else {
            opts.shards.min(MAX_SHARDS)
        };
        Self {
            shards: (0..count).map(|_| Shard::new()).collect(),
            router: RandomState::default(),
            counters: Counters::default(),
            clock: AccessClock::new(),
        }
    }

    /// Live value or `None`. An entry with `expires_at_ms != 0 && expires_at_ms <= now_ms` is
    /// hidden even though it is still stored: only the primary's expiry deletes it, so that
    /// replicas agree with the primary. Records the read in the access metadata.
    pub fn get(&self, key: &[u8], now_ms: u64) -> Option<Item> {
        self.get_at(key, now_ms, self.clock.now_tick())
    }

    /// [`Engine::get`] with the access tick given, so tests can age entries deterministically.
    pub(super) fn get_at(&self, key: &[u8], now_ms: u64, tick: u32) -> Option<Item> {
        self.read_live(key, now_ms, tick, |entry| Item {
            value: Bytes::copy_from_slice(entry.value()),
            version: entry.version,
            expires_at_ms: entry.expires_at_ms,
        })
    }

    /// [`Engine::get`] of several keys. The values found are copied into one buffer that the
    /// returned items share: one allocation for them all where a `MultiGet` of 16 made 16.
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K], now_ms: u64) -> Vec<Option<Item>> {
        let tick = self.clock.now_tick();
        let mut values = BytesMut::new();
        let mut found = Vec::with_capacity(keys.len());
        self.visit_many(keys, AsRef::as_ref, now_ms, |i, entry| {
            found.push(entry.map(|entry| {
                entry.touch(tick);
                if values.capacity() == 0 {
                    values.reserve(first_reserve(entry.value().len(), keys.len() - i));
                }
                let start = values.len();
                values.extend_from_slice(entry.value());
                (start..values.len(), entry.version, entry.expires_at_ms)
            }));
        });
        let values = values.freeze();
        found
            .into_iter()
            .map(|found| {
                found.map(|(range, version, expires_at_ms)| Item {
                    value: values.slice(range),
                    version,
                    expires_at_ms,
                })
            })
            .collect()
    }

    /// Bring the entries of `keys` into the CPU's cache, as [`Engine::get_many`] looks them
    /// up, without reading or changing them: writes applied together (a batch, or a group
    /// commit's records) then find every key they overwrite there, where one lookup after
    /// another would wait for each in turn.
    pub fn warm<T>(&self, items: &[T], key: impl Fn(&T) -> &[u8]) {
        self.visit_many(items, key, 0, |_, _| {});
    }

    /// Call `visit(i, entry)` with the live entry of each of `items`' keys, in order.
    ///
    /// A lookup in a large map is three dependent cache misses (the table slot, the entry,
    /// its key and value), and one key after another they add up. So each chunk of keys takes
    /// the read lock of every shard it touches first, and then looks its keys up in passes of
    /// plain loads that the CPU can overlap across keys: each key's slot in its shard's table,
    /// then the entries in those slots, then the lines of their keys and values, and only then
    /// the visits (a lock taken per key would be an atomic read-modify-write, a full fence on
    /// x86, between one key's misses and the next).
    /// The locks are taken in shard order, so two batches never wait for each other (every
    /// other caller holds one shard lock at a time), and for one chunk only, so a large batch
    /// never holds writers up for long. `now_ms` 0 counts nothing as expired.
    fn visit_many<T>(
        &self,
        items: &[T],
        key_of: impl Fn(&T) -> &[u8],
        now_ms: u64,
        mut visit: impl FnMut(usize, Option<&Entry>),
    ) {
        for (n, chunk) in items.chunks(LOOKUP_CHUNK).enumerate() {
            let shard_of_key: SmallVec<[usize; LOOKUP_CHUNK]> = chunk
                .iter()
                .map(|item| self.shard_index(key_of(item)))
                .collect();
            let mut locked = shard_of_key.clone();
            locked.sort_unstable();
            locked.dedup();
            let guards: SmallVec<[_; LOOKUP_CHUNK]> =
                locked.iter().map(|&i| self.shards[i].0.read()).collect();
            let data_of = |shard: usize| -> &ShardData {
                &guards[locked
                    .binary_search(&shard)
                    .expect("every key's shard is locked")]
            };
            let slots: SmallVec<[Option<usize>; LOOKUP_CHUNK]> = chunk
                .iter()
                .zip(&shard_of_key)
                .map(|(item, &shard)| data_of(shard).slot_of(key_of(item)))
                .collect();
            // The candidate entries' own fields: what brings each entry's line in.
            let candidates: SmallVec<[Option<(&Entry, bool)>; LOOKUP_CHUNK]> = slots
                .iter()
                .zip(&shard_of_key)
                .map(|(slot, &shard)| {
                    let entry = data_of(shard).entry_at((*slot)?)?;
                    Some((entry, entry.is_expired(now_ms)))
                })
                .collect();
            // Their keys and values, which the visits read (and a batch's writes overwrite).
            for (entry, _) in candidates.iter().flatten() {
                entry.warm();
            }
            let answers = chunk.iter().zip(shard_of_key.iter().zip(candidates));
            for (i, (item, (&shard, candidate))) in answers.enumerate() {
                let key = key_of(item);
                let entry = candidate.and_then(|(entry, expired)| {
                    if entry.key() == key {
                        Some((entry, expired))
                    } else {
                        // Another key with the same hash tag came first.
                        let entry = data_of(shard).get(key)?;
                        Some((entry, entry.is_expired(now_ms)))
                    }
                });
                let live = match entry {
                    Some((entry, false)) => Some(entry),
                    _ => None,
                };
                visit(n * LOOKUP_CHUNK + i, live);
            }
        }
    }

    /// `read(entry)` for the live entry of `key`, under its shard's read lock, recording the
    /// access at `tick`.
    fn read_live<R>(
        &self,
        key: &[u8],
        now_ms: u64,
        tick: u32,
        read: impl FnOnce(&Entry) -> R,
    ) -> Option<R> {
        let data = self.shard_of(key).0.read();
        let entry = data.get(key).filter(|e| !e.is_expired(now_ms))?;
        entry.touch(tick);
        Some(read(entry))
    }

    /// Metadata of the live entry, without recording an access (a compare-and-set or a
    /// size check is not a use of the value) and without cloning the value.
    pub fn peek(&self, key: &[u8], now_ms: u64) -> Option<Peek> {
        let data = self.shard_of(key).0.read();
        let entry = data.get(key).filter(|e| !e.is_expired(now_ms))?;
        Some(Peek {
            version: entry.version,
            expires_at_ms: entry.expires_at_ms,
            cost: entry.cost(),
        })
    }

    /// Inserts or overwrites `key`, expired or not. Returns true if the key was not stored at
    /// all (an expired entry still counts as stored). `expires_at_ms` 0 means no expiry.
    pub fn set(&self, key: &[u8], value: &[u8], expires_at_ms: u64, version: u64) -> bool {
        self.set_at(key, value, expires_at_ms, version, self.clock.now_tick())
    }

    /// [`Engine::set`] with the access tick given, so tests can age entries deterministically.
    pub(super) fn set_at(
        &self,
        key: &[u8],
        value: &[u8],
        expires_at_ms: u64,
        version: u64,
        tick: u32,
    ) -> bool {
        let cost = entry_cost(key.len(), value.len());
        let mut data = self.shard_of(key).0.write();
        // Counters change under the shard lock, so a concurrent clear() of this shard never
        // subtracts a cost that was not added yet (the counter would wrap below zero).
        match data.set(key, value, expires_at_ms, version, tick) {
            Replaced::Nothing => {
                self.counters.len.fetch_add(1, Relaxed);
                self.counters.memory.fetch_add(cost, Relaxed);
                true
            }
            Replaced::Entry { cost: old } => {
                // An overwrite of the same size, the common one, changes no counter: no
                // atomic add of 0, which would still be a full fence.
                if cost > old {
                    self.counters.memory.fetch_add(cost - old, Relaxed);
                } else if cost < old {
                    self.counters.memory.fetch_sub(old - cost, Relaxed);
                }
                false
            }
        }
    }

    /// Removes `key` whatever its expiry; true if something was removed.
    pub fn delete(&self, key: &[u8]) -> bool {
        let mut data = self.shard_of(key).0.write();
        let Some(cost) = data.remove(key) else {
            return false;
        };
        self.counters.len.fetch_sub(1, Relaxed);
        self.counters.memory.fetch_sub(cost, Relaxed);
        true
    }

    /// Removes everything, shard by shard (used before loading a snapshot). The old contents
    /// are dropped after each shard's lock is released, so freeing them blocks nobody.
    pub fn clear(&self) {
        for shard in &self.shards {
            let old = {
                let mut data = shard.0.write();
                let old = std::mem::replace(&mut *data, ShardData::new());
                self.counters.len.fetch_sub(old.len() as u64, Relaxed);
                self.counters.memory.fetch_sub(old.memory(), Relaxed);
                old
            };
            drop(old);
        }
    }

    /// Stored entries, including expired ones not removed yet.
    pub fn len(&self) -> u64 {
        self.counters.len.load(Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sum of [`entry_cost`] over stored entries. O(1): maintained by every write.
    pub fn memory(&self) -> u64 {
        self.counters.memory.load(Relaxed)
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Visits every stored entry (expired ones included), shard by shard: each non-empty shard
    /// is copied out under its read lock and `f` gets that chunk after
    /// the lock is released, so a slow consumer (a snapshot writer doing I/O) never blocks
    /// writers. Entries written during the visit may or may not be seen; each key is seen at
    /// most once, with the state it had when its shard was copied. Stops at `f`'s first error.
    pub fn for_each_chunk<E>(
        &self,
        mut f: impl FnMut(&[SnapshotEntry]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut chunk = Vec::new();
        let mut copied = Vec::new();
        for shard in &self.shards {
            let bytes = copy_shard(shard, &mut copied);
            let mut at = 0;
            chunk.clear();
            chunk.extend(copied.iter().map(|copy| {
                let key = bytes.slice(at..at + copy.key_len);
                at += copy.key_len;
                let value = bytes.slice(at..at + copy.value_len);
                at += copy.value_len;
                SnapshotEntry {
                    key,
                    value,
                    expires_at_ms: copy.expires_at_ms,
                    version: copy.version,
                }
            }));
            if !chunk.is_empty() {
                f(&chunk)?;
            }
        }
        Ok(())
    }

    /// The shard that holds `key`. Lemire's multiply-shift maps the hash onto any shard count
    /// without a division, using the hash's high bits.
    pub(super) fn shard_of(&self, key: &[u8]) -> &Shard {
        &self.shards[self.shard_index(key)]
    }

    fn shard_index(&self, key: &[u8]) -> usize {
        let hash = self.router.hash_one(key);
        ((u128::from(hash) * self.shards.len() as u128) >> 64) as usize
    }

    /// All shards, for the sampling and digest modules.
    pub(super) fn shards(&self) -> &[Shard] {
        &self.shards
    }

    pub(super) fn clock(&self) -> &AccessClock {
        &self.clock
    }
}

/// Summary only: the contents may be millions of entries.
impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("shards", &self.shards.len())
            .field("len", &self.len())
            .field("memory", &self.memory())
            .finish_non_exhaustive()
    }
}

/// Keys [`Engine::get_many`] and [`Engine::warm`] look up together, holding their shards'
/// locks.
const LOOKUP_CHUNK: usize = 32;

/// Most bytes [`Engine::get_many`] reserves before it knows the sizes of the other values.
const MAX_FIRST_RESERVE: usize = 64 << 10;

/// What [`Engine::get_many`] reserves on finding its first value, of `len` bytes, with
/// `keys_left` keys to read including that one: room for that many values like it, since
/// the values of one batch are usually alike and the buffer then never grows. Bounded, so
/// that one large value among keys that turn out missing or small cannot reserve
/// `keys_left` times its size; past the bound the buffer grows as it fills.
fn first_reserve(len: usize, keys_left: usize) -> usize {
    len.saturating_mul(keys_left)
        .min(MAX_FIRST_RESERVE.max(len))
}

/// One entry of a shard copied by [`copy_shard`]: where its key and value lie in the copy.
struct CopiedEntry {
    key_len: usize,
    value_len: usize,
    expires_at_ms: u64,
    version: u64,
}

/// Copy every key and value of `shard` into one buffer, and their lengths and metadata into
/// `copied`, under the shard's read lock. Writers to the shard wait for as long as the lock is
/// held, so nothing is allocated under it: with two `Bytes` allocated per entry, a snapshot of
/// 100k keys held a node's serving thread up about twice as long, by up to 1.0-1.5 ms at a
/// time against 0.5-0.7 ms (BENCHMARKS.md, session 14).
fn copy_shard(shard: &Shard, copied: &mut Vec<CopiedEntry>) -> Bytes {
    // Sized in a first, short look, so that the buffer is allocated outside the lock; a shard
    // that grew in between only makes it grow under the lock.
    let (len, payload) = {
        let data = shard.0.read();
        (data.len(), data.payload_bytes())
    };
    let mut bytes = Vec::with_capacity(payload);
    copied.clear();
    copied.reserve(len);
    let data = shard.0.read();
    for entry in data.iter() {
        let (key, value) = (entry.key(), entry.value());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
        copied.push(CopiedEntry {
            key_len: key.len(),
            value_len: value.len(),
            expires_at_ms: entry.expires_at_ms,
            version: entry.version,
        });
    }
    drop(data);
    Bytes::from(bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use super::*;

    fn engine(shards: usize) -> Engine {
        Engine::new(EngineOptions { shards })
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn item(value: &str, version: u64, expires_at_ms: u64) -> Item {
        Item {
            value: b(value),
            version,
            expires_at_ms,
        }
    }

    /// Counts what is really stored, to check the O(1) counters against.
    fn recount(engine: &Engine) -> (u64, u64) {
        let (mut len, mut memory) = (0, 0);
        let Ok(()) = engine.for_each_chunk(|chunk| {
            len += chunk.len() as u64;
            memory += chunk
                .iter()
                .map(|e| entry_cost(e.key.len(), e.value.len()))
                .sum::<u64>();
            Ok::<(), std::convert::Infallible>(())
        });
        (len, memory)
    }

    #[test]
    fn engine_is_shareable_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Engine>();
    }

    #[test]
    fn shard_count_follows_options() {
        let auto = engine(0).shard_count();
        assert!(auto >= 16 && auto.is_power_of_two(), "{auto}");
        assert_eq!(engine(10).shard_count(), 10);
        assert_eq!(engine(usize::MAX).shard_count(), MAX_SHARDS);
    }

    #[test]
    fn set_get_overwrite_delete() {
        let e = engine(4);
        assert_eq!(e.get(b"k", 0), None);
        assert!(e.set(&b("k"), &b("v1"), 0, 1));
        assert_eq!(e.get(b"k", 0), Some(item("v1", 1, 0)));
        assert!(
            !e.set(&b("k"), &b("v2"), 500, 2),
            "an overwrite is not an insert"
        );
        assert_eq!(e.get(b"k", 0), Some(item("v2", 2, 500)));
        let want = Peek {
            version: 2,
            expires_at_ms: 500,
            cost: entry_cost(1, 2),
        };
        assert_eq!(e.peek(b"k", 0), Some(want));
        assert!(e.delete(b"k"));
        assert!(!e.delete(b"k"));
        assert_eq!(e.get(b"k", 0), None);
        assert_eq!((e.len(), e.memory()), (0, 0));
        // The API layer validates keys; this layer just stores whatever it is given.
        assert!(e.set(&Bytes::new(), &Bytes::new(), 0, 3));
        assert_eq!(e.get(b"", 0), Some(item("", 3, 0)));
    }

    #[test]
    fn get_many_reserves_for_values_like_the_first_within_a_bound() {
        assert_eq!(first_reserve(64, 16), 64 * 16);
        assert_eq!(first_reserve(0, 16), 0);
        // One large value among a thousand keys reserves its own size, not a thousand times it.
        assert_eq!(first_reserve(1 << 20, 1_000), 1 << 20);
        assert_eq!(first_reserve(1_000, 1_000), MAX_FIRST_RESERVE);
        assert_eq!(first_reserve(usize::MAX, 2), usize::MAX);
    }

    #[test]
    fn get_many_answers_each_key_in_order_from_one_buffer() {
        let e = engine(4);
        e.set(&b("a"), &b("1"), 0, 1);
        e.set(&b("b"), &b("22"), 0, 2);
        e.set(&b("old"), &b("x"), 100, 3);
        e.set(&b("empty"), &b(""), 0, 4);
        let keys = ["b", "missing", "a", "old", "empty", "b"];
        let got = e.get_many(&keys, 200);
        assert_eq!(
            got,
            [
                Some(item("22", 2, 0)),
                None,
                Some(item("1", 1, 0)),
                None, // expired at 100
                Some(item("", 4, 0)),
                Some(item("22", 2, 0)),
            ]
        );
        let (first, second) = (&got[0].as_ref().unwrap().value, &got[2].as_ref().unwrap());
        assert_eq!(
            first.as_ptr().wrapping_add(first.len()),
            second.value.as_ptr(),
            "the values lie side by side in one buffer"
        );
        assert_eq!(got, keys.map(|k| e.get(k.as_bytes(), 200)));
        assert!(e.get_many::<&[u8]>(&[], 0).is_empty());
    }

    #[test]
    fn expired_entries_are_hidden_but_stored_until_deleted() {
        let e = engine(4);
        e.set(&b("k"), &b("v"), 1_000, 1);
        assert_eq!(e.get(b"k", 999), Some(item("v", 1, 1_000)));
        assert_eq!(e.get(b"k", 1_000), None);
        assert_eq!(e.peek(b"k", 1_000), None);
        assert_eq!(e.len(), 1);
        assert_eq!(e.memory(), entry_cost(1, 1));
        assert!(
            !e.set(&b("k"), &b("w"), 0, 2),
            "an expired entry still exists"
        );
        assert_eq!(e.get(b"k", u64::MAX), Some(item("w", 2, 0)));
        e.set(&b("k"), &b("w"), 5, 3);
        assert!(e.delete(b"k"));
        assert!(e.is_empty());
    }

    #[test]
    fn peek_does_not_count_as_an_access() {
        let e = engine(1);
        e.set(&b("k"), &b("v"), 0, 1);
        for _ in 0..100 {
            e.peek(b"k", 0);
        }
        assert_eq!(e.candidate(b"k").expect("stored").hits, 5);
        e.get(b"k", 0);
        assert_eq!(e.candidate(b"k").expect("stored").hits, 6);
    }

    #[test]
    fn warming_neither_counts_as_an_access_nor_changes_anything() {
        let e = engine(4);
        e.set(&b("k"), &b("v"), 0, 1);
        e.warm(&["k", "missing", "k"], |k| k.as_bytes());
        assert_eq!(e.candidate(b"k").expect("stored").hits, 5);
        assert_eq!((e.len(), e.get(b"k", 0)), (1, Some(item("v", 1, 0))));
        assert_eq!(e.candidate(b"k").expect("stored").hits, 6);
    }

    #[test]
    fn accounting_matches_a_model_after_random_operations() {
        let e = engine(8);
        let mut model: HashMap<Bytes, Bytes> = HashMap::new();
        for i in 0..20_000u64 {
            let key = Bytes::from(format!("k{}", fastrand::u8(..200)));
            match fastrand::u8(..10) {
                0..=5 => {
                    let value = Bytes::from(vec![1; fastrand::usize(..100)]);
                    let ttl = if fastrand::bool() { i } else { 0 };
                    let inserted = e.set(&key.clone(), &value.clone(), ttl, i);
                    assert_eq!(inserted, model.insert(key, value).is_none());
                }
                6..=8 => assert_eq!(e.delete(&key), model.remove(&key).is_some()),
                _ => assert_eq!(e.get(&key, 0).map(|it| it.value), model.get(&key).cloned()),
            }
            if i % 7_000 == 6_999 {
                assert_eq!(e.len(), model.len() as u64);
                e.clear();
                model.clear();
            }
        }
        let memory: u64 = model
            .iter()
            .map(|(k, v)| entry_cost(k.len(), v.len()))
            .sum();
        assert_eq!((e.len(), e.memory()), (model.len() as u64, memory));
        assert_eq!(recount(&e), (model.len() as u64, memory));
        e.clear();
        assert_eq!((e.len(), e.memory(), recount(&e)), (0, 0, (0, 0)));
    }

    #[test]
    fn for_each_chunk_hands_out_every_key_value_expiry_and_version_as_stored() {
        let e = engine(4);
        let mut stored = HashMap::new();
        for i in 0..1_000u64 {
            // Keys and values of many lengths, empty values among them, so that a key or
            // value cut from the wrong place of a shard's copy shows.
            let key = Bytes::from(format!("k{}", "x".repeat((i % 37) as usize)) + &i.to_string());
            let value = Bytes::from("v".repeat((i % 53) as usize));
            let expires_at_ms = if i.is_multiple_of(3) { 0 } else { 1_000 + i };
            e.set(&key, &value, expires_at_ms, 7 * i);
            stored.insert(key.clone(), (value, expires_at_ms, 7 * i));
        }
        let mut seen = HashMap::new();
        let Ok(()) = e.for_each_chunk(|chunk| {
            for entry in chunk {
                let copy = (entry.value.clone(), entry.expires_at_ms, entry.version);
                seen.insert(entry.key.clone(), copy);
            }
            Ok::<(), std::convert::Infallible>(())
        });
        assert_eq!(seen, stored);
    }

    #[test]
    fn for_each_chunk_sees_every_entry_once_while_another_thread_writes() {
        let e = Arc::new(engine(16));
        for i in 0..10_000 {
            e.set(&Bytes::from(format!("stable-{i}")), &b("v"), i % 2, i);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (e, stop) = (Arc::clone(&e), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Relaxed) {
                    let key = Bytes::from(format!("churn-{}", i % 500));
                    if i.is_multiple_of(3) {
                        e.delete(&key);
                    } else {
                        e.set(&key, &b("x"), 0, i);
                    }
                    i += 1;
                }
            })
        };
        for _ in 0..5 {
            let mut seen = HashMap::new();
            let Ok(()) = e.for_each_chunk(|chunk| {
                for entry in chunk {
                    *seen.entry(entry.key.clone()).or_insert(0) += 1;
                }
                Ok::<(), std::convert::Infallible>(())
            });
            assert!(seen.values().all(|&n| n == 1), "a key was visited twice");
            let stable = seen.keys().filter(|k| k.starts_with(b"stable-")).count();
            assert_eq!(stable, 10_000);
        }
        stop.store(true, Relaxed);
        writer.join().expect("writer");
    }

    #[test]
    fn get_many_agrees_with_get_where_keys_share_hash_tags() {
        // One shard of 5,000 keys: many lookups meet another key with the same 7-bit tag
        // first (the shard's tests show it), and must still answer the key asked for.
        let e = engine(1);
        for i in 0..5_000u64 {
            e.set(
                &Bytes::from(format!("key:{i:012}")),
                &Bytes::from(i.to_string()),
                0,
                i,
            );
        }
        let keys: Vec<String> = (0..5_000)
            .flat_map(|i| [format!("key:{i:012}"), format!("absent:{i:012}")])
            .collect();
        let got = e.get_many(&keys, 0);
        assert_eq!(got.iter().flatten().count(), 5_000);
        for (key, got) in keys.iter().zip(got) {
            assert_eq!(got, e.get(key.as_bytes(), 0), "{key}");
        }
    }

    #[test]
    fn batches_over_many_shards_never_wait_for_each_other() {
        // Batches lock every shard they touch at once; two batches taking their keys in
        // opposite orders, with writers waiting on the same shards, must all finish.
        let e = Arc::new(engine(8));
        let keys: Vec<String> = (0..64).map(|i| format!("k{i}")).collect();
        for key in &keys {
            e.set(&Bytes::from(key.clone()), &b("v"), 0, 1);
        }
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (e, mut keys) = (Arc::clone(&e), keys.clone());
                if t % 2 == 1 {
                    keys.reverse();
                }
                std::thread::spawn(move || {
                    for i in 0..2_000u64 {
                        if t < 2 {
                            assert_eq!(e.get_many(&keys, 0).iter().flatten().count(), 64);
                        } else {
                            e.set(&Bytes::from(keys[i as usize % 64].clone()), &b("w"), 0, i);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no batch or writer panicked");
        }
    }

    #[test]
    fn for_each_chunk_stops_at_the_first_error() {
        let e = engine(8);
        for i in 0..100 {
            e.set(&Bytes::from(format!("{i}")), &b("v"), 0, i);
        }
        let mut calls = 0;
        let result = e.for_each_chunk(|_| {
            calls += 1;
            Err("disk full")
        });
        assert_eq!((result, calls), (Err("disk full"), 1));
    }

    #[test]
    fn concurrent_writers_leave_exact_counters() {
        let e = Arc::new(engine(0));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let e = Arc::clone(&e);
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        // Overlapping keys, so threads race on the same entries.
                        let key = Bytes::from(format!("k{}", fastrand::u16(..2_000)));
                        match i % 4 {
                            0 => {
                                e.delete(&key);
                            }
                            1 => {
                                e.get(&key, 0);
                            }
                            _ => {
                                let value = Bytes::from(vec![0; fastrand::usize(..64)]);
                                e.set(&key, &value, t * i % 3, t * 100_000 + i);
                            }
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("worker");
        }
        assert_eq!(recount(&e), (e.len(), e.memory()));
        assert!(!e.is_empty());
    }

    #[test]
    fn debug_shows_a_summary() {
        let e = engine(2);
        e.set(&b("k"), &b("v"), 0, 1);
        let shown = format!("{e:?}");
        assert!(
            shown.contains("shards: 2") && shown.contains("len: 1"),
            "{shown}"
        );
    }
}
