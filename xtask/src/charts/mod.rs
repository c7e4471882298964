//! Charts of measured data, drawn from `benchmarks/` (plotters' SVG backend), never by hand.
//! `cargo xtask inject` (and `bench`, `book`) rewrites them; `cargo xtask check` fails when a
//! committed chart is not what its results file draws.

use crate::bench_file::BenchFile;
use anyhow::{Context, Result};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// The guide's palette (GUIDE §5).
pub(crate) const BACKGROUND: RGBColor = RGBColor(0x02, 0x06, 0x17);
pub(crate) const PANEL: RGBColor = RGBColor(0x0f, 0x17, 0x2a);
pub(crate) const TEXT: RGBColor = RGBColor(0xf8, 0xfa, 0xfc);
pub(crate) const MUTED: RGBColor = RGBColor(0x94, 0xa3, 0xb8);
pub(crate) const PURPLE: RGBColor = RGBColor(0x7c, 0x3a, 0xed);
pub(crate) const ORANGE: RGBColor = RGBColor(0xf5, 0x9e, 0x0b);
pub(crate) const GREEN: RGBColor = RGBColor(0x22, 0xc5, 0x5e);
pub(crate) const TEAL: RGBColor = RGBColor(0x14, 0xb8, 0xa6);
pub(crate) const RED: RGBColor = RGBColor(0xef, 0x44, 0x44);
pub(crate) const YELLOW: RGBColor = RGBColor(0xea, 0xb3, 0x08);
/// Shades of orange for the prefill-against-decode lines.
pub(crate) const PREFILL: [RGBColor; 3] = [
    ORANGE,
    RGBColor(0xfb, 0xbf, 0x24),
    RGBColor(0xfd, 0xe6, 0x8a),
];

/// The label of a bar chart's category axis at `x`: the name of bar `x` when `x` is a whole
/// index, else nothing (plotters asks for labels between the bars too).
pub(crate) fn category_label(names: &[String], x: f64) -> String {
    let i = x.round();
    if (x - i).abs() < 1e-6 && i >= 0.0 {
        names.get(i as usize).cloned().unwrap_or_default()
    } else {
        String::new()
    }
}

/// One chart: its file under `images/charts/` and the SVG its results draw.
pub struct Chart {
    pub path: PathBuf,
    pub svg: String,
}

mod attention;
mod distillation;
mod hardware;
mod parallel;
mod parity;
mod pruning;
mod quantization;
mod scaling;
mod serving;
mod speculative;

/// The results files a chart is drawn from, by table name.
pub struct Inputs(std::collections::BTreeMap<String, BenchFile>);

impl Inputs {
    /// The results of table `name` (the chart's `needs` are always there).
    pub fn get(&self, name: &str) -> Option<&BenchFile> {
        self.0.get(name)
    }

    /// The rows of table `name`; empty when it was not measured.
    pub fn rows(&self, name: &str) -> &[serde_json::Map<String, serde_json::Value>] {
        self.get(name).map_or(&[], |f| f.table.rows.as_slice())
    }

    /// The rows of table `name` when it was measured on the same CPU as table `like`; empty
    /// otherwise (one chart must not mix two machines' numbers).
    pub fn rows_like(
        &self,
        name: &str,
        like: &str,
    ) -> &[serde_json::Map<String, serde_json::Value>] {
        match (self.get(name), self.get(like)) {
            (Some(f), Some(l)) if f.provenance.cpu_model == l.provenance.cpu_model => &f.table.rows,
            _ => &[],
        }
    }
}

/// One chart of the book: the file it is written to, the tables it needs (drawn only when all
/// exist), the ones it shows when present, and the function that draws it.
struct Spec {
    file: &'static str,
    needs: &'static [&'static str],
    optional: &'static [&'static str],
    draw: fn(&Inputs) -> Result<String>,
}

