//! llama.cpp's "K-quants": super-blocks of 256 weights made of 8 (or 16) sub-blocks, each
//! with its own scale — and, for Q4_K and Q5_K, its own minimum — themselves quantized to 6
//! (or 8) bits against one f16 scale per super-block. Two levels of scales buy accuracy for a
//! quarter of a bit per weight.
//!
//! The block layouts are llama.cpp's, bit for bit (`ggml-common.h`); dequantization follows
//! the `gguf` Python package's reference code to the last bit (fixtures in
//! `tests/reference/quant/`). Quantization is ours: a weighted least-squares search per
//! sub-block, then the scales to 6 bits — any quantizer that fills the layout is read
//! correctly by llama.cpp; they differ only in error.

use super::f16::{f16_to_f32, f32_to_f16};

/// Weights per super-block.
pub const QK_K: usize = 256;

// ANCHOR: kquant_blocks
/// 4.5 bits per weight: x = d·sc·q − dmin·m per sub-block of 32, q in 0..=15, sc and m 6-bit.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4K {
    pub d: u16,
    pub dmin: u16,
    /// 8 scales and 8 minimums, 6 bits each, packed (see [`unpack_scales`]).
    pub scales: [u8; 12],
    /// Sub-blocks 2i and 2i+1 share bytes 32i..32i+32: low nibbles, then high nibbles.
    pub qs: [u8; QK_K / 2],
}

/// 5.5 bits per weight: Q4_K plus a fifth bit per weight in `qh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5K {
    pub d: u16,
    pub dmin: u16,
    pub scales: [u8; 12],
    /// Bit i of `qh[l]` is the fifth bit of element l of sub-block i.
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}

/// 6.5625 bits per weight: x = d·sc·(q − 32) per sub-block of 16, q 6-bit, sc signed 8-bit.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ6K {
    /// Low 4 bits of each q.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits of each q.
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: u16,
}

/// 8-bit activations for K-quant dot products: f32 scale, and the sum of each 16 q's.
/// The dot products rely on `bsums` being exactly those sums (as llama.cpp's do).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}
// ANCHOR_END: kquant_blocks

// SAFETY: integer and float fields without padding (sizes checked below); every bit pattern
// is a valid value.
unsafe impl crate::formats::gguf::Pod for BlockQ4K {}
// SAFETY: as above.
unsafe impl crate::formats::gguf::Pod for BlockQ5K {}
// SAFETY: as above.
unsafe impl crate::formats::gguf::Pod for BlockQ6K {}
// SAFETY: as above.
unsafe impl crate::formats::gguf::Pod for BlockQ8K {}

const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

// ANCHOR: unpack_scales
/// The (scale, min) pair of sub-block `j` (0..8): sub-blocks 0–3 keep their 6 bits in the
/// low bits of bytes 0–7; sub-blocks 4–7 keep their low 4 bits in bytes 8–11 and their top
/// 2 bits in the spare high bits of bytes 0–7.
pub fn unpack_scales(q: &[u8; 12], j: usize) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}
// ANCHOR_END: unpack_scales

/// All 8 (scale, min) pairs at once, as [`unpack_scales`] gives them one by one: llama.cpp's
/// word-wise unpacking (three 32-bit words in, four out), for the SIMD kernels.
pub fn unpack_all_scales(q: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let word = |i: usize| u32::from_le_bytes([q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]]);
    let (w0, w1, w2) = (word(0), word(1), word(2));
    let scales_lo = w0 & LOW6;
    let scales_hi = (w2 & LOW4) | (((w0 >> 6) & LOW2) << 4);
    let mins_lo = w1 & LOW6;
    let mins_hi = ((w2 >> 4) & LOW4) | (((w1 >> 6) & LOW2) << 4);
    let bytes = |lo: u32, hi: u32| {
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&lo.to_le_bytes());
        out[4..].copy_from_slice(&hi.to_le_bytes());
        out
    };
    (bytes(scales_lo, scales_hi), bytes(mins_lo, mins_hi))
}

/// The inverse of [`unpack_scales`] for 8 scales and 8 minimums below 64.
pub fn pack_scales(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
    let mut q = [0u8; 12];
    for j in 0..8 {
        let (s, mn) = (sc[j] & 63, m[j] & 63);
        if j < 4 {
            q[j] |= s;
            q[j + 4] |= mn;
        } else {
            q[j + 4] = (s & 0x0f) | ((mn & 0x0f) << 4);
            q[j - 4] |= (s >> 4) << 6;
            q[j] |= (mn >> 4) << 6;
        }
    }
    q
}

