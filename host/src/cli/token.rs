//! `wasmkv token new`: a token and the config entry that admits it.

use std::process::ExitCode;

use anyhow::{Context, Result};

use wasmkv::auth::{Role, generate, sha256_hex};

use super::remote::print;

/// Print a new token (first line) and its `auth.tokens` entry (second line).
pub fn new(role: &str, name: Option<String>) -> Result<ExitCode> {
    let role: Role = role.parse().map_err(anyhow::Error::msg)?;
    let token = generate().context("reading the OS random source")?;
    let sha256 = sha256_hex(&token);
    let name = name.unwrap_or_else(|| format!("{role}-{}", &sha256[..8]));
    print(format!("{token}\n- {{ name: {name:?}, role: {role}, sha256: {sha256} }}\n").as_bytes())?;
    eprintln!(
        "The first line is the token: give it to its user, it is not stored anywhere. Put the \
         second line under auth.tokens (or in auth.token_file) and reload the node (SIGHUP)."
    );
    Ok(ExitCode::SUCCESS)
}
