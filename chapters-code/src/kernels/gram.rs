//! f32 products whose operands are both read along rows: `C = A · Bᵀ`, i.e.
//! `C[i][j] = Σ_t A[i][t] · B[j][t]` with `A` (m × k), `B` (n × k) and `C` (m × n), all
//! row-major. With `A = B = Xᵀ` (one row per input channel, one column per token) it is the
//! Gram matrix `XᵀX` that GPTQ and SparseGPT build their Hessians from.
//!
//! Two versions, tested against each other: [`a_bt_naive`] (one dot product per output) and
//! [`a_bt`], which computes register tiles of 2 rows of A × 4 rows of B — each loaded vector
//! of A meets four of B, so a step of 8 lanes does 8 fused multiply-adds for 6 loads instead
//! of 1 for 2 — and splits the tiles' rows over the thread pool. Both use `mul_add`, so
//! they agree to the summation order only (tiles sum in 8 lanes, then across them).

use super::pool::ThreadPool;
use std::sync::Mutex;

/// Lanes of one accumulator (an AVX2 register of f32).
const LANES: usize = 8;

/// `C = A · Bᵀ`, one dot product per output, summed in order: the reference.
pub fn a_bt_naive(a: &[f32], b: &[f32], k: usize, out: &mut [f32]) {
    let n = b.len() / k.max(1);
    for (i, row) in a.chunks_exact(k).enumerate() {
        for (j, col) in b.chunks_exact(k).enumerate() {
            out[i * n + j] = row.iter().zip(col).fold(0.0, |s, (x, y)| x.mul_add(*y, s));
        }
    }
}

/// `acc += x · y`, lane by lane.
#[inline(always)]
fn fma8(acc: &mut [f32; LANES], x: &[f32; LANES], y: &[f32; LANES]) {
    for l in 0..LANES {
        acc[l] = x[l].mul_add(y[l], acc[l]);
    }
}

crate::multiversion! {
/// The 2 × 4 tile `[a0, a1] · [b0..b3]ᵀ`, each a row of `k` floats: eight accumulators of
/// 8 lanes, which stay in registers.
fn tile_2x4(a0: &[f32], a1: &[f32], b: [&[f32]; 4], k: usize) -> [[f32; 4]; 2] {
    let lanes = |x: &[f32], t: usize| -> [f32; LANES] {
        let mut v = [0.0f32; LANES];
        v.copy_from_slice(&x[t..t + LANES]);
        v
    };
    let (mut c00, mut c01, mut c02, mut c03) = ([0.0f32; LANES], [0.0; LANES], [0.0; LANES], [0.0; LANES]);
    let (mut c10, mut c11, mut c12, mut c13) = ([0.0f32; LANES], [0.0; LANES], [0.0; LANES], [0.0; LANES]);
    let whole = k / LANES * LANES;
    let [b0, b1, b2, b3] = b;
    let (a0w, a1w) = (&a0[..whole], &a1[..whole]);
    let (b0w, b1w, b2w, b3w) = (&b0[..whole], &b1[..whole], &b2[..whole], &b3[..whole]);
    for t in (0..whole).step_by(LANES) {
        let (x0, x1) = (lanes(a0w, t), lanes(a1w, t));
        let y = lanes(b0w, t);
        fma8(&mut c00, &x0, &y);
        fma8(&mut c10, &x1, &y);
        let y = lanes(b1w, t);
        fma8(&mut c01, &x0, &y);
        fma8(&mut c11, &x1, &y);
        let y = lanes(b2w, t);
        fma8(&mut c02, &x0, &y);
        fma8(&mut c12, &x1, &y);
        let y = lanes(b3w, t);
        fma8(&mut c03, &x0, &y);
        fma8(&mut c13, &x1, &y);
    }
    let acc = [[c00, c01, c02, c03], [c10, c11, c12, c13]];
    let mut out = [[0.0f32; 4]; 2];
    for r in 0..2 {
        let a = if r == 0 { a0 } else { a1 };
        for c in 0..4 {
            let mut s = acc[r][c].iter().sum::<f32>();
            for t in whole..k {
                s = a[t].mul_add(b[c][t], s);
            }
            out[r][c] = s;
        }
    }
    out
}
}

/// Row `i` of a matrix `k` wide.
fn row(x: &[f32], k: usize, i: usize) -> &[f32] {
    &x[i * k..(i + 1) * k]
}

