//! Validation: which keys a node accepts (prefixes, characters, length) and, per prefix, how
//! large values may be and whether a TTL is required. Every refusal says what to change.

#![warn(missing_docs)]

use wasmkv_guest::{Op, Verdict, WriteRequest, config, validate};

/// `config:` of the plugin's `validate` step.
#[config]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// If not empty, keys must start with one of these.
    #[serde(default)]
    pub allowed_prefixes: Vec<String>,
    /// Keys starting with one of these are refused (checked before `allowed_prefixes`).
    #[serde(default)]
    pub denied_prefixes: Vec<String>,
    /// Which characters a key may contain.
    #[serde(default)]
    pub charset: Charset,
    /// Characters allowed on top of `charset` (e.g. `":-_"` with `alphanumeric`).
    #[serde(default)]
    pub extra_chars: String,
    /// Shortest key, in bytes.
    #[serde(default = "one")]
    pub min_key_len: usize,
    /// Longest key, in bytes (the node's own limit is 1 KiB).
    #[serde(default = "one_kib")]
    pub max_key_len: usize,
    /// Per-prefix rules for sets; every rule whose prefix the key has applies.
    #[serde(default)]
    pub prefix_rules: Vec<PrefixRule>,
}

/// Character classes for keys.
#[derive(Clone, Copy, Default, PartialEq, Eq, wasmkv_guest::Deserialize)]
#[serde(crate = "wasmkv_guest::serde", rename_all = "lowercase")]
pub enum Charset {
    /// Any bytes.
    #[default]
    Any,
    /// Valid UTF-8 without control characters.
    Utf8,
    /// Printable ASCII without space (`!` to `~`).
    Printable,
    /// ASCII letters and digits only (add more with `extra_chars`).
    Alphanumeric,
}

/// Limits on sets of keys with a prefix.
#[derive(wasmkv_guest::Deserialize)]
#[serde(crate = "wasmkv_guest::serde", deny_unknown_fields)]
pub struct PrefixRule {
    /// Keys this rule applies to.
    pub prefix: String,
    /// Largest value, in bytes.
    #[serde(default)]
    pub max_value_len: Option<usize>,
    /// A set without a TTL is refused.
    #[serde(default)]
    pub require_ttl: bool,
}

fn one() -> usize {
    1
}

fn one_kib() -> usize {
    1024
}

impl Charset {
    fn name(self) -> &'static str {
        match self {
            Charset::Any => "any",
            Charset::Utf8 => "UTF-8 without control characters",
            Charset::Printable => "printable ASCII without spaces",
            Charset::Alphanumeric => "ASCII letters and digits",
        }
    }

    fn admits(self, c: char) -> bool {
        match self {
            Charset::Any => true,
            Charset::Utf8 => !c.is_control(),
            Charset::Printable => c.is_ascii_graphic(),
            Charset::Alphanumeric => c.is_ascii_alphanumeric(),
        }
    }
}

