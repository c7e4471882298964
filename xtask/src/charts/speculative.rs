//! The speculative-decoding chapter's chart: what a verify pass of k tokens costs, and the
//! decode speedup each drafter reaches on each task.

use super::*;

/// Two panels: T(k)/T(1) against k for each thread count measured, with the line T(k) = k·T(1)
/// (no saving from batching the tokens) for reference (left); the decode speedup of n-gram
/// drafting against k on each task, at 1 thread (right).
pub fn verify_cost_and_speedup(inputs: &Inputs) -> Result<String> {
    let cost = inputs.rows("spec-verify-cost");
    let ratios = |key: &str| -> Vec<(f64, f64)> {
        cost.iter()
            .filter_map(|r| Some((num(r, "k")?, num(r, key)?)))
            .filter(|p| p.0 <= 16.0)
            .collect()
    };
    let threads: Vec<String> = cost
        .first()
        .map(|r| {
            r.keys()
                .filter_map(|k| k.strip_prefix("ratio_").map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    anyhow::ensure!(!threads.is_empty(), "spec-verify-cost has no ratio columns");
    let tasks = inputs.rows_like("spec-tasks", "spec-verify-cost");
    let mut names: Vec<String> = Vec::new();
    for r in tasks {
        let name = text(r, "task");
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let speedups = |task: &str| -> Vec<(f64, f64)> {
        tasks
            .iter()
            .filter(|r| text(r, "task") == task && num(r, "threads") == Some(1.0))
            .filter_map(|r| {
                let k = text(r, "method")
                    .strip_prefix("ngram, k = ")?
                    .parse()
                    .ok()?;
                Some((k, num(r, "decode_speedup")?))
            })
            .collect()
    };
    two_panels!(
        "Speculative decoding: the cost of a verify pass, and what n-gram drafts gain",
        |panels| {
            let mut left = ChartBuilder::on(&panels[0])
                .margin(24)
                .x_label_area_size(70)
                .y_label_area_size(100)
                .build_cartesian_2d(0f64..17f64, 0f64..17f64)?;
            left.plotting_area().fill(&PANEL)?;
            mesh!(left, "k (tokens in one pass)", "T(k) / T(1)").draw()?;
            let linear: Vec<(f64, f64)> = (1..=16).map(|k| (k as f64, k as f64)).collect();
            labelled_line!(left, "k passes of one token", MUTED, linear);
            for (t, color) in threads.iter().zip([TEAL, ORANGE, PURPLE]) {
                let label = if t == "1" {
                    "one pass of k, 1 thread".to_string()
                } else {
                    format!("one pass of k, {t} threads")
                };
                labelled_line!(left, label, color, ratios(&format!("ratio_{t}")));
            }
            legend!(left, SeriesLabelPosition::UpperLeft)?;

            let top = names
                .iter()
                .flat_map(|n| speedups(n).into_iter().map(|p| p.1))
                .fold(2.0, f64::max)
                * 1.15;
            let mut right = ChartBuilder::on(&panels[1])
                .margin(24)
                .x_label_area_size(70)
                .y_label_area_size(100)
                .build_cartesian_2d(1f64..9f64, 0f64..top)?;
            right.plotting_area().fill(&PANEL)?;
            mesh!(
                right,
                "k (n-gram draft tokens per pass)",
                "decode speedup, 1 thread (×)"
            )
            .draw()?;
            let even: Vec<(f64, f64)> = vec![(1.0, 1.0), (9.0, 1.0)];
            right.draw_series(LineSeries::new(even, MUTED.stroke_width(2)))?;
            let colors = [TEAL, ORANGE, PURPLE, GREEN, RED, YELLOW];
            for (name, color) in names.iter().zip(colors) {
                labelled_line!(right, name.as_str(), color, speedups(name));
            }
            legend!(right, SeriesLabelPosition::UpperRight)?;
        }
    )
}

/// Two panels against the number of clients, one line per method of the server table:
/// aggregate throughput (left) and mean request latency (right).
pub fn server_by_clients(inputs: &Inputs) -> Result<String> {
    let rows = inputs.rows("spec-server");
    let mut methods: Vec<String> = Vec::new();
    for r in rows {
        let m = text(r, "method");
        if !methods.contains(&m) {
            methods.push(m);
        }
    }
    anyhow::ensure!(!methods.is_empty(), "spec-server has no rows");
    let series = |method: &str, key: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|r| text(r, "method") == method)
            .filter_map(|r| Some((num(r, "clients")?, num(r, key)?)))
            .collect()
    };
    let x_top = rows
        .iter()
        .filter_map(|r| num(r, "clients"))
        .fold(1.0, f64::max)
        + 1.0;
    two_panels!(
        "Speculation in the server: aggregate throughput and latency against clients",
        |panels| {
            for (panel, (key, y_desc)) in panels.iter().zip([
                ("tok_s", "aggregate throughput (tokens/s)"),
                ("latency_s", "mean request latency (s)"),
            ]) {
                let y_top = rows.iter().filter_map(|r| num(r, key)).fold(0.0, f64::max) * 1.25;
                let mut chart = ChartBuilder::on(panel)
                    .margin(24)
                    .x_label_area_size(70)
                    .y_label_area_size(100)
                    .build_cartesian_2d(0f64..x_top, 0f64..y_top.max(1e-3))?;
                chart.plotting_area().fill(&PANEL)?;
                mesh!(chart, "clients (closed loop)", y_desc).draw()?;
                for (method, color) in methods.iter().zip([MUTED, ORANGE, TEAL, PURPLE]) {
                    labelled_line!(chart, method.as_str(), color, series(method, key));
                }
                legend!(chart, SeriesLabelPosition::UpperLeft)?;
            }
        }
    )
}
