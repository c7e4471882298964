//! WebAssembly SIMD (simd128) paths of the dot products the course model runs — Q4_1 · Q8_1
//! for every block matrix and Q8_0 · Q8_0 for the output head — in the canonical order of
//! [`super::scalar`], bit for bit.
//!
//! The integer part maps well: a block's 32 products in 16-bit lanes, `i32x4.dot_i16x8_s`
//! adds them in pairs, one shuffle-and-add makes the canonical lanes of four elements. The
//! float part does not: simd128 has no fused multiply-add (relaxed-simd's `madd` may or may not
//! fuse, so its bits differ between engines). Each lane's `scale · partial + lane` is done in
//! f64 — the product is exact there, the sum rounds once — and rounded to f32; where that
//! second rounding could differ from a single one (the f64 result is exactly a tie between two
//! f32, or tiny), the block is done again by the scalar code (see `fma::fma_via_f64`).

use super::scalar::{self, hsum8};
use crate::quant::{BlockQ4_1, BlockQ8_0, BlockQ8_1, QK};
use std::sync::OnceLock;

/// f16 → f32 through a table of all 65,536 values (256 KiB), built once from
/// [`crate::quant::f16_to_f32`]: WebAssembly has no conversion instruction, and the bit
/// manipulation costs more than the dot product of a block. The same values, by construction.
#[inline(always)]
fn f16_to_f32(h: u16) -> f32 {
    static TABLE: OnceLock<Box<[f32]>> = OnceLock::new();
    let table = TABLE.get_or_init(|| (0..=u16::MAX).map(crate::quant::f16_to_f32).collect());
    table[usize::from(h)]
}
use core::arch::wasm32::*;

pub use super::scalar::{dot_f32, dot_q4_0_q8_0};

/// The eight canonical lanes' partial sums of one block, as two i32x4 (lanes 0–3, 4–7), from
/// its 32 weights and activations as i16x8 quarters (elements 0–7, 8–15, 16–23, 24–31).
#[inline(always)]
fn lane_partials(w: [v128; 4], a: [v128; 4]) -> (v128, v128) {
    let pairs = |i: usize| i32x4_dot_i16x8(w[i], a[i]); // [p01, p23, p45, p67] of quarter i
    let fours = |x: v128, y: v128| {
        i32x4_add(
            i32x4_shuffle::<0, 2, 4, 6>(x, y),
            i32x4_shuffle::<1, 3, 5, 7>(x, y),
        )
    };
    (fours(pairs(0), pairs(1)), fours(pairs(2), pairs(3)))
}

/// `scale · partial + acc` in each of four lanes, rounded once; `None` where a lane needs the
/// scalar FMA (see the module comment).
#[inline(always)]
fn fma4(scale: f32, partial: v128, acc: v128) -> Option<v128> {
    let s = f64x2_splat(f64::from(scale));
    let half = |v: v128| i32x4_shuffle::<2, 3, 0, 1>(v, v);
    let (p_lo, a_lo) = (
        f64x2_mul(s, f64x2_convert_low_i32x4(partial)), // exact
        f64x2_promote_low_f32x4(acc),
    );
    let (p_hi, a_hi) = (
        f64x2_mul(s, f64x2_convert_low_i32x4(half(partial))),
        f64x2_promote_low_f32x4(half(acc)),
    );
    let (sum_lo, sum_hi) = (f64x2_add(p_lo, a_lo), f64x2_add(p_hi, a_hi));
    let (mask, tie) = (i64x2_splat(0x1fff_ffff), i64x2_splat(0x1000_0000));
    let min = f64x2_splat(f64::from(f32::MIN_POSITIVE));
    let zero = f64x2_splat(0.0);
    // As in `fma_via_f64`: a tie after an inexact f64 sum, or a sum below the normal range.
    // Ties are rare, so whether the sum was exact is only worked out when there is one.
    let suspect = |sum: v128| {
        let tie = i64x2_eq(v128_and(sum, mask), tie);
        let tiny = v128_and(f64x2_lt(f64x2_abs(sum), min), f64x2_ne(sum, zero));
        v128_or(tie, tiny)
    };
    if v128_any_true(v128_or(suspect(sum_lo), suspect(sum_hi))) {
        let doubtful = |sum: v128, p: v128, a: v128| {
            let exact = v128_and(
                f64x2_eq(f64x2_sub(sum, p), a),
                f64x2_eq(f64x2_sub(sum, a), p),
            );
            let tie = v128_andnot(i64x2_eq(v128_and(sum, mask), tie), exact);
            let tiny = v128_and(f64x2_lt(f64x2_abs(sum), min), f64x2_ne(sum, zero));
            v128_or(tie, tiny)
        };
        if v128_any_true(v128_or(
            doubtful(sum_lo, p_lo, a_lo),
            doubtful(sum_hi, p_hi, a_hi),
        )) {
            return None;
        }
    }
    Some(i32x4_shuffle::<0, 1, 4, 5>(
        f32x4_demote_f64x2_zero(sum_lo),
        f32x4_demote_f64x2_zero(sum_hi),
    ))
}

/// The eight lanes, as [`scalar::Lanes`] keeps them.
struct Lanes {
    lo: v128,
    hi: v128,
}

impl Lanes {
    fn new() -> Lanes {
        Lanes {
            lo: f32x4_splat(0.0),
            hi: f32x4_splat(0.0),
        }
    }

