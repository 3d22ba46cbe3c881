//! One stored value and its approximate access metadata, plus the memory cost model.
//!
//! Access metadata (a coarse last-access tick and a Redis-style logarithmic frequency counter)
//! is updated by readers that only hold the shard's read lock, so both fields are relaxed
//! atomics: a lost update between two racing readers only makes the approximation a little
//! coarser, which eviction by sampling tolerates anyway.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering::Relaxed};

/// Approximate bytes one entry costs beyond its key and value bytes.
///
/// Covers, for an entry of a shard's `IndexSet<Entry>`:
/// - the set's slot: cached hash (8) + [`Entry`] (40) = 48;
/// - the set's hash index: an 8-byte position plus 1 control byte per slot at up to 7/8 load,
///   about 10;
/// - the 4-byte key length in front of the key, plus the allocator's header and size rounding
///   of the single key-and-value allocation, about 16;
/// - on average some unused capacity left by the doubling growth of the slot vector and index.
///
/// Measured with RSS over 10^6 entries of 16-byte keys and 64-byte values: see the memory
/// scenario in BENCHMARKS.md. Keys with a TTL also sit in the shard's TTL index (about 70 more
/// bytes); that is left out so that an entry's cost does not depend on its expiry, which keeps
/// the accounting of an overwrite simple. The limit is approximate by design.
pub const ENTRY_OVERHEAD: u64 = 88;

/// Approximate bytes an entry with these key and value lengths costs: the sizes the memory
/// limit and eviction candidates are measured in.
pub fn entry_cost(key_len: usize, value_len: usize) -> u64 {
    (key_len as u64)
        .saturating_add(value_len as u64)
        .saturating_add(ENTRY_OVERHEAD)
}

/// Bytes of a cache line on x86-64 and most 64-bit ARM cores (reading every 64th byte covers
/// larger lines too).
const CACHE_LINE: usize = 64;

/// How much of an entry's key and value [`Entry::warm`] reads: past a few lines, copying a
/// value streams, and the CPU's prefetcher runs ahead of the copy on its own.
const WARMED_BYTES: usize = 256;

/// Bytes of the key-length prefix of an entry's allocation.
const KEY_LEN_BYTES: usize = 4;

/// Length of one access tick. 10 ms is far finer than eviction needs while a `u32` of ticks
/// still spans 497 days.
const TICK_MS: u64 = 10;

/// Frequency counter of a new entry (Redis `LFU_INIT_VAL`): a new key must not look colder
/// than keys that were read once, or it would be evicted right after being written.
const LFU_INIT: u8 = 5;

/// Redis `lfu-log-factor`: with 10, the counter saturates after about a million hits.
const LFU_LOG_FACTOR: u32 = 10;

/// Redis `lfu-decay-time` of one minute, in ticks: the counter loses one per idle minute so
/// that keys popular long ago become evictable.
const LFU_DECAY_TICKS: u32 = (60_000 / TICK_MS) as u32;

/// Coarse monotonic clock for access metadata.
///
/// Ticks count from the engine's creation so they fit in a `u32`; a monotonic clock keeps
/// LRU order right when the wall clock jumps. [`AccessClock::wall_ms`] converts back to
/// absolute wall-clock milliseconds for eviction policies, which may compare them with expiry
/// times.
#[derive(Debug)]
pub(super) struct AccessClock {
    origin: coarsetime::Instant,
    origin_wall_ms: u64,
}

impl AccessClock {
    pub(super) fn new() -> Self {
        Self {
            origin: coarsetime::Instant::now_without_cache_update(),
            origin_wall_ms: crate::clock::now_ms(),
        }
    }

    /// The current tick, saturating after 497 days. Reads the coarse monotonic clock directly
    /// (a vDSO call) instead of `Instant::recent()`, which would need an updater thread, and
    /// without updating coarsetime's shared cache, which every reader would then write to.
    pub(super) fn now_tick(&self) -> u32 {
        let elapsed = coarsetime::Instant::now_without_cache_update().duration_since(self.origin);
        u32::try_from(elapsed.as_millis() / TICK_MS).unwrap_or(u32::MAX)
    }

