//! Comparing two runs of the suite, teacher-forced and free-running.
//!
//! - **|Δ log-probability|**: at every step of a reference run R (the distribution that chose
//!   R's token k, after R's own tokens `..k`), for each of R's top-5 ids, the absolute
//!   difference between R's log-probability and the other engine's, the other engine fed R's
//!   tokens. Comparing distributions at the same prefix keeps one early divergence from making
//!   every later position incomparable.
//! - **Agreement**: per prompt, how many greedy tokens two free-running runs share before the
//!   first that differs (all of them when the runs are identical).
//! - **Divergence margin**: where two greedy runs part, each run's own top-2 margin (log p of its
//!   best minus its second) at that step: a small margin means a last-bit difference could flip
//!   the choice.

use super::suite::TOP;
use crate::tokenizer::TokenId;

/// A sorted sample of non-negative values, with the summaries the book prints.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Distribution {
    sorted: Vec<f64>,
}

impl Distribution {
    pub fn new(mut values: Vec<f64>) -> Distribution {
        values.sort_by(f64::total_cmp);
        Distribution { sorted: values }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The q-quantile (0 ≤ q ≤ 1), nearest rank; 0 for an empty sample.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.sorted.is_empty() {
            return 0.0;
        }
        let rank = (q.clamp(0.0, 1.0) * (self.sorted.len() - 1) as f64).round() as usize;
        self.sorted[rank]
    }

    pub fn max(&self) -> f64 {
        self.sorted.last().copied().unwrap_or(0.0)
    }

    pub fn mean(&self) -> f64 {
        if self.sorted.is_empty() {
            return 0.0;
        }
        self.sorted.iter().sum::<f64>() / self.sorted.len() as f64
    }

    /// The share of values at most `x`.
    pub fn share_at_most(&self, x: f64) -> f64 {
        if self.sorted.is_empty() {
            return 1.0;
        }
        self.sorted.partition_point(|&v| v <= x) as f64 / self.sorted.len() as f64
    }

    pub fn values(&self) -> &[f64] {
        &self.sorted
    }
}

/// |Δ| over every step and every top-5 id of every prompt: `reference[p][k]` against
/// `other[p][k]`, the same ids in the same order.
pub fn deltas(reference: &[Vec<[f64; TOP]>], other: &[Vec<[f64; TOP]>]) -> Distribution {
    let mut values = Vec::new();
    for (r, o) in reference.iter().zip(other) {
        for (a, b) in r.iter().zip(o) {
            values.extend(a.iter().zip(b).map(|(x, y)| (x - y).abs()));
        }
    }
    Distribution::new(values)
}

/// Where two greedy runs of one prompt part.
#[derive(Debug, Clone, PartialEq)]
pub struct Divergence {
    pub prompt: String,
    /// Tokens the runs share before they part.
    pub step: usize,
    /// Top-2 margin of the first run at that step (log p₁ − log p₂).
    pub margin_a: f64,
    /// Top-2 margin of the second run.
    pub margin_b: f64,
}

/// Two engines' greedy runs over the whole suite.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Agreement {
    /// Per prompt: tokens shared before the first difference.
    pub shared: Vec<usize>,
    /// Prompts whose greedy runs are identical.
    pub identical: usize,
    pub divergences: Vec<Divergence>,
}

impl Agreement {
    /// Tokens shared before the first difference, over the whole suite.
    pub fn total(&self) -> usize {
        self.shared.iter().sum()
    }
}

/// One prompt's greedy run, as far as the comparison needs it.
pub struct GreedyView<'a> {
    pub prompt: &'a str,
    pub tokens: &'a [TokenId],
    pub top_lps: &'a [[f64; TOP]],
}

fn margin(lps: &[f64; TOP]) -> f64 {
    lps[0] - lps[1]
}

/// Agreement of two sets of greedy runs, prompt by prompt.
pub fn agreement<'a>(
    a: impl IntoIterator<Item = GreedyView<'a>>,
    b: impl IntoIterator<Item = GreedyView<'a>>,
) -> Agreement {
    let mut out = Agreement::default();
    for (x, y) in a.into_iter().zip(b) {
        let shared = x
            .tokens
            .iter()
            .zip(y.tokens)
            .take_while(|(p, q)| p == q)
            .count();
        out.shared.push(shared);
        let n = x.tokens.len().min(y.tokens.len());
        if shared == n {
            // Same tokens as far as both go (one may have stopped at its limit).
            out.identical += usize::from(x.tokens.len() == y.tokens.len());
            continue;
        }
        out.divergences.push(Divergence {
            prompt: x.prompt.to_string(),
            step: shared,
            margin_a: margin(&x.top_lps[shared]),
            margin_b: margin(&y.top_lps[shared]),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_shares_of_a_small_sample() {
        let d = Distribution::new(vec![0.4, 0.1, 0.3, 0.2, 0.0]);
        assert_eq!(d.quantile(0.5), 0.2);
        assert_eq!(d.quantile(1.0), 0.4);
        assert_eq!(d.max(), 0.4);
        assert_eq!(d.share_at_most(0.2), 0.6);
        assert_eq!(Distribution::default().quantile(0.5), 0.0);
    }

    #[test]
    fn agreement_counts_shared_tokens_and_finds_the_divergence_margins() {
        let lps = [
            [-0.1, -2.0, -3.0, -4.0, -5.0],
            [-0.5, -0.7, -3.0, -4.0, -5.0],
        ];
        let lps_b = [
            [-0.1, -2.0, -3.0, -4.0, -5.0],
            [-0.6, -0.65, -3.0, -4.0, -5.0],
        ];
        fn view<'a>(tokens: &'a [TokenId], top: &'a [[f64; TOP]]) -> GreedyView<'a> {
            GreedyView {
                prompt: "p",
                tokens,
                top_lps: top,
            }
        }
        let a = agreement([view(&[1, 2], &lps)], [view(&[1, 3], &lps_b)]);
        assert_eq!(a.shared, [1]);
        assert_eq!(a.identical, 0);
        assert!((a.divergences[0].margin_a - 0.2).abs() < 1e-12);
        assert!((a.divergences[0].margin_b - 0.05).abs() < 1e-12);
        let same = agreement([view(&[1, 2], &lps)], [view(&[1, 2], &lps)]);
        assert_eq!((same.total(), same.identical), (2, 1));
    }

    #[test]
    fn deltas_pair_ids_position_by_position() {
        let r = vec![vec![[-1.0, -2.0, -3.0, -4.0, -5.0]]];
        let o = vec![vec![[-1.5, -2.0, -3.0, -4.0, -4.0]]];
        let d = deltas(&r, &o);
        assert_eq!(d.len(), 5);
        assert_eq!(d.max(), 1.0);
        assert_eq!(d.quantile(0.5), 0.0);
    }
}
