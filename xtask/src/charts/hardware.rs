//! The hardware chapter's charts: the roofline of this machine with our kernels and the
//! engine's decode on it, and the triad across the cache levels.

use super::*;
use chapters_code::formats::GgmlType;

/// The matrix × vector tables drawn on the roofline, with the weight format each one reads
/// (its arithmetic intensity is 2 FLOP per weight over the format's bytes per weight) and
/// where its label goes, as factors of the point's coordinates (the points are close).
const KERNELS: [(&str, &str, GgmlType, (f64, f64)); 5] = [
    ("kernels-f32-vs-trueno", "f32", GgmlType::F32, (1.1, 1.05)),
    ("kernels-q6k-matvec", "Q6_K", GgmlType::Q6_K, (0.66, 1.05)),
    ("kernels-q5k-matvec", "Q5_K", GgmlType::Q5_K, (0.7, 1.25)),
    ("kernels-q4k-matvec", "Q4_K", GgmlType::Q4_K, (1.07, 0.95)),
    ("kernels-q4_1-matvec", "Q4_1", GgmlType::Q4_1, (0.93, 1.5)),
];

/// The optional inputs of the roofline: every kernel table, the engine's decode speed and the
/// triad on cache-sized working sets.
pub const ROOFLINE_KERNELS_AND_DECODE: [&str; 7] = [
    "hardware-triad-sizes",
    KERNELS[0].0,
    KERNELS[1].0,
    KERNELS[2].0,
    KERNELS[3].0,
    KERNELS[4].0,
    "engine-speed",
];

/// FLOP per byte of weights of a matrix × vector product over weights of `ty`.
fn intensity(ty: GgmlType) -> f64 {
    2.0 * 8.0 / ty.bits_per_weight()
}

/// Attainable GFLOP/s at `intensity` under a roof of `peak` GFLOP/s and `bandwidth` GB/s.
fn roof(peak: f64, bandwidth: f64, intensity: f64) -> f64 {
    peak.min(bandwidth * intensity)
}

/// The value of the roofline row `measurement` at `threads`.
fn measured(inputs: &Inputs, measurement: &str, threads: f64) -> Option<f64> {
    inputs
        .rows("hardware-roofline")
        .iter()
        .find(|r| {
            text(r, "measurement").starts_with(measurement) && num(r, "threads") == Some(threads)
        })
        .and_then(|r| num(r, "value"))
}

