//! The reference dot products: plain Rust, one block at a time, integer sums per block as in
//! llama.cpp's `ggml_vec_dot_*` scalar code. Every SIMD path is tested against these.

pub use crate::quant::kquants::{dot_q4_k_q8_k, dot_q5_k_q8_k, dot_q6_k_q8_k};
pub use crate::quant::nf4::dot_nf4_f32;
pub use crate::quant::q5_0::dot_q5_0_q8_0;
use crate::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK, f16_to_f32};

// ANCHOR: dot_q4_1_q8_1
/// Σ w·a for a Q4_1 weight row and Q8_1 activations. Per block, with w = d_w·q + m and
/// a = d_a·p: Σ w·a = d_w·d_a·Σ q·p + m·(d_a·Σ p) = d_w·d_a·Σ q·p + m·s_a.
pub fn dot_q4_1_q8_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            let lo = i32::from(x.qs[j] & 0x0f);
            let hi = i32::from(x.qs[j] >> 4);
            sumi += lo * i32::from(y.qs[j]) + hi * i32::from(y.qs[j + QK / 2]);
        }
        sum += f16_to_f32(x.d) * f16_to_f32(y.d) * sumi as f32 + f16_to_f32(x.m) * f16_to_f32(y.s);
    }
    sum
}
// ANCHOR_END: dot_q4_1_q8_1

/// Σ w·x for a Q4_1 weight row and f32 activations: each weight dequantized on the fly
/// (d·q + m). The alternative to quantizing the activations; the kernels bench compares them.
pub fn dot_q4_1_f32(w: &[BlockQ4_1], x: &[f32]) -> f32 {
    let mut sum = 0.0f32;
    for (b, xs) in w.iter().zip(x.chunks_exact(QK)) {
        let (d, m) = (f16_to_f32(b.d), f16_to_f32(b.m));
        for j in 0..QK / 2 {
            sum += (f32::from(b.qs[j] & 0x0f) * d + m) * xs[j];
            sum += (f32::from(b.qs[j] >> 4) * d + m) * xs[j + QK / 2];
        }
    }
    sum
}

/// Σ w·a for a Q4_0 weight row (w = d·(q − 8)) and Q8_0 activations.
pub fn dot_q4_0_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            let lo = i32::from(x.qs[j] & 0x0f) - 8;
            let hi = i32::from(x.qs[j] >> 4) - 8;
            sumi += lo * i32::from(y.qs[j]) + hi * i32::from(y.qs[j + QK / 2]);
        }
        sum += sumi as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d));
    }
    sum
}

/// Σ w·a for Q8_0 weights and Q8_0 activations.
pub fn dot_q8_0_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let sumi: i32 =
            x.qs.iter()
                .zip(&y.qs)
                .map(|(&p, &q)| i32::from(p) * i32::from(q))
                .sum();
        sum += sumi as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d));
    }
    sum
}

/// Σ w·a for f16 weights and f32 activations.
pub fn dot_f16_f32(w: &[u16], a: &[f32]) -> f32 {
    w.iter().zip(a).map(|(&h, &x)| f16_to_f32(h) * x).sum()
}

/// Σ w·a for f32 vectors.
pub fn dot_f32(w: &[f32], a: &[f32]) -> f32 {
    w.iter().zip(a).map(|(x, y)| x * y).sum()
}

/// y += a · x for f16 x (the value side of attention).
pub fn axpy_f16(a: f32, x: &[u16], y: &mut [f32]) {
    for (y, &h) in y.iter_mut().zip(x) {
        *y += a * f16_to_f32(h);
    }
}

/// y += a · x for Q8_0 x (the value side of attention over an 8-bit cache): each block
/// dequantized as it is added.
pub fn axpy_q8_0(a: f32, x: &[BlockQ8_0], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let ad = a * f16_to_f32(b.d);
        for (y, &q) in y.iter_mut().zip(&b.qs) {
            *y += ad * f32::from(q);
        }
    }
}
