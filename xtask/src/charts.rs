//! Charts of measured data, drawn from `benchmarks/` (plotters' SVG backend), never by hand.
//! `cargo xtask inject` (and `bench`, `book`) rewrites them; `cargo xtask check` fails when a
//! committed chart is not what its results file draws.

use crate::bench_file::BenchFile;
use anyhow::{Context, Result};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// The guide's palette (GUIDE §5).
const BACKGROUND: RGBColor = RGBColor(0x02, 0x06, 0x17);
const PANEL: RGBColor = RGBColor(0x0f, 0x17, 0x2a);
const TEXT: RGBColor = RGBColor(0xf8, 0xfa, 0xfc);
const MUTED: RGBColor = RGBColor(0x94, 0xa3, 0xb8);
const PURPLE: RGBColor = RGBColor(0x7c, 0x3a, 0xed);
const ORANGE: RGBColor = RGBColor(0xf5, 0x9e, 0x0b);
const GREEN: RGBColor = RGBColor(0x22, 0xc5, 0x5e);
const TEAL: RGBColor = RGBColor(0x14, 0xb8, 0xa6);
const RED: RGBColor = RGBColor(0xef, 0x44, 0x44);
const YELLOW: RGBColor = RGBColor(0xea, 0xb3, 0x08);
/// Shades of orange for the prefill-against-decode lines.
const PREFILL: [RGBColor; 3] = [
    ORANGE,
    RGBColor(0xfb, 0xbf, 0x24),
    RGBColor(0xfd, 0xe6, 0x8a),
];

/// One chart: its file under `images/charts/` and the SVG its results draw.
pub struct Chart {
    pub path: PathBuf,
    pub svg: String,
}

/// Every chart whose results file exists.
pub fn render_all(root: &Path) -> Result<Vec<Chart>> {
    let mut charts = Vec::new();
    if let Some(file) = BenchFile::load(root, "parity-delta-quantiles")? {
        charts.push(Chart {
            path: root.join("images/charts/parity-noise-floor.svg"),
            svg: parity_cdf(&file)?,
        });
    }
    Ok(charts)
}

/// Writes the charts that changed; returns their paths.
pub fn write_all(root: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for chart in render_all(root)? {
        if std::fs::read_to_string(&chart.path).ok().as_deref() != Some(chart.svg.as_str()) {
            if let Some(dir) = chart.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&chart.path, &chart.svg)
                .with_context(|| format!("writing {}", chart.path.display()))?;
            written.push(chart.path);
        }
    }
    Ok(written)
}

/// Committed charts that differ from what their results draw (relative paths).
pub fn stale(root: &Path) -> Result<Vec<PathBuf>> {
    Ok(render_all(root)?
        .into_iter()
        .filter(|c| std::fs::read_to_string(&c.path).ok().as_deref() != Some(c.svg.as_str()))
        .map(|c| {
            c.path
                .strip_prefix(root)
                .map(Path::to_path_buf)
                .unwrap_or(c.path)
        })
        .collect())
}

/// One comparison's line: (name, kind, (|Δ|, share) points).
type Line = (String, String, Vec<(f64, f64)>);

/// The cumulative distribution of |Δ log p| for each comparison: one line per comparison,
/// share of values (y) at most |Δ| (x).
fn parity_cdf(file: &BenchFile) -> Result<String> {
    let mut lines: Vec<Line> = Vec::new();
    for row in &file.table.rows {
        let text = |k: &str| {
            row.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let num = |k: &str| row.get(k).and_then(|v| v.as_f64());
        let (Some(share), Some(delta)) = (num("share"), num("delta")) else {
            continue;
        };
        let name = text("comparison");
        match lines.iter_mut().find(|l| l.0 == name) {
            Some(l) => l.2.push((delta, share)),
            None => lines.push((name, text("kind"), vec![(delta, share)])),
        }
    }
    let x_max = lines
        .iter()
        .flat_map(|l| l.2.iter().map(|p| p.0))
        .fold(0.1f64, f64::max)
        * 1.05;
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, (1600, 900)).into_drawing_area();
        area.fill(&BACKGROUND)?;
        let mut chart = ChartBuilder::on(&area)
            .caption(
                "Top-5 |Δ log-probability|, teacher-forced: llama.cpp against itself, and us",
                ("sans-serif", 34).into_font().color(&TEXT),
            )
            .margin(30)
            .x_label_area_size(70)
            .y_label_area_size(90)
            .build_cartesian_2d(0f64..x_max, 0f64..1.02f64)?;
        chart.plotting_area().fill(&PANEL)?;
        chart
            .configure_mesh()
            .x_desc("|Δ log p| (nats)")
            .y_desc("share of values at most |Δ|")
            .axis_desc_style(("sans-serif", 26).into_font().color(&TEXT))
            .label_style(("sans-serif", 22).into_font().color(&MUTED))
            .axis_style(MUTED)
            .bold_line_style(MUTED.mix(0.25))
            .light_line_style(MUTED.mix(0.08))
            .draw()?;
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
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(BACKGROUND.mix(0.9))
            .border_style(MUTED)
            .label_font(("sans-serif", 20).into_font().color(&TEXT))
            .draw()?;
        area.present()?;
    }
    Ok(svg)
}
