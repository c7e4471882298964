//! AVX2 dot products of the K-quants (Q4_K, Q5_K, Q6_K) with 8-bit Q8_K activations.
//!
//! Within a super-block of 256 weights everything is integer: the codes are unpacked to one
//! byte each in registers, `vpmaddubsw` multiplies them (unsigned) by the activations
//! (signed) into 16-bit pair sums, and `vpmaddwd` by the sub-block's scale widens to 32 bits.
//! The eight 32-bit lanes are added up once per super-block, and the block's two float
//! products are then formed exactly as the scalar reference forms them. So, unlike the other
//! AVX2 kernels, these give the scalar reference's result **bit for bit** (tested).
//!
//! No 16-bit pair sum can saturate: codes are at most 63 and activations at most 128 in
//! magnitude, so a pair is at most 2·63·128 = 16 128 < 2^15. No 32-bit sum can overflow: a
//! super-block's total is below 2^29.
//!
//! # Safety
//! Every public function here is `unsafe` to call: the CPU must have AVX2, FMA and F16C
//! (`kernels::simd()` checks; the dispatchers in `kernels` only call these after it).

use super::avx2::{f16_to_f32, prefetch_ahead};
use crate::quant::kquants::{BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, unpack_all_scales};
use std::arch::x86_64::*;

/// 32 bytes from `bytes[at..at + 32]`.
#[inline]
#[target_feature(enable = "avx2")]
fn load32<T: Copy>(bytes: &[T], at: usize) -> __m256i {
    assert!(size_of::<T>() == 1 && at + 32 <= bytes.len());
    // SAFETY: the assert keeps the 32 bytes read inside the slice.
    unsafe { _mm256_loadu_si256(bytes.as_ptr().add(at).cast()) }
}

/// Sum of the eight i32 lanes (exact: integer additions).
#[inline]
#[target_feature(enable = "avx2")]
fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// Σ code·a over 32 unsigned codes and 32 signed activations, times `scale`, as 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn scaled_dot(codes: __m256i, acts: __m256i, scale: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(codes, acts), scale)
}

