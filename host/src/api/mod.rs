//! The node's HTTP face: the Connect protocol (CBOR, JSON and protobuf bodies), the curl
//! routes, health and metrics. Nothing below this module knows about HTTP.

mod admin;
pub mod auth;
pub mod codec;
pub mod connect;
pub mod error;
mod gather;
mod h1;
mod head;
mod kv;
pub mod lanes;
mod latency;
mod metrics;
pub mod proto;
mod replication;
mod rest;
pub mod server;
mod shared_bytes;
mod state;
mod watch;

pub use codec::{Codec, WireMessage};
pub use error::{Code, ConnectError};
pub use state::{ApiState, Limits, Security};
