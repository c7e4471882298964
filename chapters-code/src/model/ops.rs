//! The small operations between the matrix products, written to match GGML's CPU code
//! (same formulas, same order of rounding where it matters).

// ANCHOR: rmsnorm
/// RMSNorm of each `dim`-long row of `x` into `out`: x / sqrt(mean(x²) + eps) · weight.
/// The sum of squares is taken in f64, as GGML does.
pub fn rmsnorm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let dim = weight.len();
    for (row, out) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let sum: f64 = row.iter().map(|&v| f64::from(v * v)).sum();
        let mean = (sum / dim as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for ((o, &v), &w) in out.iter_mut().zip(row).zip(weight) {
            *o = (v * scale) * w;
        }
    }
}
// ANCHOR_END: rmsnorm

// ANCHOR: rope
crate::multiversion! {
/// Rotary position embedding, GGUF's Llama layout: within each head, dimension pairs
/// (0,1), (2,3), … are rotated by angle pos · θ^(−2i/rope_dims). `x` holds rows of
/// `n_heads × head_dim`, row t at position `positions[t]`. Dimensions past `rope_dims` are
/// left as they are.
pub fn rope(x: &mut [f32], positions: &[usize], n_heads: usize, head_dim: usize, rope_dims: usize, theta: f32) {
    let theta_scale = theta.powf(-2.0 / rope_dims as f32);
    let mut cos_sin = vec![(0.0f32, 0.0f32); rope_dims / 2];
    for (row, &pos) in x.chunks_exact_mut(n_heads * head_dim).zip(positions) {
        // Angles by repeated multiplication, as GGML computes them (not powf per pair).
        let mut angle = pos as f32;
        for cs in cos_sin.iter_mut() {
            *cs = cos_and_sin(angle);
            angle *= theta_scale;
        }
        for head in row.chunks_exact_mut(head_dim) {
            for (pair, &(cos, sin)) in head[..rope_dims].chunks_exact_mut(2).zip(&cos_sin) {
                let (x0, x1) = (pair[0], pair[1]);
                // Fused as GCC fuses GGML's `x0*cos - x1*sin` and `x0*sin + x1*cos` (it contracts
                // them into FMAs): one rounding fewer, and the same bits as llama.cpp.
                pair[0] = crate::kernels::fma::fma(x0, cos, -(x1 * sin));
                pair[1] = crate::kernels::fma::fma(x0, sin, x1 * cos);
            }
        }
    }
}
}
// ANCHOR_END: rope

/// cos and sin of `angle` in f32, correctly rounded in practice: natively the C library's
/// `cosf`/`sinf` (what GGML calls); on wasm32, where Rust's own libm can differ from them in
/// the last bit at larger angles (long prompts), through f64 and one rounding.
#[inline]
fn cos_and_sin(angle: f32) -> (f32, f32) {
    #[cfg(target_arch = "wasm32")]
    {
        let a = f64::from(angle);
        (a.cos() as f32, a.sin() as f32)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        (angle.cos(), angle.sin())
    }
}

// ANCHOR: swiglu
crate::multiversion! {
/// SwiGLU: silu(gate) · up, elementwise, into `gate`. silu(x) = x / (1 + e^(−x)).
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + crate::kernels::ggml_exp::expf(-*g)) * u;
    }
}
}
// ANCHOR_END: swiglu

pub use crate::kernels::scalar::hsum8;

/// `x += y`, elementwise.
pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmsnorm_gives_unit_rms_times_weight() {
        let x = [3.0f32, 4.0, 0.0, 0.0];
        let mut out = [0.0; 4];
        rmsnorm(&x, &[1.0, 2.0, 1.0, 1.0], 0.0, &mut out);
        // rms = sqrt((9 + 16) / 4) = 2.5
        assert_eq!(out, [1.2, 3.2, 0.0, 0.0]);
    }

    #[test]
    fn rope_at_position_zero_is_identity_and_preserves_norms() {
        let original: Vec<f32> = (0..16).map(|i| i as f32 * 0.1 - 0.7).collect();
        let mut x = original.clone();
        rope(&mut x, &[0], 2, 8, 8, 10_000.0);
        assert_eq!(x, original);
        rope(&mut x, &[17], 2, 8, 8, 10_000.0);
        for (a, b) in x.chunks(2).zip(original.chunks(2)) {
            let (na, nb) = (a[0].hypot(a[1]), b[0].hypot(b[1]));
            assert!((na - nb).abs() < 1e-5);
        }
        // The first pair turns by exactly pos radians.
        let angle = x[1].atan2(x[0]) - original[1].atan2(original[0]);
        let wrapped = (angle - 17.0).rem_euclid(std::f32::consts::TAU);
        assert!(!(1e-4..=std::f32::consts::TAU - 1e-4).contains(&wrapped));
    }

    #[test]
    fn swiglu_is_silu_times_up() {
        let mut g = [0.0f32, 2.0, -2.0];
        swiglu(&mut g, &[5.0, 1.0, 1.0]);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 2.0 / (1.0 + (-2.0f32).exp())).abs() < 1e-6);
        assert!(g[2] < 0.0 && g[2] > -0.3);
    }
}
