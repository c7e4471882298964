//! Which weights of a matrix to remove. A matrix is `rows × cols`, row-major, one row per
//! output: `y[r] = Σ_c W[r, c] · x[c]`. Every method ranks the weights of each output row by a
//! score and zeroes the lowest; only the score differs:
//! - magnitude: `|W[r, c]|`;
//! - Wanda (Sun et al. 2023): `|W[r, c]| · ‖X_c‖₂`, the weight times the norm of its input
//!   channel over calibration tokens — a small weight on a channel that carries large
//!   activations still matters.
//!
//! Ranking within each row (Wanda's choice) keeps every output with the same share of its
//! inputs; the two methods are compared with that choice alike.

/// How a weight's importance is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Magnitude,
    Wanda,
    /// Pruned and repaired with the inputs' Hessians ([`super::sparsegpt`]); its mask is not a
    /// score of the original weights, so [`scores`] treats it as magnitude.
    SparseGpt,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::Magnitude, Method::Wanda, Method::SparseGpt];

    pub fn name(self) -> &'static str {
        match self {
            Method::Magnitude => "magnitude",
            Method::Wanda => "Wanda",
            Method::SparseGpt => "SparseGPT",
        }
    }

    /// Parses a name as [`Method::name`] prints it (case-insensitive).
    pub fn parse(name: &str) -> Option<Method> {
        Method::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }
}

/// Which weights of a row may be removed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pattern {
    /// The given fraction (0 to 1) of each row, wherever they are.
    Unstructured(f32),
    /// `n` of every `m` consecutive weights of a row (2:4 is what sparse tensor cores run).
    NOfM { n: usize, m: usize },
}

impl Pattern {
    /// The fraction of weights removed.
    pub fn sparsity(self) -> f32 {
        match self {
            Pattern::Unstructured(s) => s,
            Pattern::NOfM { n, m } => n as f32 / m as f32,
        }
    }

    pub fn label(self) -> String {
        match self {
            Pattern::Unstructured(s) => format!("{:.0}%", 100.0 * s),
            Pattern::NOfM { n, m } => format!("{}:{m}", m - n),
        }
    }
}

/// The score of every weight: `|W|`, times the input channel's norm for Wanda.
/// `col_norms` has `cols` entries, ‖X_c‖₂ over the calibration tokens (needed for Wanda).
pub fn scores(method: Method, w: &[f32], cols: usize, col_norms: Option<&[f32]>) -> Vec<f32> {
    match (method, col_norms) {
        (Method::Wanda, Some(norms)) => {
            assert_eq!(norms.len(), cols, "one norm per input channel");
            w.chunks_exact(cols)
                .flat_map(|row| row.iter().zip(norms).map(|(x, n)| x.abs() * n))
                .collect()
        }
        _ => w.iter().map(|x| x.abs()).collect(),
    }
}

/// Orders two weights of a row by score, then by column: ties break the same way everywhere.
fn lower(scores: &[f32], a: usize, b: usize) -> std::cmp::Ordering {
    scores[a].total_cmp(&scores[b]).then(a.cmp(&b))
}