/// The key as a client would read it in a message: quoted, escaped, shortened past 64 chars.
fn shown(key: &[u8]) -> String {
    let text = String::from_utf8_lossy(key);
    match text.char_indices().nth(64) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

impl Policy {
    fn check_key(&self, key: &[u8]) -> Result<(), String> {
        if key.len() < self.min_key_len || key.len() > self.max_key_len {
            return Err(format!(
                "key {} is {} bytes long; keys must be {} to {} bytes",
                shown(key),
                key.len(),
                self.min_key_len,
                self.max_key_len
            ));
        }
        if self.charset != Charset::Any {
            let bad = match std::str::from_utf8(key) {
                Ok(text) => text
                    .chars()
                    .find(|&c| !self.charset.admits(c) && !self.extra_chars.contains(c))
                    .map(|c| format!("{c:?}")),
                Err(_) => Some("bytes that are not UTF-8".to_owned()),
            };
            if let Some(bad) = bad {
                let extra = if self.extra_chars.is_empty() {
                    String::new()
                } else {
                    format!(" and {:?}", self.extra_chars)
                };
                return Err(format!(
                    "key {} contains {bad}; allowed: {}{extra}",
                    shown(key),
                    self.charset.name()
                ));
            }
        }
        if let Some(prefix) = self
            .denied_prefixes
            .iter()
            .find(|p| key.starts_with(p.as_bytes()))
        {
            return Err(format!(
                "key {} starts with the denied prefix {prefix:?}",
                shown(key)
            ));
        }
        if !self.allowed_prefixes.is_empty()
            && !self
                .allowed_prefixes
                .iter()
                .any(|p| key.starts_with(p.as_bytes()))
        {
            return Err(format!(
                "key {} does not start with an allowed prefix: {}",
                shown(key),
                self.allowed_prefixes.join(", ")
            ));
        }
        Ok(())
    }

    fn check_set(&self, req: &WriteRequest) -> Result<(), String> {
        for rule in self
            .prefix_rules
            .iter()
            .filter(|r| req.key.starts_with(r.prefix.as_bytes()))
        {
            if let Some(max) = rule.max_value_len
                && req.value.len() > max
            {
                return Err(format!(
                    "value for key {} is {} bytes; keys starting with {:?} take at most {max}",
                    shown(&req.key),
                    req.value.len(),
                    rule.prefix
                ));
            }
            if rule.require_ttl && req.ttl_ms == 0 {
                return Err(format!(
                    "key {} needs a TTL: keys starting with {:?} must expire",
                    shown(&req.key),
                    rule.prefix
                ));
            }
        }
        Ok(())
    }
}

/// Allow or refuse one write. Key rules apply to sets and deletes (a denied key cannot be
/// removed either); value and TTL rules to sets only.
#[validate]
pub fn check(req: &WriteRequest, policy: &Policy) -> Verdict {
    let result = policy.check_key(&req.key).and_then(|()| match req.op {
        Op::Set => policy.check_set(req),
        Op::Delete => Ok(()),
    });
    match result {
        Ok(()) => Verdict::allow(),
        Err(reason) => Verdict::deny(reason),
    }
}

#[cfg(test)]
mod tests {
    use wasmkv_guest::testing::Plugin;
    use wasmkv_guest::{Verdict, WriteRequest};

    use super::{Policy, check};

    const CONFIG: &str = r#"
allowed_prefixes: ["user:", "session:"]
denied_prefixes: ["user:admin"]
charset: alphanumeric
extra_chars: ":-_"
max_key_len: 40
prefix_rules:
  - prefix: "session:"
    max_value_len: 16
    require_ttl: true
"#;

    fn verdict(config: &str, req: WriteRequest) -> Verdict {
        Plugin::<Policy>::init(config)
            .unwrap()
            .validate(check, &req)
            .unwrap()
    }

    fn reason(req: WriteRequest) -> String {
        let v = verdict(CONFIG, req);
        assert!(!v.allow);
        v.reason
    }

    #[test]
    fn good_writes_pass() {
        assert!(verdict(CONFIG, WriteRequest::set("user:42", "x")).allow);
        assert!(
            verdict(
                CONFIG,
                WriteRequest::set("session:a-b", "tok").with_ttl_ms(1)
            )
            .allow
        );
        assert!(verdict(CONFIG, WriteRequest::delete("session:a")).allow);
        assert!(verdict("{}", WriteRequest::set(vec![0, 255], "")).allow);
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            reason(WriteRequest::set("x", "")),
            "key \"x\" does not start with an allowed prefix: user:, session:"
        );
        assert_eq!(
            reason(WriteRequest::delete("user:admin1")),
            "key \"user:admin1\" starts with the denied prefix \"user:admin\""
        );
    }

    #[test]
    fn charset_and_length() {
        assert_eq!(
            reason(WriteRequest::set("user:a b", "")),
            "key \"user:a b\" contains ' '; allowed: ASCII letters and digits and \":-_\""
        );
        assert!(reason(WriteRequest::set(b"user:\xff".to_vec(), "")).contains("not UTF-8"));
        assert_eq!(
            reason(WriteRequest::set("", "")),
            "key \"\" is 0 bytes long; keys must be 1 to 40 bytes"
        );
        let long = format!("user:{}", "a".repeat(100));
        assert!(reason(WriteRequest::set(long, "")).contains("aaa\"… is 105 bytes long"));
        assert!(!verdict("charset: printable", WriteRequest::set("a\tb", "")).allow);
        assert!(verdict("charset: utf8", WriteRequest::set("clé", "")).allow);
    }

    #[test]
    fn per_prefix_value_size_and_ttl() {
        assert_eq!(
            reason(WriteRequest::set("session:1", "x")),
            "key \"session:1\" needs a TTL: keys starting with \"session:\" must expire"
        );
        assert_eq!(
            reason(WriteRequest::set("session:1", vec![b'x'; 17]).with_ttl_ms(5)),
            "value for key \"session:1\" is 17 bytes; keys starting with \"session:\" take at most 16"
        );
        // Value and TTL rules do not apply to other prefixes.
        assert!(verdict(CONFIG, WriteRequest::set("user:1", vec![b'x'; 100])).allow);
    }

    #[test]
    fn config_mistakes_are_refused() {
        assert!(Plugin::<Policy>::init("allowed_prefix: [a]").is_err());
        assert!(Plugin::<Policy>::init("charset: emoji").is_err());
        assert!(Plugin::<Policy>::init("prefix_rules: [{max_value_len: 3}]").is_err());
    }
}
