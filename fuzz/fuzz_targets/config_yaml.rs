//! A node's configuration file, then `WASMKV_*` variables over it: the input is the YAML text,
//! optionally followed by a NUL and `NAME=value` lines.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmkv::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (yaml, env) = text.split_once('\0').unwrap_or((text, ""));
    let config = match Config::from_yaml_str(yaml, "fuzz.yaml") {
        Ok(config) => config,
        // Every problem in a file is reported against the file (with a position when there is
        // one), and its message can be shown.
        Err(e @ ConfigError::File { .. }) => return drop(e.to_string()),
        Err(other) => panic!("a problem in a file reported as {other:?}"),
    };
    config.validate().expect("a loaded configuration is valid");
    // Start-up derives these from any valid configuration: they must not panic.
    drop((config.listen_addr(), config.db_options()));

    let vars = env
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()));
    let mut overridden = config;
    match overridden.apply_env(vars) {
        Ok(()) => {
            if overridden.validate().is_ok() {
                drop((overridden.listen_addr(), overridden.db_options()));
            }
        }
        Err(e @ ConfigError::Env { .. }) => drop(e.to_string()),
        Err(other) => panic!("a problem in a variable reported as {other:?}"),
    }
});