/// Log-log roofline: one roof per thread count; each kernel's fastest version (filled) and its
/// scalar reference (hollow) at its format's intensity; the engine's decode at 1 and 2 threads.
/// Only tables measured on the roofline's CPU are drawn on it.
pub fn roofline(inputs: &Inputs) -> Result<String> {
    let mut roofs = Vec::new();
    for threads in [1.0, 2.0] {
        if let (Some(bw), Some(peak)) = (
            measured(inputs, "memory bandwidth", threads),
            measured(inputs, "peak f32 compute", threads),
        ) {
            roofs.push((threads, bw, peak));
        }
    }
    anyhow::ensure!(
        !roofs.is_empty(),
        "hardware-roofline has no bandwidth and peak rows"
    );
    let (x0, x1) = (0.1f64, 100f64);
    let y_top = roofs.iter().map(|r| r.2).fold(0.0, f64::max) * 2.0;
    frame!(
        SIZE,
        (
            "Roofline of this machine, with our kernels and the engine's decode",
            CAPTION,
        ),
        (x0..x1).log_scale(),
        (0.3f64..y_top).log_scale(),
        |chart| {
            mesh!(
                chart,
                "arithmetic intensity (FLOP per byte read)",
                "GFLOP/s"
            )
            .draw()?;
            for (i, &(threads, bw, peak)) in roofs.iter().enumerate() {
                let color = [PURPLE, TEAL][i % 2];
                let ridge = peak / bw;
                let points = [(x0, roof(peak, bw, x0)), (ridge, peak), (x1, peak)];
                chart
                    .draw_series(LineSeries::new(points, color.stroke_width(4)))?
                    .label(format!(
                        "DRAM, {threads} thread{}: {bw:.1} GB/s, {peak:.0} GFLOP/s",
                        if threads == 1.0 { "" } else { "s" }
                    ))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 30, y)], color.stroke_width(4))
                    });
            }
            // The bandwidth of working sets that fit a cache level: the kernels' matrices do.
            let mut caches: Vec<String> = Vec::new();
            let mut labelled: Vec<(f64, String)> = Vec::new();
            for r in inputs.rows_like("hardware-triad-sizes", "hardware-roofline") {
                let (Some(bw), name) = (num(r, "rate"), text(r, "what")) else {
                    continue;
                };
                let Some(level) = ["L1", "L2", "L3"].into_iter().find(|l| name.contains(l)) else {
                    continue;
                };
                let peak = roofs[0].2;
                chart.draw_series(DashedLineSeries::new(
                    [(x0, bw * x0), (peak / bw, peak)],
                    10,
                    8,
                    MUTED.mix(0.7).stroke_width(2),
                ))?;
                // Levels within 15% of each other share one label (their lines nearly meet).
                match labelled
                    .iter_mut()
                    .find(|(b, _)| (b / bw - 1.0).abs() < 0.15)
                {
                    Some((_, text)) => text.push_str(&format!(", {level}")),
                    None => labelled.push((bw, level.to_string())),
                }
                caches.push(format!("{level} {bw:.0}"));
            }
            for (bw, text) in &labelled {
                let peak = roofs[0].2;
                chart.draw_series([Text::new(
                    text.clone(),
                    (peak / bw * 0.9, peak * 1.12),
                    ("sans-serif", LABEL - 4).into_font().color(&MUTED),
                )])?;
            }
            if !caches.is_empty() {
                chart
                    .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
                    .label(format!("in cache, 1 thread (GB/s): {}", caches.join(", ")))
                    .legend(|(x, y)| {
                        PathElement::new(vec![(x, y), (x + 30, y)], MUTED.stroke_width(2))
                    });
            }
            for (table, format, ty, (dx, dy)) in KERNELS {
                let rows = inputs.rows_like(table, "hardware-roofline");
                let rate = |r: &serde_json::Map<_, _>| num(r, "rate");
                let (Some(first), Some(best)) = (
                    rows.first().and_then(rate),
                    rows.iter().filter_map(rate).reduce(f64::max),
                ) else {
                    continue;
                };
                let x = intensity(ty);
                // rate is GB/s of weights: times FLOP per byte gives GFLOP/s.
                chart.draw_series([
                    Circle::new((x, first * x), 9, ORANGE.stroke_width(3)),
                    Circle::new((x, best * x), 10, ORANGE.filled()),
                ])?;
                chart.draw_series([Text::new(
                    format.to_string(),
                    (x * dx, best * x * dy * 1.25),
                    ("sans-serif", LABEL).into_font().color(&TEXT),
                )])?;
            }
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
                .label("matrix × vector: fastest (dot), scalar (ring)")
                .legend(|(x, y)| Circle::new((x + 15, y), 8, ORANGE.filled()));
            // Each configuration's GFLOP/s goes in the legend: the points are too close to
            // label on the plot.
            let decode: Vec<(f64, f64, String)> = inputs
                .rows_like("engine-speed", "hardware-roofline")
                .iter()
                .filter_map(|r| {
                    let (threads, gflops) = (num(r, "threads")?, num(r, "gflops")?);
                    let label = match num(r, "spin_us") {
                        Some(spin) if spin > 0.0 => {
                            format!("{threads} threads + {spin:.0} µs spin {gflops:.1}")
                        }
                        _ if threads == 1.0 => format!("1 thread {gflops:.1}"),
                        _ => format!("{threads} threads {gflops:.1}"),
                    };
                    Some((num(r, "intensity")?, gflops, label))
                })
                .collect();
            if !decode.is_empty() {
                chart
                    .draw_series(
                        decode
                            .iter()
                            .map(|(x, y, _)| TriangleMarker::new((*x, *y), 12, GREEN.filled())),
                    )?
                    .label(format!(
                        "engine decode, GFLOP/s: {}",
                        decode
                            .iter()
                            .map(|d| d.2.as_str())
                            .collect::<Vec<_>>()
                            .join(" · ")
                    ))
                    .legend(|(x, y)| TriangleMarker::new((x + 15, y), 10, GREEN.filled()));
            }
            legend!(chart, SeriesLabelPosition::LowerRight)?;
        }
    )
}

/// Bars of the triad's throughput on working sets that fit each cache level, and DRAM.
pub fn triad_sizes(inputs: &Inputs) -> Result<String> {
    let bars: Vec<(String, f64)> = inputs
        .rows("hardware-triad-sizes")
        .iter()
        .filter_map(|r| Some((text(r, "what"), num(r, "rate")?)))
        .collect();
    anyhow::ensure!(!bars.is_empty(), "hardware-triad-sizes has no rows");
    let top = bars.iter().map(|b| b.1).fold(0.0, f64::max) * 1.2;
    let n = bars.len();
    frame!(
        SIZE,
        (
            "The same triad, one thread, on working sets of growing size",
            CAPTION,
        ),
        -0.5f64..n as f64 - 0.5,
        0f64..top,
        |chart| {
            let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
            mesh!(chart, "working set of the three arrays", "GB/s")
                .disable_x_mesh()
                .x_labels(n)
                .x_label_formatter(&|x| category_label(&names, *x))
                .draw()?;
            let colors = [GREEN, TEAL, PURPLE, ORANGE];
            for (i, (_, rate)) in bars.iter().enumerate() {
                let x = i as f64;
                let color = colors[i.min(colors.len() - 1)];
                chart.draw_series([Rectangle::new(
                    [(x - 0.35, 0.0), (x + 0.35, *rate)],
                    color.filled(),
                )])?;
                chart.draw_series([Text::new(
                    format!("{rate:.1} GB/s"),
                    (x - 0.2, *rate + top * 0.05),
                    ("sans-serif", AXIS).into_font().color(&TEXT),
                )])?;
            }
        }
    )
}
