//! One stored value and its approximate access metadata, plus the memory cost model.
//!
//! Access metadata (a coarse last-access tick and a Redis-style logarithmic frequency counter)
//! is updated by readers that only hold the shard's read lock, so both fields are relaxed
//! atomics: a lost update between two racing readers only makes the approximation a little
//! coarser, which eviction by sampling tolerates anyway.

use std::sync::atomic::{AtomicU8, AtomicU32, Ordering::Relaxed};

use bytes::Bytes;

/// Approximate bytes one entry costs beyond its key and value bytes.
///
/// Covers, for an entry of a shard's `IndexMap<Bytes, Entry>`:
/// - the map's entry slot: cached hash (8) + key `Bytes` header (32) + [`Entry`] (56) = 96;
/// - the map's hash index: an 8-byte position plus 1 control byte per slot at up to 7/8 load,
///   about 10;
/// - allocator headers and size rounding of the separate key and value allocations, about
///   16 each;
/// - on average some unused capacity left by the doubling growth of the slot vector and index.
///
/// Measured with RSS over 10^6 entries in 256 maps of this layout (16 to 40-byte keys, 0 to
/// 200-byte values):
/// 132 to 148 bytes. Keys with a TTL also sit in the shard's TTL index (about 90 more bytes);
/// that is left out so that an entry's cost does not depend on its expiry, which keeps the
/// accounting of an overwrite simple. The limit is approximate by design.
pub const ENTRY_OVERHEAD: u64 = 144;

/// Approximate bytes an entry with these key and value lengths costs: the sizes the memory
/// limit and eviction candidates are measured in.
pub fn entry_cost(key_len: usize, value_len: usize) -> u64 {
    (key_len as u64)
        .saturating_add(value_len as u64)
        .saturating_add(ENTRY_OVERHEAD)
}

/// Bytes at or below this length are copied when they leave the engine; longer ones are shared.
const DETACH_COPY_MAX: usize = 4096;

/// A handle on stored bytes for use outside the engine (a read, a snapshot, a candidate).
///
/// Cloning a `Bytes` that was built from a `Vec` (as decoded requests are) allocates a shared
/// header the first time and keeps it for the life of the entry: 32 bytes more per key, for
/// good, after the first read. Small buffers are therefore copied, which costs a short memcpy
/// and leaves the stored entry as compact as it was; large ones are shared, where copying would
/// cost more than the header.
pub(crate) fn detach(bytes: &Bytes) -> Bytes {
    if bytes.len() <= DETACH_COPY_MAX {
        Bytes::copy_from_slice(bytes)
    } else {
        bytes.clone()
    }
}

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

/// A stored value. 56 bytes: `Bytes` (32) + two `u64` (16) + `AtomicU32` + `AtomicU8`, padded.
/// It is kept that small because it is paid once per key.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) value: Bytes,
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
    pub(super) fn new(value: Bytes, expires_at_ms: u64, version: u64, tick: u32) -> Self {
        Self {
            value,
            expires_at_ms,
            version,
            access: AtomicU32::new(tick),
            hits: AtomicU8::new(LFU_INIT),
        }
    }

    /// Whether the entry is past its expiry at `now_ms` (and must be hidden from readers).
    pub(super) fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms != 0 && self.expires_at_ms <= now_ms
    }

    /// Replaces the value. An overwrite refreshes the access time but keeps the (decayed)
    /// frequency, so rewriting a key does not make it look popular.
    pub(super) fn overwrite(&mut self, value: Bytes, expires_at_ms: u64, version: u64, tick: u32) {
        self.value = value;
        self.expires_at_ms = expires_at_ms;
        self.version = version;
        let last = *self.access.get_mut();
        let hits = self.hits.get_mut();
        *hits = decay(*hits, last, tick);
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

    #[test]
    fn entry_stays_small() {
        assert!(
            std::mem::size_of::<Entry>() <= 56,
            "{}",
            std::mem::size_of::<Entry>()
        );
    }

    #[test]
    fn overhead_covers_the_map_slot() {
        // Cached hash + key header + entry, plus at least the 9 bytes of the hash index.
        let slot = std::mem::size_of::<(u64, Bytes, Entry)>() as u64;
        assert!(ENTRY_OVERHEAD >= slot + 9, "slot {slot}");
        assert_eq!(entry_cost(3, 4), 7 + ENTRY_OVERHEAD);
        assert_eq!(entry_cost(usize::MAX, usize::MAX), u64::MAX);
    }

    #[test]
    fn expiry_zero_means_never() {
        let e = Entry::new(Bytes::new(), 0, 1, 0);
        assert!(!e.is_expired(u64::MAX));
        let e = Entry::new(Bytes::new(), 100, 1, 0);
        assert!(!e.is_expired(99));
        assert!(e.is_expired(100));
    }

    #[test]
    fn first_touch_always_counts_then_growth_is_logarithmic() {
        let e = Entry::new(Bytes::new(), 0, 1, 0);
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
        let e = Entry::new(Bytes::new(), 0, 1, 0);
        e.touch(0);
        assert_eq!(e.hits(LFU_DECAY_TICKS - 1), LFU_INIT + 1);
        assert_eq!(e.hits(3 * LFU_DECAY_TICKS), LFU_INIT - 2);
        assert_eq!(e.hits(u32::MAX), 0);
    }

    #[test]
    fn overwrite_refreshes_access_and_keeps_decayed_hits() {
        let mut e = Entry::new(Bytes::from_static(b"a"), 0, 1, 0);
        e.touch(0);
        e.overwrite(Bytes::from_static(b"b"), 7, 2, 2 * LFU_DECAY_TICKS);
        assert_eq!(e.access_tick(), 2 * LFU_DECAY_TICKS);
        assert_eq!(e.hits(2 * LFU_DECAY_TICKS), LFU_INIT - 1);
        assert_eq!(
            (e.value.as_ref(), e.expires_at_ms, e.version),
            (&b"b"[..], 7, 2)
        );
    }

    #[test]
    fn touch_never_moves_access_back() {
        let e = Entry::new(Bytes::new(), 0, 1, 50);
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
