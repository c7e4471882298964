//! The batched micro-kernel: a register tile of 4 weight rows × T tokens (T ≤ 4). Each weight
//! block is loaded, unpacked and its scales converted once for the T tokens; each activation
//! block once for the 4 rows. The one-row-at-a-time kernels redo the weight work for every
//! token, which made a verify pass of k tokens cost nearly k decode steps.
//!
//! Two instruction sets, each stamped from the same body by a macro:
//! - AVX2: `vpmaddubsw` + `vpmaddwd` (as [`super::avx2`]);
//! - AVX-512 VNNI on 256-bit registers (`avx512vnni` + `avx512vl`): one `vpdpbusd` does both,
//!   and EVEX encoding gives 32 vector registers, room for a 4 × 4 tile of accumulators.
//!
//! `vpdpbusd` sums four u8 × i8 products into each i32 lane: lane l holds elements 4l…4l+3 of
//! the block, exactly the lanes of `vpmaddubsw` + `vpmaddwd` and of `scalar::Lanes`. Integer
//! sums are exact, and the float work after them (scale, convert, fused multiply-add into eight
//! lanes, block after block, then the fixed reduction tree) is the same instructions in the same
//! order for every (row, token). So every tile gives the scalar reference's bits, whatever T is
//! and whichever tokens share it: batch invariance, which speculative decoding relies on.
//!
//! # Safety
//! The AVX2 tiles need AVX2, FMA and F16C; the VNNI tiles also AVX-512 VNNI and VL. The
//! dispatcher in `kernels` hands them out only after checking.

use super::avx2::{
    Prefetch, dm_bits, dot_u8_i8, f16_pair, f16_to_f32, hsum_ps, load_i8x32, unpack_nibbles,
};
use crate::quant::{BlockQ4_1, BlockQ8_0, BlockQ8_1};
use std::arch::x86_64::*;

// ANCHOR: integer_parts
// The integer part of a block's dot product, as eight i32 lanes converted to f32.

/// Q4_1 nibbles (unsigned) · Q8_1 activations, AVX2.
#[inline]
#[target_feature(enable = "avx2")]
fn q4_dot_avx2(nibbles: __m256i, y: __m256i) -> __m256 {
    dot_u8_i8(nibbles, y)
}

/// Q4_1 nibbles (unsigned) · Q8_1 activations, one `vpdpbusd`.
#[inline]
#[target_feature(enable = "avx2,avx512vnni,avx512vl")]
fn q4_dot_vnni(nibbles: __m256i, y: __m256i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), nibbles, y))
}

/// A Q8_0 weight block prepared once for every token, AVX2: [|x|, x] for the sign trick
/// Σ x·y = Σ |x| · (sign(x)·y).
#[inline]
#[target_feature(enable = "avx2")]
fn q8_row_avx2(x: __m256i) -> [__m256i; 2] {
    [_mm256_sign_epi8(x, x), x]
}

/// A Q8_0 activation block prepared once for the four rows, AVX2: as it is.
#[inline]
#[target_feature(enable = "avx2")]
fn q8_act_avx2(y: __m256i) -> [__m256i; 2] {
    [y, y]
}

#[inline]
#[target_feature(enable = "avx2")]
fn q8_dot_avx2(x: [__m256i; 2], y: [__m256i; 2]) -> __m256 {
    dot_u8_i8(x[0], _mm256_sign_epi8(y[0], x[1]))
}

/// A Q8_0 weight block, VNNI: x + 128 as unsigned bytes (`vpdpbusd` wants one operand
/// unsigned), one XOR per block and row.
#[inline]
#[target_feature(enable = "avx2,avx512vnni,avx512vl")]
fn q8_row_vnni(x: __m256i) -> [__m256i; 2] {
    let unsigned = _mm256_xor_si256(x, _mm256_set1_epi8(-128));
    [unsigned, unsigned]
}

/// A Q8_0 activation block, VNNI: [y, −128·Σy per lane], so that
/// −128·Σy + Σ (x + 128)·y = Σ x·y, exactly (|128·Σy| < 2^17 in each lane).
#[inline]
#[target_feature(enable = "avx2,avx512vnni,avx512vl")]
fn q8_act_vnni(y: __m256i) -> [__m256i; 2] {
    let zero = _mm256_setzero_si256();
    let offset = _mm256_dpbusd_epi32(zero, _mm256_set1_epi8(-128), y);
    [y, _mm256_sub_epi32(zero, offset)]
}

