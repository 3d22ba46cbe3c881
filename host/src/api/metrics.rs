//! Prometheus metrics at `/metrics` (OpenMetrics text): request latency per method, errors by
//! code, and the store's figures read at scrape time.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::error::Code;
use crate::replication::{Replication, StoreSlot};

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
    pub fn new(store: Arc<StoreSlot>, replication: Arc<OnceLock<Arc<Replication>>>) -> Self {
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
        registry.register_collector(Box::new(ReplicationCollector {
            store: Arc::clone(&store),
            replication,
        }));
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

/// Replication figures read at scrape time: per replica on a primary, the link on a replica.
struct ReplicationCollector {
    store: Arc<StoreSlot>,
    replication: Arc<OnceLock<Arc<Replication>>>,
}

impl std::fmt::Debug for ReplicationCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationCollector")
            .finish_non_exhaustive()
    }
}

impl Collector for ReplicationCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (Some(replication), Some(db)) = (self.replication.get(), self.store.load_full()) else {
            return Ok(());
        };
        if let Some(link) = replication.link() {
            let gauges: [(&str, &str, f64); 4] = [
                (
                    "replication_link_up",
                    "1 while this replica streams from its primary",
                    f64::from(u8::from(link.state == "streaming")),
                ),
                (
                    "replication_primary_lsn",
                    "The primary's LSN as last heard from it",
                    link.primary_lsn as f64,
                ),
                (
                    "replication_lag_entries",
                    "Entries the primary has and this replica has not applied yet",
                    link.lag_entries as f64,
                ),
                (
                    "replication_lag_seconds",
                    "How far behind the primary's clock this replica's applied state is",
                    link.lag_ms as f64 / 1e3,
                ),
            ];
            for (name, help, value) in gauges {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    gauge.metric_type(),
                )?)?;
            }
            let counters: [(&str, &str, u64); 2] = [
                (
                    "replication_full_syncs",
                    "Full resyncs (a copy of the data) since this node started",
                    link.full_syncs,
                ),
                (
                    "replication_partial_syncs",
                    "Partial resyncs (the log from where this replica was) since it started",
                    link.partial_syncs,
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
            return Ok(());
        }
        let replicas = replication.replicas(db.applied_lsn());
        type Figure = fn(&crate::api::proto::ReplicaStatus) -> f64;
        let per_replica: [(&str, &str, Figure); 7] = [
            (
                "replica_connected",
                "1 while the replica is connected",
                |r| f64::from(u8::from(r.state != "disconnected")),
            ),
            (
                "replica_acked_lsn",
                "Last LSN the replica acknowledged",
                |r| r.acked_lsn as f64,
            ),
            (
                "replica_lag_entries",
                "Entries the replica has not acknowledged",
                |r| r.lag_entries as f64,
            ),
            (
                "replica_lag_seconds",
                "Time since the replica last had everything",
                |r| r.lag_ms as f64 / 1e3,
            ),
            (
                "replica_last_ack_age_seconds",
                "Time since the replica's last ack",
                |r| r.last_ack_age_ms as f64 / 1e3,
            ),
            (
                "replica_full_syncs",
                "Full resyncs served to the replica",
                |r| r.full_syncs as f64,
            ),
            (
                "replica_partial_syncs",
                "Partial resyncs served to the replica",
                |r| r.partial_syncs as f64,
            ),
        ];
        for (name, help, figure) in per_replica {
            let probe = ConstGauge::new(0.0);
            let mut family = encoder.encode_descriptor(name, help, None, probe.metric_type())?;
            for replica in &replicas {
                let labels = [
                    ("replica", replica.id.as_str()),
                    ("address", replica.address.as_str()),
                ];
                ConstGauge::new(figure(replica)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
