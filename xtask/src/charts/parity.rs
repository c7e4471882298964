//! The parity chapter's chart: how far llama.cpp's builds differ from each other, and we from them.

use super::*;

/// One comparison's line: (name, kind, (|Δ|, share) points).
type Line = (String, String, Vec<(f64, f64)>);

/// The cumulative distribution of |Δ log p| for each comparison: one line per comparison,
/// share of values (y) at most |Δ| (x).
pub fn parity_cdf(inputs: &Inputs) -> Result<String> {
    let file = inputs
        .get("parity-delta-quantiles")
        .context("no parity-delta-quantiles")?;
    let mut lines: Vec<Line> = Vec::new();
    for row in &file.table.rows {
        let (Some(share), Some(delta)) = (num(row, "share"), num(row, "delta")) else {
            continue;
        };
        let name = text(row, "comparison");
        match lines.iter_mut().find(|l| l.0 == name) {
            Some(l) => l.2.push((delta, share)),
            None => lines.push((name, text(row, "kind"), vec![(delta, share)])),
        }
    }
    let x_max = lines
        .iter()
        .flat_map(|l| l.2.iter().map(|p| p.0))
        .fold(0.1f64, f64::max)
        * 1.05;
    frame!(
        (1600, 900),
        (
            "Top-5 |Δ log-probability|, teacher-forced: llama.cpp against itself, and us",
            CAPTION,
        ),
        0f64..x_max,
        0f64..1.02f64,
        |chart| {
            mesh!(chart, "|Δ log p| (nats)", "share of values at most |Δ|").draw()?;
            let builds = [PURPLE, RED, YELLOW, MUTED, TEXT, TEAL];
            let (mut between, mut prefill) = (0usize, 0usize);
            for (name, kind, points) in &lines {
                let (color, width) = match kind.as_str() {
                    "ours" if points.iter().all(|p| p.0 == 0.0) => (TEAL, 6),
                    "ours" => (GREEN, 5),
                    "prefill vs decode" => {
                        prefill += 1;
                        (PREFILL[(prefill - 1) % PREFILL.len()], 3)
                    }
                    _ => {
                        between += 1;
                        (builds[(between - 1) % builds.len()], 2)
                    }
                };
                chart
                    .draw_series(LineSeries::new(
                        points.iter().copied(),
                        color.stroke_width(width),
                    ))?
                    .label(name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 30, y)], color.stroke_width(width))
                    });
            }
            // Many comparisons: a smaller legend font than the other charts' so that it fits.
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(BACKGROUND.mix(0.9))
                .border_style(MUTED)
                .label_font(("sans-serif", LABEL - 4).into_font().color(&TEXT))
                .draw()?;
        }
    )
}