#[inline]
#[target_feature(enable = "avx2,avx512vnni,avx512vl")]
fn q8_dot_vnni(x: [__m256i; 2], y: [__m256i; 2]) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(y[1], x[0], y[0]))
}
// ANCHOR_END: integer_parts

// ANCHOR: q4_1_tile
macro_rules! q4_1_tile {
    ($name:ident, $features:literal, $dot:ident) => {
        /// Four Q4_1 rows × T tokens: `out[t][r] = w[r] · a[t]`, where `a` holds T activation
        /// rows of `w[0].len()` blocks one after another. Row r, token t's arithmetic is that
        /// of `avx2::dot_q4_1_q8_1`: scales as in `dot_q4_1_q8_1_x4_scales`.
        #[inline]
        #[target_feature(enable = $features)]
        pub fn $name<const T: usize, P: Prefetch>(
            w: [&[BlockQ4_1]; 4],
            a: &[BlockQ8_1],
        ) -> [[f32; 4]; T] {
            let n = w[0].len();
            assert!(w.iter().all(|r| r.len() == n) && a.len() == T * n);
            let mut acc = [[_mm256_setzero_ps(); 4]; T];
            // Lane 2r + 1 of mins[t] holds row r's Σ m_x·s_y for token t.
            let mut mins = [_mm256_setzero_ps(); T];
            for i in 0..n {
                let xs = [&w[0][i], &w[1][i], &w[2][i], &w[3][i]];
                // [d₀, m₀, d₁, m₁, d₂, m₂, d₃, m₃] as floats, once for every token.
                let halves = _mm_set_epi64x(
                    (dm_bits(xs[2]) | (dm_bits(xs[3]) << 32)) as i64,
                    (dm_bits(xs[0]) | (dm_bits(xs[1]) << 32)) as i64,
                );
                let x_scales = _mm256_cvtph_ps(halves);
                let mut nibbles = [_mm256_setzero_si256(); 4];
                for r in 0..4 {
                    P::ahead((xs[r] as *const BlockQ4_1).cast());
                    nibbles[r] = unpack_nibbles(&xs[r].qs);
                }
                for t in 0..T {
                    let y = &a[t * n + i];
                    let y_scales = f16_pair(y.d, y.s);
                    let y_scales = _mm256_castpd_ps(_mm256_broadcastsd_pd(_mm_castps_pd(y_scales)));
                    let products = _mm256_mul_ps(x_scales, y_scales);
                    mins[t] = _mm256_add_ps(mins[t], products);
                    let y_qs = load_i8x32(&y.qs);
                    for r in 0..4 {
                        let scale =
                            _mm256_permutevar8x32_ps(products, _mm256_set1_epi32(2 * r as i32));
                        acc[t][r] = _mm256_fmadd_ps(scale, $dot(nibbles[r], y_qs), acc[t][r]);
                    }
                }
            }
            let mut out = [[0.0f32; 4]; T];
            for t in 0..T {
                let mut lanes = [0.0f32; 8];
                // SAFETY: `lanes` is 8 writable floats.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), mins[t]) };
                for r in 0..4 {
                    out[t][r] = hsum_ps(acc[t][r]) + lanes[2 * r + 1];
                }
            }
            out
        }
    };
}
// ANCHOR_END: q4_1_tile

q4_1_tile!(q4_1_q8_1_avx2, "avx2,fma,f16c", q4_dot_avx2);
q4_1_tile!(
    q4_1_q8_1_vnni,
    "avx2,fma,f16c,avx512vnni,avx512vl",
    q4_dot_vnni
);

