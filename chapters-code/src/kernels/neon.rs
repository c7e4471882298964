//! NEON dot products for aarch64 (baseline NEON, no `dotprod` extension needed): 16 bytes per
//! register, widening multiplies into 16-bit lanes, pairwise adds into 32-bit lanes. Blocks are
//! summed in the same order as the scalar reference, so results match it bit for bit.
//!
//! # Safety
//! Every public function here needs NEON, which every aarch64 CPU has.

use crate::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, f16_to_f32};
use std::arch::aarch64::*;

/// Σ a·b over two 16-byte halves of signed bytes (|a| ≤ 128, |b| ≤ 127: no i16 overflow).
#[inline]
#[target_feature(enable = "neon")]
fn dot_i8x32(a0: int8x16_t, a1: int8x16_t, b0: int8x16_t, b1: int8x16_t) -> i32 {
    let p0 = vmlal_s8(
        vmull_s8(vget_low_s8(a0), vget_low_s8(b0)),
        vget_high_s8(a0),
        vget_high_s8(b0),
    );
    let p1 = vmlal_s8(
        vmull_s8(vget_low_s8(a1), vget_low_s8(b1)),
        vget_high_s8(a1),
        vget_high_s8(b1),
    );
    vaddvq_s32(vaddq_s32(vpaddlq_s16(p0), vpaddlq_s16(p1)))
}

#[inline]
#[target_feature(enable = "neon")]
fn load_i8x32(q: &[i8; 32]) -> (int8x16_t, int8x16_t) {
    // SAFETY: `q` is exactly 32 readable bytes.
    unsafe { (vld1q_s8(q.as_ptr()), vld1q_s8(q.as_ptr().add(16))) }
}

/// Low and high nibbles of 16 packed bytes, as signed bytes minus `offset`.
#[inline]
#[target_feature(enable = "neon")]
fn unpack_nibbles(qs: &[u8; 16], offset: i8) -> (int8x16_t, int8x16_t) {
    // SAFETY: `qs` is exactly 16 readable bytes.
    let packed = unsafe { vld1q_u8(qs.as_ptr()) };
    let lo = vreinterpretq_s8_u8(vandq_u8(packed, vdupq_n_u8(0x0f)));
    let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(packed));
    (
        vsubq_s8(lo, vdupq_n_s8(offset)),
        vsubq_s8(hi, vdupq_n_s8(offset)),
    )
}

/// Q4_1 × Q8_1.
#[target_feature(enable = "neon")]
pub fn dot_q4_1_q8_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let (lo, hi) = unpack_nibbles(&x.qs, 0);
        let (y0, y1) = load_i8x32(&y.qs);
        let sumi = dot_i8x32(lo, hi, y0, y1);
        sum += f16_to_f32(x.d) * f16_to_f32(y.d) * sumi as f32 + f16_to_f32(x.m) * f16_to_f32(y.s);
    }
    sum
}

/// Q4_0 × Q8_0.
#[target_feature(enable = "neon")]
pub fn dot_q4_0_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let (lo, hi) = unpack_nibbles(&x.qs, 8);
        let (y0, y1) = load_i8x32(&y.qs);
        sum += dot_i8x32(lo, hi, y0, y1) as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d));
    }
    sum
}

/// Q8_0 × Q8_0.
#[target_feature(enable = "neon")]
pub fn dot_q8_0_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let (x0, x1) = load_i8x32(&x.qs);
        let (y0, y1) = load_i8x32(&y.qs);
        sum += dot_i8x32(x0, x1, y0, y1) as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d));
    }
    sum
}

/// f32 × f32, 4 lanes, two accumulators.
#[target_feature(enable = "neon")]
pub fn dot_f32(w: &[f32], a: &[f32]) -> f32 {
    let n = w.len().min(a.len());
    let (mut acc0, mut acc1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n elements are readable in both slices.
        unsafe {
            acc0 = vfmaq_f32(
                acc0,
                vld1q_f32(w.as_ptr().add(i)),
                vld1q_f32(a.as_ptr().add(i)),
            );
            acc1 = vfmaq_f32(
                acc1,
                vld1q_f32(w.as_ptr().add(i + 4)),
                vld1q_f32(a.as_ptr().add(i + 4)),
            );
        }
        i += 8;
    }
    let mut sum = vaddvq_f32(vaddq_f32(acc0, acc1));
    for j in i..n {
        sum += w[j] * a[j];
    }
    sum
}
