//! NF4, QLoRA's 4-bit NormalFloat: 16 levels placed at quantiles of a normal distribution
//! (weights of trained networks are roughly normal), scaled per block of 64 by the block's
//! largest magnitude. Not a GGUF type: the book evaluates it by dequantizing.
//!
//! Here the absmax is stored as f16 (4.25 bits per weight). QLoRA stores it as f32 and then
//! quantizes those scales again to 8 bits ("double quantization", about 4.127 bits per weight).

use super::f16::{f16_to_f32, f32_to_f16};

/// Weights per NF4 block.
pub const QK_NF4: usize = 64;

// ANCHOR: nf4_levels
/// The 16 NF4 levels of QLoRA (bitsandbytes), in [−1, 1], with an exact zero.
pub const NF4_LEVELS: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];
// ANCHOR_END: nf4_levels

/// Two codes per byte, as bitsandbytes packs them: element 2i in the high nibble of `qs[i]`,
/// element 2i + 1 in the low nibble.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockNf4 {
    /// The block's largest magnitude, f16 bits.
    pub absmax: u16,
    pub qs: [u8; QK_NF4 / 2],
}

// SAFETY: integer fields without padding (size checked below).
unsafe impl crate::formats::gguf::Pod for BlockNf4 {}
const _: () = assert!(std::mem::size_of::<BlockNf4>() == 34);

/// The code of the level nearest to `v` (in units of absmax).
fn nearest_level(v: f32) -> u8 {
    // Levels are sorted: the nearest is next to the first level above v.
    let above = NF4_LEVELS.partition_point(|&l| l < v);
    match above {
        0 => 0,
        16 => 15,
        i if (NF4_LEVELS[i] - v) < (v - NF4_LEVELS[i - 1]) => i as u8,
        i => (i - 1) as u8,
    }
}

/// f32 → NF4 (length a multiple of 64).
pub fn quantize_nf4(x: &[f32]) -> Vec<BlockNf4> {
    x.chunks_exact(QK_NF4)
        .map(|x| {
            let absmax = f32_to_f16(x.iter().fold(0.0f32, |m, v| m.max(v.abs())));
            let scale = f16_to_f32(absmax);
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let mut qs = [0u8; QK_NF4 / 2];
            for (i, q) in qs.iter_mut().enumerate() {
                *q = (nearest_level(x[2 * i] * inv) << 4) | nearest_level(x[2 * i + 1] * inv);
            }
            BlockNf4 { absmax, qs }
        })
        .collect()
}

/// NF4 → f32.
pub fn dequantize_nf4(blocks: &[BlockNf4], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_NF4)) {
        let scale = f16_to_f32(b.absmax);
        for (i, &q) in b.qs.iter().enumerate() {
            y[2 * i] = NF4_LEVELS[usize::from(q >> 4)] * scale;
            y[2 * i + 1] = NF4_LEVELS[usize::from(q & 0x0f)] * scale;
        }
    }
}

/// NF4 · f32, scalar reference (the levels are not integers, so no 8-bit trick here).
pub fn dot_nf4_f32(w: &[BlockNf4], x: &[f32]) -> f32 {
    w.iter()
        .zip(x.chunks_exact(QK_NF4))
        .map(|(b, x)| {
            let s: f32 =
                b.qs.iter()
                    .enumerate()
                    .map(|(i, &q)| {
                        NF4_LEVELS[usize::from(q >> 4)] * x[2 * i]
                            + NF4_LEVELS[usize::from(q & 0x0f)] * x[2 * i + 1]
                    })
                    .sum();
            s * f16_to_f32(b.absmax)
        })
        .sum()
}
