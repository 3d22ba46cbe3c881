//! `cargo xtask plugins`: build every crate under `plugins/` for `wasm32-unknown-unknown` (in
//! the small-code `plugin` profile of the workspace manifest), check each module against ABI v1
//! and copy it to an output directory as `NAME.wasm`, the name the node's YAML refers to.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use wasmparser::{ExternalKind, FuncType, Parser, Payload, TypeRef, ValType};

use crate::{cargo, root, run, target_dir};

const TARGET: &str = "wasm32-unknown-unknown";
const PROFILE: &str = "plugin";

/// Where `cargo xtask plugins` puts the modules unless told otherwise.
pub fn default_out_dir() -> PathBuf {
    target_dir().join("plugins")
}

/// Build all plugins and copy them into `out` as `NAME.wasm`; returns the copied files.
/// Demo and test code call this to get loadable plugins.
pub fn build(out: &Path) -> Result<Vec<PathBuf>> {
    let names = plugin_crates()?;
    ensure_wasm_target()?;
    let mut build = cargo();
    build.args(["build", "--profile", PROFILE, "--target", TARGET]);
    for name in &names {
        build.args(["--package", name]);
    }
    run(
        &format!("build {} plugins for {TARGET}", names.len()),
        build,
    )?;
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let built = target_dir().join(TARGET).join(PROFILE);
    let mut copied = Vec::new();
    for name in &names {
        // Cargo names the artifact after the library: hyphens become underscores.
        let from = built.join(format!("{}.wasm", name.replace('-', "_")));
        let bytes = fs::read(&from).with_context(|| format!("cannot read {}", from.display()))?;
        check_abi(&bytes).with_context(|| format!("{} breaks ABI v1", from.display()))?;
        let to = out.join(format!("{name}.wasm"));
        fs::write(&to, &bytes).with_context(|| format!("cannot write {}", to.display()))?;
        eprintln!("    {} ({} bytes)", to.display(), bytes.len());
        copied.push(to);
    }
    Ok(copied)
}

/// The plugin crates: every directory under `plugins/` with a manifest, named as the directory.
fn plugin_crates() -> Result<Vec<String>> {
    let dir = root().join("plugins");
    let mut names = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.join("Cargo.toml").is_file()
            && let Some(name) = path.file_name().and_then(|n| n.to_str())
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    if names.is_empty() {
        bail!("no plugin crates under {}", dir.display());
    }
    Ok(names)
}

/// `rustup target add` the wasm target if the pinned toolchain lacks it.
fn ensure_wasm_target() -> Result<()> {
    let mut list = Command::new("rustup");
    list.current_dir(root())
        .args(["target", "list", "--installed"]);
    let installed = list
        .output()
        .context("cannot run `rustup target list --installed` (is rustup installed?)")?;
    if !installed.status.success() {
        bail!(
            "`rustup target list --installed` failed ({})",
            installed.status
        );
    }
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|line| line.trim() == TARGET)
    {
        return Ok(());
    }
    let mut add = Command::new("rustup");
    add.current_dir(root()).args(["target", "add", TARGET]);
    run(&format!("rustup target add {TARGET}"), add)
}

/// Exports ABI v1 allows, with their signatures (params, results).
fn allowed_export(name: &str) -> Option<(&'static [ValType], &'static [ValType])> {
    use ValType::{I32, I64};
    Some(match name {
        "wasmkv_abi_v1" => (&[], &[I32]),
        "wasmkv_alloc" => (&[I32], &[I32]),
        "wasmkv_free" => (&[I32, I32], &[]),
        "wasmkv_init" | "wasmkv_validate" | "wasmkv_evict" | "wasmkv_filter" => {
            (&[I32, I32], &[I64])
        }
        _ => return None,
    })
}

/// Imports ABI v1 allows (all from module `wasmkv`), with their signatures.
fn allowed_import(module: &str, name: &str) -> Option<(&'static [ValType], &'static [ValType])> {
    use ValType::{I32, I64};
    match (module, name) {
        ("wasmkv", "log") => Some((&[I32, I32, I32], &[])),
        ("wasmkv", "now_ms") => Some((&[], &[I64])),
        _ => None,
    }
}