const CHARTS: &[Spec] = &[
    Spec {
        file: "parity-noise-floor.svg",
        needs: &["parity-delta-quantiles"],
        optional: &[],
        draw: parity::parity_cdf,
    },
    Spec {
        file: "roofline.svg",
        needs: &["hardware-roofline"],
        optional: &hardware::ROOFLINE_KERNELS_AND_DECODE,
        draw: hardware::roofline,
    },
    Spec {
        file: "triad-sizes.svg",
        needs: &["hardware-triad-sizes"],
        optional: &[],
        draw: hardware::triad_sizes,
    },
    Spec {
        file: "kv-growth.svg",
        needs: &["kv-growth"],
        optional: &[],
        draw: serving::kv_growth,
    },
    Spec {
        file: "throughput-latency.svg",
        needs: &["throughput-levels"],
        optional: &[],
        draw: serving::throughput_latency,
    },
    Spec {
        file: "latency-vs-rate.svg",
        needs: &["latency-vs-rate"],
        optional: &[],
        draw: serving::latency_vs_rate,
    },
    Spec {
        file: "scale-out-routing.svg",
        needs: &["scale-out-routing"],
        optional: &[],
        draw: scaling::routing,
    },
    Spec {
        file: "attention-by-context.svg",
        needs: &["flash-speed"],
        optional: &[],
        draw: attention::attention_by_context,
    },
    Spec {
        file: "bits-vs-perplexity.svg",
        needs: &["quantization-formats"],
        optional: &[],
        draw: quantization::bits_vs_perplexity,
    },
    Spec {
        file: "pruning-perplexity.svg",
        needs: &["prune-sparsity"],
        optional: &[],
        draw: pruning::perplexity_vs_sparsity,
    },
    Spec {
        file: "distillation-loss.svg",
        needs: &["distill-loss"],
        optional: &[],
        draw: distillation::loss_curves,
    },
    Spec {
        file: "tensor-parallel-projection.svg",
        needs: &["tp-projection"],
        optional: &[],
        draw: parallel::projection,
    },
    Spec {
        file: "speculative-cost-and-speedup.svg",
        needs: &["spec-verify-cost"],
        optional: &["spec-tasks"],
        draw: speculative::verify_cost_and_speedup,
    },
    Spec {
        file: "speculative-server.svg",
        needs: &["spec-server"],
        optional: &[],
        draw: speculative::server_by_clients,
    },
];

/// Every chart whose results files exist.
pub fn render_all(root: &Path) -> Result<Vec<Chart>> {
    let mut charts = Vec::new();
    for spec in CHARTS {
        let mut inputs = std::collections::BTreeMap::new();
        let mut missing = false;
        for (name, required) in spec
            .needs
            .iter()
            .map(|n| (n, true))
            .chain(spec.optional.iter().map(|n| (n, false)))
        {
            match BenchFile::load(root, name)? {
                Some(file) => {
                    inputs.insert(name.to_string(), file);
                }
                None => missing |= required,
            }
        }
        if missing {
            continue;
        }
        let svg = (spec.draw)(&Inputs(inputs)).with_context(|| format!("drawing {}", spec.file))?;
        charts.push(Chart {
            path: root.join("images/charts").join(spec.file),
            svg,
        });
    }
    Ok(charts)
}

/// The chart files the book can hold (whether or not their results exist yet).
pub fn files() -> impl Iterator<Item = &'static str> {
    CHARTS.iter().map(|c| c.file)
}

/// A number of a results row.
pub(crate) fn num(row: &serde_json::Map<String, serde_json::Value>, key: &str) -> Option<f64> {
    row.get(key).and_then(|v| v.as_f64())
}

/// A text of a results row ("" when absent).
pub(crate) fn text(row: &serde_json::Map<String, serde_json::Value>, key: &str) -> String {
    row.get(key)
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string()
}

/// Size of the new charts in SVG units: wide enough for a laptop column, with fonts large
/// enough to stay legible when a phone scales it to a third.
pub(crate) const SIZE: (u32, u32) = (1200, 720);
pub(crate) const CAPTION: u32 = 34;
pub(crate) const AXIS: u32 = 28;
pub(crate) const LABEL: u32 = 24;

