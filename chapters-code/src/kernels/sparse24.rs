//! A 2:4-sparse 8-bit format and its dot product: what a CPU can make of the pattern that
//! sparse tensor cores run at twice the dense speed.
//!
//! A Q8_0 block holds 32 weights in 34 bytes. After 2:4 pruning, each group of 4 consecutive
//! weights holds at most 2 non-zeros: [`BlockQ8_0x24`] keeps those 2 values and their positions
//! (2 bits each) — 16 values, 4 bytes of positions and the scale, 22 bytes: 0.65× the bytes a
//! dense kernel reads. Decode reads every weight once per token and is bound by memory, so
//! fewer bytes could mean more speed; what it costs is a gather of the activations that sit
//! at the kept positions, block by block.
//!
//! The canonical order of the dense kernels (`scalar::Lanes`) sums lane `l` over elements
//! `4l..4l+4` — exactly group `l`. A zero adds nothing to an exact integer sum, so the sparse
//! dot product gives the dense one's bits on the same pruned row (tested): a 2:4 kernel can be
//! swapped in without changing one logit.

use super::scalar::Lanes;
use crate::hw::SimdLevel;
use crate::quant::{BlockQ8_0, QK, f16_to_f32};

/// 16 kept weights of a 32-weight block: `qs[2g]` and `qs[2g + 1]` sit at positions
/// `4g + (idx[g/2] >> 4(g%2)) & 3` and `… >> 2 & 3` of group `g`. 22 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_0x24 {
    pub d: u16,
    /// For each group, 4 bits: the first kept position (bits 0–1) and the second (bits 2–3).
    pub idx: [u8; 4],
    pub qs: [i8; QK / 2],
}

/// Why a row cannot be stored as 2:4.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("group {group} of block {block} has {nonzeros} non-zero weights: 2:4 keeps at most 2 of 4")]
pub struct Not24 {
    pub block: usize,
    pub group: usize,
    pub nonzeros: usize,
}

/// The positions (within its group of 4) of group `g`'s two kept weights.
#[inline(always)]
fn positions(b: &BlockQ8_0x24, g: usize) -> (usize, usize) {
    let nib = (b.idx[g / 2] >> (4 * (g % 2))) & 0x0f;
    (usize::from(nib & 3), usize::from(nib >> 2))
}

// ANCHOR: pack
/// A pruned Q8_0 row packed as 2:4: per group, the non-zeros (padded with zeros of the group
/// when it has fewer than two), same scale.
pub fn pack(row: &[BlockQ8_0]) -> Result<Vec<BlockQ8_0x24>, Not24> {
    row.iter()
        .enumerate()
        .map(|(block, b)| {
            let mut out = BlockQ8_0x24 {
                d: b.d,
                idx: [0; 4],
                qs: [0; QK / 2],
            };
            for g in 0..QK / 4 {
                let group = &b.qs[4 * g..4 * g + 4];
                let nonzeros: Vec<usize> = (0..4).filter(|&i| group[i] != 0).collect();
                if nonzeros.len() > 2 {
                    return Err(Not24 {
                        block,
                        group: g,
                        nonzeros: nonzeros.len(),
                    });
                }
                // Two distinct positions: the non-zeros first, then the group's first zeros.
                let mut kept = nonzeros.clone();
                kept.extend((0..4).filter(|i| !nonzeros.contains(i)));
                let (p0, p1) = (kept[0].min(kept[1]), kept[0].max(kept[1]));
                out.qs[2 * g] = group[p0];
                out.qs[2 * g + 1] = group[p1];
                out.idx[g / 2] |= ((p0 | (p1 << 2)) as u8) << (4 * (g % 2));
            }
            Ok(out)
        })
        .collect()
}
// ANCHOR_END: pack

