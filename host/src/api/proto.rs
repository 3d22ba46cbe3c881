//! The generated wire types of `api/kvstore.proto` (package `kvstore.v1`) and their descriptor.

#![allow(clippy::all, missing_docs)]

use std::sync::LazyLock;

use prost_reflect::DescriptorPool;

include!(concat!(env!("OUT_DIR"), "/kvstore.v1.rs"));

/// The encoded `FileDescriptorSet` of the API, for reflection and for clients that build
/// their stubs at run time.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/kvstore_descriptor.bin"));

pub static DESCRIPTOR_POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("the build script wrote a valid descriptor")
});
