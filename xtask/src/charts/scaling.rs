//! The scaling-out chapter's chart: where requests go decides how long they wait.

use super::*;

/// Per front, TTFT P50 and P99 as paired bars (seconds), the share of prompt tokens served from
/// the replicas' prefix caches written above each pair.
pub fn routing(inputs: &Inputs) -> Result<String> {
    let fronts: Vec<(String, f64, f64, f64)> = inputs
        .rows("scale-out-routing")
        .iter()
        .filter_map(|r| {
            Some((
                text(r, "front"),
                num(r, "ttft_p50_ms")? / 1e3,
                num(r, "ttft_p99_ms")? / 1e3,
                num(r, "prefix_hit_pct")?,
            ))
        })
        .collect();
    anyhow::ensure!(!fronts.is_empty(), "scale-out-routing has no rows");
    let top = fronts.iter().map(|f| f.2).fold(0.0, f64::max) * 1.2;
    let n = fronts.len();
    frame!(
        (1800, 720),
        (
            "Time to first token by front: P50 (purple), P99 (orange); above: prompt tokens from the prefix cache",
            CAPTION - 8,
        ),
        -0.5f64..n as f64 - 0.5,
        0f64..top.max(1.0),
        |chart| {
            let names: Vec<String> = fronts.iter().map(|f| f.0.clone()).collect();
            mesh!(
                chart,
                "load balancer in front of three replicas",
                "time to first token (s)"
            )
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&|x| category_label(&names, *x))
            .draw()?;
            for (i, (_, p50, p99, hit)) in fronts.iter().enumerate() {
                let x = i as f64;
                chart.draw_series([Rectangle::new(
                    [(x - 0.32, 0.0), (x, *p50)],
                    PURPLE.filled(),
                )])?;
                chart.draw_series([Rectangle::new(
                    [(x, 0.0), (x + 0.32, *p99)],
                    ORANGE.filled(),
                )])?;
                chart.draw_series([Text::new(
                    format!("{hit:.0}% cached"),
                    (x - 0.25, p99.max(*p50) + top * 0.05),
                    ("sans-serif", AXIS).into_font().color(&TEXT),
                )])?;
            }
        }
    )
}
