//! The acceptance rules on small synthetic models, where every distribution is known exactly.

use super::rule::{draw, verify_sampled_with};
use super::*;
use crate::sampling::{Rng, Sampler, SamplingParams};

/// Pearson's χ² of observed counts against expected probabilities; cells expected under 5
/// counts are pooled into one.
fn chi_square(counts: &[u64], expected: &[f64]) -> (f64, usize) {
    let n: u64 = counts.iter().sum();
    let (mut chi, mut cells) = (0.0, 0usize);
    let (mut pooled_o, mut pooled_e) = (0.0, 0.0);
    for (&o, &p) in counts.iter().zip(expected) {
        let e = p * n as f64;
        if e < 5.0 {
            pooled_o += o as f64;
            pooled_e += e;
        } else {
            chi += (o as f64 - e).powi(2) / e;
            cells += 1;
        }
    }
    if pooled_e > 0.0 {
        chi += (pooled_o - pooled_e).powi(2) / pooled_e.max(1e-9);
        cells += 1;
    }
    (chi, cells.saturating_sub(1))
}

/// The χ² value a correct sampler exceeds with probability 0.001, for `dof` degrees of freedom
/// (Wilson–Hilferty).
fn chi_square_critical(dof: usize) -> f64 {
    let k = dof as f64;
    let z = 3.090_232; // the normal's 0.999 quantile
    k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3)
}

/// A toy language over 6 tokens: the next token's distribution depends on the last one. The
/// target and the draft disagree a lot, so that rejections are common.
fn toy(table: &[[f32; 6]; 6], last: u32) -> Vec<f32> {
    table[last as usize].to_vec()
}

const P: [[f32; 6]; 6] = [
    [0.05, 0.40, 0.10, 0.30, 0.05, 0.10],
    [0.50, 0.05, 0.05, 0.10, 0.20, 0.10],
    [0.10, 0.10, 0.60, 0.05, 0.05, 0.10],
    [0.30, 0.30, 0.05, 0.05, 0.25, 0.05],
    [0.05, 0.05, 0.10, 0.10, 0.10, 0.60],
    [0.20, 0.20, 0.20, 0.20, 0.10, 0.10],
];
const Q: [[f32; 6]; 6] = [
    [0.40, 0.10, 0.30, 0.05, 0.10, 0.05],
    [0.10, 0.30, 0.30, 0.10, 0.10, 0.10],
    [0.10, 0.50, 0.10, 0.10, 0.10, 0.10],
    [0.05, 0.60, 0.05, 0.10, 0.10, 0.10],
    [0.30, 0.05, 0.05, 0.05, 0.05, 0.50],
    [0.05, 0.05, 0.60, 0.10, 0.10, 0.10],
];

/// The first two tokens after token 0, decoded speculatively with drafts of `k` tokens from
/// the toy draft (or the one-hot draft "always 2" when `one_hot`), `n` times.
fn two_tokens(
    n: usize,
    k: usize,
    one_hot: bool,
    on_reject: fn(&[f32], &[f32]) -> Vec<f32>,
) -> (Vec<u64>, Vec<u64>) {
    let mut rng = Rng::new(7);
    let (mut first, mut second) = (vec![0u64; 6], vec![0u64; 6]);
    for _ in 0..n {
        let mut out: Vec<u32> = Vec::new();
        let mut last = 0u32;
        while out.len() < 2 {
            let mut draft = Draft::default();
            let mut q_rows = Vec::new();
            let mut prev = last;
            for _ in 0..k {
                let t = if one_hot {
                    2
                } else {
                    let q = toy(&Q, prev);
                    let t = draw(&q, rng.next_f32());
                    q_rows.push(q);
                    t
                };
                draft.tokens.push(t);
                prev = t;
            }
            if !one_hot {
                draft.q = Some(q_rows);
            }
            let p: Vec<Vec<f32>> = std::iter::once(last)
                .chain(draft.tokens.iter().copied())
                .map(|t| toy(&P, t))
                .collect();
            let v = verify_sampled_with(&draft, &p, &mut rng, on_reject);
            out.extend_from_slice(&draft.tokens[..v.accepted]);
            out.push(v.next);
            last = *out.last().unwrap();
        }
        first[out[0] as usize] += 1;
        second[out[1] as usize] += 1;
    }
    (first, second)
}

/// Exact distributions of the first two tokens after token 0 under plain sampling from P.
fn plain_two_tokens() -> (Vec<f64>, Vec<f64>) {
    let first: Vec<f64> = P[0].iter().map(|&p| f64::from(p)).collect();
    let mut second = vec![0.0; 6];
    for (a, &pa) in first.iter().enumerate() {
        for (b, &pb) in P[a].iter().enumerate() {
            second[b] += pa * f64::from(pb);
        }
    }
    (first, second)
}