/// `C = A · Bᵀ` in register tiles, rows of `C` split over `pool`. With `upper` (square `C`,
/// `A = B`), only the tiles on or above the diagonal are computed and mirrored below it: a
/// Gram matrix is symmetric, so half the work gives all of it.
pub fn a_bt(pool: &ThreadPool, a: &[f32], b: &[f32], k: usize, out: &mut [f32], upper: bool) {
    assert!(k > 0 && a.len().is_multiple_of(k) && b.len().is_multiple_of(k));
    let (m, n) = (a.len() / k, b.len() / k);
    assert_eq!(out.len(), m * n, "C is m × n");
    assert!(!upper || (m == n && a == b), "upper: C = A · Aᵀ");
    // Tasks of 2 rows of C (one tile row); a last odd row pairs with itself.
    let rows_of = |i: usize| (i, (i + 1).min(m - 1));
    let tasks: Vec<Mutex<&mut [f32]>> = out.chunks_mut(2 * n).map(Mutex::new).collect();
    pool.run(tasks.len(), &|task| {
        let mut c = tasks[task].lock().unwrap_or_else(|e| e.into_inner());
        let (i0, i1) = rows_of(2 * task);
        let first = if upper { 2 * task / 4 * 4 } else { 0 };
        for j in (first..n).step_by(4) {
            let js = [
                j,
                (j + 1).min(n - 1),
                (j + 2).min(n - 1),
                (j + 3).min(n - 1),
            ];
            let tile = tile_2x4(row(a, k, i0), row(a, k, i1), js.map(|j| row(b, k, j)), k);
            for (r, tile_row) in tile.iter().enumerate() {
                if 2 * task + r >= m {
                    break;
                }
                for (cc, &v) in tile_row.iter().enumerate() {
                    if j + cc < n {
                        c[r * n + j + cc] = v;
                    }
                }
            }
        }
    });
    drop(tasks);
    if upper {
        // Every row computed at least the columns from its own on: copy them below.
        for i in 1..m {
            for j in 0..i {
                out[i * n + j] = out[j * n + i];
            }
        }
    }
}

/// The Gram matrix of `x` (`tokens` rows of `width` floats): `G = XᵀX`, `width × width`.
/// Transposes `x` once so that both operands of [`a_bt`] run along memory.
pub fn gram(pool: &ThreadPool, x: &[f32], width: usize) -> Vec<f32> {
    let tokens = x.len() / width;
    let mut xt = vec![0.0f32; x.len()];
    for (t, row) in x.chunks_exact(width).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            xt[c * tokens + t] = v;
        }
    }
    let mut g = vec![0.0f32; width * width];
    if tokens > 0 {
        a_bt(pool, &xt, &xt, tokens, &mut g, true);
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::Rng;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
    }

    #[test]
    fn tiles_match_one_dot_product_per_output() {
        let pool = ThreadPool::new(2);
        for (m, n, k) in [(1, 1, 1), (2, 4, 8), (3, 5, 7), (7, 9, 33), (16, 12, 100)] {
            let (a, b) = (random(m * k, 1), random(n * k, 2));
            let mut fast = vec![0.0; m * n];
            let mut slow = vec![0.0; m * n];
            a_bt(&pool, &a, &b, k, &mut fast, false);
            a_bt_naive(&a, &b, k, &mut slow);
            for (f, s) in fast.iter().zip(&slow) {
                assert!(
                    (f - s).abs() <= 1e-5 * (1.0 + s.abs()),
                    "{m}×{n}×{k}: {f} vs {s}"
                );
            }
        }
    }

    #[test]
    fn the_upper_half_mirrored_is_the_whole_gram_matrix() {
        let pool = ThreadPool::new(2);
        for (tokens, width) in [(1, 1), (5, 3), (40, 9), (64, 17), (33, 64)] {
            let x = random(tokens * width, 3);
            let g = gram(&pool, &x, width);
            for i in 0..width {
                for j in 0..width {
                    let want: f32 = (0..tokens)
                        .map(|t| x[t * width + i] * x[t * width + j])
                        .sum();
                    let got = g[i * width + j];
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{tokens}×{width} [{i},{j}]: {got} vs {want}"
                    );
                    assert_eq!(got, g[j * width + i], "symmetric");
                }
            }
        }
    }
}
