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
/// A kernel takes the table once per call: a `u16` indexes it without a bounds check.
pub(super) fn f16_table() -> &'static [f32; 65536] {
    static TABLE: OnceLock<Box<[f32; 65536]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = Box::new([0.0f32; 65536]);
        for (h, v) in (0..=u16::MAX).zip(table.iter_mut()) {
            *v = crate::quant::f16_to_f32(h);
        }
        table
    })
}
use core::arch::wasm32::*;

pub use super::scalar::{dot_f32, dot_q4_0_q8_0};

/// The eight canonical lanes' partial sums of one block, as two i32x4 (lanes 0–3, 4–7), from
/// its 32 weights and activations as i16x8 quarters (elements 0–7, 8–15, 16–23, 24–31).
#[inline(always)]
pub(super) fn lane_partials(w: [v128; 4], a: [v128; 4]) -> (v128, v128) {
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
pub(super) fn widen_i8(q: &[i8; QK]) -> [v128; 4] {
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
    #[cfg(target_feature = "relaxed-simd")]
    if super::wasm_relaxed::fused() {
        return super::wasm_relaxed::dot_q4_1_q8_1(w, a);
    }
    let f16 = f16_table();
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
        let scale = f16[usize::from(x.d)] * f16[usize::from(y.d)];
        lanes.add(scale, lane_partials(weights, widen_i8(&y.qs)));
        mins += f16[usize::from(x.m)] * f16[usize::from(y.s)];
    }
    lanes.total() + mins
}
// ANCHOR_END: dot_q4_1_q8_1

/// [`scalar::dot_q8_0_q8_0`] with simd128, the same bits.
pub fn dot_q8_0_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    #[cfg(target_feature = "relaxed-simd")]
    if super::wasm_relaxed::fused() {
        return super::wasm_relaxed::dot_q8_0_q8_0(w, a);
    }
    let f16 = f16_table();
    let mut lanes = Lanes::new();
    for (x, y) in w.iter().zip(a) {
        let scale = f16[usize::from(x.d)] * f16[usize::from(y.d)];
        lanes.add(scale, lane_partials(widen_i8(&x.qs), widen_i8(&y.qs)));
    }
    lanes.total()
}

/// A row's eight f32 lanes as four f32x4 that hold two each (lanes 0–1, 2–3, 4–5, 6–7 in their
/// first two places, zeros after): what `f32x4.demote_f64x2_zero` gives and
/// `f64x2.promote_low_f32x4` takes. Packing them into two f32x4 costs a shuffle that LLVM turns
/// into eight scalar conversions.
type RowLanes = [v128; 4];

/// One block's `scale · partial + lane` for a row's eight lanes, in f64 (four f64x2: lanes 0–1,
/// 2–3, 4–5, 6–7), from its lane partials and its lanes.
#[inline(always)]
fn block_sums(scale: f32, (p_lo, p_hi): (v128, v128), acc: RowLanes) -> ([v128; 4], [v128; 4]) {
    let s = f64x2_splat(f64::from(scale));
    let half = |v: v128| i32x4_shuffle::<2, 3, 0, 1>(v, v);
    let products = [
        f64x2_mul(s, f64x2_convert_low_i32x4(p_lo)), // exact
        f64x2_mul(s, f64x2_convert_low_i32x4(half(p_lo))),
        f64x2_mul(s, f64x2_convert_low_i32x4(p_hi)),
        f64x2_mul(s, f64x2_convert_low_i32x4(half(p_hi))),
    ];
    let lanes = acc.map(|v| f64x2_promote_low_f32x4(v));
    let sums = [
        f64x2_add(products[0], lanes[0]),
        f64x2_add(products[1], lanes[1]),
        f64x2_add(products[2], lanes[2]),
        f64x2_add(products[3], lanes[3]),
    ];
    (sums, products)
}

/// Where a sum's low 29 bits are 1000…0: rounding it to f32 is a tie, which is a problem only
/// if the f64 addition rounded too (see `rounded_ties`).
#[inline(always)]
fn tie_bits(sums: &[v128; 4]) -> v128 {
    let (mask, tie) = (i64x2_splat(0x1fff_ffff), i64x2_splat(0x1000_0000));
    let t = |s: v128| i64x2_eq(v128_and(s, mask), tie);
    v128_or(
        v128_or(t(sums[0]), t(sums[1])),
        v128_or(t(sums[2]), t(sums[3])),
    )
}

