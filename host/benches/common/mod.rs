//! What the bench binaries share: writing their section of BENCHMARKS.md.

use std::path::Path;

/// Replace the section `name` of BENCHMARKS.md (between its `<!-- {name}:begin -->` and
/// `<!-- {name}:end -->` markers) with `title` and `report`, creating the file if needed, and
/// stamp it with the date and the bench that wrote it (the file's header names the machine).
pub fn write_section(path: &Path, name: &str, title: &str, source: &str, report: &str) {
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let section = format!(
        "{begin}\n## {title}\n\nMeasured {date} on the machine above by `cargo xtask bench` \
         (`{source}`, release build).\n\n{report}\n{end}"
    );
    let existing = std::fs::read_to_string(path).unwrap_or_else(|_| {
        "# Benchmarks\n\nEvery figure here is written by `cargo xtask bench`; ratios are \
         from one run.\n\n"
            .into()
    });
    let updated = match (existing.find(&begin), existing.find(&end)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{section}{}", &existing[..b], &existing[e + end.len()..])
        }
        _ => format!("{existing}{section}\n"),
    };
    std::fs::write(path, updated).expect("write BENCHMARKS.md");
}
