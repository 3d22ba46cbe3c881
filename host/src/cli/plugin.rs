//! `wasmkv plugin list` asks a running node which plugins it runs and how they fare;
//! `wasmkv plugin check` tries a plugin file offline, the way a node would load it, and makes
//! one sample call per hook, so a plugin can be tested before it is installed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use prost_reflect::{ReflectMessage, SerializeOptions};
use wasmkv::api::proto::{ListPluginsResponse, PluginInfo};
use wasmkv::config::{
    EvictStep, FilterOnError, PluginLimits, PluginsConfig, ReplicateStep, ValidateOnError,
    ValidateStep,
};
use wasmkv::plugins::{Plugins, Runtime, checked_victims, filter_entries};
use wasmkv_guest::abi;

use super::remote::{Target, block_on, print};

/// A hook `plugin check` can exercise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Hook {
    /// wasmkv_validate: judge a write
    Validate,
    /// wasmkv_evict: pick eviction victims
    Evict,
    /// wasmkv_filter: choose what a replica receives
    Filter,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::Validate => "validate",
            Hook::Evict => "evict",
            Hook::Filter => "filter",
        }
    }
}

pub fn list(target: &Target, json: bool) -> Result<ExitCode> {
    let client = target.client()?;
    let plugins = block_on(async { client.list_plugins().await.context("plugin list") })?;
    if json {
        print(&list_json(plugins)?)?;
    } else {
        print(list_text(&plugins).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One block of `name: value` lines per plugin, separated by blank lines.
fn list_text(plugins: &[PluginInfo]) -> String {
    if plugins.is_empty() {
        return "no plugins (the node's config names none in its chains)\n".into();
    }
    let blocks: Vec<String> = plugins.iter().map(plugin_block).collect();
    blocks.join("\n")
}

fn plugin_block(p: &PluginInfo) -> String {
    let list = |items: &[String]| {
        if items.is_empty() {
            "-".to_owned()
        } else {
            items.join(", ")
        }
    };
    let (p50, p99) = if p.calls == 0 {
        ("-".to_owned(), "-".to_owned())
    } else {
        (nanos(p.p50_ns), nanos(p.p99_ns))
    };
    let loaded_at =
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(p.loaded_at_ms));
    let last_error = if p.last_error.is_empty() {
        "-"
    } else {
        &p.last_error
    };
    format!(
        "plugin: {}\n  sha256: {}\n  loaded_at: {loaded_at}\n  hooks: {}\n  chains: {}\n  \
         calls: {}\n  errors: {}\n  traps: {}\n  timeouts: {}\n  p50: {p50}\n  p99: {p99}\n  \
         state: {}\n  last_error: {last_error}\n",
        p.name,
        p.sha256,
        list(&p.hooks),
        list(&p.chains),
        p.calls,
        p.errors,
        p.traps,
        p.timeouts,
        p.state,
    )
}

/// A call time for people: ns below a microsecond, then µs, then ms.
fn nanos(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.1} µs", ns as f64 / 1e3),
        _ => format!("{:.2} ms", ns as f64 / 1e6),
    }
}

/// `{"plugins": [...]}` with every field present under its proto name, numbers as numbers
/// (as `status --json`).
fn list_json(plugins: Vec<PluginInfo>) -> Result<Vec<u8>> {
    let options = SerializeOptions::new()
        .skip_default_fields(false)
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false);
    let mut out = Vec::new();
    ListPluginsResponse { plugins }
        .transcode_to_dynamic()
        .serialize_with_options(&mut serde_json::Serializer::new(&mut out), &options)
        .context("encoding the plugin list as JSON")?;
    out.push(b'\n');
    Ok(out)
}

/// The step config `plugin check` hands the plugin: `--config` as a YAML file if one exists at
/// that path, else as inline YAML; an empty mapping without it (as a chain step without
/// `config:`).
fn read_config(arg: Option<&str>) -> Result<serde_json::Value> {
    let Some(arg) = arg else {
        return Ok(serde_json::json!({}));
    };
    let path = Path::new(arg);
    let (text, what) = if path.is_file() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        (text, format!("the config file {}", path.display()))
    } else {
        (arg.to_owned(), "the inline --config YAML".to_owned())
    };
    let value: Option<serde_json::Value> =
        serde_saphyr::from_str(&text).with_context(|| format!("{what} is not valid YAML"))?;
    Ok(value.unwrap_or(serde_json::Value::Null))
}