#[test]
fn speculative_sampling_has_plain_samplings_distribution_at_the_first_and_second_token() {
    let (e1, e2) = plain_two_tokens();
    for (k, one_hot) in [(1, false), (3, false), (3, true)] {
        let (c1, c2) = two_tokens(20_000, k, one_hot, residual);
        for (what, c, e) in [("first", &c1, &e1), ("second", &c2, &e2)] {
            let (chi, dof) = chi_square(c, e);
            eprintln!(
                "k = {k}, one-hot {one_hot}, {what} token: χ² = {chi:.1} on {dof} dof, counts {c:?}"
            );
            assert!(
                chi < chi_square_critical(dof),
                "k = {k}, {what}: χ² {chi:.1}"
            );
        }
    }
}

#[test]
fn the_test_fails_when_the_residual_rule_is_broken() {
    // Drawing the replacement from p itself counts p's favourite tokens twice.
    fn from_p(p: &[f32], _q: &[f32]) -> Vec<f32> {
        p.to_vec()
    }
    let (e1, e2) = plain_two_tokens();
    for one_hot in [false, true] {
        let (c1, c2) = two_tokens(20_000, 3, one_hot, from_p);
        let (chi1, dof1) = chi_square(&c1, &e1);
        let (chi2, dof2) = chi_square(&c2, &e2);
        eprintln!("broken rule, one-hot {one_hot}: χ² {chi1:.1} and {chi2:.1}");
        assert!(
            chi1 > chi_square_critical(dof1) && chi2 > chi_square_critical(dof2),
            "the broken rule went unnoticed: χ² {chi1:.1}, {chi2:.1}"
        );
    }
}

#[test]
fn greedy_verification_stops_at_the_first_disagreement() {
    let rows: Vec<Vec<f32>> = vec![
        vec![0.0, 1.0, 0.0],
        vec![0.0, 0.0, 1.0],
        vec![1.0, 0.0, 0.0],
        vec![0.0, 0.0, 2.0],
    ];
    let rows: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
    assert_eq!(
        verify_greedy(&[1, 2, 0], &rows),
        Verdict {
            accepted: 3,
            next: 2
        },
        "all stand, and the bonus token"
    );
    assert_eq!(
        verify_greedy(&[1, 0, 0], &rows),
        Verdict {
            accepted: 1,
            next: 2
        }
    );
    assert_eq!(
        verify_greedy(&[], &rows[..1]),
        Verdict {
            accepted: 0,
            next: 1
        },
        "no draft is a plain decode step"
    );
}

#[test]
fn the_distribution_is_what_the_sampler_draws_from() {
    let logits: Vec<f32> = (0..40)
        .map(|i| ((i * 37 % 11) as f32) * 0.3 - 1.0)
        .collect();
    let history = [3, 5, 5, 9];
    for params in [
        SamplingParams {
            temperature: 0.8,
            ..Default::default()
        },
        SamplingParams {
            temperature: 1.3,
            top_k: 7,
            top_p: 0.9,
            repetition_penalty: 1.3,
            ..Default::default()
        },
        SamplingParams {
            temperature: 0.5,
            min_p: 0.2,
            frequency_penalty: 0.5,
            ..Default::default()
        },
    ] {
        let dist = distribution(&params, &logits, &history);
        let total: f32 = dist.iter().sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
        let mut sampler = Sampler::new(params.clone());
        let n = 20_000;
        let mut counts = vec![0u64; logits.len()];
        for _ in 0..n {
            let t = sampler.sample(&mut logits.clone(), &history);
            counts[t as usize] += 1;
            assert!(
                dist[t as usize] > 0.0,
                "drew token {t}, outside the distribution"
            );
        }
        let expected: Vec<f64> = dist.iter().map(|&p| f64::from(p)).collect();
        let (chi, dof) = chi_square(&counts, &expected);
        assert!(chi < chi_square_critical(dof), "{params:?}: χ² {chi:.1}");
    }
    let greedy = distribution(&SamplingParams::default(), &logits, &[]);
    assert_eq!(greedy.iter().filter(|&&p| p == 1.0).count(), 1);
}

#[test]
fn the_residual_has_mass_only_where_the_target_wants_more() {
    let r = residual(&[0.5, 0.3, 0.2], &[0.2, 0.6, 0.2]);
    assert_eq!(r, vec![1.0, 0.0, 0.0]);
    // One-hot q on token 1: p with that token removed.
    let r = residual(&[0.5, 0.3, 0.2], &[0.0, 1.0, 0.0]);
    assert!((r[0] - 5.0 / 7.0).abs() < 1e-6 && r[1] == 0.0 && (r[2] - 2.0 / 7.0).abs() < 1e-6);
}