macro_rules! q8_0_tile {
    ($name:ident, $features:literal, $row:ident, $act:ident, $dot:ident) => {
        /// Four Q8_0 rows × T tokens, as the Q4_1 tile. Row r, token t's arithmetic is that of
        /// `avx2::dot_q8_0_q8_0`: scales as in `dot_q8_0_q8_0_x4`.
        #[inline]
        #[target_feature(enable = $features)]
        pub fn $name<const T: usize, P: Prefetch>(
            w: [&[BlockQ8_0]; 4],
            a: &[BlockQ8_0],
        ) -> [[f32; 4]; T] {
            let n = w[0].len();
            assert!(w.iter().all(|r| r.len() == n) && a.len() == T * n);
            let mut acc = [[_mm256_setzero_ps(); 4]; T];
            for i in 0..n {
                let xs = [&w[0][i], &w[1][i], &w[2][i], &w[3][i]];
                let bits = u64::from(xs[0].d)
                    | (u64::from(xs[1].d) << 16)
                    | (u64::from(xs[2].d) << 32)
                    | (u64::from(xs[3].d) << 48);
                let x_scales = _mm_cvtph_ps(_mm_cvtsi64_si128(bits as i64));
                let mut rows = [[_mm256_setzero_si256(); 2]; 4];
                for r in 0..4 {
                    P::ahead((xs[r] as *const BlockQ8_0).cast());
                    rows[r] = $row(load_i8x32(&xs[r].qs));
                }
                for t in 0..T {
                    let y = &a[t * n + i];
                    let products =
                        _mm256_castps128_ps256(_mm_mul_ps(x_scales, _mm_set1_ps(f16_to_f32(y.d))));
                    let y_qs = $act(load_i8x32(&y.qs));
                    for r in 0..4 {
                        let scale = _mm256_permutevar8x32_ps(products, _mm256_set1_epi32(r as i32));
                        acc[t][r] = _mm256_fmadd_ps(scale, $dot(rows[r], y_qs), acc[t][r]);
                    }
                }
            }
            let mut out = [[0.0f32; 4]; T];
            for t in 0..T {
                for r in 0..4 {
                    out[t][r] = hsum_ps(acc[t][r]);
                }
            }
            out
        }
    };
}

q8_0_tile!(
    q8_0_q8_0_avx2,
    "avx2,fma,f16c",
    q8_row_avx2,
    q8_act_avx2,
    q8_dot_avx2
);
q8_0_tile!(
    q8_0_q8_0_vnni,
    "avx2,fma,f16c,avx512vnni,avx512vl",
    q8_row_vnni,
    q8_act_vnni,
    q8_dot_vnni
);

// ANCHOR: panel
/// A panel: `w` holds G rows (G a multiple of 4) of `per_row` blocks each, one after another;
/// `a` holds T tokens' activation rows. Writes `out[t · G + g] = w[g] · a[t]`, four rows at a
/// time through the tile, all inside one function: one call per panel instead of one per four
/// rows. With 576-wide rows (18 blocks) a tile's loop is short, and the call, the dispatch on
/// T and the loop set-up around it are a fixed cost it does not hide; here they are paid once
/// per panel.
macro_rules! panel {
    ($name:ident, $tile:ident, $features:literal, $wt:ty, $at:ty) => {
        /// G rows × T tokens through [`
        #[doc = stringify!($tile)]
        /// `], four rows at a time; every (row, token) gets the tile's bits.
        #[target_feature(enable = $features)]
        pub fn $name<const T: usize, P: Prefetch>(
            w: &[$wt],
            per_row: usize,
            a: &[$at],
            out: &mut [f32],
        ) {
            let g_rows = w.len() / per_row;
            assert!(
                g_rows.is_multiple_of(4)
                    && w.len() == g_rows * per_row
                    && a.len() == T * per_row
                    && out.len() == T * g_rows
            );
            for g in (0..g_rows).step_by(4) {
                let row = |r: usize| &w[(g + r) * per_row..(g + r + 1) * per_row];
                let four = $tile::<T, P>([row(0), row(1), row(2), row(3)], a);
                for (t, values) in four.iter().enumerate() {
                    out[t * g_rows + g..t * g_rows + g + 4].copy_from_slice(values);
                }
            }
        }
    };
}
// ANCHOR_END: panel

panel!(
    q4_1_q8_1_avx2_panel,
    q4_1_q8_1_avx2,
    "avx2,fma,f16c",
    BlockQ4_1,
    BlockQ8_1
);
panel!(
    q4_1_q8_1_vnni_panel,
    q4_1_q8_1_vnni,
    "avx2,fma,f16c,avx512vnni,avx512vl",
    BlockQ4_1,
    BlockQ8_1
);
panel!(
    q8_0_q8_0_avx2_panel,
    q8_0_q8_0_avx2,
    "avx2,fma,f16c",
    BlockQ8_0,
    BlockQ8_0
);
panel!(
    q8_0_q8_0_vnni_panel,
    q8_0_q8_0_vnni,
    "avx2,fma,f16c,avx512vnni,avx512vl",
    BlockQ8_0,
    BlockQ8_0
);
