//! Request latency by method, for `wasmkv_request_duration_seconds`.
//!
//! Every request records its latency, so recording has to be cheap and must not make the
//! connection threads wait for each other. `prometheus_client`'s `Family<_, Histogram>` took
//! a read lock and hashed the label on every request, then the mutex of the method's
//! histogram, one cache line that every thread serving that method wrote. Here each thread
//! counts into its own buckets, with plain atomic stores since it is their only writer, and a
//! scrape adds the threads' counts up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use thread_local::ThreadLocal;

/// The method labels requests are counted under, the busiest first since a label is found by
/// a scan. A fixed set, so a client cannot grow the label space.
pub(super) const METHODS: [&str; 19] = [
    "Get",
    "Set",
    "MultiGet",
    "Write",
    "rest",
    "Delete",
    "GetUpdates",
    "Watch",
    "Subscribe",
    "Ack",
    "Status",
    "Digest",
    "Snapshot",
    "AddReplica",
    "RemoveReplica",
    "Promote",
    "Follow",
    "ListPlugins",
    "unknown",
];

/// The first bucket's upper bound; each next one doubles it, up to about 0.8 s (the buckets
/// `exponential_buckets(25e-6, 2.0, 16)` made before). Slower requests count in `+Inf`.
const FIRST_BOUND_NANOS: u64 = 25_000;
const BOUNDS: usize = 16;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

/// Latencies of the requests served so far, per method.
#[derive(Debug, Default)]
pub(super) struct Latencies {
    threads: ThreadLocal<ThreadCounts>,
}

/// One thread's counts: written by that thread only, read by scrapes.
#[derive(Debug, Default)]
struct ThreadCounts {
    methods: [MethodCounts; METHODS.len()],
}

#[derive(Debug, Default)]
struct MethodCounts {
    /// Requests per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; BOUNDS + 1],
    /// The sum of their latencies.
    nanos: AtomicU64,
}

impl Latencies {
    /// Count a request to `method` (one of [`METHODS`]; any other counts as `unknown`).
    pub(super) fn observe(&self, method: &str, elapsed: Duration) {
        let index = METHODS
            .iter()
            .position(|m| *m == method)
            .unwrap_or(METHODS.len() - 1);
        let counts = &self.threads.get_or_default().methods[index];
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        add_own(&counts.buckets[bucket_of(nanos)], 1);
        add_own(&counts.nanos, nanos);
    }

    /// The sum over all threads of `method`'s bucket counts and latencies.
    fn total(&self, method: usize) -> ([u64; BOUNDS + 1], u64) {
        let mut buckets = [0; BOUNDS + 1];
        let mut nanos = 0u64;
        for thread in &self.threads {
            let counts = &thread.methods[method];
            for (sum, count) in buckets.iter_mut().zip(&counts.buckets) {
                *sum += count.load(Ordering::Relaxed);
            }
            nanos = nanos.wrapping_add(counts.nanos.load(Ordering::Relaxed));
        }
        (buckets, nanos)
    }
}

/// Add to a counter that only this thread writes: a load and a store, where `fetch_add`
/// would be a locked instruction on every request.
fn add_own(counter: &AtomicU64, amount: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(amount),
        Ordering::Relaxed,
    );
}

/// The first bucket whose bound is at least `nanos`: bound `i` is `FIRST_BOUND_NANOS << i`.
fn bucket_of(nanos: u64) -> usize {
    let multiples = nanos.div_ceil(FIRST_BOUND_NANOS);
    let bucket = match multiples {
        0 | 1 => 0,
        m => (u64::BITS - (m - 1).leading_zeros()) as usize,
    };
    bucket.min(BOUNDS)
}

/// Encodes [`Latencies`] at each scrape, as the histogram family it replaces did.
#[derive(Debug)]
pub(super) struct LatencyCollector(pub Arc<Latencies>);

