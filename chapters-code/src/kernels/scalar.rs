//! The reference dot products: plain Rust, one block at a time. They fix the *canonical
//! order* of every reduction the model runs — which integer sums are formed, in which order
//! the floats are added, where a multiply-add is fused — and every SIMD path follows it, so
//! that all paths give the same bits, not just close ones (the tests compare bits). The order
//! is llama.cpp's AVX2 order, the most common build on the machines this book runs on.

use super::fma::fma;

pub use crate::quant::kquants::{dot_q4_k_q8_k, dot_q5_k_q8_k, dot_q6_k_q8_k};
pub use crate::quant::nf4::dot_nf4_f32;
pub use crate::quant::q5_0::dot_q5_0_q8_0;
use crate::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK, f16_to_f32};

// ANCHOR: canonical_lanes
/// The canonical order of a quantized dot product, which every SIMD path reproduces bit for
/// bit (it is llama.cpp's AVX2 order): a block's 32 integer products are summed in eight lanes
/// of four consecutive elements (lane l: elements 4l..4l+4, exact integer sums); each lane's
/// partial is converted to f32 and accumulated, with one fused multiply-add, times the
/// block's scale; after the last block the eight lanes meet in a fixed tree ([`hsum8`]).
#[derive(Default)]
pub struct Lanes([f32; 8]);

impl Lanes {
    /// Adds one block: `product(j)` is the integer product of element j (0..32).
    #[inline(always)]
    pub fn add_block(&mut self, scale: f32, product: impl Fn(usize) -> i32) {
        for (l, lane) in self.0.iter_mut().enumerate() {
            let partial: i32 = (4 * l..4 * l + 4).map(&product).sum();
            *lane = fma(scale, partial as f32, *lane);
        }
    }

    /// The eight lanes' sum.
    pub fn total(&self) -> f32 {
        hsum8(&self.0)
    }
}

/// Sum of 8 lanes as an AVX2 horizontal sum adds them: halves, then pairs, then the last two.
#[inline]
pub fn hsum8(l: &[f32; 8]) -> f32 {
    let s = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    (s[0] + s[2]) + (s[1] + s[3])
}
// ANCHOR_END: canonical_lanes

/// Element j (0..32) of a block of packed nibbles: low nibbles first, then high ones.
#[inline(always)]
fn nibble(qs: &[u8; QK / 2], j: usize) -> i32 {
    if j < QK / 2 {
        i32::from(qs[j] & 0x0f)
    } else {
        i32::from(qs[j - QK / 2] >> 4)
    }
}

// ANCHOR: dot_q4_1_q8_1
crate::multiversion! {
/// Σ w·a for a Q4_1 weight row and Q8_1 activations. Per block, with w = d_w·q + m and
/// a = d_a·p: Σ w·a = d_w·d_a·Σ q·p + m·(d_a·Σ p) = d_w·d_a·Σ q·p + m·s_a. The first term
/// goes through the eight lanes of the canonical order, the second is summed on its own and
/// added at the end.
pub fn dot_q4_1_q8_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let mut lanes = Lanes::default();
    let mut mins = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let scale = f16_to_f32(x.d) * f16_to_f32(y.d);
        lanes.add_block(scale, |j| nibble(&x.qs, j) * i32::from(y.qs[j]));
        mins += f16_to_f32(x.m) * f16_to_f32(y.s);
    }
    lanes.total() + mins
}
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

crate::multiversion! {
/// Σ w·a for a Q4_0 weight row (w = d·(q − 8)) and Q8_0 activations, in the canonical order.
pub fn dot_q4_0_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    let mut lanes = Lanes::default();
    for (x, y) in w.iter().zip(a) {
        let scale = f16_to_f32(x.d) * f16_to_f32(y.d);
        lanes.add_block(scale, |j| (nibble(&x.qs, j) - 8) * i32::from(y.qs[j]));
    }
    lanes.total()
}
}

