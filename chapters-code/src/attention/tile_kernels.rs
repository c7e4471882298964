//! The tile loop of [`super::tiled`], compiled once per SIMD path and picked at run time: the
//! baseline CPU (the scalar reference), AVX2 + FMA + F16C, AVX-512 F/VL on x86_64, and NEON
//! (part of every aarch64 CPU, so its baseline). The loop is plain Rust that LLVM vectorizes
//! for each target; Rust never reorders or fuses float operations, so every path gives the
//! scalar path's bits (the tests check it), 8 or 16 lanes at a time instead of one.

use super::KvChunk;
use super::tiled::{RowState, f16_row_to_f32, segment_body};
use crate::hw::SimdLevel;

/// One block of query rows of one kv head, and where its keys live.
pub struct TileInputs<'a> {
    /// rows × head_dim queries, already scaled by 1/√head_dim.
    pub q: Vec<f32>,
    /// The position of each row (its causal limit).
    pub positions: Vec<usize>,
    pub head_dim: usize,
    pub kv_dim: usize,
    /// Which kv head (its columns `kv_head·head_dim..` of a cache row).
    pub kv_head: usize,
    pub chunks: Vec<KvChunk<'a>>,
    /// The first position of each chunk.
    pub chunk_starts: Vec<usize>,
}

/// The path the tile loop runs at `level` on this CPU.
pub fn path(level: SimdLevel) -> SimdLevel {
    if level.is_supported() {
        level
    } else {
        SimdLevel::Scalar
    }
}

/// [`segment_body`] on `path` (a level [`path`] returned).
pub fn segment(path: SimdLevel, inp: &TileInputs<'_>, keys: std::ops::Range<usize>) -> RowState {
    match path {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => {
            #[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
            fn avx512(inp: &TileInputs<'_>, keys: std::ops::Range<usize>) -> RowState {
                // SAFETY: this function runs only where F16C is present (its target features).
                segment_body(inp, keys, |s, d| unsafe { f16c_row_to_f32(s, d) })
            }
            // SAFETY: `path` hands out Avx512 only where `is_supported` checked these features.
            unsafe { avx512(inp, keys) }
        }
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => {
            #[target_feature(enable = "avx2,fma,f16c")]
            fn avx2(inp: &TileInputs<'_>, keys: std::ops::Range<usize>) -> RowState {
                // SAFETY: this function runs only where F16C is present (its target features).
                segment_body(inp, keys, |s, d| unsafe { f16c_row_to_f32(s, d) })
            }
            // SAFETY: `path` hands out Avx2 only where `is_supported` checked these features.
            unsafe { avx2(inp, keys) }
        }
        // NEON is the aarch64 baseline: the plain build is the NEON build.
        _ => segment_body(inp, keys, f16_row_to_f32),
    }
}

/// f16 bits to f32 with F16C, eight at a time. The conversion is exact (every f16 is an f32),
/// so it gives [`f16_row_to_f32`]'s bits.
///
/// # Safety
/// The CPU has AVX2 and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
#[inline]
unsafe fn f16c_row_to_f32(src: &[u16], dst: &mut [f32]) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm256_cvtph_ps, _mm256_storeu_ps};
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 ≤ n, within both slices; unaligned loads and stores.
        unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(i).cast::<__m128i>());
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
        i += 8;
    }
    f16_row_to_f32(&src[i..n], &mut dst[i..n]);
}
