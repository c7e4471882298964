//! The simd128 kernels again with two relaxed-SIMD instructions, for engines that have them
//! (a second module, built with `+relaxed-simd`; the loader falls back to the simd128 module
//! where it does not compile):
//!
//! - `f32x4.relaxed_madd`: `a · b + c`, rounded once *or* twice — the engine chooses, once
//!   (V8 fuses where the CPU has FMA). [`fused`] finds out at run time with numbers whose two
//!   answers differ; only where it fuses do these kernels run, so the bits stay the canonical
//!   ones. Elsewhere the simd128 kernels' exact f64 path runs.
//! - `i32x4.relaxed_dot_i8x16_i7x16_add`: four i8 · i7 products per lane added in one
//!   instruction — exactly the canonical lanes of four elements. Its result is defined when the
//!   second operand's values lie in 0..=127 and the pair sums fit in 16 bits: Q4_1's nibbles
//!   (0..=15) times Q8_1's bytes (|x| ≤ 128) give at most 2 · 15 · 128 = 3,840. Q8_0 weights
//!   are signed bytes, so Q8_0 · Q8_0 keeps the simd128 integer part.

use super::scalar::hsum8;
use super::wasm_simd128::{f16_table, lane_partials, widen_i8};
use crate::quant::{BlockQ4_1, BlockQ8_0, BlockQ8_1};
use core::arch::wasm32::*;
use std::sync::OnceLock;

// ANCHOR: fused
/// Whether this engine's `relaxed_madd` rounds once (fused), found once: with
/// a = b = 1 + 2⁻¹², c = −(1 + 2⁻¹¹), the exact a·b + c is 2⁻²⁴; rounding a·b first loses it.
pub fn fused() -> bool {
    static FUSED: OnceLock<bool> = OnceLock::new();
    *FUSED.get_or_init(|| {
        let a = f32x4_splat(std::hint::black_box(1.0 + 2f32.powi(-12)));
        let c = f32x4_splat(std::hint::black_box(-(1.0 + 2f32.powi(-11))));
        let r = f32x4_relaxed_madd(a, a, c);
        // Every lane: an engine that fuses fuses all four.
        u32x4_all_true(f32x4_eq(r, f32x4_splat(2f32.powi(-24))))
    })
}
// ANCHOR_END: fused

// ANCHOR: relaxed_block
/// Q4_1 · Q8_1 lane partials of one block: lanes 0–3 from the low nibbles and activations
/// 0–15, lanes 4–7 from the high nibbles and activations 16–31.
#[inline(always)]
fn q4_1_partials(qs: &[u8; 16], act: (v128, v128)) -> (v128, v128) {
    // SAFETY: 16 bytes, one unaligned v128 load.
    let q = unsafe { v128_load(qs.as_ptr().cast::<v128>()) };
    let (low, high) = (v128_and(q, u8x16_splat(0x0f)), u8x16_shr(q, 4));
    let zero = i32x4_splat(0);
    (
        i32x4_relaxed_dot_i8x16_i7x16_add(act.0, low, zero),
        i32x4_relaxed_dot_i8x16_i7x16_add(act.1, high, zero),
    )
}

/// A block's 32 activation bytes as two v128.
#[inline(always)]
fn act_bytes(qs: &[i8; 32]) -> (v128, v128) {
    // SAFETY: 32 bytes, two unaligned v128 loads.
    unsafe {
        (
            v128_load(qs.as_ptr().cast::<v128>()),
            v128_load(qs.as_ptr().add(16).cast::<v128>()),
        )
    }
}

/// Eight lanes (`[0–3, 4–7]`) plus `scale · partials`, each lane rounded once.
#[inline(always)]
fn madd(scale: f32, (p_lo, p_hi): (v128, v128), acc: [v128; 2]) -> [v128; 2] {
    let s = f32x4_splat(scale);
    // The partials are below 2²⁴ in size: exact in f32.
    [
        f32x4_relaxed_madd(s, f32x4_convert_i32x4(p_lo), acc[0]),
        f32x4_relaxed_madd(s, f32x4_convert_i32x4(p_hi), acc[1]),
    ]
}
// ANCHOR_END: relaxed_block

fn total(acc: [v128; 2]) -> f32 {
    // SAFETY: two v128 are 8 f32.
    hsum8(&unsafe { std::mem::transmute::<[v128; 2], [f32; 8]>(acc) })
}

/// [`super::scalar::dot_q4_1_q8_1`]'s bits, where [`fused`].
pub fn dot_q4_1_q8_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let f16 = f16_table();
    let mut acc = [f32x4_splat(0.0); 2];
    let mut mins = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let scale = f16[usize::from(x.d)] * f16[usize::from(y.d)];
        acc = madd(scale, q4_1_partials(&x.qs, act_bytes(&y.qs)), acc);
        mins += f16[usize::from(x.m)] * f16[usize::from(y.s)];
    }
    total(acc) + mins
}

/// Four rows of [`dot_q4_1_q8_1`], the activations loaded once.
pub fn dot_q4_1_q8_1_x4(w: [&[BlockQ4_1]; 4], a: &[BlockQ8_1]) -> [f32; 4] {
    let f16 = f16_table();
    let mut acc = [[f32x4_splat(0.0); 2]; 4];
    let mut mins = [0.0f32; 4];
    let blocks = a.iter().zip(w[0]).zip(w[1]).zip(w[2]).zip(w[3]);
    for ((((y, x0), x1), x2), x3) in blocks {
        let act = act_bytes(&y.qs);
        let (dy, sy) = (f16[usize::from(y.d)], f16[usize::from(y.s)]);
        for (r, x) in [x0, x1, x2, x3].into_iter().enumerate() {
            acc[r] = madd(
                f16[usize::from(x.d)] * dy,
                q4_1_partials(&x.qs, act),
                acc[r],
            );
            mins[r] += f16[usize::from(x.m)] * sy;
        }
    }
    std::array::from_fn(|r| total(acc[r]) + mins[r])
}

/// [`super::scalar::dot_q8_0_q8_0`]'s bits, where [`fused`].
pub fn dot_q8_0_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    let f16 = f16_table();
    let mut acc = [f32x4_splat(0.0); 2];
    for (x, y) in w.iter().zip(a) {
        let scale = f16[usize::from(x.d)] * f16[usize::from(y.d)];
        acc = madd(scale, lane_partials(widen_i8(&x.qs), widen_i8(&y.qs)), acc);
    }
    total(acc)
}

/// Four rows of [`dot_q8_0_q8_0`], the activations widened once.
pub fn dot_q8_0_q8_0_x4(w: [&[BlockQ8_0]; 4], a: &[BlockQ8_0]) -> [f32; 4] {
    let f16 = f16_table();
    let mut acc = [[f32x4_splat(0.0); 2]; 4];
    let blocks = a.iter().zip(w[0]).zip(w[1]).zip(w[2]).zip(w[3]);
    for ((((y, x0), x1), x2), x3) in blocks {
        let act = widen_i8(&y.qs);
        let dy = f16[usize::from(y.d)];
        for (r, x) in [x0, x1, x2, x3].into_iter().enumerate() {
            let partials = lane_partials(widen_i8(&x.qs), act);
            acc[r] = madd(f16[usize::from(x.d)] * dy, partials, acc[r]);
        }
    }
    std::array::from_fn(|r| total(acc[r]))
}