crate::multiversion! {
/// Σ w·a for Q8_0 weights and Q8_0 activations, in the canonical order.
pub fn dot_q8_0_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    let mut lanes = Lanes::default();
    for (x, y) in w.iter().zip(a) {
        let scale = f16_to_f32(x.d) * f16_to_f32(y.d);
        lanes.add_block(scale, |j| i32::from(x.qs[j]) * i32::from(y.qs[j]));
    }
    lanes.total()
}
}

// ANCHOR: canonical_float
/// The canonical order of a float dot product (llama.cpp's `ggml_vec_dot_f16` on AVX2): element
/// i goes to accumulator (i mod 32) / 8, lane i mod 8, while whole groups of 32 remain, with a
/// fused multiply-add; the four accumulators are added pairwise (0+2, 1+3, then the two), their
/// eight lanes in a tree; the last `n mod 32` products are added in f64, in order.
/// `w(i)` is weight i as f32.
#[inline(always)]
fn dot_canonical(n: usize, w: impl Fn(usize) -> f32, a: &[f32]) -> f32 {
    let full = n / 32 * 32;
    let mut acc = [[0.0f32; 8]; 4];
    for i in 0..full {
        let slot = &mut acc[(i % 32) / 8][i % 8];
        *slot = fma(w(i), a[i], *slot);
    }
    let mut sum = f64::from(reduce_32(&acc));
    for (j, &x) in a.iter().enumerate().take(n).skip(full) {
        sum += f64::from(w(j) * x);
    }
    sum as f32
}

/// The reduction of four 8-lane accumulators in the canonical float order.
#[inline]
pub fn reduce_32(acc: &[[f32; 8]; 4]) -> f32 {
    let x: [f32; 8] = std::array::from_fn(|l| (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]));
    let t = [x[0] + x[4], x[1] + x[5], x[2] + x[6], x[3] + x[7]];
    (t[0] + t[1]) + (t[2] + t[3])
}

crate::multiversion! {
/// Σ w·a for f16 weights and f32 activations, in the canonical float order.
pub fn dot_f16_f32(w: &[u16], a: &[f32]) -> f32 {
    dot_canonical(w.len().min(a.len()), |i| f16_to_f32(w[i]), a)
}
}

crate::multiversion! {
/// Σ w·a for f32 vectors, in the canonical float order.
pub fn dot_f32(w: &[f32], a: &[f32]) -> f32 {
    dot_canonical(w.len().min(a.len()), |i| w[i], a)
}
}
// ANCHOR_END: canonical_float

// ANCHOR: attend_values
crate::multiversion! {
/// The value side of attention over an f16 cache: out[d] = Σ_p weight[p] · value_p[d], for
/// every d at once, each out[d] exactly [`dot_f16_f32`] of the column (value_p[d])_p with the
/// weights, both padded with zeros to a multiple of 32 positions — as llama.cpp computes it
/// (its cache view is padded to 32 cells, the padding masked to weight 0). `values[p]` is
/// position p's `out.len()` values of this head. Position p is added into slot p mod 32 of a
/// (32, head_dim) buffer, so the work runs along a row; the slots are then reduced as
/// [`reduce_32`] does.
pub fn attend_values(weights: &[f32], values: &[&[u16]], out: &mut [f32]) {
    let hd = out.len();
    let mut slots = vec![0.0f32; 32 * hd];
    for (p, &w) in weights.iter().enumerate() {
        let slot = &mut slots[(p % 32) * hd..(p % 32 + 1) * hd];
        for (s, &v) in slot.iter_mut().zip(values[p]) {
            *s = fma(f16_to_f32(v), w, *s);
        }
    }
    for (d, o) in out.iter_mut().enumerate() {
        let acc: [[f32; 8]; 4] =
            std::array::from_fn(|j| std::array::from_fn(|l| slots[(8 * j + l) * hd + d]));
        *o = reduce_32(&acc);
    }
}
}
// ANCHOR_END: attend_values

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