// ANCHOR: dot_scalar
crate::multiversion! {
/// Σ w·a for a 2:4 row and Q8_0 activations, in the canonical order: lane `g` is group `g`,
/// the product of its two kept weights with the activations at their positions.
pub fn dot_scalar(w: &[BlockQ8_0x24], a: &[BlockQ8_0]) -> f32 {
    let mut lanes = Lanes::default();
    for (x, y) in w.iter().zip(a) {
        let scale = f16_to_f32(x.d) * f16_to_f32(y.d);
        let pos: [(usize, usize); 8] = std::array::from_fn(|g| positions(x, g));
        // Lanes::add_block asks for element j's product; only the kept ones are non-zero.
        lanes.add_block(scale, |j| {
            let (g, i) = (j / 4, j % 4);
            let (p0, p1) = pos[g];
            if i == p0 {
                i32::from(x.qs[2 * g]) * i32::from(y.qs[j])
            } else if i == p1 {
                i32::from(x.qs[2 * g + 1]) * i32::from(y.qs[j])
            } else {
                0
            }
        });
    }
    lanes.total()
}
}
// ANCHOR_END: dot_scalar

/// Σ w·a on the fastest path this CPU has.
pub fn dot(level: SimdLevel, w: &[BlockQ8_0x24], a: &[BlockQ8_0]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::path(level) == SimdLevel::Avx2 && level.is_supported() {
        // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
        return unsafe { avx2::dot(w, a) };
    }
    let _ = level;
    dot_scalar(w, a)
}

/// A whole matrix in 2:4 form: `rows` rows of `cols / 32` blocks.
pub struct Matrix24 {
    pub rows: usize,
    pub cols: usize,
    pub blocks: Vec<BlockQ8_0x24>,
}

impl Matrix24 {
    /// Packs a 2:4-pruned Q8_0 matrix (`rows` rows of `cols` weights, as in the file).
    pub fn pack(rows: usize, cols: usize, dense: &[BlockQ8_0]) -> Result<Matrix24, Not24> {
        assert_eq!(dense.len() * QK, rows * cols, "whole Q8_0 rows");
        Ok(Matrix24 {
            rows,
            cols,
            blocks: pack(dense)?,
        })
    }

    /// Bytes the kernel reads for one pass over the matrix.
    pub fn bytes(&self) -> usize {
        self.blocks.len() * std::mem::size_of::<BlockQ8_0x24>()
    }

    /// `out[r] = Σ w[r]·a` for every row, on one thread.
    pub fn matvec(&self, level: SimdLevel, acts: &[BlockQ8_0], out: &mut [f32]) {
        let per_row = self.cols / QK;
        for (row, o) in self.blocks.chunks_exact(per_row).zip(out.iter_mut()) {
            *o = dot(level, row, acts);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::missing_safety_doc)]
pub mod avx2 {
    //! The AVX2 path: per block, `vpshufb` gathers the activations at the kept positions into
    //! the bytes 0–1 of each 32-bit lane `g` (bytes 2–3 zeroed), the kept weights are spread
    //! the same way, and the dense kernel's integer dot product and FMA do the rest.
    //!
    //! # Safety
    //! Call only on a CPU with AVX2, FMA and F16C.
    use super::{BlockQ8_0x24, positions};
    use crate::kernels::avx2::{dot_i8_i8, hsum_ps, load_i8x32, scale_product};
    use crate::quant::BlockQ8_0;
    use std::arch::x86_64::*;

    /// The `vpshufb` index of group `g` (within its 128-bit half): its kept positions.
    #[inline(always)]
    fn gather_index(b: &BlockQ8_0x24, g: usize) -> i32 {
        let (p0, p1) = positions(b, g);
        let base = 4 * (g % 4);
        ((base + p0) | ((base + p1) << 8)) as i32 | (0x8080 << 16)
    }

