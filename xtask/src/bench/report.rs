//! Figures to tables: each figure collects one sample per round for each side, the table shows
//! the medians and their ratio oriented so that ≥ 1.00 always means wasmkv wins, and marks the
//! issue 4 targets met or missed. Also composes BENCHMARKS.md around the storage section that
//! `host/benches/storage.rs` owns.

use std::fmt::Write as _;

use anyhow::{Context, Result};

use super::Commands;

pub const STORAGE_BEGIN: &str = "<!-- storage-bench:begin -->";
pub const STORAGE_END: &str = "<!-- storage-bench:end -->";
/// The plugin bench (`host/benches/plugins.rs`) owns the section between these.
pub const PLUGIN_BEGIN: &str = "<!-- plugin-bench:begin -->";
pub const PLUGIN_END: &str = "<!-- plugin-bench:end -->";
/// Hand-written analysis (where the time goes, profiles) survives a rewrite between these.
pub const ANALYSIS_BEGIN: &str = "<!-- analysis:begin -->";
pub const ANALYSIS_END: &str = "<!-- analysis:end -->";

/// Which way a figure is better, which orients the ratio.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Better {
    Higher,
    Lower,
}

/// How a figure is printed.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Unit {
    PerSec,
    Micros,
    Bytes,
    Seconds,
    /// A plain number (log entries, keys).
    Count,
}

pub struct Row {
    pub figure: String,
    unit: Unit,
    better: Better,
    /// Whether issue 4 sets a target (ratio ≥ 1.0) on this figure.
    target: bool,
    ours: Vec<f64>,
    theirs: Vec<f64>,
}

impl Row {
    pub fn ratio(&self) -> Option<f64> {
        let (ours, theirs) = (median(&self.ours)?, median(&self.theirs)?);
        let ratio = match self.better {
            Better::Higher => ours / theirs,
            Better::Lower => theirs / ours,
        };
        ratio.is_finite().then_some(ratio)
    }

    /// `Some(true)` met, `Some(false)` missed, `None` no target (or no figure).
    pub fn target_met(&self) -> Option<bool> {
        self.target.then(|| self.ratio().map(|r| r >= 1.0))?
    }
}

/// One scenario's table, with what each side ran.
pub struct Table {
    pub title: String,
    /// Column names: `wasmkv` and `Redis`, or `wasmkv bench` and `wrk` for the client check;
    /// no second column for figures of wasmkv alone (replication).
    ours: &'static str,
    theirs: Option<&'static str>,
    pub setup: Vec<String>,
    pub notes: Vec<String>,
    pub commands: Commands,
    pub rows: Vec<Row>,
}

impl Table {
    pub fn new(title: &str, setup: &[&str]) -> Table {
        Table::versus(title, "wasmkv", "Redis", setup)
    }

    pub fn versus(title: &str, ours: &'static str, theirs: &'static str, setup: &[&str]) -> Table {
        Table {
            ours,
            theirs: Some(theirs),
            ..Table::alone(title, setup)
        }
    }

    /// A table of wasmkv's figures only: one column, no ratio, no target.
    pub fn alone(title: &str, setup: &[&str]) -> Table {
        Table {
            title: title.to_owned(),
            ours: "wasmkv",
            theirs: None,
            setup: setup.iter().map(|s| (*s).to_owned()).collect(),
            notes: Vec::new(),
            commands: Commands::default(),
            rows: Vec::new(),
        }
    }

    /// Declare a figure (in display order).
    pub fn row(&mut self, figure: &str, unit: Unit, better: Better, target: bool) {
        self.rows.push(Row {
            figure: figure.to_owned(),
            unit,
            better,
            target,
            ours: Vec::new(),
            theirs: Vec::new(),
        });
    }

    fn find(&mut self, figure: &str) -> &mut Row {
        self.rows
            .iter_mut()
            .find(|r| r.figure == figure)
            .unwrap_or_else(|| panic!("no row {figure:?} declared"))
    }

    /// One round's sample for wasmkv (the left column).
    pub fn ours(&mut self, figure: &str, value: f64) {
        self.find(figure).ours.push(value);
    }

    /// One round's sample for the other side.
    pub fn theirs(&mut self, figure: &str, value: f64) {
        self.find(figure).theirs.push(value);
    }

    /// The note is kept once even if every round adds it (the last round's text wins).
    pub fn note(&mut self, key: &str, text: String) {
        match self.notes.iter_mut().find(|n| n.starts_with(key)) {
            Some(n) => *n = text,
            None => self.notes.push(text),
        }
    }

