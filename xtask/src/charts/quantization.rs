//! The quantization chapter's chart: what each bit per weight costs in perplexity.

use super::*;

/// Each requantized format at (bits per weight, ΔPPL against the source file), labelled; AWQ
/// variants as rings; the course's 10% line dashed.
pub fn bits_vs_perplexity(inputs: &Inputs) -> Result<String> {
    let points: Vec<(f64, f64, String)> = inputs
        .rows("quantization-formats")
        .iter()
        .filter_map(|r| Some((num(r, "bpw")?, num(r, "dppl")?, text(r, "format"))))
        .collect();
    anyhow::ensure!(
        !points.is_empty(),
        "quantization-formats has no rows with a perplexity"
    );
    let x_top = points.iter().map(|p| p.0).fold(0.0, f64::max) + 1.5;
    let x_bottom = (points.iter().map(|p| p.0).fold(f64::MAX, f64::min) - 1.0).max(0.0);
    let y_top = points.iter().map(|p| p.1).fold(12.0, f64::max) * 1.15;
    let y_bottom = points.iter().map(|p| p.1).fold(0.0, f64::min) - 1.5;
    frame!(
        SIZE,
        (
            "Bits per weight against the perplexity each format loses",
            CAPTION,
        ),
        x_bottom..x_top,
        y_bottom..y_top,
        |chart| {
            mesh!(
                chart,
                "bits per weight (whole file)",
                "perplexity vs the Q4_1 source (%)"
            )
            .draw()?;
            chart
                .draw_series(DashedLineSeries::new(
                    [(x_bottom, 10.0), (x_top, 10.0)],
                    12,
                    8,
                    RED.stroke_width(3),
                ))?
                .label("+10% perplexity")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 30, y)], RED.stroke_width(3)));
            chart.draw_series(LineSeries::new(
                [(x_bottom, 0.0), (x_top, 0.0)],
                MUTED.stroke_width(2),
            ))?;
            // Formats close together (Q5_0, Q5_K and Q4_K) get their labels where they do not
            // overlap.
            let mut placed: Vec<(f64, f64, f64)> = Vec::new();
            for (bpw, dppl, name) in &points {
                let awq = name.contains("AWQ");
                let marker = if awq {
                    Circle::new((*bpw, *dppl), 10, ORANGE.stroke_width(4))
                } else {
                    Circle::new((*bpw, *dppl), 10, TEAL.filled())
                };
                chart.draw_series([marker])?;
                // Right of the point, else below it, else left of it: the first place no label
                // took. A character is about 13 px of the plot's 1,050.
                let (x_unit, y_unit) = ((x_top - x_bottom) / 1050.0, (y_top - y_bottom) / 560.0);
                let width = name.chars().count() as f64 * 13.0 * x_unit;
                let candidates = [
                    (*bpw + 12.0 * x_unit, *dppl + 18.0 * y_unit),
                    (*bpw + 12.0 * x_unit, *dppl - 12.0 * y_unit),
                    (*bpw - 12.0 * x_unit - width, *dppl + 18.0 * y_unit),
                ];
                let free = |&(x, y): &(f64, f64)| {
                    placed.iter().all(|&(px, py, pw)| {
                        x + width < px || px + pw < x || (py - y).abs() > 30.0 * y_unit
                    })
                };
                let (x, y) = candidates
                    .iter()
                    .copied()
                    .find(free)
                    .unwrap_or(candidates[0]);
                placed.push((x, y, width));
                chart.draw_series([Text::new(
                    name.clone(),
                    (x, y),
                    ("sans-serif", LABEL)
                        .into_font()
                        .color(if awq { &ORANGE } else { &TEXT }),
                )])?;
            }
            legend!(chart, SeriesLabelPosition::UpperRight)?;
        }
    )
}
