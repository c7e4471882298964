//! Where a request's time goes inside the server: one HDR histogram per stage, recorded as the
//! engine runs (microsecond values, three significant digits), read by `/metrics` and by
//! `demo-latency-profile`.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::Mutex;
use std::time::Duration;

// ANCHOR: stages
/// The stages, in the order a request meets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The HTTP handler turns the prompt (or the chat) into token ids.
    Tokenize,
    /// From submission to the engine until the scheduler first admits the request.
    QueueWait,
    /// One forward pass of a step that feeds prompt tokens (decodes may ride along).
    PrefillStep,
    /// One forward pass of a step that only decodes.
    DecodeStep,
    /// Choosing one token from its logits (sampler, or speculative verification).
    Sampling,
    /// One token to text: the streaming detokenizer and the stop strings.
    Detokenize,
    /// One event frame, from the moment the server hands it to the HTTP layer until the layer
    /// asks for the next one (the write to the socket).
    Write,
}
// ANCHOR_END: stages

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Tokenize,
        Stage::QueueWait,
        Stage::PrefillStep,
        Stage::DecodeStep,
        Stage::Sampling,
        Stage::Detokenize,
        Stage::Write,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Tokenize => "tokenize",
            Stage::QueueWait => "queue_wait",
            Stage::PrefillStep => "prefill_step",
            Stage::DecodeStep => "decode_step",
            Stage::Sampling => "sampling",
            Stage::Detokenize => "detokenize",
            Stage::Write => "write",
        }
    }

    /// What one sample of the stage is.
    pub fn per(self) -> &'static str {
        match self {
            Stage::Tokenize | Stage::QueueWait => "request",
            Stage::PrefillStep | Stage::DecodeStep => "step",
            Stage::Sampling | Stage::Detokenize => "token",
            Stage::Write => "event",
        }
    }
}

/// One stage's summary, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct StageSummary {
    pub stage: Stage,
    pub per: &'static str,
    pub samples: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// All the time recorded in the stage (seconds).
    pub total_s: f64,
}

/// The stages' histograms.
pub struct StageProfile {
    histograms: Mutex<Vec<Histogram<u64>>>,
}

impl Default for StageProfile {
    fn default() -> StageProfile {
        let h = || Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
        StageProfile {
            histograms: Mutex::new(Stage::ALL.iter().map(|_| h()).collect()),
        }
    }
}

impl StageProfile {
    pub fn record(&self, stage: Stage, d: Duration) {
        let us = (d.as_micros() as u64).max(1);
        if let Ok(mut h) = self.histograms.lock() {
            h[stage as usize].saturating_record(us);
        }
    }

    /// Every stage's summary (stages without samples included, with zeros).
    pub fn summaries(&self) -> Vec<StageSummary> {
        let Ok(hists) = self.histograms.lock() else {
            return Vec::new();
        };
        Stage::ALL
            .iter()
            .zip(hists.iter())
            .map(|(&stage, h)| {
                let q = |q: f64| {
                    if h.is_empty() {
                        0
                    } else {
                        h.value_at_quantile(q)
                    }
                };
                StageSummary {
                    stage,
                    per: stage.per(),
                    samples: h.len(),
                    mean_us: if h.is_empty() { 0.0 } else { h.mean() },
                    p50_us: q(0.5),
                    p90_us: q(0.9),
                    p99_us: q(0.99),
                    p999_us: q(0.999),
                    max_us: if h.is_empty() { 0 } else { h.max() },
                    total_s: if h.is_empty() {
                        0.0
                    } else {
                        h.mean() * h.len() as f64 / 1e6
                    },
                }
            })
            .collect()
    }

    /// Forgets every sample (a benchmark's warm-up).
    pub fn reset(&self) {
        if let Ok(mut h) = self.histograms.lock() {
            h.iter_mut().for_each(Histogram::reset);
        }
    }

    /// The stages as a Prometheus summary, `prodml_stage_seconds{stage, quantile}` with `_sum`
    /// and `_count`, in the text exposition format.
    pub fn prometheus(&self) -> String {
        let mut out = String::from(
            "# HELP prodml_stage_seconds Time per stage inside the server (tokenize, queue wait, prefill and decode steps, sampling, detokenize, write), from HDR histograms.\n# TYPE prodml_stage_seconds summary\n",
        );
        for s in self.summaries() {
            let name = s.stage.name();
            for (q, v) in [
                ("0.5", s.p50_us),
                ("0.9", s.p90_us),
                ("0.99", s.p99_us),
                ("0.999", s.p999_us),
            ] {
                out += &format!(
                    "prodml_stage_seconds{{stage=\"{name}\",quantile=\"{q}\"}} {}\n",
                    v as f64 / 1e6
                );
            }
            out += &format!(
                "prodml_stage_seconds_sum{{stage=\"{name}\"}} {}\nprodml_stage_seconds_count{{stage=\"{name}\"}} {}\n",
                s.total_s, s.samples
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_summarize_and_export_their_samples() {
        let p = StageProfile::default();
        for ms in 1..=100 {
            p.record(Stage::DecodeStep, Duration::from_millis(ms));
        }
        p.record(Stage::Tokenize, Duration::from_micros(250));
        let s = p.summaries();
        let decode = s.iter().find(|s| s.stage == Stage::DecodeStep).unwrap();
        assert_eq!(decode.samples, 100);
        // Three significant digits: within 0.1% of the exact percentile.
        assert!(
            (decode.p50_us as f64 - 50_000.0).abs() <= 50.0,
            "{}",
            decode.p50_us
        );
        assert!(
            (decode.p99_us as f64 - 99_000.0).abs() <= 99.0,
            "{}",
            decode.p99_us
        );
        assert!((decode.total_s - 5.05).abs() < 0.01, "{}", decode.total_s);
        let text = p.prometheus();
        assert!(text.contains("prodml_stage_seconds_count{stage=\"decode_step\"} 100\n"));
        assert!(text.contains("prodml_stage_seconds{stage=\"tokenize\",quantile=\"0.5\"} 0.00025"));
        assert!(text.contains("prodml_stage_seconds_count{stage=\"write\"} 0\n"));
        p.reset();
        assert!(p.summaries().iter().all(|s| s.samples == 0));
    }
}
