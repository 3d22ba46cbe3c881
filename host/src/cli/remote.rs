//! The commands that talk to a running node: one call each through `wasmkv::client`, the
//! answer printed for a person (or, for `status --json`, for a script).

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use prost_reflect::{ReflectMessage, SerializeOptions};

use wasmkv::api::proto::{Entry, Op, PromoteResponse, StatusResponse};
use wasmkv::auth::Secret;
use wasmkv::client::{Client, ClientOptions, SetOptions};
use wasmkv::tls::ClientTls;

use super::escape;

/// The node a command talks to, how, and how long it waits for it.
pub struct Target {
    pub addr: String,
    pub timeout: Duration,
    pub tls: Option<ClientTls>,
    /// Where the bearer token is; `None` = the `WASMKV_TOKEN` variable, if set.
    pub token_file: Option<PathBuf>,
}

impl Target {
    pub(super) fn client(&self) -> Result<Client> {
        let options = ClientOptions {
            tls: self.tls.clone(),
            token: self.token()?,
        };
        Ok(Client::with_options(&self.addr, &options)?.with_timeout(self.timeout))
    }

    fn token(&self) -> Result<Option<Secret>> {
        let token = match &self.token_file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading the token file {}", path.display()))?,
            None => match std::env::var("WASMKV_TOKEN") {
                Ok(token) => token,
                Err(std::env::VarError::NotPresent) => return Ok(None),
                Err(e) => anyhow::bail!("WASMKV_TOKEN: {e}"),
            },
        };
        let token = token.trim();
        Ok((!token.is_empty()).then(|| Secret::new(token.to_owned())))
    }
}

/// Run one call to completion. A command makes a single call, so a single-threaded runtime
/// is all it needs.
pub(super) fn block_on<T>(call: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(call)
}

pub(super) fn print(text: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text)
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

pub fn get(target: &Target, key: Vec<u8>) -> Result<ExitCode> {
    let client = target.client()?;
    let shown = escape(&key);
    let resp = block_on(async {
        client
            .get(key)
            .await
            .with_context(|| format!("get \"{shown}\""))
    })?;
    if !resp.found {
        eprintln!("error: key \"{shown}\" not found");
        return Ok(ExitCode::from(1));
    }
    let mut line = resp.value.to_vec();
    line.push(b'\n');
    print(&line)?;
    Ok(ExitCode::SUCCESS)
}

