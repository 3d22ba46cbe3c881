//! Measures a validate round trip natively (encode request, decode request, encode verdict,
//! decode verdict) with the SDK's codec (`abi::encode`/`abi::decode`, minicbor-serde) and with
//! ciborium on the same types; the figures are in README.md. Run with
//! `cargo run --release -p wasmkv-guest --example cbor_roundtrip`.

use std::hint::black_box;
use std::time::Instant;

use wasmkv_guest::abi::{self, Verdict, WriteRequest};

const CALLS: u32 = 1_000_000;

fn per_call(mut round_trip: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..CALLS {
        round_trip();
    }
    start.elapsed().as_nanos() as f64 / f64::from(CALLS)
}

fn main() {
    let req = WriteRequest::set(b"user:1234".to_vec(), vec![7u8; 64]).with_ttl_ms(60_000);
    let verdict = Verdict::deny("key \"x\" does not start with an allowed prefix: user:, session:");
    for round in 1..=3 {
        let sdk = per_call(|| {
            let bytes = abi::encode(black_box(&req)).unwrap();
            black_box(abi::decode::<WriteRequest>(&bytes).unwrap());
            let bytes = abi::encode(black_box(&verdict)).unwrap();
            black_box(abi::decode::<Verdict>(&bytes).unwrap());
        });
        let ciborium = per_call(|| {
            let mut bytes = Vec::new();
            ciborium::into_writer(black_box(&req), &mut bytes).unwrap();
            black_box(ciborium::from_reader::<WriteRequest, _>(bytes.as_slice()).unwrap());
            let mut bytes = Vec::new();
            ciborium::into_writer(black_box(&verdict), &mut bytes).unwrap();
            black_box(ciborium::from_reader::<Verdict, _>(bytes.as_slice()).unwrap());
        });
        println!("round {round}: sdk (minicbor-serde) {sdk:.0} ns, ciborium {ciborium:.0} ns");
    }
    let mut ciborium_bytes = Vec::new();
    ciborium::into_writer(&req, &mut ciborium_bytes).unwrap();
    let sdk_bytes = abi::encode(&req).unwrap();
    println!(
        "request: {} bytes, identical encoding: {}",
        sdk_bytes.len(),
        sdk_bytes == ciborium_bytes
    );
}