    /// Adds one block's partials times `scale`, as `scalar::Lanes::add_block` does.
    #[inline(always)]
    fn add(&mut self, scale: f32, (p_lo, p_hi): (v128, v128)) {
        if let (Some(lo), Some(hi)) = (fma4(scale, p_lo, self.lo), fma4(scale, p_hi, self.hi)) {
            (self.lo, self.hi) = (lo, hi);
            return;
        }
        let mut lanes = self.to_array();
        // SAFETY: two v128 are 8 i32.
        let partials: [i32; 8] = unsafe { std::mem::transmute([p_lo, p_hi]) };
        for (lane, p) in lanes.iter_mut().zip(partials) {
            *lane = super::fma::fma(scale, p as f32, *lane);
        }
        // SAFETY: 8 f32 are two v128.
        [self.lo, self.hi] = unsafe { std::mem::transmute::<[f32; 8], [v128; 2]>(lanes) };
    }

    fn to_array(&self) -> [f32; 8] {
        // SAFETY: two v128 are 8 f32.
        unsafe { std::mem::transmute([self.lo, self.hi]) }
    }

    fn total(&self) -> f32 {
        hsum8(&self.to_array())
    }
}

/// 32 signed bytes as four i16x8 quarters.
#[inline(always)]
fn widen_i8(q: &[i8; QK]) -> [v128; 4] {
    // SAFETY: 32 bytes are two unaligned v128 loads.
    let (a, b) = unsafe {
        (
            v128_load(q.as_ptr().cast::<v128>()),
            v128_load(q.as_ptr().add(16).cast::<v128>()),
        )
    };
    [
        i16x8_extend_low_i8x16(a),
        i16x8_extend_high_i8x16(a),
        i16x8_extend_low_i8x16(b),
        i16x8_extend_high_i8x16(b),
    ]
}

// ANCHOR: dot_q4_1_q8_1
/// [`scalar::dot_q4_1_q8_1`] with simd128, the same bits.
pub fn dot_q4_1_q8_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let mut lanes = Lanes::new();
    let mut mins = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        // SAFETY: 16 bytes, one unaligned v128 load.
        let q = unsafe { v128_load(x.qs.as_ptr().cast::<v128>()) };
        let low = v128_and(q, u8x16_splat(0x0f)); // elements 0–15
        let high = u8x16_shr(q, 4); // elements 16–31
        let weights = [
            u16x8_extend_low_u8x16(low),
            u16x8_extend_high_u8x16(low),
            u16x8_extend_low_u8x16(high),
            u16x8_extend_high_u8x16(high),
        ];
        let scale = f16_to_f32(x.d) * f16_to_f32(y.d);
        lanes.add(scale, lane_partials(weights, widen_i8(&y.qs)));
        mins += f16_to_f32(x.m) * f16_to_f32(y.s);
    }
    lanes.total() + mins
}
// ANCHOR_END: dot_q4_1_q8_1

/// [`scalar::dot_q8_0_q8_0`] with simd128, the same bits.
pub fn dot_q8_0_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    let mut lanes = Lanes::new();
    for (x, y) in w.iter().zip(a) {
        let scale = f16_to_f32(x.d) * f16_to_f32(y.d);
        lanes.add(scale, lane_partials(widen_i8(&x.qs), widen_i8(&y.qs)));
    }
    lanes.total()
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A random f16 scale: of every size, or (where `tiny`, one time in seven) subnormal, so that
/// some lane sums fall below the smallest normal f32.
fn random_scale(state: &mut u64, tiny: bool) -> u16 {
    let v = xorshift(state);
    if tiny && v.is_multiple_of(7) {
        (v >> 8) as u16 & 0x03ff
    } else {
        0x1c00 + ((v >> 8) as u16 % 0x1800)
    }
}

/// Whether the simd128 paths give the scalar reference's bits on `rows` seeded random rows of
/// `blocks` blocks each, Q4_1 · Q8_1 and Q8_0 · Q8_0: (rows checked, rows that differ).
pub fn self_test(rows: usize, blocks: usize, seed: u64) -> (usize, usize) {
    let mut st = seed | 1;
    let mut differ = 0;
    for r in 0..rows {
        let tiny = r % 5 == 0;
        let s = &mut st;
        let mut w = Vec::with_capacity(blocks);
        let mut a = Vec::with_capacity(blocks);
        let mut w8 = Vec::with_capacity(blocks);
        for _ in 0..blocks {
            let (d, m) = (random_scale(s, tiny), random_scale(s, tiny) ^ 0x8000);
            w.push(BlockQ4_1 {
                d,
                m,
                qs: std::array::from_fn(|_| xorshift(s) as u8),
            });
            let (d, sum) = (random_scale(s, tiny), random_scale(s, tiny));
            a.push(BlockQ8_1 {
                d,
                s: sum,
                qs: std::array::from_fn(|_| xorshift(s) as i8),
            });
            let d = random_scale(s, tiny);
            w8.push(BlockQ8_0 {
                d,
                qs: std::array::from_fn(|_| xorshift(s) as i8),
            });
        }
        let a8: Vec<BlockQ8_0> = a.iter().map(|b| BlockQ8_0 { d: b.d, qs: b.qs }).collect();
        let q4 = dot_q4_1_q8_1(&w, &a).to_bits() == scalar::dot_q4_1_q8_1(&w, &a).to_bits();
        let q8 = dot_q8_0_q8_0(&w8, &a8).to_bits() == scalar::dot_q8_0_q8_0(&w8, &a8).to_bits();
        differ += usize::from(!q4) + usize::from(!q8);
    }
    (2 * rows, differ)
}
