//! Replication filter: which key prefixes each replica receives. A replica is matched by its
//! labels against the rules in order; the first rule whose labels it all carries decides.

#![warn(missing_docs)]

use std::collections::BTreeMap;

use wasmkv_guest::{FilterEntry, ReplicaInfo, config, filter};

/// `config:` of the plugin's `replicate` step.
#[config]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Checked in order; the first that matches the replica applies.
    pub rules: Vec<Rule>,
    /// What a replica no rule matches receives: everything (default) or nothing.
    #[serde(default)]
    pub unmatched: Unmatched,
}

/// Prefixes for the replicas that carry all of `labels`.
#[derive(wasmkv_guest::Deserialize)]
#[serde(crate = "wasmkv_guest::serde", deny_unknown_fields)]
pub struct Rule {
    /// Labels the replica must have, with these values (empty: every replica).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// If not empty, only keys with one of these prefixes are sent.
    #[serde(default)]
    pub allow_prefixes: Vec<String>,
    /// Keys with one of these prefixes are never sent (wins over `allow_prefixes`).
    #[serde(default)]
    pub deny_prefixes: Vec<String>,
}

/// The fate of entries bound for a replica that no rule matches.
#[derive(Default, wasmkv_guest::Deserialize)]
#[serde(crate = "wasmkv_guest::serde", rename_all = "lowercase")]
pub enum Unmatched {
    /// Send everything.
    #[default]
    Keep,
    /// Send nothing.
    Drop,
}

impl Rule {
    fn matches(&self, replica: &ReplicaInfo) -> bool {
        self.labels
            .iter()
            .all(|(name, value)| replica.labels.get(name) == Some(value))
    }

    fn keeps(&self, key: &[u8]) -> bool {
        let has = |prefixes: &[String]| prefixes.iter().any(|p| key.starts_with(p.as_bytes()));
        (self.allow_prefixes.is_empty() || has(&self.allow_prefixes)) && !has(&self.deny_prefixes)
    }
}

/// Whether `entry` goes to `replica`: the first matching rule decides, else `unmatched`.
#[filter]
pub fn keep(entry: &FilterEntry, replica: &ReplicaInfo, cfg: &Rules) -> bool {
    match cfg.rules.iter().find(|rule| rule.matches(replica)) {
        Some(rule) => rule.keeps(&entry.key),
        None => matches!(cfg.unmatched, Unmatched::Keep),
    }
}

#[cfg(test)]
mod tests {
    use wasmkv_guest::testing::Plugin;
    use wasmkv_guest::{FilterEntry, FilterInput, Op, ReplicaInfo};

    use super::{Rules, keep};

    const CONFIG: &str = r#"
rules:
  - labels: {region: us}
    deny_prefixes: ["eu:"]
  - labels: {region: eu, tier: cache}
    allow_prefixes: ["session:", "cache:"]
    deny_prefixes: ["cache:private:"]
"#;

    fn replica(labels: &[(&str, &str)]) -> ReplicaInfo {
        ReplicaInfo {
            id: "10.0.0.2:7000".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn kept(config: &str, replica: ReplicaInfo, keys: &[&str]) -> Vec<bool> {
        let entries = keys
            .iter()
            .map(|k| FilterEntry {
                op: Op::Set,
                key: k.as_bytes().to_vec(),
                value_len: 10,
                ttl_ms: 0,
            })
            .collect();
        let plugin = Plugin::<Rules>::init(config).unwrap();
        plugin
            .filter(keep, &FilterInput { replica, entries })
            .unwrap()
            .keep
    }

    #[test]
    fn deny_prefixes_for_matching_replicas() {
        let us = replica(&[("region", "us"), ("tier", "cache")]);
        assert_eq!(
            kept(CONFIG, us, &["eu:1", "us:1", "x"]),
            vec![false, true, true]
        );
    }

    #[test]
    fn allow_lists_with_deny_exceptions_need_every_label() {
        let eu_cache = replica(&[("region", "eu"), ("tier", "cache")]);
        let keys = ["session:1", "cache:a", "cache:private:b", "user:1"];
        assert_eq!(
            kept(CONFIG, eu_cache, &keys),
            vec![true, true, false, false]
        );
        // Missing the `tier` label: no rule matches, so everything is kept by default.
        let eu = replica(&[("region", "eu")]);
        assert_eq!(kept(CONFIG, eu, &keys), vec![true; 4]);
    }

    #[test]
    fn unmatched_replicas_can_receive_nothing() {
        let config = format!("{CONFIG}unmatched: drop\n");
        assert_eq!(kept(&config, replica(&[]), &["a", "b"]), vec![false, false]);
    }

    #[test]
    fn config_mistakes_are_refused() {
        assert!(Plugin::<Rules>::init("rules: [{labels: {a: b}, deny: [x]}]").is_err());
        assert!(Plugin::<Rules>::init("rules: []\nunmatched: maybe").is_err());
    }
}
