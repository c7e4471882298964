//! The distillation chapter's chart: the training loss curves.

use super::*;

/// Cross-entropy on the training text (solid) and the KL term (dashed) of every step, against
/// the positions trained on, one colour per objective; log scale.
pub fn loss_curves(inputs: &Inputs) -> Result<String> {
    let rows = inputs.rows("distill-loss");
    let series = |objective: &str, key: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|r| text(r, "objective") == objective)
            .filter_map(|r| Some((num(r, "tokens")? / 1000.0, num(r, key)?)))
            .filter(|&(_, y)| y > 0.0)
            .collect()
    };
    let ys: Vec<f64> = rows
        .iter()
        .flat_map(|r| [num(r, "ce"), num(r, "kl")])
        .flatten()
        .filter(|&y| y > 0.0)
        .collect();
    anyhow::ensure!(!ys.is_empty(), "distill-loss has no rows");
    let x_max = rows
        .iter()
        .filter_map(|r| num(r, "tokens"))
        .fold(1.0, f64::max)
        / 1000.0;
    let y_top = ys.iter().copied().fold(f64::MIN, f64::max) * 1.3;
    let y_bottom = ys.iter().copied().fold(f64::MAX, f64::min) / 1.3;
    frame!(
        SIZE,
        (
            "Healing the pruned student: loss per training step",
            CAPTION
        ),
        0f64..x_max,
        (y_bottom..y_top).log_scale(),
        |chart| {
            mesh!(
                chart,
                "positions trained (thousands)",
                "nats per position (log scale)"
            )
            // Decimals by magnitude: a fixed one printed 9.96 and 10.04 both as "10.0".
            .y_label_formatter(&|y| {
                let decimals = if *y >= 10.0 {
                    0
                } else if *y >= 1.0 {
                    1
                } else {
                    2
                };
                format!("{y:.decimals$}")
            })
            .draw()?;
            for (objective, color) in [("forward", TEAL), ("reverse", ORANGE)] {
                let ce = series(objective, "ce");
                if ce.is_empty() {
                    continue;
                }
                chart
                    .draw_series(LineSeries::new(ce.iter().copied(), color.stroke_width(3)))?
                    .label(format!("cross-entropy, {objective}-KL run"))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 30, y)], color.stroke_width(3))
                    });
                let kl = series(objective, "kl");
                chart
                    .draw_series(DashedLineSeries::new(
                        kl.iter().copied(),
                        10,
                        6,
                        color.stroke_width(3),
                    ))?
                    .label(format!("{objective} KL × T²"))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 30, y)], color.stroke_width(1))
                    });
            }
            legend!(chart, SeriesLabelPosition::UpperRight)?;
        }
    )
}
