//! AVX2 dot product of NF4 weights with f32 activations. NF4's levels are not integers, so
//! there is no 8-bit trick: each code is looked up in the 16-level table in registers (two
//! 8-entry `vpermps` lookups and a blend), then multiplied into the activations with FMAs.
//! Results agree with the scalar reference to rounding (the additions run in another order).
//!
//! # Safety
//! Every public function here is `unsafe` to call: the CPU must have AVX2, FMA and F16C
//! (`kernels::simd()` checks; the dispatchers in `kernels` only call these after it).

use super::avx2::{f16_to_f32, hsum_ps};
use crate::quant::nf4::{BlockNf4, NF4_LEVELS, QK_NF4};
use std::arch::x86_64::*;

// ANCHOR: avx2_nf4
/// The levels of 8 codes: `codes` holds one code (0..16) per 32-bit lane.
#[inline]
#[target_feature(enable = "avx2")]
fn levels(codes: __m256i, low: __m256, high: __m256) -> __m256 {
    // vpermps reads the low 3 bits of each lane: one lookup per half of the table, then
    // take the upper half's where bit 3 is set.
    let upper = _mm256_castsi256_ps(_mm256_cmpgt_epi32(codes, _mm256_set1_epi32(7)));
    _mm256_blendv_ps(
        _mm256_permutevar8x32_ps(low, codes),
        _mm256_permutevar8x32_ps(high, codes),
        upper,
    )
}

/// NF4 · f32: per block of 64, 8 bytes (16 codes) at a time; each byte repeated, shifted by
/// 4 in even lanes and masked, gives the codes in element order (high nibble first).
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_nf4_f32(w: &[BlockNf4], x: &[f32]) -> f32 {
    // SAFETY: NF4_LEVELS has 16 floats; each load reads 8 of them.
    let (low, high) = unsafe {
        (
            _mm256_loadu_ps(NF4_LEVELS.as_ptr()),
            _mm256_loadu_ps(NF4_LEVELS.as_ptr().add(8)),
        )
    };
    let shifts = _mm256_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0);
    let nibble = _mm256_set1_epi32(0x0f);
    let mut acc = _mm256_setzero_ps();
    for (b, xs) in w.iter().zip(x.chunks_exact(QK_NF4)) {
        let mut block = [_mm256_setzero_ps(); 2];
        for (k, bytes) in b.qs.chunks_exact(8).enumerate() {
            // SAFETY: `bytes` is 8 readable bytes.
            let packed = unsafe { _mm_loadl_epi64(bytes.as_ptr().cast()) };
            let doubled = _mm_unpacklo_epi8(packed, packed); // b0 b0 b1 b1 … b7 b7
            for (half, acc) in block.iter_mut().enumerate() {
                let repeated = if half == 0 {
                    _mm256_cvtepu8_epi32(doubled)
                } else {
                    _mm256_cvtepu8_epi32(_mm_srli_si128::<8>(doubled))
                };
                let codes = _mm256_and_si256(_mm256_srlv_epi32(repeated, shifts), nibble);
                // SAFETY: `xs` holds 64 floats; 16k + 8·half + 8 <= 64.
                let xv = unsafe { _mm256_loadu_ps(xs.as_ptr().add(16 * k + 8 * half)) };
                *acc = _mm256_fmadd_ps(levels(codes, low, high), xv, *acc);
            }
        }
        let scale = _mm256_set1_ps(f16_to_f32(b.absmax));
        acc = _mm256_fmadd_ps(_mm256_add_ps(block[0], block[1]), scale, acc);
    }
    hsum_ps(acc)
}
// ANCHOR_END: avx2_nf4
