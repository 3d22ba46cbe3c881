//! `cargo xtask demo`: build wasmkv and the plugins, start a primary from `config/primary.yaml`
//! (plus a validate chain running the `key-policy` plugin) in a fresh data directory, and walk
//! through a scripted tour that prints each step and its result — the CLI, Connect JSON over
//! plain HTTP, the curl routes, the plugin refusing and allowing writes, a restart that keeps
//! the data — then a replica from `config/replica.yaml` that catches up, serves reads,
//! forwards writes, and resumes where it left off after a restart.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{cargo, free_port, plugins, root, run, target_dir};

/// The demo primary's validator: `key-policy` with this config (a YAML flow mapping).
const POLICY: &str =
    r#"{denied_prefixes: ["system:"], prefix_rules: [{prefix: "session:", require_ttl: true}]}"#;

/// `config/primary.yaml` (unchanged) followed by a `plugins:` section whose validate chain runs
/// `key-policy` from `plugin_dir`: the file the demo primary runs with.
fn primary_config(plugin_dir: &Path) -> Result<String> {
    let base = std::fs::read_to_string(root().join("config/primary.yaml"))
        .context("read config/primary.yaml")?;
    Ok(format!("{base}\n{}", plugins_section(plugin_dir)))
}

fn plugins_section(plugin_dir: &Path) -> String {
    [
        "# Added by cargo xtask demo: every write goes through the key-policy plugin.".to_owned(),
        "plugins:".to_owned(),
        format!("  dir: {:?}", plugin_dir.display().to_string()),
        "  # Roomier than the 2ms default, for a debug build on a busy machine.".to_owned(),
        "  limits: {deadline: 20ms}".to_owned(),
        "  validate:".to_owned(),
        "    - plugin: key-policy".to_owned(),
        format!("      config: {POLICY}"),
        "      on_error: reject".to_owned(),
        String::new(),
    ]
    .join("\n")
}

/// A node started by the demo; stopped with SIGTERM (graceful) when dropped.
struct RunningNode {
    child: Child,
}

