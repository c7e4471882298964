//! The flash-attention chapter's chart: naive against tiled attention as the context grows.

use super::*;

/// Two panels over the context length (log scale): one layer's prefill attention time per
/// token (left) and the model's decode tokens/s (right), naive and tiled.
pub fn attention_by_context(inputs: &Inputs) -> Result<String> {
    let rows = inputs.rows("flash-speed");
    let series = |key: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| Some((num(r, "context")?, num(r, key)?)))
            .collect()
    };
    let contexts = series("prefill_naive");
    anyhow::ensure!(contexts.len() >= 2, "flash-speed has fewer than two rows");
    let x0 = contexts.iter().map(|p| p.0).fold(f64::INFINITY, f64::min) / 1.3;
    let x1 = contexts.iter().map(|p| p.0).fold(0.0, f64::max) * 1.3;
    two_panels!(
        "Naive and tiled attention as the context grows (measured side by side)",
        |panels| {
            let metrics = [
                (
                    "prefill attention, one layer (µs per token)",
                    "prefill_naive",
                    "prefill_tiled",
                ),
                (
                    "decode, whole model (tokens/s)",
                    "decode_naive",
                    "decode_tiled",
                ),
            ];
            for (panel, (y_desc, naive, tiled)) in panels.iter().zip(metrics) {
                let lines = [
                    ("naive", ORANGE, series(naive)),
                    ("tiled", TEAL, series(tiled)),
                ];
                let y_top = lines
                    .iter()
                    .flat_map(|l| l.2.iter().map(|p| p.1))
                    .fold(0.0, f64::max)
                    * 1.2;
                let mut chart = ChartBuilder::on(panel)
                    .margin(24)
                    .x_label_area_size(70)
                    .y_label_area_size(100)
                    .build_cartesian_2d((x0..x1).log_scale(), 0f64..y_top.max(1e-9))?;
                chart.plotting_area().fill(&PANEL)?;
                mesh!(chart, "context (tokens, log scale)", y_desc)
                    .x_label_formatter(&|x| format!("{x:.0}"))
                    .draw()?;
                for (name, color, points) in lines {
                    labelled_line!(chart, name, color, points);
                }
                legend!(chart, SeriesLabelPosition::UpperLeft)?;
            }
        }
    )
}
