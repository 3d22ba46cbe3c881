//! The `kvstore.v1.Admin` methods.

use std::sync::Arc;

use super::error::ConnectError;
use super::proto::{
    DigestRequest, DigestResponse, ListPluginsRequest, ListPluginsResponse, SnapshotRequest,
    SnapshotResponse, StatusRequest, StatusResponse,
};
use super::state::ApiState;

pub async fn status(
    state: &Arc<ApiState>,
    _: StatusRequest,
) -> Result<StatusResponse, ConnectError> {
    let stats = state.db()?.stats();
    let replication = state.replication()?;
    let history = replication.history();
    let (role, replicas, primary) = if replication.is_primary() {
        ("primary", replication.replicas(stats.applied_lsn), None)
    } else {
        ("replica", Vec::new(), replication.link())
    };
    Ok(StatusResponse {
        role: role.into(),
        lsn: stats.applied_lsn,
        replication_id: history.replication_id,
        secondary_replication_id: history.secondary_id,
        secondary_lsn: history.secondary_lsn,
        replica_id: replication.replica_id(),
        replicas,
        primary,
        keys: stats.keys,
        memory_bytes: stats.memory_bytes,
        wal_bytes: stats.wal.bytes,
        wal_segments: stats.wal.segments,
        disk_free_bytes: stats.disk_free_bytes,
        expired_keys: stats.expired_keys,
        evicted_keys: stats.evicted_keys,
        snapshot_lsn: stats.snapshot_lsn,
        failure: stats.failure.unwrap_or_default(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_ms: state.started.elapsed().as_millis() as u64,
    })
}

pub async fn digest(
    state: &Arc<ApiState>,
    _: DigestRequest,
) -> Result<DigestResponse, ConnectError> {
    let info = state.blocking(|db| Ok(db.digest())).await?;
    Ok(DigestResponse {
        digest: info.digest.to_vec().into(),
        lsn: info.lsn,
        keys: info.keys,
    })
}

pub async fn snapshot(
    state: &Arc<ApiState>,
    _: SnapshotRequest,
) -> Result<SnapshotResponse, ConnectError> {
    let info = state.blocking(|db| db.snapshot()).await?;
    Ok(SnapshotResponse {
        lsn: info.lsn,
        entries: info.entries,
    })
}

pub async fn list_plugins(
    state: &Arc<ApiState>,
    _: ListPluginsRequest,
) -> Result<ListPluginsResponse, ConnectError> {
    Ok(ListPluginsResponse {
        plugins: state
            .plugins
            .load()
            .as_ref()
            .map(|p| p.list())
            .unwrap_or_default(),
    })
}
