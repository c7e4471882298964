//! SparseGPT (Frantar & Alistarh 2023): prune, then repair. Magnitude and Wanda only choose
//! which weights to zero; SparseGPT also moves the weights it keeps so that the layer's output
//! on the calibration inputs changes as little as possible — the same OBS sweep GPTQ rounds
//! with ([`crate::obs`]), deciding "keep or zero" where GPTQ decides "which level".
//!
//! Which weights go is chosen as the sweep reaches each block of [`MASK_BLOCK`] columns, from
//! the weights as earlier repairs left them, by the OBS score `w² / U[j,j]²` (the output error
//! that zeroing `w` alone would cost). SparseGPT takes one threshold over a block of all rows;
//! we take the lowest of each row, as Wanda does, so that every output keeps the same share
//! of its inputs and rows stay independent. For `n:m` the choice is made per group of `m`.

use super::mask::Pattern;
use crate::obs::{InverseFactor, sweep_row};

/// Columns whose pruning mask is chosen together (SparseGPT's block size).
pub const MASK_BLOCK: usize = 128;

/// Which columns of `row[from..to]` to zero: the `drop` lowest by `w² / U[j,j]²`.
fn lowest(f: &InverseFactor, row: &[f32], from: usize, to: usize, drop: usize) -> Vec<bool> {
    let score = |j: usize| (row[j] / f.diag(j)).powi(2);
    let mut order: Vec<usize> = (from..to).collect();
    order.sort_by(|&a, &b| score(a).total_cmp(&score(b)).then(a.cmp(&b)));
    let mut zero = vec![false; to - from];
    for &j in &order[..drop.min(order.len())] {
        zero[j - from] = true;
    }
    zero
}

// ANCHOR: sparsegpt_row
/// Prunes row `w` to `pattern` with OBS repair; returns the number of zeroed weights and the
/// row's loss.
pub fn sparsegpt_row(f: &InverseFactor, w: &mut [f32], pattern: Pattern) -> (usize, f64) {
    let cols = w.len();
    let (span, share) = match pattern {
        Pattern::Unstructured(s) => (MASK_BLOCK, s.clamp(0.0, 1.0)),
        Pattern::NOfM { n, m } => (m, n as f32 / m as f32),
    };
    let mut zero: Vec<bool> = vec![];
    let mut zeroed = 0;
    let loss = sweep_row(f, w, &mut |j, row| {
        if j % span == 0 {
            let to = (j + span).min(cols);
            let drop = match pattern {
                Pattern::Unstructured(_) => (share * (to - j) as f32).round() as usize,
                // A last group shorter than m drops its share, rounded down (as `prune_rows`).
                Pattern::NOfM { n, m } => n * (to - j) / m,
            };
            zero = lowest(f, row, j, to, drop);
        }
        if zero[j % span] {
            zeroed += 1;
            0.0
        } else {
            row[j]
        }
    });
    (zeroed, loss)
}
// ANCHOR_END: sparsegpt_row

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::pool::ThreadPool;
    use crate::obs::Hessian;
    use crate::obs::test_inputs::{correlated as inputs, output_error};
    use crate::prune::mask::{Method, prune_rows, scores};
    use crate::sampling::Rng;

    #[test]
    fn sparsegpt_zeroes_the_share_asked_and_beats_wanda_on_the_layer_output() {
        let pool = ThreadPool::new(2);
        for (cols, seed) in [(64, 1), (160, 2), (300, 3)] {
            let x = inputs(3 * cols, cols, seed);
            let mut h = Hessian::new(cols);
            h.add(&pool, &x);
            let f = h.inverse_factor(&pool, 0.01).unwrap();
            let norms: Vec<f32> = (0..cols)
                .map(|c| {
                    x.chunks_exact(cols)
                        .map(|t| t[c] * t[c])
                        .sum::<f32>()
                        .sqrt()
                })
                .collect();
            let mut rng = Rng::new(seed + 9);
            for pattern in [
                Pattern::Unstructured(0.5),
                Pattern::Unstructured(0.7),
                Pattern::NOfM { n: 2, m: 4 },
            ] {
                let (mut ours, mut wanda) = (0.0, 0.0);
                for _ in 0..6 {
                    let w: Vec<f32> = (0..cols).map(|_| rng.next_f32() - 0.5).collect();
                    let mut pruned = w.clone();
                    let (zeroed, _) = sparsegpt_row(&f, &mut pruned, pattern);
                    let zeros = pruned.iter().filter(|v| **v == 0.0).count();
                    assert_eq!(zeros, zeroed);
                    let mut by_wanda = w.clone();
                    let expect = prune_rows(
                        &mut by_wanda,
                        &scores(Method::Wanda, &w, cols, Some(&norms)),
                        cols,
                        pattern,
                    );
                    // The same share, up to rounding per block of 128.
                    assert!(
                        zeroed.abs_diff(expect) <= cols.div_ceil(MASK_BLOCK),
                        "{cols} {pattern:?}: {zeroed} vs {expect}"
                    );
                    if let Pattern::NOfM { n, m } = pattern {
                        for g in pruned.chunks(m) {
                            let z = g.iter().filter(|v| **v == 0.0).count();
                            assert!(z >= n * g.len() / m, "{g:?}");
                        }
                    }
                    ours += output_error(&x, &w, &pruned);
                    wanda += output_error(&x, &w, &by_wanda);
                }
                println!("cols {cols} {pattern:?}: SparseGPT {ours:.3}, Wanda {wanda:.3}");
                assert!(ours < wanda, "cols {cols} {pattern:?}: {ours} vs {wanda}");
            }
        }
    }
}