    pub fn render(&self, rounds: usize) -> String {
        let mut out = format!("### {}\n\n", self.title);
        for line in &self.setup {
            let _ = writeln!(out, "- {line}");
        }
        let Some(theirs) = self.theirs else {
            let _ = writeln!(
                out,
                "\n| figure (median of {rounds}) | {} |\n|---|---:|",
                self.ours
            );
            for row in &self.rows {
                let _ = writeln!(
                    out,
                    "| {} | {}{} |",
                    row.figure,
                    show(row.unit, median(&row.ours)),
                    spread(&row.ours),
                );
            }
            self.render_tail(&mut out);
            return out;
        };
        let _ = writeln!(
            out,
            "\n| figure (median of {rounds}) | {} | {} | ratio: {0}/{1} for rates, {1}/{0} for \
             latency, bytes, time (≥ 1.00: {0} wins) | target (ratio ≥ 1.00) |\n\
             |---|---:|---:|---:|---|",
            self.ours, theirs
        );
        for row in &self.rows {
            let ratio = row.ratio().map_or("—".into(), |r| format!("{r:.2}"));
            let target = match row.target_met() {
                Some(true) => "met",
                Some(false) => "**missed**",
                None => "—",
            };
            let _ = writeln!(
                out,
                "| {} | {}{} | {}{} | {ratio} | {target} |",
                row.figure,
                show(row.unit, median(&row.ours)),
                spread(&row.ours),
                show(row.unit, median(&row.theirs)),
                spread(&row.theirs),
            );
        }
        self.render_tail(&mut out);
        out
    }

    /// The notes and the commands, after the figures.
    fn render_tail(&self, out: &mut String) {
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                let _ = writeln!(out, "{note}");
            }
        }
        let _ = writeln!(out, "\nCommands:\n\n```");
        for cmd in self.commands.iter() {
            let _ = writeln!(out, "{cmd}");
        }
        out.push_str("```\n");
    }
}

