//! Quantize and dequantize rows, exactly as llama.cpp's reference code does (same rounding,
//! same f16 scales), so that blocks we write are read identically by llama.cpp and back.
//!
//! Two flavours, as in llama.cpp. Weights are quantized by the reference functions
//! (`quantize_row_*_ref`: scale `1/d`, round half away from zero, or truncate `x · id + 0.5`
//! for the 4-bit formats). Activations, quantized on every matrix product, follow llama.cpp's
//! x86 SIMD code instead (`quantize_acts_*`: scale `127/max|x|`, round half to even). The
//! difference is in the last bit of a few values — but a network amplifies such bits, and
//! matching llama.cpp's logits to 1e-2 needs the same ones.

use super::blocks::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK};
use super::f16::{f16_to_f32, f32_to_f16};

#[inline(always)]
fn chunks(x: &[f32]) -> impl Iterator<Item = &[f32; QK]> {
    debug_assert!(x.len().is_multiple_of(QK));
    x.chunks_exact(QK)
        .map(|c| c.try_into().expect("chunks of QK"))
}

#[inline(always)]
fn abs_max(x: &[f32; QK]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

// ANCHOR: quantize_q8_0
/// f32 weights → Q8_0: per block, d = max|x| / 127 and q = round(x / d).
pub fn quantize_q8_0(x: &[f32]) -> Vec<BlockQ8_0> {
    chunks(x)
        .map(|block| {
            let d = abs_max(block) / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            BlockQ8_0 {
                d: f32_to_f16(d),
                qs: block.map(|v| (v * id).round() as i8),
            }
        })
        .collect()
}
// ANCHOR_END: quantize_q8_0

/// One activation block to 8 bits, as llama.cpp's x86 code does it: d = max|x| / 127, and
/// q = round-half-even(x · 127 / max|x|). Returns (d, q). Inlined into the callers' fast
/// versions (a loop, not `array::map`, so that it is inlined and `round_ties_even` becomes
/// one instruction there).
#[inline(always)]
fn quantize_act_block(block: &[f32; QK]) -> (f32, [i8; QK]) {
    let max = abs_max(block);
    let id = if max != 0.0 { 127.0 / max } else { 0.0 };
    let mut qs = [0i8; QK];
    for (q, &v) in qs.iter_mut().zip(block) {
        *q = (v * id).round_ties_even() as i8;
    }
    (max / 127.0, qs)
}

// ANCHOR: quantize_acts
crate::multiversion! {
/// f32 activations → Q8_0, for Q8_0 and Q4_0 weights.
pub fn quantize_acts_q8_0(x: &[f32]) -> Vec<BlockQ8_0> {
    let mut out = Vec::with_capacity(x.len() / QK);
    for block in chunks(x) {
        let (d, qs) = quantize_act_block(block);
        out.push(BlockQ8_0 { d: f32_to_f16(d), qs });
    }
    out
}
}

crate::multiversion! {
/// f32 activations → Q8_1, for Q4_1 weights: Q8_0 plus s = d · Σq.
pub fn quantize_acts_q8_1(x: &[f32]) -> Vec<BlockQ8_1> {
    let mut out = Vec::with_capacity(x.len() / QK);
    for block in chunks(x) {
        let (d, qs) = quantize_act_block(block);
        let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
        out.push(BlockQ8_1 { d: f32_to_f16(d), s: f32_to_f16(d * sum as f32), qs });
    }
    out
}
}
// ANCHOR_END: quantize_acts

/// f32 → Q4_0: d = (the value of largest magnitude) / −8, q = clamp(x / d + 8.5, 0, 15).
pub fn quantize_q4_0(x: &[f32]) -> Vec<BlockQ4_0> {
    chunks(x)
        .map(|block| {
            let (mut amax, mut max) = (0.0f32, 0.0f32);
            for &v in block {
                if amax < v.abs() {
                    amax = v.abs();
                    max = v;
                }
            }
            let d = max / -8.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let q = |v: f32| ((v * id + 8.5) as i8).clamp(0, 15) as u8;
            let mut qs = [0u8; QK / 2];
            for (j, byte) in qs.iter_mut().enumerate() {
                *byte = q(block[j]) | (q(block[j + QK / 2]) << 4);
            }
            BlockQ4_0 {
                d: f32_to_f16(d),
                qs,
            }
        })
        .collect()
}

/// f32 → Q4_1: m = min, d = (max − min) / 15, q = clamp((x − m) / d + 0.5, 0, 15).
pub fn quantize_q4_1(x: &[f32]) -> Vec<BlockQ4_1> {
    chunks(x)
        .map(|block| {
            let min = block.iter().copied().fold(f32::INFINITY, f32::min);
            let max = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let d = (max - min) / 15.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let q = |v: f32| (((v - min) * id + 0.5) as i8).clamp(0, 15) as u8;
            let mut qs = [0u8; QK / 2];
            for (j, byte) in qs.iter_mut().enumerate() {
                *byte = q(block[j]) | (q(block[j + QK / 2]) << 4);
            }
            BlockQ4_1 {
                d: f32_to_f16(d),
                m: f32_to_f16(min),
                qs,
            }
        })
        .collect()
}

// ANCHOR: dequantize_q4_1
/// Q4_1 → f32: x = d · q + m.
pub fn dequantize_q4_1(blocks: &[BlockQ4_1], out: &mut [f32]) {
    for (b, out) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let (d, m) = (f16_to_f32(b.d), f16_to_f32(b.m));
        for (j, &byte) in b.qs.iter().enumerate() {
            out[j] = f32::from(byte & 0x0f) * d + m;
            out[j + QK / 2] = f32::from(byte >> 4) * d + m;
        }
    }
}
// ANCHOR_END: dequantize_q4_1

