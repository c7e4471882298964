//! The OBS sweep of one row, and rows in parallel.

use super::cholesky::InverseFactor;
use crate::kernels::pool::ThreadPool;
use std::sync::Mutex;

crate::multiversion! {
/// `w −= e · u` (the same length).
fn axpy(e: f32, u: &[f32], w: &mut [f32]) {
    for (x, &v) in w.iter_mut().zip(u) {
        *x = (-e).mul_add(v, *x);
    }
}
}

// ANCHOR: sweep
/// Fixes the columns of row `w` in order: `decide(j, w)` returns the value column `j` gets,
/// seeing the row as the earlier columns' updates left it; the difference is spread over the
/// columns after `j` (OBS). Dead channels are zeroed first. Returns the row's loss
/// `Σ e²/2`, the rise of its output's squared error over the calibration tokens (÷ N).
pub fn sweep_row(
    f: &InverseFactor,
    w: &mut [f32],
    decide: &mut dyn FnMut(usize, &[f32]) -> f32,
) -> f64 {
    assert_eq!(w.len(), f.n, "a row of the factor's width");
    for (x, &dead) in w.iter_mut().zip(&f.dead) {
        if dead {
            *x = 0.0;
        }
    }
    let mut loss = 0.0;
    for j in 0..f.n {
        let q = decide(j, w);
        let u = f.row(j); // U[j, j..]
        let e = (w[j] - q) / u[0];
        w[j] = q;
        if e != 0.0 {
            axpy(e, &u[1..], &mut w[j + 1..]);
            loss += f64::from(e) * f64::from(e) / 2.0;
        }
    }
    loss
}
// ANCHOR_END: sweep

/// Runs `per_row(r, row)` on every row of `w` (`cols` wide), rows split over `pool`; returns
/// the sum of what the calls return.
pub fn par_rows(
    pool: &ThreadPool,
    w: &mut [f32],
    cols: usize,
    per_row: &(dyn Fn(usize, &mut [f32]) -> f64 + Sync),
) -> f64 {
    let rows = w.len() / cols;
    let per_task = rows.div_ceil(8 * pool.n_threads()).max(1);
    let tasks: Vec<Mutex<(&mut [f32], f64)>> = w
        .chunks_mut(per_task * cols)
        .map(|c| Mutex::new((c, 0.0)))
        .collect();
    pool.run(tasks.len(), &|t| {
        let mut task = tasks[t].lock().unwrap_or_else(|e| e.into_inner());
        let (chunk, total) = &mut *task;
        for (i, row) in chunk.chunks_exact_mut(cols).enumerate() {
            *total += per_row(t * per_task + i, row);
        }
    });
    tasks
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()).1)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obs::Hessian;
    use crate::obs::test_inputs::{correlated as inputs, output_error, weights as random};

    #[test]
    fn the_sweep_loss_is_the_output_error_it_causes() {
        // Without damping the reported loss is exactly ½ · 2/N · ‖X(w − ŵ)‖².
        let pool = ThreadPool::new(2);
        let (tokens, cols) = (200, 24);
        let x = inputs(tokens, cols, 5);
        let mut h = Hessian::new(cols);
        h.add(&pool, &x);
        let f = h.inverse_factor(&pool, 0.0).unwrap();
        let w = random(cols, 9);
        let mut swept = w.clone();
        // Zero every third column.
        let loss = sweep_row(&f, &mut swept, &mut |j, row| {
            if j % 3 == 0 { 0.0 } else { row[j] }
        });
        for j in (0..cols).step_by(3) {
            assert_eq!(swept[j], 0.0);
        }
        let err = output_error(&x, &w, &swept) / tokens as f64;
        assert!((loss - err).abs() < 1e-3 * (1.0 + err), "{loss} vs {err}");
    }

    #[test]
    fn spreading_the_error_beats_dropping_it() {
        // The same columns zeroed, with and without the OBS update of the others. Summed over
        // rows, not row by row: with a mask fixed in advance, part of a column's repair lands
        // on columns zeroed later and is lost, so a single row can come out slightly worse.
        let pool = ThreadPool::new(2);
        let (tokens, cols) = (300, 32);
        let x = inputs(tokens, cols, 11);
        let mut h = Hessian::new(cols);
        h.add(&pool, &x);
        let f = h.inverse_factor(&pool, 0.01).unwrap();
        let (mut obs_total, mut plain_total) = (0.0, 0.0);
        for seed in 0..5 {
            let w = random(cols, 100 + seed);
            let mut swept = w.clone();
            sweep_row(&f, &mut swept, &mut |j, row| {
                if j % 2 == 0 { 0.0 } else { row[j] }
            });
            let dropped: Vec<f32> = w
                .iter()
                .enumerate()
                .map(|(j, &v)| if j % 2 == 0 { 0.0 } else { v })
                .collect();
            let (obs, plain) = (output_error(&x, &w, &swept), output_error(&x, &w, &dropped));
            println!("seed {seed}: output error with OBS {obs:.3}, dropped {plain:.3}");
            obs_total += obs;
            plain_total += plain;
        }
        assert!(
            obs_total < 0.8 * plain_total,
            "OBS {obs_total} vs plain {plain_total}"
        );
    }

    #[test]
    fn rows_in_parallel_are_rows_one_by_one() {
        let pool = ThreadPool::new(2);
        let cols = 16;
        let x = inputs(100, cols, 3);
        let mut h = Hessian::new(cols);
        h.add(&pool, &x);
        let f = h.inverse_factor(&pool, 0.01).unwrap();
        let w = random(37 * cols, 4);
        let rule = |j: usize, row: &[f32]| (row[j] * 4.0).round() / 4.0;
        let mut par = w.clone();
        let total = par_rows(&pool, &mut par, cols, &|_, row| {
            sweep_row(&f, row, &mut |j, r| rule(j, r))
        });
        let mut one = w.clone();
        let mut sum = 0.0;
        for row in one.chunks_exact_mut(cols) {
            sum += sweep_row(&f, row, &mut |j, r| rule(j, r));
        }
        assert_eq!(par, one);
        assert!((total - sum).abs() < 1e-9 * (1.0 + sum));
    }
}
