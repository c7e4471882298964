//! Calibration-like inputs for the solver's tests: tokens whose channels mix a few shared
//! factors (as a layer's inputs do) plus noise, every 7th channel five times louder.

use crate::sampling::Rng;

/// `tokens` rows of `cols` floats.
pub fn correlated(tokens: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let factors: Vec<f32> = (0..6 * cols).map(|_| rng.next_f32() - 0.5).collect();
    (0..tokens)
        .flat_map(|_| {
            let mix: Vec<f32> = (0..6).map(|_| rng.next_f32() - 0.5).collect();
            (0..cols)
                .map(|c| {
                    let loud = if c % 7 == 0 { 5.0 } else { 1.0 };
                    let noise = 0.2 * (rng.next_f32() - 0.5);
                    loud * (noise + (0..6).map(|f| mix[f] * factors[f * cols + c]).sum::<f32>())
                })
                .collect::<Vec<f32>>()
        })
        .collect()
}

/// `Σ_t (x_t · (w − ŵ))²` over the rows of `x`.
pub fn output_error(x: &[f32], w: &[f32], w_hat: &[f32]) -> f64 {
    let cols = w.len();
    x.chunks_exact(cols)
        .map(|t| {
            let d: f64 = t
                .iter()
                .zip(w.iter().zip(w_hat))
                .map(|(x, (a, b))| f64::from(*x) * f64::from(a - b))
                .sum();
            d * d
        })
        .sum()
}

/// Uniform weights in [−0.5, 0.5).
pub fn weights(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.next_f32() - 0.5).collect()
}