/// The median of the samples (mean of the middle two for an even count).
pub fn median(samples: &[f64]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

/// How far the rounds disagree, as ` ±N%` (half the range over the median) when it is
/// 10% or more: a warning that the machine was not quiet, or that the figure is unstable.
fn spread(samples: &[f64]) -> String {
    let (Some(mid), Some(lo), Some(hi)) = (
        median(samples),
        samples.iter().copied().reduce(f64::min),
        samples.iter().copied().reduce(f64::max),
    ) else {
        return String::new();
    };
    let pct = (hi - lo) / 2.0 / mid * 100.0;
    if pct.is_finite() && pct >= 10.0 {
        format!(" ±{pct:.0}%")
    } else {
        String::new()
    }
}

fn show(unit: Unit, value: Option<f64>) -> String {
    let Some(v) = value else {
        return "—".into();
    };
    match unit {
        Unit::PerSec => format!("{}/s", thousands(v)),
        Unit::Micros => super::micros(v),
        Unit::Bytes => format!("{v:.0} B"),
        Unit::Seconds if v < 1.0 => format!("{:.0} ms", v * 1000.0),
        Unit::Seconds => format!("{v:.2} s"),
        Unit::Count => thousands(v),
    }
}

/// `1234567.8` as `1,234,568`.
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

/// Targets met and set, over every table.
pub fn target_count(tables: &[Table]) -> (usize, usize) {
    let marks: Vec<bool> = tables
        .iter()
        .flat_map(|t| &t.rows)
        .filter_map(Row::target_met)
        .collect();
    (marks.iter().filter(|m| **m).count(), marks.len())
}

/// The new BENCHMARKS.md: `head` and the tables, then the hand-written analysis, the storage
/// section and the plugin section carried over from `existing` (the storage and plugin benches
/// have just rewritten theirs in it).
pub fn compose(existing: &str, head: &str, tables: &str) -> Result<String> {
    let storage = section(existing, STORAGE_BEGIN, STORAGE_END)
        .context("BENCHMARKS.md has no storage section (the storage bench writes it)")?;
    let analysis = section(existing, ANALYSIS_BEGIN, ANALYSIS_END).unwrap_or(
        "<!-- analysis:begin -->\n## Where the time goes\n\nNot written yet: record profiles \
         of missed targets here; `cargo xtask bench` keeps this section as it is.\n\
         <!-- analysis:end -->",
    );
    let plugins = section(existing, PLUGIN_BEGIN, PLUGIN_END)
        .map(|s| format!("\n{s}\n"))
        .unwrap_or_default();
    Ok(format!(
        "{head}\n{tables}\n{analysis}\n\n{storage}\n{plugins}"
    ))
}

/// The text from `begin` to `end`, markers included.
fn section<'a>(text: &'a str, begin: &str, end: &str) -> Option<&'a str> {
    let b = text.find(begin)?;
    let e = text[b..].find(end)? + b + end.len();
    Some(&text[b..e])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn ratios_mean_wasmkv_wins_at_or_above_one() {
        let mut t = Table::new("t", &[]);
        t.row("rate", Unit::PerSec, Better::Higher, true);
        t.row("p99", Unit::Micros, Better::Lower, true);
        t.row("info", Unit::Bytes, Better::Lower, false);
        for (ours, theirs) in [(100.0, 50.0), (300.0, 100.0), (200.0, 100.0)] {
            t.ours("rate", ours);
            t.theirs("rate", theirs);
        }
        t.ours("p99", 200.0);
        t.theirs("p99", 100.0);
        t.ours("info", 50.0);
        t.theirs("info", 100.0);
        assert_eq!(t.rows[0].ratio(), Some(2.0));
        assert_eq!(t.rows[0].target_met(), Some(true));
        assert_eq!(t.rows[1].ratio(), Some(0.5));
        assert_eq!(t.rows[1].target_met(), Some(false));
        assert_eq!(t.rows[2].ratio(), Some(2.0));
        assert_eq!(t.rows[2].target_met(), None);
        assert_eq!(target_count(&[t]), (1, 2));
    }

    #[test]
    fn missing_or_zero_figures_have_no_ratio() {
        let mut t = Table::new("t", &[]);
        t.row("rate", Unit::PerSec, Better::Higher, true);
        assert_eq!(t.rows[0].ratio(), None);
        assert_eq!(t.rows[0].target_met(), None);
        t.ours("rate", 1.0);
        t.theirs("rate", 0.0);
        assert_eq!(t.rows[0].ratio(), None);
    }

    #[test]
    fn renders_a_row() {
        let mut t = Table::new("1. GET", &["wasmkv: never"]);
        t.row("GET ops/s", Unit::PerSec, Better::Higher, true);
        t.ours("GET ops/s", 123456.7);
        t.theirs("GET ops/s", 100000.0);
        let text = t.render(1);
        assert!(
            text.contains("| GET ops/s | 123,457/s | 100,000/s | 1.23 | met |"),
            "{text}"
        );
    }

    #[test]
    fn renders_a_table_of_wasmkv_alone() {
        let mut t = Table::alone("R. Lag", &["three nodes"]);
        t.row("lag p99, entries", Unit::Count, Better::Lower, false);
        t.ours("lag p99, entries", 1234.0);
        t.commands.push("wasmkv status --json --addr $URL".into());
        let text = t.render(1);
        assert!(
            text.contains(
                "| figure (median of 1) | wasmkv |\n|---|---:|\n| lag p99, entries | 1,234 |\n"
            ),
            "{text}"
        );
        assert!(!text.contains("ratio"), "{text}");
        assert!(
            text.ends_with("```\nwasmkv status --json --addr $URL\n```\n"),
            "{text}"
        );
        assert_eq!(target_count(&[t]), (0, 0));
    }

    #[test]
    fn spreads_of_ten_percent_or_more_are_shown() {
        assert_eq!(spread(&[]), "");
        assert_eq!(spread(&[100.0]), "");
        assert_eq!(spread(&[95.0, 100.0, 105.0]), "");
        assert_eq!(spread(&[80.0, 100.0, 120.0]), " ±20%");
        assert_eq!(spread(&[0.0, 0.0]), "");
    }

    #[test]
    fn formats() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1234567.8), "1,234,568");
        assert_eq!(show(Unit::Seconds, Some(0.5)), "500 ms");
        assert_eq!(show(Unit::Seconds, Some(1.234)), "1.23 s");
        assert_eq!(show(Unit::Bytes, None), "—");
    }

    #[test]
    fn compose_keeps_the_storage_and_analysis_sections() {
        let old = "# Benchmarks\nold tables\n<!-- analysis:begin -->\nmine\n<!-- analysis:end -->\n\
                   <!-- storage-bench:begin -->\nstorage\n<!-- storage-bench:end -->\n";
        let new = compose(old, "# Benchmarks\nhead\n", "tables\n").unwrap();
        assert!(!new.contains("old tables"));
        assert!(new.contains("<!-- analysis:begin -->\nmine\n<!-- analysis:end -->"));
        assert!(
            new.ends_with("<!-- storage-bench:begin -->\nstorage\n<!-- storage-bench:end -->\n")
        );
        let fresh = compose(
            "<!-- storage-bench:begin -->x<!-- storage-bench:end -->",
            "h",
            "t",
        )
        .unwrap();
        assert!(fresh.contains(ANALYSIS_BEGIN));
        assert!(compose("no markers", "h", "t").is_err());
    }
}
