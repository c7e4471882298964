//! The pruning chapter's chart: perplexity against sparsity, one line per method.

use super::*;

/// Perplexity (log scale) against the share of zero weights: a line per method over the
/// unstructured sparsities, its 2:4 result as a ring at 50%, the source model dashed.
pub fn perplexity_vs_sparsity(inputs: &Inputs) -> Result<String> {
    let rows = inputs.rows("prune-sparsity");
    let points = |method: &str, two_four: bool| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|r| text(r, "method") == method && text(r, "pattern").contains(':') == two_four)
            .filter_map(|r| Some((num(r, "zeroed")?, num(r, "ppl")?)))
            .collect()
    };
    let all: Vec<f64> = rows.iter().filter_map(|r| num(r, "ppl")).collect();
    anyhow::ensure!(!all.is_empty(), "prune-sparsity has no rows");
    // The source's perplexity: every row's ÷ (1 + its ΔPPL).
    let source = rows
        .iter()
        .find_map(|r| Some(num(r, "ppl")? / (1.0 + num(r, "dppl")? / 100.0)))
        .unwrap_or(1.0);
    let y_top = all.iter().copied().fold(source, f64::max) * 2.0;
    let y_bottom = source / 1.5;
    frame!(
        SIZE,
        (
            "Perplexity against sparsity (every block matrix pruned)",
            CAPTION
        ),
        0f64..80f64,
        (y_bottom..y_top).log_scale(),
        |chart| {
            mesh!(
                chart,
                "zero weights in the blocks (%)",
                "perplexity (log scale)"
            )
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()?;
            chart
                .draw_series(DashedLineSeries::new(
                    [(0.0, source), (80.0, source)],
                    12,
                    8,
                    MUTED.stroke_width(3),
                ))?
                .label("source model")
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 30, y)], MUTED.stroke_width(3))
                });
            for (method, color) in [("magnitude", RED), ("Wanda", ORANGE), ("SparseGPT", TEAL)] {
                let line = points(method, false);
                if line.is_empty() {
                    continue;
                }
                labelled_line!(chart, method, color, line);
                chart.draw_series(
                    points(method, true)
                        .into_iter()
                        .map(|p| Circle::new(p, 12, color.stroke_width(4))),
                )?;
            }
            chart.draw_series([Text::new(
                "rings: 2:4",
                (2.0, y_top / 1.6),
                ("sans-serif", LABEL).into_font().color(&TEXT),
            )])?;
            legend!(chart, SeriesLabelPosition::UpperLeft)?;
        }
    )
}