// ANCHOR: prune_rows
/// Zeroes, in every row of `w` (`cols` wide), the weights `pattern` removes: the lowest-scoring
/// ones (`scores` is laid out like `w`). Returns the number of weights zeroed.
pub fn prune_rows(w: &mut [f32], scores: &[f32], cols: usize, pattern: Pattern) -> usize {
    assert_eq!(w.len(), scores.len(), "a score per weight");
    let mut zeroed = 0;
    for (row, score) in w.chunks_exact_mut(cols).zip(scores.chunks_exact(cols)) {
        match pattern {
            Pattern::Unstructured(s) => {
                let drop = ((s.clamp(0.0, 1.0) * cols as f32).round() as usize).min(cols);
                if drop == 0 {
                    continue;
                }
                // Partial selection: the `drop` lowest, in any order (O(cols), not a sort).
                let mut order: Vec<usize> = (0..cols).collect();
                if drop < cols {
                    order.select_nth_unstable_by(drop - 1, |&a, &b| lower(score, a, b));
                }
                for &c in &order[..drop] {
                    row[c] = 0.0;
                }
                zeroed += drop;
            }
            Pattern::NOfM { n, m } => {
                for g in (0..cols).step_by(m) {
                    let mut order: Vec<usize> = (g..(g + m).min(cols)).collect();
                    order.sort_by(|&a, &b| lower(score, a, b));
                    // A last group shorter than m drops its share, rounded down.
                    let drop = n * order.len() / m;
                    for &c in &order[..drop] {
                        row[c] = 0.0;
                    }
                    zeroed += drop;
                }
            }
        }
    }
    zeroed
}
// ANCHOR_END: prune_rows

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::Rng;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
    }

    /// The plain version: sort each row's columns by score and zero the first `drop`.
    fn naive(w: &[f32], scores: &[f32], cols: usize, sparsity: f32) -> Vec<f32> {
        let mut out = w.to_vec();
        let drop = (sparsity * cols as f32).round() as usize;
        for (row, score) in out.chunks_exact_mut(cols).zip(scores.chunks_exact(cols)) {
            let mut order: Vec<usize> = (0..cols).collect();
            order.sort_by(|&a, &b| score[a].total_cmp(&score[b]).then(a.cmp(&b)));
            for &c in &order[..drop] {
                row[c] = 0.0;
            }
        }
        out
    }

    #[test]
    fn unstructured_pruning_matches_sorting_each_row() {
        for (rows, cols, seed) in [(1, 1, 1), (3, 7, 2), (16, 64, 3), (5, 576, 4)] {
            let mut w = random(rows * cols, seed);
            // Ties: quantized weights repeat values.
            for x in w.iter_mut().step_by(3) {
                *x = (*x * 4.0).round() / 4.0;
            }
            let norms: Vec<f32> = random(cols, seed + 10).iter().map(|x| x.abs()).collect();
            for method in [Method::Magnitude, Method::Wanda] {
                let s = scores(method, &w, cols, Some(&norms));
                for sparsity in [0.0, 0.1, 0.5, 0.7, 1.0] {
                    let mut fast = w.clone();
                    let zeroed = prune_rows(&mut fast, &s, cols, Pattern::Unstructured(sparsity));
                    assert_eq!(
                        fast,
                        naive(&w, &s, cols, sparsity),
                        "{rows}×{cols} {sparsity}"
                    );
                    assert_eq!(zeroed, rows * (sparsity * cols as f32).round() as usize);
                }
            }
        }
    }

    #[test]
    fn wanda_keeps_a_small_weight_on_a_loud_channel_that_magnitude_drops() {
        // One row: weight 0.1 on a channel of norm 100, weight 1.0 on a channel of norm 1.
        let w = [0.1, 1.0];
        let norms = [100.0, 1.0];
        let mut by_magnitude = w;
        prune_rows(
            &mut by_magnitude,
            &scores(Method::Magnitude, &w, 2, Some(&norms)),
            2,
            Pattern::Unstructured(0.5),
        );
        assert_eq!(by_magnitude, [0.0, 1.0]);
        let mut by_wanda = w;
        prune_rows(
            &mut by_wanda,
            &scores(Method::Wanda, &w, 2, Some(&norms)),
            2,
            Pattern::Unstructured(0.5),
        );
        assert_eq!(by_wanda, [0.1, 0.0]);
    }

    #[test]
    fn two_of_four_keeps_the_two_largest_of_every_group() {
        let cols = 10; // two whole groups and a last one of 2
        let w = random(3 * cols, 7);
        let s = scores(Method::Magnitude, &w, cols, None);
        let mut pruned = w.clone();
        let zeroed = prune_rows(&mut pruned, &s, cols, Pattern::NOfM { n: 2, m: 4 });
        assert_eq!(zeroed, 3 * (2 + 2 + 1));
        for (row, orig) in pruned.chunks_exact(cols).zip(w.chunks_exact(cols)) {
            for (group, g_orig) in row.chunks(4).zip(orig.chunks(4)) {
                let kept: Vec<f32> = group.iter().copied().filter(|x| *x != 0.0).collect();
                assert_eq!(kept.len(), g_orig.len() - 2 * g_orig.len() / 4);
                let smallest_kept = kept.iter().map(|x| x.abs()).fold(f32::MAX, f32::min);
                let largest_dropped = g_orig
                    .iter()
                    .filter(|x| !group.contains(x))
                    .map(|x| x.abs())
                    .fold(0.0, f32::max);
                assert!(largest_dropped <= smallest_kept);
            }
        }
        assert_eq!(Pattern::NOfM { n: 2, m: 4 }.label(), "2:4");
        assert_eq!(Pattern::NOfM { n: 2, m: 4 }.sparsity(), 0.5);
    }
}
