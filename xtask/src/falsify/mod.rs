//! `cargo xtask falsify`: the book's claims and the course's 100-point scorecard, each checked
//! against the measured results in `benchmarks/`. Both are results tables themselves
//! (`benchmarks/falsification.json`, `benchmarks/scorecard.json`), injected into the appendix.
//! A claim or criterion without data says so and scores nothing; every scored line names the
//! results file and the commit it was measured at, and says whether that code changed since.

pub mod claims;
pub mod course;
pub mod freshness;
pub mod thresholds;

#[cfg(test)]
mod tests;

use crate::bench_file::BenchFile;
use anyhow::Result;
use chapters_code::demo::{Column, Provenance, Table};
pub use claims::{CLAIMS, Claim};
pub use course::{CRITERIA, Criterion, Outcome, SECTIONS};
use freshness::Freshness;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::path::Path;

/// The verdict on one claim.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Holds(String),
    Falsified(String),
    NotMeasured(String),
}

pub(crate) fn table(root: &Path, name: &str) -> Result<Option<BenchFile>> {
    BenchFile::load(root, name)
}

pub(crate) fn table_rows(t: &BenchFile) -> impl Iterator<Item = &Map<String, Value>> {
    t.table.rows.iter()
}

/// The `parity-bars` rows whose id `wanted` accepts: whether every one holds, and each row's
/// measured value against its limit as evidence. None when the table or such rows are missing.
pub(crate) fn parity_bars(
    root: &Path,
    wanted: impl Fn(&str) -> bool,
) -> Result<Option<(bool, String)>> {
    let Some(t) = table(root, "parity-bars")? else {
        return Ok(None);
    };
    let rows: Vec<_> = table_rows(&t)
        .filter(|r| r.get("id").and_then(Value::as_str).is_some_and(&wanted))
        .collect();
    if rows.is_empty() {
        return Ok(None);
    }
    let text = |r: &Map<String, Value>, key: &str| {
        r.get(key)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .unwrap_or_default()
    };
    let evidence = rows
        .iter()
        .map(|r| {
            format!(
                "{} {} vs {}",
                text(r, "id"),
                text(r, "measured"),
                text(r, "limit")
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let holds = rows
        .iter()
        .all(|r| r.get("holds").and_then(Value::as_bool) == Some(true));
    Ok(Some((holds, evidence)))
}

pub(crate) fn missing(name: &str) -> Verdict {
    Verdict::NotMeasured(format!("no benchmarks/{name}.json yet"))
}

/// Where the results behind a line come from: `name @ commit (freshness)` per file, and the
/// files' provenance for the footer.
struct Sources {
    cell: String,
    fresh: bool,
    files: Vec<(String, Provenance)>,
}

/// Freshness per (table, commit): many lines share a results file, and each check is a `git
/// rev-list` over the history.
type FreshnessCache = HashMap<(String, String), Freshness>;

fn sources(root: &Path, names: &[&str], cache: &mut FreshnessCache) -> Sources {
    let mut cells = Vec::new();
    let mut fresh = true;
    let mut files = Vec::new();
    for name in names {
        match BenchFile::load(root, name) {
            Ok(Some(f)) => {
                let key = (name.to_string(), f.provenance.git_sha.clone());
                let state = cache
                    .entry(key)
                    .or_insert_with(|| freshness::check(root, name, &f.provenance.git_sha))
                    .clone();
                fresh &= state.is_fresh();
                let mark = match &state {
                    Freshness::Fresh => String::new(),
                    other => format!(" ({})", other.describe()),
                };
                cells.push(format!("{name}.json @ {}{mark}", f.provenance.git_sha));
                files.push((name.to_string(), f.provenance));
            }
            _ => cells.push(format!("{name}.json: none")),
        }
    }
    Sources {
        cell: if cells.is_empty() {
            "—".into()
        } else {
            cells.join("; ")
        },
        fresh,
        files,
    }
}

/// The oldest measurement among `files`, as the footer names it.
fn oldest(files: &[(String, Provenance)]) -> Option<String> {
    files
        .iter()
        .min_by(|a, b| a.1.date_utc.cmp(&b.1.date_utc))
        .map(|(name, p)| format!("{name}.json, measured at {} on {}", p.git_sha, p.date_utc))
}

/// What a scoring run found.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub holds: usize,
    pub falsified: usize,
    /// The course's points, of 100.
    pub points: u32,
    /// Lines scored from a result whose code changed since it was measured (or unknown).
    pub stale: usize,
}

impl Summary {
    pub fn passes_course(&self) -> bool {
        self.points >= thresholds::COURSE_PASS_POINTS
    }
}

/// Evaluates every claim and criterion, writes `benchmarks/falsification.json` and
/// `benchmarks/scorecard.json`, and returns the summary.
pub fn run(root: &Path) -> Result<Summary> {
    let mut cache = FreshnessCache::new();
    let (claims_table, holds, falsified, stale_claims) = score_claims(root, &mut cache);
    let (course_table, points, stale_course) = score_course(root, &mut cache);
    let mut provenance = Provenance::current();
    provenance.command = "cargo xtask falsify".into();
    for table in [claims_table, course_table, course_definitions()] {
        BenchFile {
            table,
            provenance: provenance.clone(),
        }
        .save(root)?;
    }
    Ok(Summary {
        holds,
        falsified,
        points,
        stale: stale_claims + stale_course,
    })
}

fn score_claims(root: &Path, cache: &mut FreshnessCache) -> (Table, usize, usize, usize) {
    let mut t = Table::new(
        "falsification",
        "Falsification scorecard",
        vec![
            Column::new("id", "Claim"),
            Column::new("chapter", "Chapter"),
            Column::new("statement", "Statement"),
            Column::new("verdict", "Verdict"),
            Column::new("evidence", "Evidence"),
            Column::new("measured", "Measured in"),
        ],
    );
    let (mut holds, mut falsified, mut stale) = (0, 0, 0);
    let mut files = Vec::new();
    for claim in CLAIMS {
        let verdict =
            (claim.check)(root).unwrap_or_else(|e| Verdict::NotMeasured(format!("error: {e:#}")));
        let src = sources(root, claim.tables, cache);
        let (word, evidence) = match verdict {
            Verdict::Holds(e) => {
                holds += 1;
                ("holds", e)
            }
            Verdict::Falsified(e) => {
                falsified += 1;
                ("FALSIFIED", e)
            }
            Verdict::NotMeasured(e) => ("not measured", e),
        };
        if !src.fresh && word != "not measured" {
            stale += 1;
        }
        files.extend(src.files);
        t.push(vec![
            json!(claim.id),
            json!(claim.chapter),
            json!(claim.statement),
            json!(word),
            json!(evidence),
            json!(src.cell),
        ]);
    }
    t.notes.push(format!(
        "{holds} of {} claims hold on this machine, {falsified} falsified; {stale} verdict(s) rest on results whose code changed since they were measured.",
        CLAIMS.len()
    ));
    if let Some(o) = oldest(&files) {
        t.notes.push(format!("Oldest measurement used: {o}."));
    }
    (t, holds, falsified, stale)
}

/// The course's criteria as the appendix defines them (`scorecard-criteria`), written from the
/// thresholds rather than typed into the chapter.
fn course_definitions() -> Table {
    let mut t = Table::new(
        "scorecard-criteria",
        "The course's scorecard, read strictly",
        vec![
            Column::new("section", "Section"),
            Column::new("points", "Points"),
            Column::new("course_says", "The course says"),
            Column::new("strictly", "Read strictly as"),
            Column::new("scored_from", "Scored from"),
        ],
    );
    for (c, d) in CRITERIA.iter().zip(course::definitions()) {
        t.push(vec![
            json!(c.section),
            json!(c.points),
            json!(d.course_says),
            json!(d.strictly),
            json!(d.scored_from),
        ]);
    }
    t
}

fn score_course(root: &Path, cache: &mut FreshnessCache) -> (Table, u32, usize) {
    let mut t = Table::new(
        "scorecard",
        "The course's scorecard: 100 points, pass at 90",
        vec![
            Column::new("section", "Section"),
            Column::new("target", "Target (strict reading)"),
            Column::new("points", "Points"),
            Column::new("max", "Of"),
            Column::new("result", "Result"),
            Column::new("measured", "Measured in"),
        ],
    );
    let (mut total, mut stale) = (0, 0);
    let mut files = Vec::new();
    for c in CRITERIA {
        let outcome =
            (c.score)(root).unwrap_or_else(|e| Outcome::NotMeasured(format!("error: {e:#}")));
        let src = sources(root, c.tables, cache);
        let (points, result) = match outcome {
            Outcome::Met(e) => (c.points, format!("met: {e}")),
            Outcome::Missed(e) => (0, format!("missed: {e}")),
            Outcome::NotMeasured(e) => (0, format!("not measured: {e}")),
        };
        if !src.fresh && !src.files.is_empty() {
            stale += 1;
        }
        total += points;
        files.extend(src.files);
        t.push(vec![
            json!(c.section),
            json!(c.target),
            json!(points),
            json!(c.points),
            json!(result),
            json!(src.cell),
        ]);
    }
    let verdict = if total >= thresholds::COURSE_PASS_POINTS {
        "passes"
    } else {
        "does not pass"
    };
    let per_section = SECTIONS
        .iter()
        .map(|(name, max)| {
            let got: u32 = t
                .rows
                .iter()
                .filter(|r| r.get("section").and_then(Value::as_str) == Some(name))
                .filter_map(|r| r.get("points")?.as_u64())
                .sum::<u64>() as u32;
            format!("{name} {got}/{max}")
        })
        .collect::<Vec<_>>()
        .join(", ");
    t.notes.push(format!(
        "Total: {total} of 100 points; the book {verdict} (pass: {} points). By section: {per_section}. {stale} line(s) rest on results whose code changed since they were measured.",
        thresholds::COURSE_PASS_POINTS
    ));
    if let Some(o) = oldest(&files) {
        t.notes.push(format!("Oldest measurement used: {o}."));
    }
    (t, total, stale)
}

/// The scorecard as `cargo xtask falsify` prints it: the course's matrix, then the claims, each
/// as the demos print their tables.
pub fn print(root: &Path) -> Result<()> {
    for name in ["scorecard", "falsification"] {
        if let Some(f) = BenchFile::load(root, name)? {
            println!("{}", f.table.to_text());
        }
    }
    Ok(())
}
