//! Prometheus metrics at `/metrics` (OpenMetrics text): request latency per method, errors by
//! code, and the store's figures read at scrape time.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use super::error::Code;
use super::latency::{Latencies, LatencyCollector};
use crate::plugins::Plugins;
use crate::replication::{Replication, StoreSlot};
use arc_swap::ArcSwapOption;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    latency: Arc<Latencies>,
    errors: Family<ErrorLabels, Counter>,
    refusals: Family<LimitLabels, Counter>,
    auth_failures: Family<AuthLabels, Counter>,
    connections: Gauge,
}

impl Metrics {
    /// `store` is filled in once recovery finishes; until then only request metrics show.
    pub fn new(
        store: Arc<StoreSlot>,
        replication: Arc<OnceLock<Arc<Replication>>>,
        plugins: Arc<ArcSwapOption<Plugins>>,
    ) -> Self {
        let mut registry = Registry::with_prefix("wasmkv");
        let latency = Arc::new(Latencies::default());
        registry.register_collector(Box::new(LatencyCollector(Arc::clone(&latency))));
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "request_errors",
            "Requests answered with an error, by method and Connect code",
            errors.clone(),
        );
        let refusals = Family::<LimitLabels, Counter>::default();
        registry.register(
            "limit_refusals",
            "Connections and requests refused by an abuse limit (limits.*), by limit",
            refusals.clone(),
        );
        let auth_failures = Family::<AuthLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Requests refused for their token: missing, invalid, or forbidden (wrong role)",
            auth_failures.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections open now",
            connections.clone(),
        );
        registry.register_collector(Box::new(ReplicationCollector {
            store: Arc::clone(&store),
            replication,
        }));
        registry.register_collector(Box::new(StoreCollector { store }));
        registry.register_collector(Box::new(PluginCollector { plugins }));
        Metrics {
            registry,
            latency,
            errors,
            refusals,
            auth_failures,
            connections,
        }
    }

    /// A connection or request refused by the limit `limits.<limit>`.
    pub fn refused(&self, limit: &'static str) {
        self.refusals.get_or_create(&LimitLabels { limit }).inc();
    }

    /// A request refused for its token (`missing`, `invalid`, `forbidden`).
    pub fn auth_failed(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&AuthLabels { reason })
            .inc();
    }

    /// Counts a connection as open until the returned guard is dropped.
    pub fn connection_opened(&self) -> ConnectionGuard {
        self.connections.inc();
        ConnectionGuard(self.connections.clone())
    }

    pub fn observe(&self, method: &'static str, elapsed: Duration, error: Option<Code>) {
        self.latency.observe(method, elapsed);
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

/// An open connection, counted in `wasmkv_connections_open` while it lives.
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
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
        encode_counters(&mut encoder, &counters)?;
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
            encode_counters(&mut encoder, &counters)?;
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

/// Plugin figures read at scrape time, one series per plugin.
struct PluginCollector {
    plugins: Arc<ArcSwapOption<Plugins>>,
}

impl std::fmt::Debug for PluginCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginCollector").finish_non_exhaustive()
    }
}

impl Collector for PluginCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(plugins) = self.plugins.load_full() else {
            return Ok(());
        };
        let list = plugins.list();
        type Figure = fn(&crate::api::proto::PluginInfo) -> u64;
        let counters: [(&str, &str, Figure); 4] = [
            ("plugin_calls", "Calls into the plugin", |p| p.calls),
            (
                "plugin_errors",
                "Calls that answered an error or garbage (or were skipped while backed off)",
                |p| p.errors,
            ),
            ("plugin_traps", "Calls that trapped", |p| p.traps),
            ("plugin_timeouts", "Calls that overran the deadline", |p| {
                p.timeouts
            }),
        ];
        for (name, help, figure) in counters {
            let probe = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(name, help, None, probe.metric_type())?;
            for plugin in &list {
                let labels = [("plugin", plugin.name.as_str())];
                ConstCounter::new(figure(plugin)).encode(family.encode_family(&labels)?)?;
            }
        }
        let gauges: [(&str, &str, Figure); 3] = [
            ("plugin_call_p50_seconds", "Median call time", |p| p.p50_ns),
            (
                "plugin_call_p99_seconds",
                "99th percentile call time",
                |p| p.p99_ns,
            ),
            (
                "plugin_loaded_at_seconds",
                "When the running version was loaded (Unix time)",
                |p| p.loaded_at_ms * 1_000_000,
            ),
        ];
        for (name, help, figure) in gauges {
            let probe = ConstGauge::new(0.0);
            let mut family = encoder.encode_descriptor(name, help, None, probe.metric_type())?;
            for plugin in &list {
                let labels = [
                    ("plugin", plugin.name.as_str()),
                    ("sha256", plugin.sha256.as_str()),
                ];
                ConstGauge::new(figure(plugin) as f64 / 1e9)
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        let probe = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "plugin_healthy",
            "1 while the plugin runs the version of its file without failing",
            None,
            probe.metric_type(),
        )?;
        for plugin in &list {
            let labels = [
                ("plugin", plugin.name.as_str()),
                ("state", plugin.state.as_str()),
            ];
            ConstGauge::new(i64::from(plugin.state == "loaded"))
                .encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Unlabelled counters, one series each.
fn encode_counters(
    encoder: &mut DescriptorEncoder,
    counters: &[(&str, &str, u64)],
) -> Result<(), std::fmt::Error> {
    for &(name, help, value) in counters {
        let counter = ConstCounter::new(value);
        counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
    }
    Ok(())
}