    /// Σ w·a, the same bits as the scalar path and as the dense Q8_0 kernel on the same row.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub fn dot(w: &[BlockQ8_0x24], a: &[BlockQ8_0]) -> f32 {
        // Kept weight pairs to lanes: group g's pair (bytes 2g, 2g+1 of qs) into bytes 0–1 of
        // lane g; groups 4–7 come from the upper 8 bytes, in the upper half.
        let spread = _mm256_setr_epi8(
            0, 1, -128, -128, 2, 3, -128, -128, 4, 5, -128, -128, 6, 7, -128, -128, //
            8, 9, -128, -128, 10, 11, -128, -128, 12, 13, -128, -128, 14, 15, -128, -128,
        );
        let mut acc = _mm256_setzero_ps();
        for (x, y) in w.iter().zip(a) {
            let scale = scale_product(x.d, y.d);
            // SAFETY: `qs` is exactly 16 readable bytes; loadu has no alignment requirement.
            let kept = unsafe { _mm_loadu_si128(x.qs.as_ptr().cast()) };
            let qw = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(kept), spread);
            let index = _mm256_setr_epi32(
                gather_index(x, 0),
                gather_index(x, 1),
                gather_index(x, 2),
                gather_index(x, 3),
                gather_index(x, 4),
                gather_index(x, 5),
                gather_index(x, 6),
                gather_index(x, 7),
            );
            let qa = _mm256_shuffle_epi8(load_i8x32(&y.qs), index);
            acc = _mm256_fmadd_ps(scale, dot_i8_i8(qw, qa), acc);
        }
        hsum_ps(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::scalar;
    use crate::quant::quantize::quantize_q8_0;
    use crate::sampling::Rng;

    /// A 2:4-pruned Q8_0 row of `blocks` blocks (some groups with fewer than 2 non-zeros).
    fn pruned_row(blocks: usize, seed: u64) -> Vec<BlockQ8_0> {
        let mut rng = Rng::new(seed);
        let mut w: Vec<f32> = (0..blocks * QK)
            .map(|_| rng.next_f32() * 2.0 - 1.0)
            .collect();
        for (g, group) in w.chunks_exact_mut(4).enumerate() {
            // Drop two of four at positions that vary; every 5th group drops three.
            let first = (g * 7 + seed as usize) % 4;
            group[first] = 0.0;
            group[(first + 1 + g % 3) % 4] = 0.0;
            if g % 5 == 0 {
                group[(first + 2) % 4] = 0.0;
            }
        }
        quantize_q8_0(&w)
    }

    #[test]
    fn the_sparse_dot_gives_the_dense_kernels_bits() {
        let level = crate::kernels::simd();
        for (blocks, seed) in [(1, 1), (2, 2), (18, 3), (48, 4)] {
            let dense = pruned_row(blocks, seed);
            let mut rng = Rng::new(seed + 100);
            let x: Vec<f32> = (0..blocks * QK)
                .map(|_| rng.next_f32() * 4.0 - 2.0)
                .collect();
            let acts = crate::quant::quantize::quantize_acts_q8_0(&x);
            let sparse = pack(&dense).unwrap();
            let want = scalar::dot_q8_0_q8_0(&dense, &acts);
            assert_eq!(
                dot_scalar(&sparse, &acts).to_bits(),
                want.to_bits(),
                "scalar, {blocks}"
            );
            let fast = dot(level, &sparse, &acts);
            assert_eq!(fast.to_bits(), want.to_bits(), "{level:?}, {blocks} blocks");
            println!(
                "2:4 dot, {blocks} blocks: scalar and {} paths give the dense bits",
                level.name()
            );
        }
        assert_eq!(std::mem::size_of::<BlockQ8_0x24>(), 22);
    }

    #[test]
    fn a_row_that_is_not_two_of_four_is_refused() {
        let mut w = vec![0.5f32; QK];
        w[5] = 0.0; // group 1 keeps three
        for g in [0, 2, 3, 4, 5, 6, 7] {
            w[4 * g] = 0.0;
            w[4 * g + 1] = 0.0;
        }
        let err = pack(&quantize_q8_0(&w)).unwrap_err();
        assert_eq!(
            err,
            Not24 {
                block: 0,
                group: 1,
                nonzeros: 3
            }
        );
    }
}