pub fn set(target: &Target, key: Vec<u8>, value: Vec<u8>, opts: SetOptions) -> Result<ExitCode> {
    let client = target.client()?;
    let shown = escape(&key);
    let lsn = block_on(async {
        client
            .set(key, value, opts)
            .await
            .with_context(|| format!("set \"{shown}\""))
    })?;
    print(format!("{lsn}\n").as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

pub fn delete(target: &Target, key: Vec<u8>) -> Result<ExitCode> {
    let client = target.client()?;
    let shown = escape(&key);
    let resp = block_on(async {
        client
            .delete(key)
            .await
            .with_context(|| format!("delete \"{shown}\""))
    })?;
    if resp.found {
        print(b"deleted\n")?;
        Ok(ExitCode::SUCCESS)
    } else {
        print(b"not found\n")?;
        Ok(ExitCode::from(1))
    }
}

pub fn status(target: &Target, json: bool) -> Result<ExitCode> {
    let client = target.client()?;
    let resp = block_on(async { client.status().await.context("status") })?;
    if json {
        print(&status_json(&resp)?)?;
    } else {
        print(status_text(&resp).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn digest(target: &Target) -> Result<ExitCode> {
    let client = target.client()?;
    let resp = block_on(async { client.digest().await.context("digest") })?;
    let hex = hex::encode(&resp.digest);
    print(format!("digest: {hex}\nlsn: {}\nkeys: {}\n", resp.lsn, resp.keys).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

pub fn snapshot(target: &Target) -> Result<ExitCode> {
    let client = target.client()?;
    let resp = block_on(async { client.snapshot().await.context("snapshot") })?;
    print(format!("lsn: {}\nentries: {}\n", resp.lsn, resp.entries).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

pub fn add_replica(target: &Target, address: &str) -> Result<ExitCode> {
    let client = target.client()?;
    block_on(async {
        client
            .add_replica(address)
            .await
            .with_context(|| format!("replica add {address}"))
    })?;
    print(format!("added replica {address}\n").as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

pub fn remove_replica(target: &Target, address: &str) -> Result<ExitCode> {
    let client = target.client()?;
    block_on(async {
        client
            .remove_replica(address)
            .await
            .with_context(|| format!("replica remove {address}"))
    })?;
    print(format!("removed replica {address}\n").as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

pub fn promote(target: &Target) -> Result<ExitCode> {
    let client = target.client()?;
    let resp = block_on(async { client.promote().await.context("promote") })?;
    print(promote_text(&resp).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// Stream changes until the node ends the watch (or the user interrupts it): one line per
/// change, `lsn=N set KEY (LEN bytes)` or `lsn=N delete KEY`.
pub fn watch(target: &Target, prefix: Vec<u8>, from_lsn: u64) -> Result<ExitCode> {
    let client = target.client()?;
    block_on(async {
        let mut stream = client.watch(prefix, from_lsn).await.context("watch")?;
        while let Some(batch) = stream.next().await {
            let batch = batch.context("watch")?;
            let mut lines = String::new();
            for entry in &batch.entries {
                lines.push_str(&entry_line(entry));
                lines.push('\n');
            }
            print(lines.as_bytes())?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn entry_line(entry: &Entry) -> String {
    if entry.op == Op::Set as i32 {
        format!(
            "lsn={} set \"{}\" ({} bytes)",
            entry.lsn,
            escape(&entry.key),
            entry.value.len()
        )
    } else {
        format!("lsn={} delete \"{}\"", entry.lsn, escape(&entry.key))
    }
}

/// `name: value` lines, as `status` prints them.
fn promote_text(p: &PromoteResponse) -> String {
    format!(
        "replication_id: {}\nsecondary_replication_id: {}\nlsn: {}\n",
        p.replication_id, p.secondary_replication_id, p.lsn
    )
}

/// `name: value` lines, named as the proto fields are so they can be grepped and matched
/// with the JSON; uptime also in words. `failure` only appears when there is one.
fn status_text(s: &StatusResponse) -> String {
    let uptime = Duration::from_secs(s.uptime_ms / 1000);
    let mut lines = vec![
        format!("role: {}", s.role),
        format!("version: {}", s.version),
        format!("uptime: {}", humantime::format_duration(uptime)),
        format!("lsn: {}", s.lsn),
        format!("snapshot_lsn: {}", s.snapshot_lsn),
        format!("replication_id: {}", s.replication_id),
        format!("keys: {}", s.keys),
        format!("memory_bytes: {}", s.memory_bytes),
        format!("wal_bytes: {}", s.wal_bytes),
        format!("wal_segments: {}", s.wal_segments),
        format!("disk_free_bytes: {}", s.disk_free_bytes),
        format!("expired_keys: {}", s.expired_keys),
        format!("evicted_keys: {}", s.evicted_keys),
    ];
    if !s.failure.is_empty() {
        lines.push(format!("failure: {}", s.failure));
    }
    if !s.secondary_replication_id.is_empty() {
        lines.push(format!(
            "secondary_replication_id: {} (through lsn {})",
            s.secondary_replication_id, s.secondary_lsn
        ));
    }
    if let Some(p) = &s.primary {
        lines.push(format!(
            "primary: {} {} applied_lsn={} lag={} entries/{} ms full_syncs={} partial_syncs={}{}",
            p.address,
            p.state,
            p.applied_lsn,
            p.lag_entries,
            p.lag_ms,
            p.full_syncs,
            p.partial_syncs,
            if p.last_error.is_empty() {
                String::new()
            } else {
                format!(" last_error={:?}", p.last_error)
            }
        ));
    }
    for r in &s.replicas {
        lines.push(format!(
            "replica: {} {} {} acked_lsn={} lag={} entries/{} ms last_ack={} ms ago \
             full_syncs={} partial_syncs={}",
            r.id,
            r.address,
            r.state,
            r.acked_lsn,
            r.lag_entries,
            r.lag_ms,
            r.last_ack_age_ms,
            r.full_syncs,
            r.partial_syncs
        ));
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// The proto3 JSON of the status with every field present (a script should not have to know
/// that zero fields are omitted) under its proto name, numbers as numbers.
fn status_json(s: &StatusResponse) -> Result<Vec<u8>> {
    let options = SerializeOptions::new()
        .skip_default_fields(false)
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false);
    let mut out = Vec::new();
    s.transcode_to_dynamic()
        .serialize_with_options(&mut serde_json::Serializer::new(&mut out), &options)
        .context("encoding the status as JSON")?;
    out.push(b'\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmkv::api::proto as crate_proto;

    fn sample() -> StatusResponse {
        StatusResponse {
            role: "primary".into(),
            lsn: 42,
            uptime_ms: 3_723_456,
            ..StatusResponse::default()
        }
    }

    #[test]
    fn status_text_is_one_named_line_per_field() {
        let text = status_text(&sample());
        assert!(text.starts_with("role: primary\n"), "{text}");
        assert!(text.contains("\nlsn: 42\n"), "{text}");
        assert!(text.contains("\nuptime: 1h 2m 3s\n"), "{text}");
        assert!(!text.contains("failure"), "{text}");
        let failed = StatusResponse {
            failure: "fsync failed".into(),
            ..sample()
        };
        assert!(status_text(&failed).ends_with("failure: fsync failed\n"));
    }

    #[test]
    fn status_text_shows_the_replication_links() {
        let mut status = sample();
        status.replicas = vec![crate_proto::ReplicaStatus {
            id: "r1".into(),
            address: "h:2".into(),
            state: "streaming".into(),
            acked_lsn: 40,
            lag_entries: 2,
            ..Default::default()
        }];
        let text = status_text(&status);
        assert!(
            text.contains("replica: r1 h:2 streaming acked_lsn=40 lag=2 entries"),
            "{text}"
        );
        status.primary = Some(crate_proto::PrimaryLinkStatus {
            address: "h:1".into(),
            state: "disconnected".into(),
            last_error: "refused".into(),
            ..Default::default()
        });
        let text = status_text(&status);
        assert!(
            text.contains("primary: h:1 disconnected") && text.contains("last_error=\"refused\""),
            "{text}"
        );
    }

    #[test]
    fn promote_text_names_the_new_history_and_the_lsn() {
        let resp = PromoteResponse {
            replication_id: "new".into(),
            secondary_replication_id: "old".into(),
            lsn: 42,
        };
        assert_eq!(
            promote_text(&resp),
            "replication_id: new\nsecondary_replication_id: old\nlsn: 42\n"
        );
    }

    #[test]
    fn status_json_has_every_field_as_numbers() {
        let json: serde_json::Value =
            serde_json::from_slice(&status_json(&sample()).unwrap()).unwrap();
        assert_eq!(json["role"], "primary");
        assert_eq!(json["lsn"], 42);
        assert_eq!(json["evicted_keys"], 0);
        assert_eq!(json["failure"], "");
    }
}