/// Q4_0 → f32: x = d · (q − 8).
pub fn dequantize_q4_0(blocks: &[BlockQ4_0], out: &mut [f32]) {
    for (b, out) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = f16_to_f32(b.d);
        for (j, &byte) in b.qs.iter().enumerate() {
            out[j] = (i32::from(byte & 0x0f) - 8) as f32 * d;
            out[j + QK / 2] = (i32::from(byte >> 4) - 8) as f32 * d;
        }
    }
}

/// Q8_0 → f32: x = d · q.
pub fn dequantize_q8_0(blocks: &[BlockQ8_0], out: &mut [f32]) {
    for (b, out) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = f16_to_f32(b.d);
        for (o, &q) in out.iter_mut().zip(&b.qs) {
            *o = f32::from(q) * d;
        }
    }
}

/// F16 → f32.
pub fn dequantize_f16(halves: &[u16], out: &mut [f32]) {
    for (o, &h) in out.iter_mut().zip(halves) {
        *o = f16_to_f32(h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::wave;

    fn rms(a: &[f32], b: &[f32]) -> f32 {
        (a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>() / a.len() as f32).sqrt()
    }

    #[test]
    fn round_trips_stay_within_half_a_step() {
        let x = wave(32 * 64, 1);
        let mut y = vec![0.0; x.len()];
        dequantize_q8_0(&quantize_q8_0(&x), &mut y);
        assert!(rms(&x, &y) < 0.005, "q8_0 {}", rms(&x, &y));
        dequantize_q4_0(&quantize_q4_0(&x), &mut y);
        assert!(rms(&x, &y) < 0.08, "q4_0 {}", rms(&x, &y));
        dequantize_q4_1(&quantize_q4_1(&x), &mut y);
        assert!(rms(&x, &y) < 0.05, "q4_1 {}", rms(&x, &y));
        // Every element within half a quantization step (plus f16 rounding of the scale).
        for (b, (xs, ys)) in quantize_q4_1(&x).iter().zip(x.chunks(32).zip(y.chunks(32))) {
            let step = f16_to_f32(b.d);
            for (a, c) in xs.iter().zip(ys) {
                assert!(
                    (a - c).abs() <= 0.5 * step + 1e-3,
                    "{a} vs {c}, step {step}"
                );
            }
        }
    }

    #[test]
    fn hand_made_q4_1_block_has_llama_cpp_bit_layout() {
        // Elements 0..16 = 0, 1, ..., 15 and 16..32 = 15, 14, ..., 0 with min 0, step 1.
        let x: Vec<f32> = (0..16)
            .map(|i| i as f32)
            .chain((0..16).rev().map(|i| i as f32))
            .collect();
        let b = quantize_q4_1(&x)[0];
        assert_eq!(f16_to_f32(b.d), 1.0);
        assert_eq!(f16_to_f32(b.m), 0.0);
        for j in 0..16 {
            assert_eq!(b.qs[j], j as u8 | ((15 - j as u8) << 4), "byte {j}");
        }
        let mut y = [0.0; 32];
        dequantize_q4_1(&[b], &mut y);
        assert_eq!(&y[..], &x[..]);
    }

    #[test]
    fn q8_1_sum_carries_the_block_sum() {
        let x = wave(64, 7);
        for (b, xs) in quantize_acts_q8_1(&x).iter().zip(x.chunks(32)) {
            let sum_q: i32 = b.qs.iter().map(|&q| i32::from(q)).sum();
            let expected = sum_q as f32 * f16_to_f32(b.d);
            assert!((f16_to_f32(b.s) - expected).abs() <= 1e-3 * expected.abs().max(1.0));
            let approx: f32 = xs.iter().sum();
            assert!((f16_to_f32(b.s) - approx).abs() < 0.05);
        }
    }

    #[test]
    fn zero_blocks_quantize_to_zero() {
        let x = vec![0.0f32; 32];
        assert!(quantize_q8_0(&x)[0].qs.iter().all(|&q| q == 0));
        let mut y = vec![1.0; 32];
        dequantize_q4_0(&quantize_q4_0(&x), &mut y);
        assert!(y.iter().all(|&v| v == 0.0));
    }
}
