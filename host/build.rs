//! Generates the Rust types of `api/kvstore.proto` (with `protox`, so no `protoc` is needed).
//! Every message also derives serde (the CBOR mapping: field names as keys, bytes as byte
//! strings, integers and enums as integers; byte fields decode through
//! `api::shared_bytes`) and prost-reflect's `ReflectMessage` (the proto3 JSON mapping, driven
//! by the descriptor).

use std::path::PathBuf;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not baked in with env!: a build script compiled for one checkout is
    // reused by another at a different path when they share a target directory (CI's cache).
    let api = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../api");
    println!(
        "cargo:rerun-if-changed={}",
        api.join("kvstore.proto").display()
    );
    let descriptors = protox::compile(["kvstore.proto"], [&api])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("kvstore_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    let mut config = prost_build::Config::new();
    config.bytes(["."]);
    for file in &descriptors.file {
        for message in &file.message_type {
            let name = format!(".{}.{}", file.package(), message.name());
            config.type_attribute(
                &name,
                "#[derive(::serde::Serialize, ::serde::Deserialize, ::prost_reflect::ReflectMessage)]\n\
                 #[serde(default)]",
            );
            config.type_attribute(
                &name,
                format!(
                    "#[prost_reflect(descriptor_pool = \"crate::api::proto::DESCRIPTOR_POOL\", \
                     message_name = \"{}\")]",
                    &name[1..]
                ),
            );
            for field in &message.field {
                // Byte fields may share the request body they are decoded from.
                let shared = match (field.r#type(), field.label()) {
                    (Type::Bytes, Label::Repeated) => Some("deserialize_list"),
                    (Type::Bytes, _) => Some("deserialize"),
                    _ => None,
                };
                if let Some(function) = shared {
                    config.field_attribute(
                        format!("{name}.{}", field.name()),
                        format!(
                            "#[serde(deserialize_with = \"crate::api::shared_bytes::{function}\")]"
                        ),
                    );
                }
                if field.proto3_optional() {
                    config.field_attribute(
                        format!("{name}.{}", field.name()),
                        "#[serde(skip_serializing_if = \"::core::option::Option::is_none\")]",
                    );
                }
            }
        }
    }
    config.compile_fds(descriptors)?;
    Ok(())
}
