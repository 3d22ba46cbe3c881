//! Request bodies in the proto codec, as every unary call and every stream's request decodes them.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmkv::api::Codec;

fuzz_target!(|data: &[u8]| wasmkv_fuzz::wire::check_every_message(Codec::Proto, data));
