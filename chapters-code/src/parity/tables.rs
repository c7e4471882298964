//! The parity report as the chapter's tables: the noise floor with where we stand in it, and
//! the bars.

use super::{Bar, Pair, Report};
use crate::demo::{Column, Table};
use serde_json::json;

/// Rows of the noise-floor table, keyed by `comparison`.
pub fn noise_floor(report: &Report) -> Table {
    let mut t = Table::new(
        "parity-noise-floor",
        &format!(
            "llama.cpp against itself, and the book's engine against it: {} prompts, up to 128 greedy tokens each",
            report.prompts
        ),
        vec![
            Column::new("comparison", "Comparison"),
            Column::new("kind", "Kind"),
            Column::new("values", "Log-probabilities compared"),
            Column::new("median", "Median |Δ|").decimals(4),
            Column::new("p90", "90th pct").decimals(4),
            Column::new("p99", "99th pct").decimals(4),
            Column::new("max", "Max |Δ|").decimals(4),
            Column::new("agreement", "Greedy tokens shared"),
            Column::new("identical", "Identical greedy runs"),
        ],
    );
    let row = |t: &mut Table, p: &Pair, kind: &str, comparison: String| {
        t.push(vec![
            json!(comparison),
            json!(kind),
            json!(p.deltas.len()),
            json!(p.deltas.quantile(0.5)),
            json!(p.deltas.quantile(0.9)),
            json!(p.deltas.quantile(0.99)),
            json!(p.deltas.max()),
            if kind == "prefill vs decode" {
                json!(null)
            } else {
                json!(p.agreement.total())
            },
            if kind == "prefill vs decode" {
                json!(null)
            } else {
                json!(format!("{} of {}", p.agreement.identical, report.prompts))
            },
        ]);
    };
    for p in &report.between_builds {
        row(
            &mut t,
            p,
            "between builds",
            format!("{} on {}'s tokens", p.engine, p.build),
        );
    }
    for p in &report.prefill_vs_decode {
        row(
            &mut t,
            p,
            "prefill vs decode",
            format!("llama.cpp {}: one-pass prefill against its decode", p.build),
        );
    }
    for p in &report.ours {
        row(
            &mut t,
            p,
            "ours",
            format!("chapters-code on llama.cpp {}'s tokens", p.build),
        );
    }
    t.notes.push(
        "|Δ|: at every step of a build's greedy run, for each of its top-5 tokens, the absolute difference of the log-probabilities, the other side fed the same tokens (teacher-forced). Greedy tokens shared: per prompt, the tokens two free-running runs have in common before the first that differs, summed over the suite.".into(),
    );
    t
}

/// The bars (from [`Report::bars`], and any the caller adds), one row each, keyed by `bar`.
pub fn bars(bars: &[Bar]) -> Table {
    let mut t = Table::new(
        "parity-bars",
        "Parity bars: the book's engine against llama.cpp's own noise floor",
        vec![
            Column::new("id", "Id"),
            Column::new("bar", "Bar"),
            Column::new("measured", "Measured"),
            Column::new("limit", "Limit"),
            Column::new("holds", "Holds"),
        ],
    );
    for bar in bars {
        t.push(vec![
            json!(bar.id),
            json!(bar.name),
            json!(bar.measured),
            json!(bar.limit),
            json!(bar.holds),
        ]);
    }
    t
}

/// Points of the |Δ| distribution of every comparison, for the chapter's chart: the share of
/// values at most each quantile, at 41 shares from 0 to 1 (rows keyed by `comparison`, `share`).
pub fn quantiles(report: &Report) -> Table {
    let mut t = Table::new(
        "parity-delta-quantiles",
        "Quantiles of the top-5 |Δ log-probability| of each comparison (the chart's data)",
        vec![
            Column::new("comparison", "Comparison"),
            Column::new("kind", "Kind"),
            Column::new("share", "Share").decimals(3),
            Column::new("delta", "|Δ| at most").decimals(5),
        ],
    );
    let kinds = [
        ("between builds", &report.between_builds),
        ("prefill vs decode", &report.prefill_vs_decode),
        ("ours", &report.ours),
    ];
    for (kind, pairs) in kinds {
        for p in pairs {
            let name = match kind {
                "ours" => format!("chapters-code on llama.cpp {}", p.build),
                "prefill vs decode" => format!("llama.cpp {}: prefill vs decode", p.build),
                _ => format!("{} on {}", p.engine, p.build),
            };
            for i in 0..=40 {
                let share = f64::from(i) / 40.0;
                t.push(vec![
                    json!(name),
                    json!(kind),
                    json!(share),
                    json!(p.deltas.quantile(share)),
                ]);
            }
        }
    }
    t
}