/// Load `file` as a node would (ABI v1, imports, exports, `wasmkv_init` with the config), then
/// call each hook once with a sample input. Prints each check that passed; the first failure
/// is the error (exit status 2).
pub fn check(
    file: &Path,
    config: Option<&str>,
    hook: Option<Hook>,
    deadline: Duration,
) -> Result<ExitCode> {
    let name = match (file.file_stem(), file.extension()) {
        (Some(stem), Some(ext)) if ext == "wasm" => stem
            .to_str()
            .with_context(|| format!("{} is not a UTF-8 file name", file.display()))?
            .to_owned(),
        _ => bail!(
            "{} is not a NAME.wasm file (a node loads the plugin NAME from its plugins.dir as \
             NAME.wasm)",
            file.display()
        ),
    };
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let config = read_config(config)?;
    if deadline.is_zero() || deadline > PluginLimits::MAX_DEADLINE {
        bail!(
            "--deadline {} is out of range; expected more than 0, at most {:?}",
            humantime::format_duration(deadline),
            PluginLimits::MAX_DEADLINE
        );
    }
    let limits = PluginLimits {
        deadline,
        ..PluginLimits::default()
    };
    let passed = |what: String| print(format!("ok: {what}\n").as_bytes());

    // What the module exports decides which chains it is tried in.
    let hooks = {
        let runtime = Runtime::new(limits, None)?;
        runtime.compile(&name, &bytes)?.hooks
    };
    passed(format!(
        "{} is a WebAssembly module that follows ABI v1 (marker, memory, wasmkv_alloc, \
         wasmkv_free; imports only from wasmkv)",
        file.display()
    ))?;
    passed(format!("exports the hooks: {}", hooks.names().join(", ")))?;
    let exported = |h: Hook| match h {
        Hook::Validate => hooks.validate,
        Hook::Evict => hooks.evict,
        Hook::Filter => hooks.filter,
    };
    let wanted: Vec<Hook> = match hook {
        Some(h) if !exported(h) => bail!(
            "plugin {name}: --hook {} asked, but it does not export wasmkv_{} (it exports {})",
            h.name(),
            h.name(),
            hooks.names().join(", ")
        ),
        Some(h) => vec![h],
        None => [Hook::Validate, Hook::Evict, Hook::Filter]
            .into_iter()
            .filter(|&h| exported(h))
            .collect(),
    };

    let plugins_config = PluginsConfig {
        dir,
        limits,
        validate: wanted
            .contains(&Hook::Validate)
            .then(|| ValidateStep {
                plugin: name.clone(),
                config: config.clone(),
                on_error: ValidateOnError::Reject,
            })
            .into_iter()
            .collect(),
        evict: wanted.contains(&Hook::Evict).then(|| EvictStep {
            plugin: name.clone(),
            config: config.clone(),
            sample: EvictStep::DEFAULT_SAMPLE,
        }),
        replicate: wanted
            .contains(&Hook::Filter)
            .then(|| ReplicateStep {
                plugin: name.clone(),
                config: config.clone(),
                labels: Default::default(),
                on_error: FilterOnError::Hold,
            })
            .into_iter()
            .collect(),
    };
    let plugins = Plugins::load(&plugins_config, None)?;
    if hooks.init {
        passed(format!(
            "loaded in a sandbox of {} memory and {:?} per call; wasmkv_init \
             accepted the config {config}",
            bytesize::ByteSize(limits.memory),
            limits.deadline
        ))?;
    } else {
        passed(format!(
            "loaded in a sandbox of {} memory and {:?} per call; it has no \
             wasmkv_init, so it takes no config{}",
            bytesize::ByteSize(limits.memory),
            limits.deadline,
            if config == serde_json::json!({}) {
                ""
            } else {
                " (--config is not used)"
            }
        ))?;
    }

    let mut calls = 0;
    if let Some(step) = plugins.validate.steps.first() {
        let request = abi::WriteRequest {
            op: abi::Op::Set,
            key: b"sample-key".to_vec(),
            value: b"v".to_vec(),
            ttl_ms: 0,
        };
        let started = Instant::now();
        let verdict = step
            .step
            .call::<_, abi::Verdict>("wasmkv_validate", &request)
            .with_context(|| {
                format!("plugin {name}: the sample wasmkv_validate call (set \"sample-key\" = \"v\") failed")
            })?;
        let answer = if verdict.allow {
            "allowed".to_owned()
        } else {
            format!("refused: {}", verdict.reason)
        };
        passed(format!(
            "validate: set \"sample-key\" = \"v\" -> {answer} ({})",
            nanos(started.elapsed().as_nanos() as u64)
        ))?;
        calls += 1;
    }
    if let Some(evict) = &plugins.evict {
        let now = wasmkv::clock::now_ms();
        let candidates = [
            ("cold", 5, now.saturating_sub(600_000), 0),
            ("hot", 40, now, 0),
            ("expiring", 10, now.saturating_sub(1_000), now + 5_000),
        ];
        let input = abi::EvictionInput {
            candidates: candidates
                .iter()
                .map(
                    |&(key, hits, last_access_ms, expires_at_ms)| abi::Candidate {
                        key: key.as_bytes().to_vec(),
                        size: 64,
                        last_access_ms,
                        hits,
                        expires_at_ms,
                    },
                )
                .collect(),
            need: 2,
        };
        let started = Instant::now();
        let victims = evict
            .step
            .call::<_, abi::Victims>("wasmkv_evict", &input)
            .with_context(|| {
                format!("plugin {name}: the sample wasmkv_evict call (3 candidates, need 2) failed")
            })?;
        let elapsed = started.elapsed();
        let keys = checked_victims(&victims.victims, candidates.len(), 2)
            .map(|picked| {
                picked
                    .into_iter()
                    .map(|i| candidates[i].0)
                    .collect::<Vec<_>>()
            })
            .map_err(|problem| {
                anyhow::anyhow!(
                    "plugin {name}: the sample wasmkv_evict call answered {:?}, which breaks \
                     ABI v1: {problem} (a node would use its built-in LRU instead)",
                    victims.victims
                )
            })?;
        passed(format!(
            "evict: candidates cold (idle 10 min), hot (40 hits, just read), expiring (TTL 5 s), \
             need 2 -> victims [{}] ({})",
            keys.join(", "),
            nanos(elapsed.as_nanos() as u64)
        ))?;
        calls += 1;
    }
    if let Some(filter) = plugins.replicate.first() {
        let replica = abi::ReplicaInfo {
            id: "127.0.0.1:8081".into(),
            labels: [("region".to_owned(), "us".to_owned())].into(),
        };
        let entry = |op, key: &str, value_len| abi::FilterEntry {
            op,
            key: key.as_bytes().to_vec(),
            value_len,
            ttl_ms: 0,
        };
        let entries = vec![
            entry(abi::Op::Set, "eu:1", 5),
            entry(abi::Op::Set, "us:1", 5),
            entry(abi::Op::Delete, "us:2", 0),
        ];
        let started = Instant::now();
        let keep =
            filter_entries(std::slice::from_ref(filter), &replica, entries).map_err(|e| {
                anyhow::anyhow!("plugin {name}: the sample wasmkv_filter call failed: {e}")
            })?;
        passed(format!(
            "filter: replica region=us, entries set eu:1, set us:1, delete us:2 -> keep {keep:?} \
             ({})",
            nanos(started.elapsed().as_nanos() as u64)
        ))?;
        calls += 1;
    }
    print(format!("plugin {name} passed ({calls} sample call(s))\n").as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "key-policy".into(),
            sha256: "ab".repeat(32),
            loaded_at_ms: 1_700_000_000_000,
            hooks: vec!["validate".into()],
            chains: vec!["validate".into()],
            calls: 10,
            errors: 1,
            p50_ns: 12_300,
            p99_ns: 2_500_000,
            state: "loaded".into(),
            ..Default::default()
        }
    }

    #[test]
    fn list_text_is_one_block_per_plugin() {
        let other = PluginInfo {
            name: "lfu-evict".into(),
            calls: 0,
            last_error: "plugin lfu-evict: not a valid WebAssembly module".into(),
            ..info()
        };
        let text = list_text(&[info(), other]);
        assert!(text.starts_with("plugin: key-policy\n"), "{text}");
        assert!(
            text.contains("\n  loaded_at: 2023-11-14T22:13:20.000Z\n"),
            "{text}"
        );
        assert!(text.contains("\n  hooks: validate\n"), "{text}");
        assert!(text.contains("\n  calls: 10\n  errors: 1\n"), "{text}");
        assert!(
            text.contains("\n  p50: 12.3 µs\n  p99: 2.50 ms\n"),
            "{text}"
        );
        assert!(
            text.contains("\n  last_error: -\n\nplugin: lfu-evict\n"),
            "{text}"
        );
        assert!(text.contains("\n  p50: -\n"), "{text}");
        assert!(text.ends_with("last_error: plugin lfu-evict: not a valid WebAssembly module\n"));
        assert!(list_text(&[]).starts_with("no plugins"));
    }

    #[test]
    fn list_json_has_every_field() {
        let json: serde_json::Value =
            serde_json::from_slice(&list_json(vec![info()]).unwrap()).unwrap();
        assert_eq!(json["plugins"][0]["name"], "key-policy");
        assert_eq!(json["plugins"][0]["calls"], 10);
        assert_eq!(json["plugins"][0]["timeouts"], 0);
        assert_eq!(json["plugins"][0]["last_error"], "");
    }

    #[test]
    fn config_is_a_file_or_inline_yaml() {
        assert_eq!(read_config(None).unwrap(), serde_json::json!({}));
        assert_eq!(
            read_config(Some("{allowed_prefixes: [\"user:\"], max_key_len: 40}")).unwrap(),
            serde_json::json!({"allowed_prefixes": ["user:"], "max_key_len": 40})
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.yaml");
        std::fs::write(&file, "half_life_ms: 1000\n").unwrap();
        assert_eq!(
            read_config(Some(file.to_str().unwrap())).unwrap(),
            serde_json::json!({"half_life_ms": 1000})
        );
        assert!(read_config(Some("{unclosed: [")).is_err());
    }
}