/// The axes `x` × `y` of a chart drawn on the guide's background, in a panel, under `title`
/// (text, font size), of size `size`; the body, given the chart as `chart`, adds the mesh and
/// the series. Evaluates to `Ok(svg)`. (A macro, not a function taking a closure: the chart
/// borrows the drawing area, which borrows the SVG string, and a closure over that pair needs
/// lifetimes a closure's signature cannot state.)
macro_rules! frame {
    ($size:expr, $title:expr, $x:expr, $y:expr, |$chart:ident| $body:block) => {{
        let mut svg = String::new();
        {
            let area = SVGBackend::with_string(&mut svg, $size).into_drawing_area();
            area.fill(&$crate::charts::BACKGROUND)?;
            let (title, font): (&str, u32) = $title;
            let mut $chart = ChartBuilder::on(&area)
                .caption(
                    title,
                    ("sans-serif", font)
                        .into_font()
                        .color(&$crate::charts::TEXT),
                )
                .margin(24)
                .x_label_area_size(70)
                .y_label_area_size(100)
                .build_cartesian_2d($x, $y)?;
            $chart.plotting_area().fill(&$crate::charts::PANEL)?;
            $body
            area.present()?;
        }
        Ok(svg)
    }};
}
pub(crate) use frame;

/// One series as a line with a dot at each point, named in the legend: `points` is a
/// `Vec<(x, y)>`.
macro_rules! labelled_line {
    ($chart:expr, $name:expr, $color:expr, $points:expr) => {{
        let color = $color;
        $chart
            .draw_series(LineSeries::new(
                $points.iter().copied(),
                color.stroke_width(4),
            ))?
            .label($name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 30, y)], color.stroke_width(4))
            });
        $chart.draw_series($points.iter().map(|&p| Circle::new(p, 7, color.filled())))?;
    }};
}
pub(crate) use labelled_line;

/// A chart of two panels side by side under one `title`, 1.5 charts wide: the body gets the two
/// drawing areas as `panels` and draws each. Evaluates to `Ok(svg)` (a macro for the reason
/// [`frame!`] is one).
macro_rules! two_panels {
    ($title:expr, |$panels:ident| $body:block) => {{
        let mut svg = String::new();
        {
            let area = SVGBackend::with_string(&mut svg, ($crate::charts::SIZE.0 * 3 / 2, $crate::charts::SIZE.1))
                .into_drawing_area();
            area.fill(&$crate::charts::BACKGROUND)?;
            let area = area.titled(
                $title,
                ("sans-serif", $crate::charts::CAPTION)
                    .into_font()
                    .color(&$crate::charts::TEXT),
            )?;
            let $panels = area.split_evenly((1, 2));
            $body
            area.present()?;
        }
        Ok(svg)
    }};
}
pub(crate) use two_panels;

/// The mesh every chart draws: axis descriptions, muted labels and grid.
macro_rules! mesh {
    ($chart:expr, $x:expr, $y:expr) => {
        $chart
            .configure_mesh()
            .x_desc($x)
            .y_desc($y)
            .axis_desc_style(
                ("sans-serif", $crate::charts::AXIS)
                    .into_font()
                    .color(&$crate::charts::TEXT),
            )
            .label_style(
                ("sans-serif", $crate::charts::LABEL)
                    .into_font()
                    .color(&$crate::charts::MUTED),
            )
            .axis_style($crate::charts::MUTED)
            .bold_line_style($crate::charts::MUTED.mix(0.25))
            .light_line_style($crate::charts::MUTED.mix(0.08))
    };
}
pub(crate) use mesh;

/// The legend every chart draws.
macro_rules! legend {
    ($chart:expr, $position:expr) => {
        $chart
            .configure_series_labels()
            .position($position)
            .background_style($crate::charts::BACKGROUND.mix(0.9))
            .border_style($crate::charts::MUTED)
            .label_font(
                ("sans-serif", $crate::charts::LABEL)
                    .into_font()
                    .color(&$crate::charts::TEXT),
            )
            .draw()
    };
}
pub(crate) use legend;

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