/// Where a sum is a tie *and* the f64 addition was inexact: the only case in which rounding
/// the f64 sum to f32 differs from the single rounding of an FMA.
#[inline(always)]
fn rounded_ties(sums: &[v128; 4], products: &[v128; 4], acc: RowLanes) -> v128 {
    let lanes = acc.map(|v| f64x2_promote_low_f32x4(v));
    let (mask, tie) = (i64x2_splat(0x1fff_ffff), i64x2_splat(0x1000_0000));
    let mut out = i64x2_splat(0);
    for k in 0..4 {
        let (sum, p, a) = (sums[k], products[k], lanes[k]);
        let exact = v128_and(
            f64x2_eq(f64x2_sub(sum, p), a),
            f64x2_eq(f64x2_sub(sum, a), p),
        );
        out = v128_or(out, v128_andnot(i64x2_eq(v128_and(sum, mask), tie), exact));
    }
    out
}

/// The eight sums rounded to f32.
#[inline(always)]
fn round_lanes(sums: &[v128; 4]) -> RowLanes {
    sums.map(|v| f32x4_demote_f64x2_zero(v))
}

// ANCHOR: four_rows
/// Four rows' eight f32 lanes each and their `mins` sums, for the four-row kernels.
///
/// Why rounding the f64 sum to f32 is the single rounding of an FMA except at an inexact tie
/// (checked), without the tiny-sum check of [`fma4`]: both f16 scales are multiples of 2⁻²⁴, so
/// their product — exact in f32, 22 significant bits at most — is a multiple of 2⁻⁴⁸, and so is
/// every `scale · partial`; a sum of multiples of 2⁻⁴⁸ rounded to f32 stays one (the grid of a
/// larger f32 is coarser). Every lane and every sum is therefore 0 or at least 2⁻⁴⁸ in size,
/// far from the f32 subnormals below 2⁻¹²⁶.
struct FourRows {
    acc: [RowLanes; 4],
    mins: [f32; 4],
    /// Every block through the exact-FMA branch (the self-test's way to check that branch).
    exact_only: bool,
}
// ANCHOR_END: four_rows

impl FourRows {
    fn new(exact_only: bool) -> FourRows {
        FourRows {
            acc: [[f32x4_splat(0.0); 4]; 4],
            mins: [0.0; 4],
            exact_only,
        }
    }

    /// Adds one block of every row: `scales[r]` times the row's lane partials (`partials[r]`, as
    /// [`lane_partials`] gives them). Four independent chains, so the f64 latency overlaps.
    #[inline(always)]
    fn add(&mut self, scales: [f32; 4], partials: [(v128, v128); 4]) {
        let (s0, p0) = block_sums(scales[0], partials[0], self.acc[0]);
        let (s1, p1) = block_sums(scales[1], partials[1], self.acc[1]);
        let (s2, p2) = block_sums(scales[2], partials[2], self.acc[2]);
        let (s3, p3) = block_sums(scales[3], partials[3], self.acc[3]);
        let ties = v128_or(
            v128_or(tie_bits(&s0), tie_bits(&s1)),
            v128_or(tie_bits(&s2), tie_bits(&s3)),
        );
        // Low bits 1000…0 are common (the data have few significant bits); a rounded tie is
        // rare.
        let doubt = self.exact_only
            || v128_any_true(ties)
                && v128_any_true(v128_or(
                    v128_or(
                        rounded_ties(&s0, &p0, self.acc[0]),
                        rounded_ties(&s1, &p1, self.acc[1]),
                    ),
                    v128_or(
                        rounded_ties(&s2, &p2, self.acc[2]),
                        rounded_ties(&s3, &p3, self.acc[3]),
                    ),
                ));
        if !doubt {
            self.acc = [
                round_lanes(&s0),
                round_lanes(&s1),
                round_lanes(&s2),
                round_lanes(&s3),
            ];
            return;
        }
        for (r, &(lo, hi)) in partials.iter().enumerate() {
            // SAFETY: two v128 are 8 i32, and 8 f32.
            let p: [i32; 8] = unsafe { std::mem::transmute([lo, hi]) };
            let mut lanes = self.lanes(r);
            for (lane, p) in lanes.iter_mut().zip(p) {
                *lane = super::fma::fma(scales[r], p as f32, *lane);
            }
            self.acc[r] = std::array::from_fn(|k| f32x4(lanes[2 * k], lanes[2 * k + 1], 0.0, 0.0));
        }
    }

