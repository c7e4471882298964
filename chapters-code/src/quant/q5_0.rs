//! Q5_0: llama.cpp's 5-bit symmetric block, 32 weights: x = d · (q − 16), the fifth bits
//! gathered in one 32-bit word. 22 bytes per 32 weights (5.5 bits each).

use super::blocks::{BlockQ8_0, QK};
use super::f16::{f16_to_f32, f32_to_f16};

// ANCHOR: block_q5_0
/// Element j: low 4 bits in the low nibble of `qs[j]` (j < 16) or the high nibble of
/// `qs[j − 16]`; fifth bit = bit j of `qh` (little-endian).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5_0 {
    pub d: u16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
// ANCHOR_END: block_q5_0

// SAFETY: integer fields without padding (size checked below).
unsafe impl crate::formats::gguf::Pod for BlockQ5_0 {}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

/// f32 → Q5_0 as llama.cpp's reference: d = m / −16 where m is the value of largest
/// magnitude (so that m itself maps to code 0), q = min(31, ⌊x/d + 16.5⌋).
pub fn quantize_q5_0(x: &[f32]) -> Vec<BlockQ5_0> {
    x.chunks_exact(QK)
        .map(|x| {
            let max = x
                .iter()
                .copied()
                .fold(0.0f32, |m, v| if v.abs() > m.abs() { v } else { m });
            let d = max / -16.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let code = |v: f32| ((v * id + 16.5) as u8).min(31);
            let mut b = BlockQ5_0 {
                d: f32_to_f16(d),
                qh: [0; 4],
                qs: [0; QK / 2],
            };
            let mut qh = 0u32;
            for j in 0..QK / 2 {
                let (lo, hi) = (code(x[j]), code(x[j + QK / 2]));
                b.qs[j] = (lo & 0x0f) | ((hi & 0x0f) << 4);
                qh |= u32::from(lo >> 4) << j;
                qh |= u32::from(hi >> 4) << (j + QK / 2);
            }
            b.qh = qh.to_le_bytes();
            b
        })
        .collect()
}

/// The 32 values of a block as signed codes q − 16 (−16..=15).
#[inline(always)]
fn codes(b: &BlockQ5_0) -> [i8; QK] {
    let qh = u32::from_le_bytes(b.qh);
    let mut q = [0i8; QK];
    for j in 0..QK / 2 {
        let (h0, h1) = (((qh >> j) & 1) as u8, ((qh >> (j + QK / 2)) & 1) as u8);
        q[j] = ((b.qs[j] & 0x0f) | (h0 << 4)) as i8 - 16;
        q[j + QK / 2] = ((b.qs[j] >> 4) | (h1 << 4)) as i8 - 16;
    }
    q
}

/// Q5_0 → f32.
pub fn dequantize_q5_0(blocks: &[BlockQ5_0], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = f16_to_f32(b.d);
        for (y, q) in y.iter_mut().zip(codes(b)) {
            *y = f32::from(q) * d;
        }
    }
}

/// Q5_0 · Q8_0, scalar reference: codes unpacked per block, then the canonical lane order
/// of the quantized dot products ([`crate::kernels::scalar::Lanes`]).
pub fn dot_q5_0_q8_0(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    let mut lanes = crate::kernels::scalar::Lanes::default();
    for (b, a) in w.iter().zip(a) {
        let q = codes(b);
        let scale = f16_to_f32(b.d) * f16_to_f32(a.d);
        lanes.add_block(scale, |j| i32::from(q[j]) * i32::from(a.qs[j]));
    }
    lanes.total()
}
