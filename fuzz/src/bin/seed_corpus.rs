//! Writes the seed corpus (`corpus/<target>/`) from the real encoders: `cargo xtask fuzz
//! --seeds` runs it. Not a fuzz target: a plain program built alongside them.

use std::path::Path;

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
