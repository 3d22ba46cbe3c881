//! Talk to a running wasmkv node from Rust with `wasmkv::client::Client` (Connect + CBOR).
//!
//!     cargo run -p wasmkv -- serve &                       # a primary on 127.0.0.1:8080
//!     cargo run -p wasmkv-examples --bin client [ADDR]
//!
//! ADDR defaults to $WASMKV_ADDR, then http://127.0.0.1:8080.

use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use wasmkv::api::Code;
use wasmkv::api::proto::{Mutation, Op};
use wasmkv::client::{Client, SetOptions};

#[tokio::main]
async fn main() -> Result<()> {
    let addr = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("WASMKV_ADDR").ok())
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let client = Client::new(&addr)?.with_timeout(Duration::from_secs(5));

    let lsn = client
        .set("rs:greeting", "hello from rust", SetOptions::default())
        .await
        .with_context(|| format!("is a node running at {addr}?"))?;
    println!("set rs:greeting -> LSN {lsn}");

    let got = client.get("rs:greeting").await?;
    println!(
        "get rs:greeting -> {:?} (version {})",
        String::from_utf8_lossy(&got.value),
        got.version
    );

    // Compare-and-set: only replace the version we read. A second attempt with the same,
    // now stale, version is refused with `aborted` and changes nothing.
    let cas = SetOptions {
        if_version: Some(got.version),
        ..SetOptions::default()
    };
    client.set("rs:greeting", "updated", cas).await?;
    match client.set("rs:greeting", "lost update", cas).await {
        Err(e) if e.code() == Some(Code::Aborted) => println!("stale compare-and-set -> {e}"),
        other => anyhow::bail!("expected an aborted compare-and-set, got {other:?}"),
    }

    let ttl = SetOptions {
        ttl: Some(Duration::from_secs(60)),
        ..SetOptions::default()
    };
    client.set("rs:session", "token", ttl).await?;

    let lsn = client
        .write(vec![
            Mutation {
                op: Op::Set as i32,
                key: Bytes::from_static(b"rs:a"),
                value: Bytes::from_static(b"1"),
                ttl_ms: 0,
            },
            Mutation {
                op: Op::Delete as i32,
                key: Bytes::from_static(b"rs:session"),
                ..Mutation::default()
            },
        ])
        .await?;
    println!("atomic batch (set rs:a, delete rs:session) -> LSN {lsn}");

    let results = client
        .multi_get(vec![
            "rs:a".into(),
            "rs:session".into(),
            "rs:greeting".into(),
        ])
        .await?;
    let found: Vec<bool> = results.iter().map(|r| r.found).collect();
    println!("multi-get rs:a, rs:session, rs:greeting -> found {found:?}");

    let status = client.status().await?;
    println!(
        "status -> role {}, lsn {}, {} keys",
        status.role, status.lsn, status.keys
    );
    Ok(())
}
