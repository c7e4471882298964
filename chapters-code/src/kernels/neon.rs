//! NEON dot products for aarch64 (baseline NEON, no `dotprod` extension needed), in the
//! canonical order of the scalar reference, so that results match it bit for bit: the eight
//! integer lanes of a block (four consecutive products each) are two `int32x4_t` registers,
//! made by widening multiplies into 16-bit lanes and two rounds of pairwise adds; the eight f32
//! lanes are two `float32x4_t` accumulators, updated with a fused multiply-add (`vfmaq_f32`
//! rounds once, as x86's FMA does); the lanes meet in the same tree as `scalar::hsum8`.
//!
//! # Safety
//! Every public function here needs NEON, which every aarch64 CPU has.

use crate::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, f16_to_f32};
use std::arch::aarch64::*;

/// Sums of four consecutive products of 16 signed byte pairs: lane l = Σ a[4l..4l+4]·b[..].
/// (|a| ≤ 128, |b| ≤ 127: the 16-bit products cannot overflow.)
#[inline]
#[target_feature(enable = "neon")]
fn quads(a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let lo = vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    let hi = vpaddlq_s16(vmull_s8(vget_high_s8(a), vget_high_s8(b)));
    vpaddq_s32(lo, hi)
}

/// The eight f32 lanes of a row (lanes 0..4 and 4..8).
#[derive(Clone, Copy)]
struct Lanes(float32x4_t, float32x4_t);

impl Lanes {
    #[inline]
    #[target_feature(enable = "neon")]
    fn new() -> Lanes {
        Lanes(vdupq_n_f32(0.0), vdupq_n_f32(0.0))
    }

    /// lanes += scale · (the block's eight integer lanes), fused.
    #[inline]
    #[target_feature(enable = "neon")]
    fn add(
        &mut self,
        scale: f32,
        (a0, a1): (int8x16_t, int8x16_t),
        (b0, b1): (int8x16_t, int8x16_t),
    ) {
        let s = vdupq_n_f32(scale);
        self.0 = vfmaq_f32(self.0, vcvtq_f32_s32(quads(a0, b0)), s);
        self.1 = vfmaq_f32(self.1, vcvtq_f32_s32(quads(a1, b1)), s);
    }

    /// `scalar::hsum8`: lanes l and l + 4, then (0 + 2) + (1 + 3).
    #[inline]
    #[target_feature(enable = "neon")]
    fn total(self) -> f32 {
        let s = vaddq_f32(self.0, self.1);
        let pairs = vadd_f32(vget_low_f32(s), vget_high_f32(s));
        vget_lane_f32::<0>(pairs) + vget_lane_f32::<1>(pairs)
    }
}

#[inline]
#[target_feature(enable = "neon")]
fn load_i8x32(q: &[i8; 32]) -> (int8x16_t, int8x16_t) {
    // SAFETY: `q` is exactly 32 readable bytes.
    unsafe { (vld1q_s8(q.as_ptr()), vld1q_s8(q.as_ptr().add(16))) }
}

/// Low and high nibbles of 16 packed bytes (elements 0..16 and 16..32), as signed bytes minus
/// `offset`.
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
    let mut lanes = Lanes::new();
    let mut mins = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let scale = f16_to_f32(x.d) * f16_to_f32(y.d);
        lanes.add(scale, unpack_nibbles(&x.qs, 0), load_i8x32(&y.qs));
        mins += f16_to_f32(x.m) * f16_to_f32(y.s);
    }
    lanes.total() + mins
}

/// Q4_0 × Q8_0.
#[target_feature(enable = "neon")]
pub fn dot_q4_0_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    let mut lanes = Lanes::new();
    for (x, y) in w.iter().zip(a) {
        let scale = f16_to_f32(x.d) * f16_to_f32(y.d);
        lanes.add(scale, unpack_nibbles(&x.qs, 8), load_i8x32(&y.qs));
    }
    lanes.total()
}

/// Q8_0 × Q8_0.
#[target_feature(enable = "neon")]
pub fn dot_q8_0_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    let mut lanes = Lanes::new();
    for (x, y) in w.iter().zip(a) {
        let scale = f16_to_f32(x.d) * f16_to_f32(y.d);
        lanes.add(scale, load_i8x32(&x.qs), load_i8x32(&y.qs));
    }
    lanes.total()
}

/// f32 × f32 in the canonical float order (`scalar::dot_f32`): four accumulators of eight
/// lanes — eight registers of four — over each group of 32, fused multiply-adds, the canonical
/// tree, the tail in f64.
#[target_feature(enable = "neon")]
pub fn dot_f32(w: &[f32], a: &[f32]) -> f32 {
    let n = w.len().min(a.len());
    // acc[2j] and acc[2j + 1]: accumulator j's lanes 0..4 and 4..8.
    let mut acc = [vdupq_n_f32(0.0); 8];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 4k + 4 <= n elements are readable in both slices.
            unsafe {
                *acc = vfmaq_f32(
                    *acc,
                    vld1q_f32(w.as_ptr().add(i + 4 * k)),
                    vld1q_f32(a.as_ptr().add(i + 4 * k)),
                );
            }
        }
        i += 32;
    }
    // x = (acc0 + acc2) + (acc1 + acc3), each half on its own.
    let half = |h: usize| {
        vaddq_f32(
            vaddq_f32(acc[h], acc[4 + h]),
            vaddq_f32(acc[2 + h], acc[6 + h]),
        )
    };
    // t[l] = x[l] + x[l + 4]; then (t0 + t1) + (t2 + t3).
    let t = vaddq_f32(half(0), half(1));
    let total = (vgetq_lane_f32::<0>(t) + vgetq_lane_f32::<1>(t))
        + (vgetq_lane_f32::<2>(t) + vgetq_lane_f32::<3>(t));
    let mut sum = f64::from(total);
    for j in i..n {
        sum += f64::from(w[j] * a[j]);
    }
    sum as f32
}
