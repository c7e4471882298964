//! The coverage bench job: `cargo llvm-cov` runs the workspace's tests (the README's test
//! command) instrumented, and its summary becomes `benchmarks/coverage.json`, which the
//! course's scorecard (7.6 Code quality) is scored from. Coverage is a measurement like any
//! other here: it is slow (every test runs instrumented), so it is a bench job, not a test.

use crate::bench_file::BenchFile;
use crate::book::cargo;
use anyhow::{Context, Result, bail};
use chapters_code::demo::{Column, Provenance, Table};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

/// How to get the tool when it is missing.
pub const INSTALL: &str =
    "rustup component add llvm-tools && cargo install cargo-llvm-cov --locked";

/// Whether `cargo llvm-cov` is installed.
pub fn available(root: &Path) -> bool {
    Command::new(cargo())
        .current_dir(root)
        .args(["llvm-cov", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs the tests under `cargo llvm-cov` and writes `benchmarks/coverage.json`.
pub fn run(root: &Path) -> Result<PathBuf> {
    if !available(root) {
        bail!("`cargo llvm-cov` is not installed; install it with: {INSTALL}");
    }
    let summary = root.join("target/llvm-cov-summary.json");
    let args = [
        "llvm-cov",
        "--workspace",
        "--locked",
        "--json",
        "--summary-only",
        "--output-path",
    ];
    eprintln!("== cargo {} {}", args.join(" "), summary.display());
    let status = Command::new(cargo())
        .current_dir(root)
        .args(args)
        .arg(&summary)
        .env("PRODML_REQUIRE_MODEL", "1")
        .status()
        .context("running cargo llvm-cov")?;
    if !status.success() {
        bail!("cargo llvm-cov failed ({status}): coverage is measured only when every test passes");
    }
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(&summary)
            .with_context(|| format!("reading {}", summary.display()))?,
    )?;
    let table = summary_table(&report)?;
    let mut provenance = Provenance::current();
    provenance.command = format!("cargo {} target/llvm-cov-summary.json", args.join(" "));
    BenchFile { table, provenance }.save(root)
}

/// The totals of an llvm-cov JSON export (`data[0].totals`) as a table: one row per kind.
pub fn summary_table(report: &Value) -> Result<Table> {
    let totals = &report["data"][0]["totals"];
    let mut table = Table::new(
        "coverage",
        "Test coverage of the workspace (cargo llvm-cov)",
        vec![
            Column::new("what", "Counted"),
            Column::new("covered", "Covered"),
            Column::new("count", "Of"),
            Column::new("percent", "Coverage").unit("%").decimals(1),
        ],
    );
    for what in ["lines", "functions", "regions"] {
        let t = &totals[what];
        let (Some(covered), Some(count), Some(percent)) = (
            t["covered"].as_u64(),
            t["count"].as_u64(),
            t["percent"].as_f64(),
        ) else {
            bail!("the llvm-cov summary has no totals for {what}");
        };
        table.push(vec![
            json!(what),
            json!(covered),
            json!(count),
            json!(percent),
        ]);
    }
    table.notes.push(
        "Every test of `cargo test` run instrumented, the model fetched; a line counts as covered when any test executes it."
            .into(),
    );
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_llvm_cov_summary_becomes_the_coverage_table() {
        let report = json!({"data": [{"totals": {
            "lines": {"covered": 900, "count": 1000, "percent": 90.0},
            "functions": {"covered": 90, "count": 100, "percent": 90.0},
            "regions": {"covered": 8, "count": 10, "percent": 80.0}}}]});
        let t = summary_table(&report).unwrap();
        assert_eq!(t.lookup("what", "lines", "percent"), Some(90.0));
        assert_eq!(t.lookup("what", "regions", "count"), Some(10.0));
        assert!(summary_table(&json!({"data": []})).is_err());
    }
}
