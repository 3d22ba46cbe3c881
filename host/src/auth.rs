//! Bearer tokens and the roles they carry.
//!
//! A node never stores a token, only its SHA-256: a leaked config file or `Status` output
//! gives nobody access. A presented token is hashed and compared with every configured
//! digest in constant time, so neither the comparison nor the number of tokens checked
//! tells an attacker how close a guess came.
//!
//! Roles: `read` reads; `write` reads and writes; `admin` may do everything, including the
//! calls that change the cluster (`AddReplica`, `Promote`, `Snapshot`); `replication` may only
//! subscribe to the log and acknowledge it, which is what a replica's credential needs and
//! all it should be able to do if stolen.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Read,
    Write,
    Admin,
    Replication,
}

/// The roles, as written in configs and on the command line.
pub const ROLES: [&str; 4] = ["read", "write", "admin", "replication"];

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
            Role::Replication => "replication",
        }
    }

    /// Whether a token of this role may make a call that needs `access`.
    pub fn allows(self, access: Access) -> bool {
        match self {
            Role::Admin => true,
            Role::Write => matches!(access, Access::Read | Access::Write),
            Role::Read => access == Access::Read,
            Role::Replication => access == Access::Replication,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            "replication" => Ok(Role::Replication),
            other => Err(format!(
                "unknown role {other:?}; expected one of {}",
                ROLES.join(", ")
            )),
        }
    }
}

/// What a call needs of its caller's token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reading keys and the node's state.
    Read,
    /// Changing keys.
    Write,
    /// Changing the node or the cluster.
    Admin,
    /// Following the node's log as a replica.
    Replication,
}

impl Access {
    /// The roles that grant this access, for "needs ..." messages.
    pub fn roles(self) -> &'static str {
        match self {
            Access::Read => "read, write or admin",
            Access::Write => "write or admin",
            Access::Admin => "admin",
            Access::Replication => "replication or admin",
        }
    }
}

/// One configured token: its name (for logs and errors), role and SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub name: String,
    pub role: Role,
    pub sha256: [u8; 32],
}

impl fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenEntry")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// The tokens a node accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenSet {
    entries: Vec<TokenEntry>,
}

impl TokenSet {
    pub fn new(entries: Vec<TokenEntry>) -> TokenSet {
        TokenSet { entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry `token` belongs to. Every digest is compared, match or not, in constant time.
    pub fn verify(&self, token: &str) -> Option<&TokenEntry> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.sha256.ct_eq(&digest)) && found.is_none() {
                found = Some(entry);
            }
        }
        found
    }
}

/// A credential this node presents to another (a replica's token). Its `Debug` never shows
/// it, so it cannot end up in a log line or an error by way of a config dump.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// The prefix of tokens made by [`generate`], so a leaked one is recognisable in a scan.
pub const TOKEN_PREFIX: &str = "wkv_";

/// A new token: the prefix and 32 random bytes in hex (256 bits, beyond guessing).
pub fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{TOKEN_PREFIX}{}", hex::encode(bytes)))
}

/// The SHA-256 of `token` in lower-case hex, as `auth.tokens[].sha256` takes it.
pub fn sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A SHA-256 written as 64 hex digits (either case).
pub fn parse_sha256(text: &str) -> Result<[u8; 32], String> {
    let expected = "expected the 64 hex digits of a SHA-256 (`wasmkv token new` prints it)";
    if text.len() != 64 {
        return Err(format!("{expected}, got {} characters", text.len()));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).map_err(|e| format!("{expected}: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, role: Role, token: &str) -> TokenEntry {
        TokenEntry {
            name: name.into(),
            role,
            sha256: parse_sha256(&sha256_hex(token)).unwrap(),
        }
    }

    #[test]
    fn a_token_is_found_by_its_digest_only() {
        let set = TokenSet::new(vec![
            entry("reader", Role::Read, "r-secret"),
            entry("writer", Role::Write, "w-secret"),
        ]);
        assert_eq!(set.verify("w-secret").unwrap().name, "writer");
        assert_eq!(set.verify("r-secret").unwrap().role, Role::Read);
        assert!(set.verify("w-secre").is_none());
        assert!(set.verify("").is_none());
    }

    #[test]
    fn roles_grant_what_they_say() {
        use Access::*;
        let grants = |role: Role| {
            [Read, Write, Admin, Replication]
                .into_iter()
                .filter(|a| role.allows(*a))
                .collect::<Vec<_>>()
        };
        assert_eq!(grants(Role::Read), [Read]);
        assert_eq!(grants(Role::Write), [Read, Write]);
        assert_eq!(grants(Role::Admin), [Read, Write, Admin, Replication]);
        assert_eq!(grants(Role::Replication), [Replication]);
    }

    #[test]
    fn generated_tokens_are_distinct_and_hash_to_hex() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
        let digest = sha256_hex(&a);
        assert_eq!(
            parse_sha256(&digest.to_uppercase()).unwrap(),
            parse_sha256(&digest).unwrap()
        );
        assert!(parse_sha256("abc").is_err());
        assert!(parse_sha256(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn secrets_and_digests_stay_out_of_debug_output() {
        let secret = Secret::new("hunter2".into());
        assert!(!format!("{secret:?}").contains("hunter2"));
        let e = entry("x", Role::Admin, "hunter2");
        assert!(!format!("{e:?}").contains(&sha256_hex("hunter2")[..8]));
    }
}
