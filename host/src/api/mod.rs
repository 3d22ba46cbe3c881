//! The node's HTTP face: the Connect protocol (CBOR, JSON and protobuf bodies), the curl
//! routes, health and metrics. Nothing below this module knows about HTTP.

pub mod codec;
pub mod error;
pub mod proto;

pub use codec::{Codec, WireMessage};
pub use error::{Code, ConnectError};
