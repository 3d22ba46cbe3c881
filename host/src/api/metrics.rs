//! Prometheus metrics at `/metrics` (OpenMetrics text): request latency per method, errors by
//! code, and the store's figures read at scrape time.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::error::Code;
use crate::replication::StoreSlot;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    method: &'static str,
    code: &'static str,
}

pub struct Metrics {
    registry: Registry,
    latency: Family<MethodLabels, Histogram>,
    errors: Family<ErrorLabels, Counter>,
}

impl Metrics {
    /// `store` is filled in once recovery finishes; until then only request metrics show.
    pub fn new(store: Arc<StoreSlot>) -> Self {
        let mut registry = Registry::with_prefix("wasmkv");
        let latency = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            // 25 µs … ~0.8 s.
            Histogram::new(exponential_buckets(25e-6, 2.0, 16))
        });
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "request_duration_seconds",
            "Time to serve a request, by method",
            latency.clone(),
        );
        registry.register(
            "request_errors",
            "Requests answered with an error, by method and Connect code",
            errors.clone(),
        );
        registry.register_collector(Box::new(StoreCollector { store }));
        Metrics {
            registry,
            latency,
            errors,
        }
    }

    pub fn observe(&self, method: &'static str, elapsed: Duration, error: Option<Code>) {
        self.latency
            .get_or_create(&MethodLabels { method })
            .observe(elapsed.as_secs_f64());
        if let Some(code) = error {
            self.errors
                .get_or_create(&ErrorLabels {
                    method,
                    code: code.as_str(),
                })
                .inc();
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Reads the store's counters on each scrape, so they are never stale and cost nothing
/// between scrapes.
struct StoreCollector {
    store: Arc<StoreSlot>,
}

impl std::fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreCollector")
            .field("recovered", &self.store.load().is_some())
            .finish()
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(db) = self.store.load_full() else {
            return Ok(());
        };
        let s = db.stats();
        let gauges: [(&str, &str, u64); 7] = [
            (
                "keys",
                "Keys stored (expired ones not yet deleted included)",
                s.keys,
            ),
            (
                "memory_bytes",
                "Bytes the store accounts for its entries",
                s.memory_bytes,
            ),
            ("wal_bytes", "Bytes in WAL segment files", s.wal.bytes),
            ("wal_segments", "WAL segment files", s.wal.segments),
            (
                "disk_free_bytes",
                "Free space on the WAL volume",
                s.disk_free_bytes,
            ),
            (
                "applied_lsn",
                "LSN of the last write visible to readers",
                s.applied_lsn,
            ),
            (
                "wal_failed",
                "1 once a WAL I/O failure stopped writes",
                u64::from(s.failure.is_some()),
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let counters: [(&str, &str, u64); 3] = [
            (
                "expired_keys",
                "Keys deleted because their TTL passed",
                s.expired_keys,
            ),
            (
                "evicted_keys",
                "Keys deleted to stay within limits",
                s.evicted_keys,
            ),
            (
                "wal_fsyncs",
                "fdatasync calls on WAL segments",
                s.wal.fsyncs,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let fsync_seconds = ConstCounter::new(s.wal.fsync_nanos as f64 / 1e9);
        fsync_seconds.encode(encoder.encode_descriptor(
            "wal_fsync_seconds",
            "Time spent in WAL fdatasync (divide by wasmkv_wal_fsyncs_total for the mean)",
            None,
            fsync_seconds.metric_type(),
        )?)?;
        Ok(())
    }
}