    /// Wall-clock milliseconds of `tick`.
    pub(super) fn wall_ms(&self, tick: u32) -> u64 {
        self.origin_wall_ms
            .saturating_add(u64::from(tick) * TICK_MS)
    }
}

/// A stored key and value with their metadata. 40 bytes: a boxed slice (16) + two `u64` (16)
/// + `AtomicU32` + `AtomicU8`, padded. It is kept that small because it is paid once per key.
///
/// Key and value share one allocation, `key_len:u32le ++ key ++ value`: one allocator header
/// and one size rounding per key instead of two, and no shared-buffer header that a `Bytes`
/// would grow on its first clone. Reads copy the value out (Redis copies into its reply buffer
/// too); a 1 MiB value costs a memcpy of well under a millisecond.
///
/// The set that holds entries looks them up by key: [`Hash`], [`PartialEq`] and [`Borrow`]
/// all go through [`Entry::key`], so `set.get(key_bytes)` finds the entry.
pub(super) struct Entry {
    data: Box<[u8]>,
    /// Absolute wall-clock expiry in ms; 0 means none.
    pub(super) expires_at_ms: u64,
    /// LSN of the write that produced this value.
    pub(super) version: u64,
    /// [`AccessClock`] tick of the last read or write.
    access: AtomicU32,
    /// Logarithmic frequency counter, decayed lazily from `access`.
    hits: AtomicU8,
}

impl Entry {
    pub(super) fn new(
        key: &[u8],
        value: &[u8],
        expires_at_ms: u64,
        version: u64,
        tick: u32,
    ) -> Self {
        Self {
            data: pack(key, value),
            expires_at_ms,
            version,
            access: AtomicU32::new(tick),
            hits: AtomicU8::new(LFU_INIT),
        }
    }

    /// The key: a slice of the entry's allocation.
    pub(super) fn key(&self) -> &[u8] {
        let (len, rest) = self.split_len();
        &rest[..len]
    }

    /// The value: a slice of the entry's allocation.
    pub(super) fn value(&self) -> &[u8] {
        let (len, rest) = self.split_len();
        &rest[len..]
    }

    fn split_len(&self) -> (usize, &[u8]) {
        let (len, rest) = self.data.split_at(KEY_LEN_BYTES);
        let len = u32::from_le_bytes(len.try_into().expect("the prefix is 4 bytes"));
        (len as usize, rest)
    }

    /// [`entry_cost`] of this entry.
    pub(super) fn cost(&self) -> u64 {
        entry_cost(self.data.len() - KEY_LEN_BYTES, 0)
    }

    /// Whether the entry is past its expiry at `now_ms` (and must be hidden from readers).
    pub(super) fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms != 0 && self.expires_at_ms <= now_ms
    }

    /// Takes over the access history of `old`, the entry this one replaces. An overwrite
    /// refreshes the access time but keeps the (decayed) frequency, so rewriting a key does not
    /// make it look popular.
    pub(super) fn inherit(&mut self, old: &Entry) {
        let tick = *self.access.get_mut();
        self.set_history_after(old.hits.load(Relaxed), old.access_tick(), tick);
    }

    /// Writes `value` over this entry's value when it has the same length, as an overwrite at
    /// `tick` (the access history as [`Entry::inherit`] keeps it); false, changing nothing,
    /// when the lengths differ. Saves the allocation of a new entry and the free of this one,
    /// and writes to bytes that looking the key up has just brought into the cache.
    pub(super) fn overwrite_in_place(
        &mut self,
        value: &[u8],
        expires_at_ms: u64,
        version: u64,
        tick: u32,
    ) -> bool {
        let key_len = self.key().len();
        let Some(stored) = self.data.get_mut(KEY_LEN_BYTES + key_len..) else {
            return false;
        };
        if stored.len() != value.len() {
            return false;
        }
        stored.copy_from_slice(value);
        self.expires_at_ms = expires_at_ms;
        self.version = version;
        let (hits, last) = (*self.hits.get_mut(), *self.access.get_mut());
        self.set_history_after(hits, last, tick);
        true
    }

    /// Read a byte of each cache line of the key and value's first [`WARMED_BYTES`], and
    /// their last, to bring them into the cache: issued for many entries at once, the misses
    /// overlap, where the reads and overwrites that follow would wait for each in turn.
    pub(super) fn warm(&self) {
        let head = &self.data[..self.data.len().min(WARMED_BYTES)];
        for byte in head.iter().step_by(CACHE_LINE) {
            std::hint::black_box(*byte);
        }
        if let Some(last) = self.data.last() {
            std::hint::black_box(*last);
        }
    }

    /// The access history of an entry overwritten at `tick` that had `hits` and was last
    /// accessed at `last`.
    fn set_history_after(&mut self, hits: u8, last: u32, tick: u32) {
        *self.hits.get_mut() = decay(hits, last, tick);
        *self.access.get_mut() = tick.max(last);
    }

    /// Records a read at `tick`, under the shard's read lock. Stores only what changed, so
    /// hot keys read many times per tick do not bounce their cache line between cores.
    pub(super) fn touch(&self, tick: u32) {
        let last = self.access.load(Relaxed);
        let hits = self.hits.load(Relaxed);
        let new_hits = log_incr(decay(hits, last, tick));
        if new_hits != hits {
            self.hits.store(new_hits, Relaxed);
        }
        if tick > last {
            self.access.store(tick, Relaxed);
        }
    }

    /// Tick of the last access.
    pub(super) fn access_tick(&self) -> u32 {
        self.access.load(Relaxed)
    }

    /// Frequency counter as of `tick`, with the decay since the last access applied.
    pub(super) fn hits(&self, tick: u32) -> u8 {
        decay(self.hits.load(Relaxed), self.access.load(Relaxed), tick)
    }
}

