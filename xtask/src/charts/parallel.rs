//! The tensor-parallelism chapter's chart: the cost model's decode speed against the number
//! of GPUs, per model and interconnect.

use super::*;

/// Projected tokens per second of one sequence (batch 1) against shards, one colour per link,
/// solid for Llama 2 7B and dashed for 70B; log scales (x drawn as log₂ of the shards, so that
/// 1, 2, 4 and 8 fall on whole ticks).
pub fn projection(inputs: &Inputs) -> Result<String> {
    let file = inputs
        .get("tp-projection")
        .context("tp-projection is needed")?;
    let rows = &file.table.rows;
    // Links are the columns tok_s_0, tok_s_1, …; their labels name them.
    let links: Vec<(String, String)> = file
        .table
        .columns
        .iter()
        .filter(|c| c.key.starts_with("tok_s_"))
        .map(|c| (c.key.clone(), c.label.clone()))
        .collect();
    let models = ["Llama-2-7B", "Llama-2-70B"];
    let series = |model: &str, key: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|r| text(r, "model") == model && num(r, "batch") == Some(1.0))
            .filter_map(|r| Some((num(r, "shards")?.log2(), num(r, key)?)))
            .collect()
    };
    let ys: Vec<f64> = models
        .iter()
        .flat_map(|m| links.iter().flat_map(move |(k, _)| series(m, k)))
        .map(|(_, y)| y)
        .filter(|&y| y > 0.0)
        .collect();
    anyhow::ensure!(
        !ys.is_empty(),
        "tp-projection has no batch-1 rows for Llama 2"
    );
    let y_top = ys.iter().copied().fold(f64::MIN, f64::max) * 1.6;
    // Down to a power of ten, so that the log axis labels the decade the 70B lines start in.
    let y_bottom = 10f64.powf(
        (ys.iter().copied().fold(f64::MAX, f64::min) / 1.2)
            .log10()
            .floor(),
    );
    let colors = [ORANGE, YELLOW, TEAL, PURPLE];
    frame!(
        SIZE,
        (
            "Tensor-parallel decoding by the cost model: one sequence on H100s",
            CAPTION
        ),
        -0.1f64..3.1f64,
        (y_bottom..y_top).log_scale(),
        |chart| {
            mesh!(chart, "GPUs (shards)", "tokens per second (log scale)")
                .x_labels(4)
                .x_label_formatter(&|x| format!("{:.0}", x.exp2()))
                .y_labels(24)
                .y_label_formatter(&|y| format!("{y:.0}"))
                .draw()?;
            for (i, (key, label)) in links.iter().enumerate() {
                let color = colors[i % colors.len()];
                let small = series(models[0], key);
                chart
                    .draw_series(LineSeries::new(
                        small.iter().copied(),
                        color.stroke_width(3),
                    ))?
                    .label(format!("7B, {label}"))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 30, y)], color.stroke_width(3))
                    });
                chart.draw_series(small.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
                let large = series(models[1], key);
                chart
                    .draw_series(DashedLineSeries::new(
                        large.iter().copied(),
                        10,
                        6,
                        color.stroke_width(3),
                    ))?
                    .label(format!("70B, {label}"))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 30, y)], color.stroke_width(1))
                    });
                chart.draw_series(large.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
            }
            legend!(chart, SeriesLabelPosition::LowerRight)?;
        }
    )
}