// ANCHOR: avx2_q4_k
/// One Q4_K (`fifth_bits: None`) or Q5_K super-block · its Q8_K block: per sub-block j of
/// 32, d·sc_j·da·Σ code·a − dmin·m_j·da·Σ a, the second sum from the activations' `bsums`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scale_min_block(
    d: u16,
    dmin: u16,
    scales: &[u8; 12],
    qs: &[u8; 128],
    fifth_bits: Option<&[u8; 32]>,
    a: &BlockQ8K,
) -> f32 {
    let low_nibble = _mm256_set1_epi8(0x0f);
    let qh = fifth_bits.map(|qh| load32(qh, 0));
    let (sc, m) = unpack_all_scales(scales);
    let (mut dots, mut mins) = (_mm256_setzero_si256(), 0i32);
    // Sub-blocks 2p and 2p + 1 share the 32 bytes qs[32p..]: low nibbles, then high.
    for pair in 0..4 {
        let q = load32(qs, 32 * pair);
        let mut codes = [
            _mm256_and_si256(q, low_nibble),
            _mm256_and_si256(_mm256_srli_epi16::<4>(q), low_nibble),
        ];
        for (half, codes) in codes.iter_mut().enumerate() {
            let sub = 2 * pair + half;
            if let Some(qh) = qh {
                // Bit `sub` of qh[l] is the fifth bit (16) of element l of the sub-block.
                let bit = _mm256_set1_epi8((1u8 << sub) as i8);
                let set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
                *codes = _mm256_or_si256(*codes, _mm256_and_si256(set, _mm256_set1_epi8(16)));
            }
            let acts = load32(&a.qs, 32 * sub);
            dots = _mm256_add_epi32(
                dots,
                scaled_dot(*codes, acts, _mm256_set1_epi16(i16::from(sc[sub]))),
            );
            mins +=
                i32::from(m[sub]) * (i32::from(a.bsums[2 * sub]) + i32::from(a.bsums[2 * sub + 1]));
        }
    }
    let (d, dmin) = (f16_to_f32(d) * a.d, f16_to_f32(dmin) * a.d);
    d * hsum_epi32(dots) as f32 - dmin * mins as f32
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn block_q4_k(x: &BlockQ4K, a: &BlockQ8K) -> f32 {
    scale_min_block(x.d, x.dmin, &x.scales, &x.qs, None, a)
}
// ANCHOR_END: avx2_q4_k

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn block_q5_k(x: &BlockQ5K, a: &BlockQ8K) -> f32 {
    scale_min_block(x.d, x.dmin, &x.scales, &x.qs, Some(&x.qh), a)
}

/// One Q6_K super-block · its Q8_K block. The codes are taken unsigned (0..=63) for
/// `vpmaddubsw`; the reference's `code − 32` is restored at the end as 32·Σ sc·Σ a, from the
/// activations' `bsums`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn block_q6_k(x: &BlockQ6K, a: &BlockQ8K) -> f32 {
    let low_nibble = _mm256_set1_epi8(0x0f);
    let mut dots = _mm256_setzero_si256();
    for half in 0..2 {
        let (ql0, ql1) = (load32(&x.ql, 64 * half), load32(&x.ql, 64 * half + 32));
        let qh = load32(&x.qh, 32 * half);
        let two_bits = |mask: u8| _mm256_and_si256(qh, _mm256_set1_epi8(mask as i8));
        // The four quarters of this half: low 4 bits from ql, bits 4–5 from a 2-bit field of qh.
        let quarters = [
            _mm256_or_si256(
                _mm256_and_si256(ql0, low_nibble),
                _mm256_slli_epi16::<4>(two_bits(0x03)),
            ),
            _mm256_or_si256(
                _mm256_and_si256(ql1, low_nibble),
                _mm256_slli_epi16::<2>(two_bits(0x0c)),
            ),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), low_nibble),
                two_bits(0x30),
            ),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low_nibble),
                _mm256_srli_epi16::<2>(two_bits(0xc0)),
            ),
        ];
        for (k, codes) in quarters.into_iter().enumerate() {
            // 32 codes = sub-blocks `sub` and `sub + 1` of 16, one scale for each 8 lanes.
            let sub = 8 * half + 2 * k;
            let scale = _mm256_set_m128i(
                _mm_set1_epi16(i16::from(x.scales[sub + 1])),
                _mm_set1_epi16(i16::from(x.scales[sub])),
            );
            let acts = load32(&a.qs, 128 * half + 32 * k);
            dots = _mm256_add_epi32(dots, scaled_dot(codes, acts, scale));
        }
    }
    let offset: i32 = x
        .scales
        .iter()
        .zip(&a.bsums)
        .map(|(&sc, &s)| i32::from(sc) * i32::from(s))
        .sum();
    let dots = hsum_epi32(dots) - 32 * offset;
    f16_to_f32(x.d) * a.d * dots as f32
}

/// A one-row kernel and a four-row kernel from a super-block kernel. Both add the blocks'
/// results in order from 0.0, as the scalar references do; the four-row one reads each
/// activation block once for four rows and prefetches every cache line of the weights.
macro_rules! row_kernels {
    ($(#[$doc:meta])* $one:ident, $four:ident, $block_ty:ty, $block:ident) => {
        $(#[$doc])*
        #[target_feature(enable = "avx2,fma,f16c")]
        pub fn $one(w: &[$block_ty], a: &[BlockQ8K]) -> f32 {
            let mut sum = 0.0f32;
            for (x, y) in w.iter().zip(a) {
                sum += $block(x, y);
            }
            sum
        }

        $(#[$doc])*
        /// Four rows at once; each row's result is that of the one-row kernel.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub fn $four(w: [&[$block_ty]; 4], a: &[BlockQ8K]) -> [f32; 4] {
            let mut sums = [0.0f32; 4];
            for (i, y) in a.iter().enumerate() {
                for (row, sum) in w.iter().zip(sums.iter_mut()) {
                    let Some(x) = row.get(i) else { continue };
                    let start: *const i8 = (x as *const $block_ty).cast();
                    for line in (0..size_of::<$block_ty>()).step_by(64) {
                        prefetch_ahead(start.wrapping_add(line));
                    }
                    *sum += $block(x, y);
                }
            }
            sums
        }
    };
}

row_kernels!(
    /// Q4_K · Q8_K.
    dot_q4_k_q8_k, dot_q4_k_q8_k_x4, BlockQ4K, block_q4_k
);
row_kernels!(
    /// Q5_K · Q8_K.
    dot_q5_k_q8_k, dot_q5_k_q8_k_x4, BlockQ5K, block_q5_k
);
row_kernels!(
    /// Q6_K · Q8_K.
    dot_q6_k_q8_k, dot_q6_k_q8_k_x4, BlockQ6K, block_q6_k
);