impl RunningNode {
    fn start(
        wasmkv: &Path,
        config: &Path,
        data: &Path,
        port: u16,
        env: &[(&str, String)],
    ) -> Result<RunningNode> {
        let child = Command::new(wasmkv)
            .args(["serve", "--config"])
            .arg(config)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("WASMKV_DATA_DIR", data)
            .env("WASMKV_SERVER__PORT", port.to_string())
            .env("WASMKV_LOG__LEVEL", "warn")
            .stdin(Stdio::null())
            .spawn()
            .context("start wasmkv serve")?;
        let mut node = RunningNode { child };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = http(port, "GET", "/readyz", None, &[]) {
                return Ok(node);
            }
            if let Some(status) = node.child.try_wait()? {
                bail!("wasmkv serve exited during start-up ({status})");
            }
            if Instant::now() > deadline {
                bail!("wasmkv did not become ready within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) -> Result<()> {
        // SIGTERM: the node finishes in-flight requests, fsyncs and releases its lock.
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("send SIGTERM")?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        let status = self.child.wait()?;
        if !status.success() {
            bail!("wasmkv exited with {status} on SIGTERM");
        }
        Ok(())
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.stop();
        }
    }
}

pub fn demo(exit: bool) -> Result<()> {
    let mut build = cargo();
    build.args(["build", "--quiet", "-p", "wasmkv", "--bin", "wasmkv"]);
    run("build wasmkv", build)?;
    let wasmkv = target_dir().join("debug/wasmkv");
    let data = tempfile::tempdir().context("temp dir")?;
    let data_dir = data.path().join("primary");
    let plugin_dir = data.path().join("plugins");
    let built = plugins::build(&plugins::default_out_dir())?;
    let key_policy = built
        .iter()
        .find(|p| p.file_name().is_some_and(|n| n == "key-policy.wasm"))
        .context("cargo xtask plugins built no key-policy.wasm")?;
    std::fs::create_dir_all(&plugin_dir).context("create the demo's plugin directory")?;
    std::fs::copy(key_policy, plugin_dir.join("key-policy.wasm"))
        .context("copy key-policy.wasm into the demo's plugin directory")?;
    let config = data.path().join("primary.yaml");
    std::fs::write(&config, primary_config(&plugin_dir)?).context("write the demo's config")?;
    let port = if exit { free_port()? } else { 8080 };
    let addr = format!("http://127.0.0.1:{port}");

    step(&format!(
        "start a primary: wasmkv serve --config {} (data in {}, port {port}): config/primary.yaml \
         and, appended,\n{}",
        config.display(),
        data_dir.display(),
        indent(&plugins_section(&plugin_dir))
    ));
    let mut node = RunningNode::start(&wasmkv, &config, &data_dir, port, &[])?;
    println!("    ready: GET /readyz -> 200");

    let cli_at = |addr: &str, args: &[&str]| -> Result<String> {
        let out = Command::new(&wasmkv)
            .env("WASMKV_ADDR", addr)
            .args(args)
            .output()
            .with_context(|| format!("run wasmkv {}", args.join(" ")))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let shown: Vec<String> = args
            .iter()
            .map(|a| {
                if a.contains(' ') {
                    format!("{a:?}")
                } else {
                    (*a).to_owned()
                }
            })
            .collect();
        println!("    $ wasmkv {}\n{}", shown.join(" "), indent(&text));
        Ok(text)
    };
    let cli = |args: &[&str]| cli_at(&addr, args);

    step("set and get with the CLI");
    cli(&["set", "greeting", "hello, wasmkv"])?;
    cli(&["get", "greeting"])?;
    cli(&["set", "session:42", "token", "--ttl", "2s"])?;

    step("the same store over Connect with a JSON body (what curl would send)");
    let body = br#"{"key":"Z3JlZXRpbmc="}"#;
    println!(
        "    POST /kvstore.v1.KVStore/Get  Content-Type: application/json  {}",
        String::from_utf8_lossy(body)
    );
    let (status, reply) = http(
        port,
        "POST",
        "/kvstore.v1.KVStore/Get",
        Some(body),
        &[("Content-Type", "application/json")],
    )?;
    println!("    -> {status} {reply}");

    step("the curl routes: PUT/GET /v1/kv/{key}");
    let (status, reply) = http(port, "PUT", "/v1/kv/color", Some(b"blue"), &[])?;
    println!("    PUT /v1/kv/color 'blue' -> {status} {reply}");
    let (status, reply) = http(port, "GET", "/v1/kv/color", None, &[])?;
    println!("    GET /v1/kv/color -> {status} {reply}");

    step("a bad request gets a clear Connect error");
    let (status, reply) = http(
        port,
        "POST",
        "/kvstore.v1.KVStore/Set",
        Some(b"{\"value\":\"eA==\"}"),
        &[("Content-Type", "application/json")],
    )?;
    println!("    Set without a key -> {status} {reply}");

    step(&format!(
        "a plugin judges every write: the key-policy validator with {POLICY}"
    ));
    let refused = cli(&["set", "system:flags", "on"])?;
    if !refused.contains("permission_denied")
        || !refused.contains(
            "refused by plugin key-policy: key \"system:flags\" starts with the denied prefix",
        )
    {
        bail!("key-policy did not refuse a key with a denied prefix: {refused}");
    }
    let refused = cli(&["set", "session:43", "token"])?;
    if !refused.contains("permission_denied") || !refused.contains("needs a TTL") {
        bail!("key-policy did not refuse a session without a TTL: {refused}");
    }
    let allowed = cli(&["set", "session:43", "token", "--ttl", "1m"])?;
    if allowed.contains("error") {
        bail!("key-policy refused a write it allows: {allowed}");
    }
    let listed = cli(&["plugin", "list"])?;
    if !listed.contains("plugin: key-policy") {
        bail!("wasmkv plugin list does not show key-policy: {listed}");
    }

    step("status");
    cli(&["status"])?;

    step("restart the node (SIGTERM, then start again): the data survives");
    node.stop()?;
    let mut node = RunningNode::start(&wasmkv, &config, &data_dir, port, &[])?;
    let got = cli(&["get", "greeting"])?;
    if !got.contains("hello, wasmkv") {
        bail!("the value did not survive the restart: {got}");
    }
    cli(&["digest"])?;

    let replica_port = if exit { free_port()? } else { 8081 };
    let replica_addr = format!("http://127.0.0.1:{replica_port}");
    let replica_dir = data.path().join("replica");
    let replica_env = [("WASMKV_PRIMARY__ADDRESS", format!("127.0.0.1:{port}"))];
    let replica_config = root().join("config/replica.yaml");
    step(&format!(
        "start a replica: wasmkv serve --config config/replica.yaml (port {replica_port}, \
         following the primary on {port})"
    ));
    let start_replica = || {
        RunningNode::start(
            &wasmkv,
            &replica_config,
            &replica_dir,
            replica_port,
            &replica_env,
        )
    };
    let mut replica = start_replica()?;
    let in_sync = || -> Result<()> {
        let primary = cli_quiet(&wasmkv, &addr, &["digest"])?;
        wait_until("the replica to hold the primary's data", || {
            Ok(cli_quiet(&wasmkv, &replica_addr, &["digest"])? == primary)
        })
    };
    in_sync()?;
    println!("    the replica copied the primary's data (a full resync) and follows its log");
    cli_at(&replica_addr, &["get", "greeting"])?;

    step("write through the replica: it refuses writes, and the CLI follows it to the primary");
    cli_at(
        &replica_addr,
        &["set", "written-via", "the replica's address"],
    )?;
    cli(&["set", "confirmed", "yes", "--min-replicas", "1"])?;
    in_sync()?;
    cli_at(&replica_addr, &["get", "confirmed"])?;

    step("stop the replica, write on the primary, start it again: it resumes (partial resync)");
    replica.stop()?;
    cli(&["set", "while-away", "caught up"])?;
    let mut replica = start_replica()?;
    in_sync()?;
    cli_at(&replica_addr, &["get", "while-away"])?;
    cli_at(&replica_addr, &["status"])?;

    if exit {
        replica.stop()?;
        node.stop()?;
        println!("\nThe tour is done.");
    } else {
        println!(
            "\nThe tour is done; the primary keeps serving on {addr} and the replica on \
             {replica_addr} (try `cargo run -p wasmkv -- get greeting` or curl \
             {addr}/v1/kv/color). Ctrl-C to stop."
        );
        node.child.wait()?;
        replica.child.wait()?;
    }
    Ok(())
}

/// A CLI call whose output is used, not shown.
fn cli_quiet(wasmkv: &Path, addr: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(wasmkv)
        .env("WASMKV_ADDR", addr)
        .args(args)
        .output()
        .with_context(|| format!("run wasmkv {}", args.join(" ")))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Poll `check` until it holds, for at most 30 s.
fn wait_until(what: &str, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check()? {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn step(what: &str) {
    println!("\n--> {what}");
}

fn indent(text: &str) -> String {
    text.trim_end()
        .lines()
        .map(|l| format!("      {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A minimal HTTP/1.1 exchange (one request per connection), so the demo shows the raw wire
/// without needing curl on the machine.
fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP response")?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Ok((status, body))
}
