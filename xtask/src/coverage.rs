//! The coverage bench job: `cargo llvm-cov` runs the workspace's tests (the README's test
//! command) instrumented, and its summary becomes `benchmarks/coverage.json`, which the
//! course's scorecard (7.6 Code quality) is scored from. Coverage is a measurement like any
//! other here: it is slow (every test runs instrumented), so it is a bench job, not a test.

use crate::bench_file::BenchFile;
use crate::book::cargo;
use anyhow::{Context, Result, bail};
use chapters_code::demo::{Column, Provenance, Table};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How to get the tools when they are missing (cargo-nextest is on the machine's image).
pub const INSTALL: &str = "rustup component add llvm-tools && cargo install cargo-llvm-cov --locked && cargo install cargo-nextest --locked";

/// Whether `cargo llvm-cov` and `cargo nextest` are installed.
pub fn available(root: &Path) -> bool {
    ["llvm-cov", "nextest"].iter().all(|tool| {
        Command::new(cargo())
            .current_dir(root)
            .args([tool, "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

// ANCHOR: coverage_run
/// The tests instrumented, one process per test (cargo-nextest), under the `coverage` profile
/// of `.config/nextest.toml`: a test stopped at its time cap counts as not run.
const TEST_ARGS: [&str; 7] = [
    "llvm-cov",
    "nextest",
    "--workspace",
    "--locked",
    "--no-report",
    "--profile",
    "coverage",
];
/// The report of what the tests that finished executed.
const REPORT_ARGS: [&str; 5] = [
    "llvm-cov",
    "report",
    "--json",
    "--summary-only",
    "--output-path",
];
// ANCHOR_END: coverage_run

/// Runs the tests under `cargo llvm-cov nextest` and writes `benchmarks/coverage.json`.
pub fn run(root: &Path) -> Result<PathBuf> {
    if !available(root) {
        bail!("`cargo llvm-cov` or `cargo nextest` is not installed; install them with: {INSTALL}");
    }
    let _ = Command::new(cargo())
        .current_dir(root)
        .args(["llvm-cov", "clean", "--workspace"])
        .status();
    eprintln!("== cargo {}", TEST_ARGS.join(" "));
    // nextest's status lines go to stderr: shown as they come, and kept to read the outcome.
    let mut child = Command::new(cargo())
        .current_dir(root)
        .args(TEST_ARGS)
        .env("PRODML_REQUIRE_MODEL", "1")
        .stderr(Stdio::piped())
        .spawn()
        .context("running cargo llvm-cov nextest")?;
    let mut log = String::new();
    for line in BufReader::new(child.stderr.take().expect("piped stderr")).lines() {
        let line = line?;
        eprintln!("{line}");
        log.push_str(&line);
        log.push('\n');
    }
    let status = child.wait()?;
    let outcome = Outcome::from_log(&log);
    if !outcome.failed.is_empty() {
        bail!(
            "tests failed, and coverage is measured only when every test that finishes passes: {}",
            outcome.failed.join(", ")
        );
    }
    if !status.success() && outcome.timed_out.is_empty() {
        bail!("cargo llvm-cov nextest failed ({status})");
    }
    let summary = root.join("target/llvm-cov-summary.json");
    let reported = Command::new(cargo())
        .current_dir(root)
        .args(REPORT_ARGS)
        .arg(&summary)
        .status()
        .context("running cargo llvm-cov report")?;
    if !reported.success() {
        bail!("cargo llvm-cov report failed ({reported})");
    }
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(&summary)
            .with_context(|| format!("reading {}", summary.display()))?,
    )?;
    let mut table = summary_table(&report)?;
    table.notes.push(outcome.note());
    let mut provenance = Provenance::current();
    provenance.command = format!(
        "cargo {} && cargo {} target/llvm-cov-summary.json",
        TEST_ARGS.join(" "),
        REPORT_ARGS.join(" ")
    );
    BenchFile { table, provenance }.save(root)
}

/// What nextest's log says of the tests: how many passed, which were stopped at the time cap,
/// which failed.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub passed: usize,
    pub timed_out: Vec<String>,
    pub failed: Vec<String>,
}

impl Outcome {
    /// Reads nextest's status lines (`PASS [ 0.012s] crate::binary test_name`, `TIMEOUT …`,
    /// `FAIL …`); the summary's repeat of failures is counted once.
    pub fn from_log(log: &str) -> Outcome {
        let mut o = Outcome::default();
        for line in log.lines() {
            let mut words = line.split_whitespace();
            let Some(status) = words.next() else { continue };
            // After the time in brackets: an optional "(3/412)" counter, then the test's name.
            let Some((_, rest)) = line.split_once("] ") else {
                continue;
            };
            let rest = rest.trim_start();
            let rest = match rest.strip_prefix('(').and_then(|r| r.split_once(')')) {
                Some((_, name)) => name,
                None => rest,
            };
            let name = rest.trim().to_string();
            match status {
                "PASS" => o.passed += 1,
                "TIMEOUT" if !o.timed_out.contains(&name) => o.timed_out.push(name),
                "FAIL" | "SIGSEGV" | "SIGABRT" | "ABORT" if !o.failed.contains(&name) => {
                    o.failed.push(name)
                }
                _ => {}
            }
        }
        o
    }

    /// The note the coverage table carries.
    pub fn note(&self) -> String {
        if self.timed_out.is_empty() {
            format!("All {} tests finished within the time cap.", self.passed)
        } else {
            format!(
                "{} tests finished; {} were stopped at the 3-minute cap and count as not run (the figure is a lower bound): {}.",
                self.passed,
                self.timed_out.len(),
                self.timed_out.join(", ")
            )
        }
    }
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
        "Every test of `cargo test` but the doctests run instrumented (cargo-nextest, one process per test), the model fetched; a line counts as covered when any test that finished executes it."
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

    #[test]
    fn nextest_status_lines_give_the_passed_the_stopped_and_the_failed() {
        let log = "    Starting 3 tests across 2 binaries
        PASS [   0.012s] (1/3) chapters-code kv::tests::a_block_is_freed
        SLOW [> 60.000s] chapters-code::parity the_engine_stays
     TIMEOUT [ 180.004s] chapters-code::parity the_engine_stays
        FAIL [   1.500s] xtask falsify::tests::a_claim
------------
     Summary [ 182.000s] 3 tests run: 1 passed, 1 failed, 1 timed out
        FAIL [   1.500s] xtask falsify::tests::a_claim
     TIMEOUT [ 180.004s] chapters-code::parity the_engine_stays";
        let o = Outcome::from_log(log);
        assert_eq!(o.passed, 1);
        assert_eq!(o.timed_out, vec!["chapters-code::parity the_engine_stays"]);
        assert_eq!(o.failed, vec!["xtask falsify::tests::a_claim"]);
        assert!(o.note().contains("1 tests finished; 1 were stopped"));
    }
}