// ANCHOR: dequantize_q4_k
/// The 32 nibbles of sub-block `sub`: sub-blocks 2i and 2i + 1 share `qs[32i..32i + 32]`,
/// low nibbles then high nibbles.
#[inline(always)]
fn nibbles(qs: &[u8; QK_K / 2], sub: usize) -> [u8; 32] {
    let (src, shift) = (&qs[32 * (sub / 2)..32 * (sub / 2) + 32], 4 * (sub % 2));
    let mut out = [0u8; 32];
    for (o, &byte) in out.iter_mut().zip(src) {
        *o = (byte >> shift) & 0x0f;
    }
    out
}

/// One super-block of 8 sub-blocks of 32 with a scale and a minimum each:
/// y = d·sc·code − dmin·m. `codes(sub)` unpacks the 32 codes of a sub-block.
fn dequantize_scale_min(
    d: u16,
    dmin: u16,
    scales: &[u8; 12],
    codes: impl Fn(usize) -> [u8; 32],
    y: &mut [f32],
) {
    let (d, dmin) = (f16_to_f32(d), f16_to_f32(dmin));
    for (sub, y) in y.chunks_exact_mut(32).enumerate() {
        let (sc, m) = unpack_scales(scales, sub);
        let (dl, ml) = (d * f32::from(sc), dmin * f32::from(m));
        for (y, code) in y.iter_mut().zip(codes(sub)) {
            *y = dl * f32::from(code) - ml;
        }
    }
}

/// Q4_K → f32.
pub fn dequantize_q4_k(blocks: &[BlockQ4K], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        dequantize_scale_min(b.d, b.dmin, &b.scales, |sub| nibbles(&b.qs, sub), y);
    }
}
// ANCHOR_END: dequantize_q4_k

/// The 5-bit codes of sub-block `sub` of a Q5_K block: the nibbles, plus bit `sub` of
/// `qh[l]` as the fifth bit of element l.
#[inline(always)]
fn q5k_codes(b: &BlockQ5K, sub: usize) -> [u8; 32] {
    let mut q = nibbles(&b.qs, sub);
    for (q, &h) in q.iter_mut().zip(&b.qh) {
        *q |= ((h >> sub) & 1) << 4;
    }
    q
}

/// Q5_K → f32.
pub fn dequantize_q5_k(blocks: &[BlockQ5K], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        dequantize_scale_min(b.d, b.dmin, &b.scales, |sub| q5k_codes(b, sub), y);
    }
}