/// Check a module's imports and exports against ABI v1 (as `guest-sdk/ABI.md` states it):
/// the required exports exist with the right signatures, at least one hook is exported,
/// nothing else is imported. `__data_end`/`__heap_base` (globals rustc always exports) pass.
pub fn check_abi(wasm: &[u8]) -> Result<()> {
    let mut types: Vec<FuncType> = Vec::new();
    let mut functions: Vec<u32> = Vec::new(); // type index of each function, imports first
    let mut exports: BTreeMap<String, (ExternalKind, u32)> = BTreeMap::new();
    let mut problems = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.context("not a wasm module")? {
            Payload::TypeSection(section) => {
                for ty in section.into_iter_err_on_gc_types() {
                    types.push(ty?);
                }
            }
            Payload::ImportSection(section) => {
                for import in section {
                    let import = import?;
                    match import.ty {
                        TypeRef::Func(ty) => {
                            functions.push(ty);
                            let wanted = allowed_import(import.module, import.name);
                            check_signature(&types, ty, wanted, &mut problems, || {
                                format!("import {}.{}", import.module, import.name)
                            });
                        }
                        _ => problems.push(format!(
                            "imports {}.{}, which is not a function",
                            import.module, import.name
                        )),
                    }
                }
            }
            Payload::FunctionSection(section) => {
                for ty in section {
                    functions.push(ty?);
                }
            }
            Payload::ExportSection(section) => {
                for export in section {
                    let export = export?;
                    exports.insert(export.name.to_owned(), (export.kind, export.index));
                }
            }
            _ => {}
        }
    }
    for (name, &(kind, index)) in &exports {
        match (name.as_str(), kind) {
            ("memory", ExternalKind::Memory) => {}
            ("__data_end" | "__heap_base", ExternalKind::Global) => {}
            (_, ExternalKind::Func) => {
                let ty = functions.get(index as usize).copied();
                match (ty, allowed_export(name)) {
                    (Some(ty), Some(wanted)) => {
                        check_signature(&types, ty, Some(wanted), &mut problems, || {
                            format!("export {name}")
                        })
                    }
                    _ => problems.push(format!("exports {name}, which ABI v1 does not define")),
                }
            }
            _ => problems.push(format!(
                "exports {name} ({kind:?}), which ABI v1 does not define"
            )),
        }
    }
    for required in ["memory", "wasmkv_abi_v1", "wasmkv_alloc", "wasmkv_free"] {
        if !exports.contains_key(required) {
            problems.push(format!("does not export {required}"));
        }
    }
    if !["wasmkv_validate", "wasmkv_evict", "wasmkv_filter"]
        .iter()
        .any(|hook| exports.contains_key(*hook))
    {
        problems.push("exports no hook (wasmkv_validate, wasmkv_evict or wasmkv_filter)".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{}", problems.join("; "))
    }
}

fn check_signature(
    types: &[FuncType],
    ty: u32,
    wanted: Option<(&[ValType], &[ValType])>,
    problems: &mut Vec<String>,
    what: impl Fn() -> String,
) {
    let Some((params, results)) = wanted else {
        problems.push(format!("{}: not part of ABI v1", what()));
        return;
    };
    match types.get(ty as usize) {
        Some(found) if found.params() == params && found.results() == results => {}
        found => problems.push(format!(
            "{}: signature {found:?}, ABI v1 says {params:?} -> {results:?}",
            what()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::check_abi;

    /// A wasm module from sections given as (id, contents); vectors are written with a
    /// one-byte count, which is enough for these tiny modules.
    fn module(sections: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut out = b"\0asm\x01\0\0\0".to_vec();
        for (id, body) in sections {
            out.push(*id);
            out.push(body.len() as u8);
            out.extend(body);
        }
        out
    }

    fn name(s: &str) -> Vec<u8> {
        let mut out = vec![s.len() as u8];
        out.extend(s.as_bytes());
        out
    }

    /// Types: 0 () -> i32, 1 (i32) -> i32, 2 (i32 i32) -> (), 3 (i32 i32) -> i64, 4 () -> i64.
    fn types() -> (u8, Vec<u8>) {
        (
            1,
            vec![
                5, 0x60, 0, 1, 0x7f, 0x60, 1, 0x7f, 1, 0x7f, 0x60, 2, 0x7f, 0x7f, 0, 0x60, 2, 0x7f,
                0x7f, 1, 0x7e, 0x60, 0, 1, 0x7e,
            ],
        )
    }

    /// A module importing `imports` (module, name, type) and exporting memory, the marker,
    /// alloc, free and a validate hook whose type is `hook_type`.
    fn plugin(imports: &[(&str, &str, u8)], hook_type: u8) -> Vec<u8> {
        let mut import_section = vec![imports.len() as u8];
        for (module, field, ty) in imports {
            import_section.extend(name(module));
            import_section.extend(name(field));
            import_section.extend([0, *ty]);
        }
        let n = imports.len() as u8;
        let mut exports = vec![5];
        exports.extend(name("memory"));
        exports.extend([2, 0]);
        for (i, export) in [
            "wasmkv_abi_v1",
            "wasmkv_alloc",
            "wasmkv_free",
            "wasmkv_validate",
        ]
        .iter()
        .enumerate()
        {
            exports.extend(name(export));
            exports.extend([0, n + i as u8]);
        }
        // Four bodies of `unreachable`, which is valid whatever the function's type.
        let mut code = vec![4];
        for _ in 0..4 {
            code.extend([3, 0, 0x00, 0x0b]);
        }
        module(&[
            types(),
            (2, import_section),
            (3, vec![4, 0, 1, 2, hook_type]),
            (5, vec![1, 0, 1]),
            (7, exports),
            (10, code),
        ])
    }

    #[test]
    fn a_conforming_module_passes() {
        check_abi(&plugin(&[("wasmkv", "now_ms", 4)], 3)).unwrap();
    }

    #[test]
    fn foreign_imports_and_wrong_signatures_are_named() {
        let wasi = check_abi(&plugin(&[("wasi_snapshot_preview1", "fd_write", 2)], 3));
        assert!(format!("{:#}", wasi.unwrap_err()).contains("wasi_snapshot_preview1.fd_write"));
        let hook = check_abi(&plugin(&[], 2)).unwrap_err().to_string();
        assert!(hook.contains("export wasmkv_validate: signature"), "{hook}");
    }

    #[test]
    fn missing_exports_are_named() {
        let empty = module(&[types()]);
        let problems = check_abi(&empty).unwrap_err().to_string();
        assert!(
            problems.contains("does not export wasmkv_alloc"),
            "{problems}"
        );
        assert!(problems.contains("exports no hook"), "{problems}");
    }
}