    /// Row `r`'s eight lanes.
    fn lanes(&self, r: usize) -> [f32; 8] {
        // SAFETY: four v128 are 16 f32: each holds two lanes, then two zeros.
        let all: [f32; 16] = unsafe { std::mem::transmute(self.acc[r]) };
        std::array::from_fn(|j| all[4 * (j / 2) + j % 2])
    }

    fn totals(&self) -> [f32; 4] {
        std::array::from_fn(|r| hsum8(&self.lanes(r)) + self.mins[r])
    }
}

/// [`dot_q4_1_q8_1`] for four rows at once: each activation block widened once, four
/// independent accumulations. Every row's bits are the one-row kernel's.
pub fn dot_q4_1_q8_1_x4(w: [&[BlockQ4_1]; 4], a: &[BlockQ8_1]) -> [f32; 4] {
    #[cfg(target_feature = "relaxed-simd")]
    if super::wasm_relaxed::fused() {
        return super::wasm_relaxed::dot_q4_1_q8_1_x4(w, a);
    }
    dot_q4_1_q8_1_x4_with(w, a, false)
}

fn dot_q4_1_q8_1_x4_with(w: [&[BlockQ4_1]; 4], a: &[BlockQ8_1], exact_only: bool) -> [f32; 4] {
    /// One row's block: its scale with the activations', and its lane partials.
    #[inline(always)]
    fn row(f16: &[f32; 65536], x: &BlockQ4_1, dy: f32, act: [v128; 4]) -> (f32, (v128, v128)) {
        // SAFETY: 16 bytes, one unaligned v128 load.
        let q = unsafe { v128_load(x.qs.as_ptr().cast::<v128>()) };
        let (low, high) = (v128_and(q, u8x16_splat(0x0f)), u8x16_shr(q, 4));
        let weights = [
            u16x8_extend_low_u8x16(low),
            u16x8_extend_high_u8x16(low),
            u16x8_extend_low_u8x16(high),
            u16x8_extend_high_u8x16(high),
        ];
        (f16[usize::from(x.d)] * dy, lane_partials(weights, act))
    }
    let f16 = f16_table();
    let mut rows = FourRows::new(exact_only);
    let blocks = a.iter().zip(w[0]).zip(w[1]).zip(w[2]).zip(w[3]);
    for ((((y, x0), x1), x2), x3) in blocks {
        let act = widen_i8(&y.qs);
        let (dy, sy) = (f16[usize::from(y.d)], f16[usize::from(y.s)]);
        let x = [x0, x1, x2, x3];
        let (r0, r1, r2, r3) = (
            row(f16, x[0], dy, act),
            row(f16, x[1], dy, act),
            row(f16, x[2], dy, act),
            row(f16, x[3], dy, act),
        );
        rows.add([r0.0, r1.0, r2.0, r3.0], [r0.1, r1.1, r2.1, r3.1]);
        for (m, x) in rows.mins.iter_mut().zip(x) {
            *m += f16[usize::from(x.m)] * sy;
        }
    }
    rows.totals()
}

/// [`dot_q8_0_q8_0`] for four rows at once, the one-row kernel's bits.
pub fn dot_q8_0_q8_0_x4(w: [&[BlockQ8_0]; 4], a: &[BlockQ8_0]) -> [f32; 4] {
    #[cfg(target_feature = "relaxed-simd")]
    if super::wasm_relaxed::fused() {
        return super::wasm_relaxed::dot_q8_0_q8_0_x4(w, a);
    }
    dot_q8_0_q8_0_x4_with(w, a, false)
}

