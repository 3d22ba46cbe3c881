//! The `kvstore.v1.Replication` methods (served by a primary) and the admin methods that
//! change who follows whom.

use std::sync::Arc;

use http::Response;
use tokio::sync::mpsc;

use super::codec::Codec;
use super::connect::{self, ResponseBody, envelope};
use super::error::{Code, ConnectError};
use super::proto::{
    AckRequest, AckResponse, AddReplicaRequest, AddReplicaResponse, FollowRequest, FollowResponse,
    PromoteRequest, PromoteResponse, RemoveReplicaRequest, RemoveReplicaResponse, SubscribeRequest,
};
use super::state::ApiState;
use super::watch::stream_response;
use crate::auth::Secret;
use crate::client::{Client, ClientError, ClientOptions};
use crate::replication::{Outbox, ReplicationError, serve_subscription};

/// `Replication/Subscribe`: stream this primary's data and log to a replica.
pub async fn subscribe(
    state: &Arc<ApiState>,
    codec: Codec,
    request: SubscribeRequest,
) -> Result<Response<ResponseBody>, ConnectError> {
    let replication = Arc::clone(state.replication()?);
    if let Some(primary) = replication.primary_address() {
        return Err(ConnectError::new(
            Code::FailedPrecondition,
            format!("this node is itself a replica; follow its primary at {primary} instead"),
        ));
    }
    if request.replica_id.is_empty() {
        return Err(ConnectError::invalid_argument(
            "replica_id is required: a replica names itself so that it can resume",
        ));
    }
    let db = state.db()?.to_arc();
    let (tx, rx) = mpsc::channel(8);
    let out = Outbox {
        tx: tx.clone(),
        encode: Box::new(move |message| envelope(0, &codec.encode(message))),
    };
    let shutdown = state.shutdown_signal();
    let plugins = state.plugins.load_full();
    tokio::spawn(async move {
        let registry = Arc::clone(replication.registry());
        let history = replication.history();
        let outcome =
            serve_subscription(db, registry, history, plugins, request, out, shutdown).await;
        let _ = tx.send(connect::end_stream(outcome.err().as_ref())).await;
    });
    Ok(stream_response(codec, rx))
}

/// `Replication/Ack`: a replica applied everything through `applied_lsn`.
pub async fn ack(state: &Arc<ApiState>, req: AckRequest) -> Result<AckResponse, ConnectError> {
    let replication = state.replication()?;
    let primary_lsn = state.db()?.applied_lsn();
    if req.replication_id == replication.history().replication_id {
        replication
            .registry()
            .ack(&req.replica_id, req.applied_lsn, primary_lsn);
    }
    Ok(AckResponse {})
}

/// `Admin/AddReplica`: tell the node at `address` to follow this primary. The caller's
/// token (`admin` here) is presented to that node, which must accept it as `admin` too: the
/// operator changing the cluster is the one asking both nodes.
pub async fn add_replica(
    state: &Arc<ApiState>,
    req: AddReplicaRequest,
    token: Option<&str>,
) -> Result<AddReplicaResponse, ConnectError> {
    state.check_primary()?;
    let primary = state.replication()?.advertise().to_owned();
    tell_to_follow(state, &req.address, primary, token).await?;
    Ok(AddReplicaResponse {})
}

/// `Admin/RemoveReplica`: tell the node at `address` to stop following, and forget it.
pub async fn remove_replica(
    state: &Arc<ApiState>,
    req: RemoveReplicaRequest,
    token: Option<&str>,
) -> Result<RemoveReplicaResponse, ConnectError> {
    state.check_primary()?;
    tell_to_follow(state, &req.address, String::new(), token).await?;
    state.replication()?.registry().forget(&req.address);
    Ok(RemoveReplicaResponse {})
}

async fn tell_to_follow(
    state: &ApiState,
    address: &str,
    primary: String,
    token: Option<&str>,
) -> Result<(), ConnectError> {
    if address.is_empty() {
        return Err(ConnectError::invalid_argument(
            "address is required: the host:port of the node",
        ));
    }
    let options = ClientOptions {
        tls: state.link_tls.clone(),
        token: token.map(|t| Secret::new(t.to_owned())),
    };
    let client = Client::with_options(address, &options)
        .map_err(|e| ConnectError::invalid_argument(e.to_string()))?
        .with_timeout(std::time::Duration::from_secs(10));
    client
        .call::<_, FollowResponse>("kvstore.v1.Admin/Follow", &FollowRequest { primary })
        .await
        .map_err(|e| {
            // The node's own refusal (a token it does not take) keeps its code.
            let code = match &e {
                ClientError::Rpc(e) => e.code,
                _ => Code::Unavailable,
            };
            ConnectError::new(
                code,
                format!("the node at {address} did not accept the change: {e}"),
            )
        })?;
    Ok(())
}

/// `Admin/Promote`: this replica becomes a primary.
pub async fn promote(
    state: &Arc<ApiState>,
    _: PromoteRequest,
) -> Result<PromoteResponse, ConnectError> {
    state
        .replication()?
        .promote()
        .await
        .map_err(replication_error)
}

/// `Admin/Follow`: follow `primary` from now on ("" = stop following).
pub async fn follow(
    state: &Arc<ApiState>,
    req: FollowRequest,
) -> Result<FollowResponse, ConnectError> {
    let primary = (!req.primary.is_empty()).then_some(req.primary);
    if let Some(p) = &primary {
        crate::client::normalize_base(p)
            .map_err(|e| ConnectError::invalid_argument(e.to_string()))?;
    }
    state
        .replication()?
        .follow(primary)
        .await
        .map_err(replication_error)?;
    Ok(FollowResponse {})
}

fn replication_error(e: ReplicationError) -> ConnectError {
    match e {
        ReplicationError::NotReplica => ConnectError::new(Code::FailedPrecondition, e.to_string()),
        other => ConnectError::internal(other.to_string()),
    }
}
