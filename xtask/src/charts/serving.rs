//! The serving chapters' charts: KV blocks over the batching replay, and what concurrency does
//! to throughput and latency.

use super::*;

/// KV memory in use over the replay (the paged cache's blocks, in MiB), as an area.
pub fn kv_growth(inputs: &Inputs) -> Result<String> {
    let mut points: Vec<(f64, f64)> = inputs
        .rows("kv-growth")
        .iter()
        .filter_map(|r| Some((num(r, "at")?, num(r, "mib")?)))
        .collect();
    anyhow::ensure!(!points.is_empty(), "kv-growth has no rows");
    points.insert(0, (0.0, 0.0));
    let top = points.iter().map(|p| p.1).fold(0.0, f64::max) * 1.25;
    frame!(
        SIZE,
        (
            "KV cache in use over the batching replay (paged, blocks allocated on demand)",
            CAPTION - 4,
        ),
        0f64..100f64,
        0f64..top.max(1.0),
        |chart| {
            mesh!(
                chart,
                "progress of the replay (% of engine steps)",
                "KV memory in use (MiB)"
            )
            .draw()?;
            chart.draw_series(
                AreaSeries::new(points.iter().copied(), 0.0, TEAL.mix(0.35))
                    .border_style(TEAL.stroke_width(4)),
            )?;
            chart.draw_series(
                points
                    .iter()
                    .skip(1)
                    .map(|&p| Circle::new(p, 7, TEAL.filled())),
            )?;
        }
    )
}

/// Two panels over the same x, aggregate tokens/s: time to first token (left) and inter-token
/// latency (right), P50 and P99, each point labelled with its number of clients.
pub fn throughput_latency(inputs: &Inputs) -> Result<String> {
    let rows = inputs.rows("throughput-levels");
    let levels: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| Some((num(r, "concurrency")?, num(r, "throughput")?)))
        .collect();
    anyhow::ensure!(!levels.is_empty(), "throughput-levels has no rows");
    let x_top = levels.iter().map(|l| l.1).fold(0.0, f64::max) * 1.15;
    two_panels!(
        "More clients: more tokens per second in all, each one waits longer",
        |panels| {
            let metrics = [
                ("time to first token (ms)", "ttft_p50", "ttft_p99"),
                ("inter-token latency (ms)", "itl_p50", "itl_p99"),
            ];
            for (panel, (y_desc, p50, p99)) in panels.iter().zip(metrics) {
                let series: Vec<(f64, f64, f64, f64)> = rows
                    .iter()
                    .filter_map(|r| {
                        Some((
                            num(r, "concurrency")?,
                            num(r, "throughput")?,
                            num(r, p50)?,
                            num(r, p99)?,
                        ))
                    })
                    .collect();
                let y_top = series.iter().map(|s| s.3).fold(1.0, f64::max) * 1.2;
                let mut chart = ChartBuilder::on(panel)
                    .margin(24)
                    .x_label_area_size(70)
                    .y_label_area_size(100)
                    .build_cartesian_2d(0f64..x_top, 0f64..y_top)?;
                chart.plotting_area().fill(&PANEL)?;
                mesh!(
                    chart,
                    "aggregate throughput (tokens/s, all streams)",
                    y_desc
                )
                .draw()?;
                for (name, color, pick) in [("P50", TEAL, 2usize), ("P99", ORANGE, 3usize)] {
                    let points: Vec<(f64, f64)> = series
                        .iter()
                        .map(|s| (s.1, if pick == 2 { s.2 } else { s.3 }))
                        .collect();
                    labelled_line!(chart, name, color, points);
                }
                chart.draw_series(series.iter().map(|s| {
                    Text::new(
                        format!("{} client{}", s.0, if s.0 == 1.0 { "" } else { "s" }),
                        (s.1 - x_top * 0.04, s.3 + y_top * 0.04),
                        ("sans-serif", LABEL - 2).into_font().color(&MUTED),
                    )
                }))?;
                legend!(chart, SeriesLabelPosition::UpperLeft)?;
            }
        }
    )
}

/// Latency against the request rate (open loop), per server: time to first token (left) and
/// time per output token (right), P50 and P99.
pub fn latency_vs_rate(inputs: &Inputs) -> Result<String> {
    let rows = inputs.rows("latency-vs-rate");
    let mut servers: Vec<String> = rows
        .iter()
        .filter_map(|r| r.get("server")?.as_str().map(String::from))
        .collect();
    servers.dedup();
    servers.sort();
    servers.dedup();
    anyhow::ensure!(!servers.is_empty(), "latency-vs-rate has no rows");
    let x_top = rows
        .iter()
        .filter_map(|r| num(r, "rate"))
        .fold(0.0, f64::max)
        * 1.1;
    two_panels!(
        "Open loop: what each request waits as the request rate grows",
        |panels| {
            let metrics = [
                ("time to first token (ms)", "ttft_p50", "ttft_p99"),
                ("time per output token (ms)", "tpot_p50", "tpot_p99"),
            ];
            for (panel, (y_desc, p50, p99)) in panels.iter().zip(metrics) {
                let y_top = rows.iter().filter_map(|r| num(r, p99)).fold(1.0, f64::max) * 1.2;
                let mut chart = ChartBuilder::on(panel)
                    .margin(24)
                    .x_label_area_size(70)
                    .y_label_area_size(100)
                    .build_cartesian_2d(0f64..x_top.max(1.0), 0f64..y_top)?;
                chart.plotting_area().fill(&PANEL)?;
                mesh!(chart, "offered rate (requests/s, Poisson)", y_desc).draw()?;
                let colors = [(TEAL, PURPLE), (ORANGE, RED)];
                for (server, (c50, c99)) in servers.iter().zip(colors) {
                    for (which, color, key) in [("P50", c50, p50), ("P99", c99, p99)] {
                        let points: Vec<(f64, f64)> = rows
                            .iter()
                            .filter(|r| r.get("server").and_then(|s| s.as_str()) == Some(server))
                            .filter_map(|r| Some((num(r, "rate")?, num(r, key)?)))
                            .collect();
                        labelled_line!(chart, format!("{server} {which}"), color, points);
                    }
                }
                legend!(chart, SeriesLabelPosition::UpperLeft)?;
            }
        }
    )
}
