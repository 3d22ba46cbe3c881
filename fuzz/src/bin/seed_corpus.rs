//! Writes the seed corpus (`corpus/<target>/`) from the real encoders: `cargo xtask fuzz
//! --seeds` runs it. Not a fuzz target: a plain program built alongside them.

use std::path::Path;

// cargo-fuzz instruments every program of this crate for coverage; libFuzzer's runtime, linked
// through this crate, provides the callbacks (its `main` stays out: this one is defined).
use libfuzzer_sys as _;

fn main() -> std::io::Result<()> {
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = wasmkv_fuzz::seeds::all(&fuzz_dir.join("../config"))?;
    wasmkv_fuzz::seeds::write(&fuzz_dir.join("corpus"), &seeds)?;
    println!(
        "{} seeds written under {}",
        seeds.len(),
        fuzz_dir.join("corpus").display()
    );
    Ok(())
}