fn dot_q8_0_q8_0_x4_with(w: [&[BlockQ8_0]; 4], a: &[BlockQ8_0], exact_only: bool) -> [f32; 4] {
    #[inline(always)]
    fn row(f16: &[f32; 65536], x: &BlockQ8_0, dy: f32, act: [v128; 4]) -> (f32, (v128, v128)) {
        (
            f16[usize::from(x.d)] * dy,
            lane_partials(widen_i8(&x.qs), act),
        )
    }
    let f16 = f16_table();
    let mut rows = FourRows::new(exact_only);
    let blocks = a.iter().zip(w[0]).zip(w[1]).zip(w[2]).zip(w[3]);
    for ((((y, x0), x1), x2), x3) in blocks {
        let act = widen_i8(&y.qs);
        let dy = f16[usize::from(y.d)];
        let x = [x0, x1, x2, x3];
        let (r0, r1, r2, r3) = (
            row(f16, x[0], dy, act),
            row(f16, x[1], dy, act),
            row(f16, x[2], dy, act),
            row(f16, x[3], dy, act),
        );
        rows.add([r0.0, r1.0, r2.0, r3.0], [r0.1, r1.1, r2.1, r3.1]);
    }
    rows.totals()
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
/// `blocks` blocks each, Q4_1 · Q8_1 and Q8_0 · Q8_0, through the one-row kernels, the
/// four-row kernels and the four-row kernels' exact-FMA branch: (rows checked, rows that
/// differ). Rows come in groups of four that share their activations.
pub fn self_test(rows: usize, blocks: usize, seed: u64) -> (usize, usize) {
    let mut st = seed | 1;
    let (mut checked, mut differ) = (0, 0);
    for group in 0..rows.div_ceil(4) {
        let tiny = group % 5 == 0;
        let s = &mut st;
        let mut row_q4 = || BlockQ4_1 {
            d: random_scale(s, tiny),
            m: random_scale(s, tiny) ^ 0x8000,
            qs: std::array::from_fn(|_| xorshift(s) as u8),
        };
        let w: [Vec<BlockQ4_1>; 4] =
            std::array::from_fn(|_| (0..blocks).map(|_| row_q4()).collect());
        let mut row_q8 = || BlockQ8_0 {
            d: random_scale(s, tiny),
            qs: std::array::from_fn(|_| xorshift(s) as i8),
        };
        let w8: [Vec<BlockQ8_0>; 4] =
            std::array::from_fn(|_| (0..blocks).map(|_| row_q8()).collect());
        let a: Vec<BlockQ8_1> = (0..blocks)
            .map(|_| BlockQ8_1 {
                d: random_scale(s, tiny),
                s: random_scale(s, tiny),
                qs: std::array::from_fn(|_| xorshift(s) as i8),
            })
            .collect();
        let a8: Vec<BlockQ8_0> = a.iter().map(|b| BlockQ8_0 { d: b.d, qs: b.qs }).collect();
        let w_refs = [&w[0][..], &w[1], &w[2], &w[3]];
        let w8_refs = [&w8[0][..], &w8[1], &w8[2], &w8[3]];
        // The kernels the engine calls (relaxed-SIMD's where the module has them and the
        // engine fuses), then the f64 path, then its exact-FMA branch.
        let q4 = [
            dot_q4_1_q8_1_x4(w_refs, &a),
            dot_q4_1_q8_1_x4_with(w_refs, &a, false),
            dot_q4_1_q8_1_x4_with(w_refs, &a, true),
        ];
        let q8 = [
            dot_q8_0_q8_0_x4(w8_refs, &a8),
            dot_q8_0_q8_0_x4_with(w8_refs, &a8, false),
            dot_q8_0_q8_0_x4_with(w8_refs, &a8, true),
        ];
        for r in 0..4 {
            let want_q4 = scalar::dot_q4_1_q8_1(&w[r], &a).to_bits();
            let want_q8 = scalar::dot_q8_0_q8_0(&w8[r], &a8).to_bits();
            let got_q4 = [dot_q4_1_q8_1(&w[r], &a), q4[0][r], q4[1][r], q4[2][r]];
            let got_q8 = [dot_q8_0_q8_0(&w8[r], &a8), q8[0][r], q8[1][r], q8[2][r]];
            differ += got_q4.iter().filter(|x| x.to_bits() != want_q4).count();
            differ += got_q8.iter().filter(|x| x.to_bits() != want_q8).count();
            checked += 8;
        }
    }
    (checked, differ)
}