/// The 256 values of a Q6_K block as signed codes q − 32. Each half of 128 has 64 bytes of
/// `ql` (two rows of 32: low nibbles give elements 0..64, high nibbles 64..128) and 32 bytes
/// of `qh` (four 2-bit fields, one per quarter).
#[inline(always)]
fn q6k_codes(b: &BlockQ6K) -> [i8; QK_K] {
    let mut q = [0i8; QK_K];
    for half in 0..2 {
        let (ql, qh) = (
            &b.ql[64 * half..64 * half + 64],
            &b.qh[32 * half..32 * half + 32],
        );
        let q = &mut q[128 * half..128 * half + 128];
        for l in 0..32 {
            q[l] = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i8 - 32;
            q[l + 32] = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            q[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            q[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    q
}

/// Q6_K → f32: y = d · sc · (q − 32), one signed scale per 16.
pub fn dequantize_q6_k(blocks: &[BlockQ6K], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        for (i, (y, q)) in y.iter_mut().zip(q6k_codes(b)).enumerate() {
            *y = d * f32::from(b.scales[i / 16]) * f32::from(q);
        }
    }
}

/// A sub-block fitted as x ≈ scale · q − min, q in 0..=nmax.
struct Fit {
    scale: f32,
    min: f32,
}

// ANCHOR: fit_scale_min
/// Weighted least squares for one sub-block: try a grid of step sizes around
/// (max − min) / nmax; for each, round to levels, then solve the 2 × 2 normal equations for
/// the scale and offset that minimise Σ w (scale·q + offset − x)². Keep the best. The offset
/// is kept ≤ 0 (a minimum stored as a positive number).
fn fit_scale_min(x: &[f32], w: &[f32], nmax: u8) -> Fit {
    let lo = x.iter().copied().fold(f32::INFINITY, f32::min).min(0.0);
    let hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if hi <= lo {
        return Fit {
            scale: 0.0,
            min: -lo,
        };
    }
    let n = f32::from(nmax);
    let mut best = Fit {
        scale: (hi - lo) / n,
        min: -lo,
    };
    let mut best_err = weighted_error(x, w, best.scale, lo, nmax, best.scale, lo);
    for step in -10..=10 {
        let iscale = (n + 0.1 * step as f32) / (hi - lo);
        let (mut sw, mut sl, mut sl2, mut sx, mut sxl) = (0.0f32, 0.0f32, 0.0f32, 0.0f32, 0.0f32);
        for (&xi, &wi) in x.iter().zip(w) {
            let l = (iscale * (xi - lo)).round().clamp(0.0, n);
            sw += wi;
            sl += wi * l;
            sl2 += wi * l * l;
            sx += wi * xi;
            sxl += wi * xi * l;
        }
        let det = sw * sl2 - sl * sl;
        if det <= 0.0 {
            continue;
        }
        let (mut scale, mut offset) = ((sw * sxl - sx * sl) / det, (sl2 * sx - sl * sxl) / det);
        if offset > 0.0 {
            offset = 0.0;
            scale = sxl / sl2;
        }
        if scale <= 0.0 {
            continue;
        }
        let err = weighted_error(x, w, 1.0 / iscale, lo, nmax, scale, offset);
        if err < best_err {
            best_err = err;
            best = Fit {
                scale,
                min: -offset,
            };
        }
    }
    best
}
// ANCHOR_END: fit_scale_min

/// Σ w (scale·q + offset − x)² with q from rounding (x − lo) / step.
fn weighted_error(
    x: &[f32],
    w: &[f32],
    step: f32,
    lo: f32,
    nmax: u8,
    scale: f32,
    offset: f32,
) -> f32 {
    x.iter()
        .zip(w)
        .map(|(&xi, &wi)| {
            let l = ((xi - lo) / step).round().clamp(0.0, f32::from(nmax));
            let e = scale * l + offset - xi;
            wi * e * e
        })
        .sum()
}

/// The importance of each weight in the fit: larger weights count more (llama.cpp's choice
/// for these formats: rms of the block + |x|).
fn importance(x: &[f32]) -> Vec<f32> {
    let rms = (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt();
    x.iter().map(|v| rms + v.abs()).collect()
}

/// Fits 8 sub-blocks of 32 and quantizes their scales and minimums to 6 bits. Returns the
/// block scales (d, dmin as f16 bits), the packed 6-bit scales, and each element's code.
fn quantize_scale_min_block(x: &[f32], nmax: u8) -> (u16, u16, [u8; 12], [u8; QK_K]) {
    let w = importance(x);
    let fits: Vec<Fit> = (0..8)
        .map(|j| fit_scale_min(&x[32 * j..32 * j + 32], &w[32 * j..32 * j + 32], nmax))
        .collect();
    let max_scale = fits.iter().map(|f| f.scale).fold(0.0f32, f32::max);
    let max_min = fits.iter().map(|f| f.min).fold(0.0f32, f32::max);
    let to6 = |v: f32, max: f32| {
        if max > 0.0 {
            (v * 63.0 / max).round().clamp(0.0, 63.0) as u8
        } else {
            0
        }
    };
    let sc: [u8; 8] = std::array::from_fn(|j| to6(fits[j].scale, max_scale));
    let m: [u8; 8] = std::array::from_fn(|j| to6(fits[j].min, max_min));
    let (d, dmin) = (f32_to_f16(max_scale / 63.0), f32_to_f16(max_min / 63.0));
    // Codes against the scales as they will be read back (f16, 6-bit).
    let (df, dminf) = (f16_to_f32(d), f16_to_f32(dmin));
    let mut codes = [0u8; QK_K];
    for j in 0..8 {
        let (dl, ml) = (df * f32::from(sc[j]), dminf * f32::from(m[j]));
        for l in 0..32 {
            let v = x[32 * j + l];
            codes[32 * j + l] = if dl > 0.0 {
                ((v + ml) / dl).round().clamp(0.0, f32::from(nmax)) as u8
            } else {
                0
            };
        }
    }
    (d, dmin, pack_scales(&sc, &m), codes)
}

// ANCHOR: quantize_q4_k
/// f32 → Q4_K (length a multiple of 256).
pub fn quantize_q4_k(x: &[f32]) -> Vec<BlockQ4K> {
    x.chunks_exact(QK_K)
        .map(|x| {
            let (d, dmin, scales, codes) = quantize_scale_min_block(x, 15);
            let mut qs = [0u8; QK_K / 2];
            for pair in 0..4 {
                for l in 0..32 {
                    qs[32 * pair + l] = codes[64 * pair + l] | (codes[64 * pair + 32 + l] << 4);
                }
            }
            BlockQ4K {
                d,
                dmin,
                scales,
                qs,
            }
        })
        .collect()
}
// ANCHOR_END: quantize_q4_k

/// f32 → Q5_K (length a multiple of 256).
pub fn quantize_q5_k(x: &[f32]) -> Vec<BlockQ5K> {
    x.chunks_exact(QK_K)
        .map(|x| {
            let (d, dmin, scales, codes) = quantize_scale_min_block(x, 31);
            let (mut qs, mut qh) = ([0u8; QK_K / 2], [0u8; QK_K / 8]);
            for pair in 0..4 {
                for l in 0..32 {
                    let (a, b) = (codes[64 * pair + l], codes[64 * pair + 32 + l]);
                    qs[32 * pair + l] = (a & 0x0f) | ((b & 0x0f) << 4);
                    qh[l] |= ((a >> 4) << (2 * pair)) | ((b >> 4) << (2 * pair + 1));
                }
            }
            BlockQ5K {
                d,
                dmin,
                scales,
                qh,
                qs,
            }
        })
        .collect()
}

/// Symmetric fit of one sub-block of 16: x ≈ scale · q, q in −32..=31, weighted by x².
fn fit_symmetric(x: &[f32]) -> f32 {
    let max = x
        .iter()
        .copied()
        .fold(0.0f32, |m, v| if v.abs() > m.abs() { v } else { m });
    if max == 0.0 {
        return 0.0;
    }
    let mut best = (f32::INFINITY, 0.0f32);
    for step in -9..=9 {
        let iscale = -(32.0 + 0.1 * step as f32) / max;
        let (mut sxl, mut sl2) = (0.0f32, 0.0f32);
        for &v in x {
            let l = (iscale * v).round().clamp(-32.0, 31.0);
            let w = v * v;
            sxl += w * v * l;
            sl2 += w * l * l;
        }
        if sl2 == 0.0 {
            continue;
        }
        let scale = sxl / sl2;
        let err: f32 = x
            .iter()
            .map(|&v| {
                let l = (iscale * v).round().clamp(-32.0, 31.0);
                v * v * (v - scale * l).powi(2)
            })
            .sum();
        if err < best.0 {
            best = (err, scale);
        }
    }
    best.1
}

/// f32 → Q6_K (length a multiple of 256).
pub fn quantize_q6_k(x: &[f32]) -> Vec<BlockQ6K> {
    x.chunks_exact(QK_K)
        .map(|x| {
            let scales: Vec<f32> = x.chunks_exact(16).map(fit_symmetric).collect();
            let max = scales
                .iter()
                .copied()
                .fold(0.0f32, |m, v| if v.abs() > m.abs() { v } else { m });
            let mut b = BlockQ6K {
                ql: [0; QK_K / 2],
                qh: [0; QK_K / 4],
                scales: [0; QK_K / 16],
                d: 0,
            };
            if max == 0.0 {
                return b;
            }
            let iscale = -128.0 / max;
            for (s, &v) in b.scales.iter_mut().zip(&scales) {
                *s = (iscale * v).round().clamp(-128.0, 127.0) as i8;
            }
            b.d = f32_to_f16(1.0 / iscale);
            let d = f16_to_f32(b.d);
            for (i, &v) in x.iter().enumerate() {
                let dl = d * f32::from(b.scales[i / 16]);
                let q = if dl != 0.0 {
                    (v / dl).round().clamp(-32.0, 31.0) as i8
                } else {
                    0
                };
                let code = (q + 32) as u8;
                let (half, r) = (i / 128, i % 128);
                let (quarter, l) = (r / 32, r % 32);
                let ql = &mut b.ql[64 * half + 32 * (quarter % 2) + l];
                *ql |= if quarter < 2 {
                    code & 0x0f
                } else {
                    (code & 0x0f) << 4
                };
                b.qh[32 * half + l] |= (code >> 4) << (2 * quarter);
            }
            b
        })
        .collect()
}

/// f32 activations → Q8_K: d = max|x| / 127 with the sign of the extreme value, as
/// llama.cpp's reference, plus the sums of each 16 codes.
pub fn quantize_acts_q8_k(x: &[f32]) -> Vec<BlockQ8K> {
    x.chunks_exact(QK_K)
        .map(|x| {
            let max = x
                .iter()
                .copied()
                .fold(0.0f32, |m, v| if v.abs() > m.abs() { v } else { m });
            let mut b = BlockQ8K {
                d: 0.0,
                qs: [0; QK_K],
                bsums: [0; QK_K / 16],
            };
            if max == 0.0 {
                return b;
            }
            let iscale = -127.0 / max;
            for (q, &v) in b.qs.iter_mut().zip(x) {
                *q = (iscale * v).round().min(127.0) as i8;
            }
            for (s, group) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
                *s = group.iter().map(|&q| i16::from(q)).sum();
            }
            b.d = 1.0 / iscale;
            b
        })
        .collect()
}

/// Σ q·a over 32 codes, in integers (a loop the compiler vectorizes).
#[inline(always)]
fn dot32(q: &[u8; 32], a: &[i8]) -> i32 {
    let mut sum = 0i32;
    for (&q, &a) in q.iter().zip(&a[..32]) {
        sum += i32::from(q) * i32::from(a);
    }
    sum
}

// ANCHOR: dot_q4_k
/// One super-block with scales and minimums · Q8_K: per sub-block, d·sc·da·Σ code·a −
/// dmin·m·da·Σ a, the second sum read from the activations' precomputed `bsums`.
/// `codes(sub)` unpacks the 32 codes of a sub-block.
fn dot_scale_min(
    d: u16,
    dmin: u16,
    scales: &[u8; 12],
    codes: impl Fn(usize) -> [u8; 32],
    a: &BlockQ8K,
) -> f32 {
    let (d, dmin) = (f16_to_f32(d) * a.d, f16_to_f32(dmin) * a.d);
    let (mut dots, mut mins) = (0i32, 0i32);
    for sub in 0..8 {
        let (sc, m) = unpack_scales(scales, sub);
        dots += i32::from(sc) * dot32(&codes(sub), &a.qs[32 * sub..]);
        mins += i32::from(m) * (i32::from(a.bsums[2 * sub]) + i32::from(a.bsums[2 * sub + 1]));
    }
    d * dots as f32 - dmin * mins as f32
}

/// Q4_K · Q8_K, scalar reference.
pub fn dot_q4_k_q8_k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0.0f32;
    for (b, a) in w.iter().zip(a) {
        sum += dot_scale_min(b.d, b.dmin, &b.scales, |sub| nibbles(&b.qs, sub), a);
    }
    sum
}
// ANCHOR_END: dot_q4_k

/// Q5_K · Q8_K, scalar reference.
pub fn dot_q5_k_q8_k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0.0f32;
    for (b, a) in w.iter().zip(a) {
        sum += dot_scale_min(b.d, b.dmin, &b.scales, |sub| q5k_codes(b, sub), a);
    }
    sum
}

/// Q6_K · Q8_K, scalar reference: the block's 256 codes unpacked once, then per sub-block
/// of 16 an integer dot product times its signed scale.
pub fn dot_q6_k_q8_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0.0f32;
    for (b, a) in w.iter().zip(a) {
        let q = q6k_codes(b);
        let mut dots = 0i32;
        for (sub, (q, x)) in q.chunks_exact(16).zip(a.qs.chunks_exact(16)).enumerate() {
            let mut dot = 0i32;
            for (&q, &x) in q.iter().zip(x) {
                dot += i32::from(q) * i32::from(x);
            }
            dots += i32::from(b.scales[sub]) * dot;
        }
        sum += f16_to_f32(b.d) * a.d * dots as f32;
    }
    sum
}