impl Collector for LatencyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "request_duration_seconds",
            "Time to serve a request, by method",
            None,
            MetricType::Histogram,
        )?;
        for (index, &method) in METHODS.iter().enumerate() {
            let (buckets, nanos) = self.0.total(index);
            let count = buckets.iter().sum();
            // A method shows once it has been served, as a label set of a family does.
            if count == 0 {
                continue;
            }
            let bounded: Vec<(f64, u64)> = buckets
                .iter()
                .enumerate()
                .map(|(i, &n)| match i {
                    BOUNDS => (f64::INFINITY, n),
                    i => ((FIRST_BOUND_NANOS << i) as f64 / 1e9, n),
                })
                .collect();
            family
                .encode_family(&MethodLabels { method })?
                .encode_histogram::<NoLabelSet>(nanos as f64 / 1e9, count, &bounded, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    fn scrape(latencies: &Arc<Latencies>) -> String {
        let mut registry = Registry::with_prefix("wasmkv");
        registry.register_collector(Box::new(LatencyCollector(Arc::clone(latencies))));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    fn value<'t>(text: &'t str, series: &str) -> Option<&'t str> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn a_latency_lands_in_the_first_bucket_whose_bound_holds_it() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(
            bucket_of(25_000),
            0,
            "bounds are inclusive, as Prometheus's le"
        );
        assert_eq!(bucket_of(25_001), 1);
        assert_eq!(bucket_of(50_000), 1);
        assert_eq!(bucket_of(50_001), 2);
        assert_eq!(
            bucket_of(FIRST_BOUND_NANOS << 15),
            15,
            "the last bound, 819.2 ms"
        );
        assert_eq!(bucket_of((FIRST_BOUND_NANOS << 15) + 1), BOUNDS, "+Inf");
        assert_eq!(bucket_of(u64::MAX), BOUNDS);
    }

    /// Why: each thread counts on its own, so a scrape must add up every thread's counts,
    /// including those of a thread that has ended.
    #[test]
    fn a_scrape_adds_up_every_threads_counts() {
        let latencies = Arc::new(Latencies::default());
        latencies.observe("Get", Duration::from_micros(20));
        latencies.observe("Set", Duration::from_micros(30));
        let other = Arc::clone(&latencies);
        std::thread::spawn(move || {
            other.observe("Get", Duration::from_micros(40));
            other.observe("Get", Duration::from_secs(2));
        })
        .join()
        .unwrap();
        let text = scrape(&latencies);
        let get = |series: &str| {
            value(
                &text,
                &format!("wasmkv_request_duration_seconds_{series}{{method=\"Get\"}}"),
            )
        };
        assert_eq!(get("count"), Some("3"), "{text}");
        assert_eq!(get("sum"), Some("2.00006"), "{text}");
        let bucket = |le: &str| {
            value(
                &text,
                &format!("wasmkv_request_duration_seconds_bucket{{le=\"{le}\",method=\"Get\"}}"),
            )
        };
        assert_eq!(bucket("0.000025"), Some("1"), "cumulative counts:\n{text}");
        assert_eq!(bucket("0.00005"), Some("2"), "{text}");
        assert_eq!(bucket("0.8192"), Some("2"), "{text}");
        assert_eq!(bucket("+Inf"), Some("3"), "{text}");
        assert!(
            text.contains("wasmkv_request_duration_seconds_count{method=\"Set\"} 1"),
            "{text}"
        );
        assert!(
            !text.contains("method=\"Delete\""),
            "a method never served shows no series"
        );
    }

    #[test]
    fn a_label_outside_the_set_counts_as_unknown() {
        let latencies = Arc::new(Latencies::default());
        latencies.observe("NoSuchMethod", Duration::from_micros(1));
        let text = scrape(&latencies);
        assert!(
            text.contains("wasmkv_request_duration_seconds_count{method=\"unknown\"} 1"),
            "{text}"
        );
    }
}