/// Lays out `key_len:u32le ++ key ++ value` in one exact-size allocation.
fn pack(key: &[u8], value: &[u8]) -> Box<[u8]> {
    // Keys are bounded far below 4 GiB by the request and WAL record size limits.
    let key_len = u32::try_from(key.len()).expect("a key shorter than 4 GiB");
    let mut data = Vec::with_capacity(KEY_LEN_BYTES + key.len() + value.len());
    data.extend_from_slice(&key_len.to_le_bytes());
    data.extend_from_slice(key);
    data.extend_from_slice(value);
    data.into_boxed_slice()
}

impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Entry {}

impl Borrow<[u8]> for Entry {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

/// Redis `LFUDecrAndReturn`: one less per decay period elapsed between `last` and `now`.
fn decay(hits: u8, last: u32, now: u32) -> u8 {
    let periods = now.saturating_sub(last) / LFU_DECAY_TICKS;
    hits.saturating_sub(u8::try_from(periods).unwrap_or(u8::MAX))
}

/// Redis `LFULogIncr`: increments with probability 1 / ((hits - LFU_INIT) * factor + 1), so the
/// 8-bit counter grows logarithmically with the number of hits.
fn log_incr(hits: u8) -> u8 {
    if hits == u8::MAX {
        return hits;
    }
    let base = u32::from(hits.saturating_sub(LFU_INIT));
    if fastrand::u32(0..=base * LFU_LOG_FACTOR) == 0 {
        hits + 1
    } else {
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty(expires_at_ms: u64, tick: u32) -> Entry {
        Entry::new(b"", b"", expires_at_ms, 1, tick)
    }

    #[test]
    fn entry_stays_small() {
        assert_eq!(std::mem::size_of::<Entry>(), 40);
    }

    #[test]
    fn key_and_value_share_one_allocation() {
        let e = Entry::new(b"key", b"value", 0, 1, 0);
        assert_eq!((e.key(), e.value()), (&b"key"[..], &b"value"[..]));
        assert_eq!(e.cost(), entry_cost(3, 5));
        let e = Entry::new(b"", b"v", 0, 1, 0);
        assert_eq!((e.key(), e.value()), (&b""[..], &b"v"[..]));
        let k: &[u8] = Borrow::borrow(&e);
        assert_eq!(k, b"");
    }

    #[test]
    fn overhead_covers_the_set_slot() {
        // Cached hash + entry, plus at least the 9 bytes of the hash index and the key length.
        let slot = std::mem::size_of::<(u64, Entry)>() as u64;
        assert!(
            ENTRY_OVERHEAD >= slot + 9 + KEY_LEN_BYTES as u64,
            "slot {slot}"
        );
        assert_eq!(entry_cost(3, 4), 7 + ENTRY_OVERHEAD);
        assert_eq!(entry_cost(usize::MAX, usize::MAX), u64::MAX);
    }

    #[test]
    fn expiry_zero_means_never() {
        let e = empty(0, 0);
        assert!(!e.is_expired(u64::MAX));
        let e = empty(100, 0);
        assert!(!e.is_expired(99));
        assert!(e.is_expired(100));
    }

    #[test]
    fn first_touch_always_counts_then_growth_is_logarithmic() {
        let e = empty(0, 0);
        assert_eq!(e.hits(0), LFU_INIT);
        e.touch(0);
        assert_eq!(e.hits(0), LFU_INIT + 1);
        for _ in 0..10_000 {
            e.touch(0);
        }
        // Reaching 5 + b takes about 5 * b^2 hits, so 10_000 hits give about 50.
        let hits = e.hits(0);
        assert!((30..=80).contains(&hits), "{hits}");
    }

    #[test]
    fn counter_saturates() {
        assert_eq!(log_incr(u8::MAX), u8::MAX);
    }

    #[test]
    fn idle_minutes_decay_the_counter() {
        let e = empty(0, 0);
        e.touch(0);
        assert_eq!(e.hits(LFU_DECAY_TICKS - 1), LFU_INIT + 1);
        assert_eq!(e.hits(3 * LFU_DECAY_TICKS), LFU_INIT - 2);
        assert_eq!(e.hits(u32::MAX), 0);
    }

    #[test]
    fn overwrite_refreshes_access_and_keeps_decayed_hits() {
        let old = Entry::new(b"k", b"a", 0, 1, 0);
        old.touch(0);
        let mut e = Entry::new(b"k", b"b", 7, 2, 2 * LFU_DECAY_TICKS);
        e.inherit(&old);
        assert_eq!(e.access_tick(), 2 * LFU_DECAY_TICKS);
        assert_eq!(e.hits(2 * LFU_DECAY_TICKS), LFU_INIT - 1);
        assert_eq!((e.value(), e.expires_at_ms, e.version), (&b"b"[..], 7, 2));
    }

    #[test]
    fn an_overwrite_in_place_is_an_overwrite_without_a_new_entry() {
        let mut e = Entry::new(b"key", b"abc", 0, 1, 0);
        e.touch(0);
        let data = e.data.as_ptr();
        assert!(e.overwrite_in_place(b"xyz", 7, 2, 2 * LFU_DECAY_TICKS));
        assert_eq!(e.data.as_ptr(), data, "the value was written where it was");
        assert_eq!((e.key(), e.value()), (&b"key"[..], &b"xyz"[..]));
        assert_eq!((e.expires_at_ms, e.version), (7, 2));
        // The same history as `inherit` gives a new entry (the test above).
        assert_eq!(e.access_tick(), 2 * LFU_DECAY_TICKS);
        assert_eq!(e.hits(2 * LFU_DECAY_TICKS), LFU_INIT - 1);
        assert_eq!(e.cost(), entry_cost(3, 3));

        for other_length in [&b"ab"[..], b"abcd", b""] {
            assert!(!e.overwrite_in_place(other_length, 9, 3, 0));
            assert_eq!((e.value(), e.expires_at_ms, e.version), (&b"xyz"[..], 7, 2));
        }
        let mut empty_value = Entry::new(b"k", b"", 0, 1, 0);
        assert!(empty_value.overwrite_in_place(b"", 0, 5, 0));
        assert_eq!((empty_value.key(), empty_value.version), (&b"k"[..], 5));
    }

    #[test]
    fn touch_never_moves_access_back() {
        let e = empty(0, 50);
        e.touch(10);
        assert_eq!(e.access_tick(), 50);
        e.touch(60);
        assert_eq!(e.access_tick(), 60);
    }

    #[test]
    fn clock_converts_ticks_to_wall_ms() {
        let clock = AccessClock::new();
        let now = crate::clock::now_ms();
        let wall = clock.wall_ms(clock.now_tick());
        assert!(wall.abs_diff(now) < 1_000, "{wall} vs {now}");
        assert_eq!(clock.wall_ms(3) - clock.wall_ms(0), 30);
        assert!(clock.wall_ms(u32::MAX) > now);
    }
}
