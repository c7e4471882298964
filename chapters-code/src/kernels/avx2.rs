//! AVX2 + FMA + F16C dot products, following llama.cpp's x86 kernels: 32 quantized values
//! per 256-bit register, `vpmaddubsw` multiplies unsigned × signed bytes into 16-bit pair sums,
//! `vpmaddwd` widens to 32-bit, and each block's integer sum is scaled and accumulated into
//! eight f32 lanes with one FMA. The lanes are added up once, at the end.
//!
//! That is the canonical order the scalar reference spells out (`scalar::Lanes`,
//! `scalar::dot_canonical`): every kernel here gives the scalar reference's bits, and the
//! tests compare bits, not a tolerance.
//!
//! # Safety
//! Every public function here is `unsafe` to call: the CPU must have AVX2, FMA and F16C
//! (`kernels::simd()` checks; the dispatchers in `kernels` only call these after it).

use crate::quant::q5_0::BlockQ5_0;
use crate::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};
use std::arch::x86_64::*;

/// One f16 → f32 with the F16C instruction (the software conversion costs more than a
/// block's whole dot product). Only for the loop tails; blocks use [`f16_pair`].
#[inline]
#[target_feature(enable = "f16c")]
pub(super) fn f16_to_f32(h: u16) -> f32 {
    _mm_cvtss_f32(f16_pair(h, 0))
}

/// Two f16 → lanes 0 and 1 of a vector, in one `vcvtph2ps`. The pair goes through a 32-bit
/// general register on purpose: inserting 16-bit halves into a vector register makes the
/// compiler merge them into whatever that register held before, which chained every block
/// to the previous one and tripled the time per block.
#[inline]
#[target_feature(enable = "f16c")]
pub(super) fn f16_pair(lo: u16, hi: u16) -> __m128 {
    let bits = u32::from(lo) | (u32::from(hi) << 16);
    _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))
}

/// d_x · d_y of two blocks, broadcast to 8 lanes.
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(super) fn scale_product(dx: u16, dy: u16) -> __m256 {
    let pair = f16_pair(dx, dy);
    _mm256_broadcastss_ps(_mm_mul_ss(pair, _mm_movehdup_ps(pair)))
}

/// Sum of the eight f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn hsum_ps(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps::<1>(v);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// 16 bytes of packed nibbles → 32 bytes: low nibbles in bytes 0..16, high nibbles in 16..32
/// (the element order of Q4 blocks).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn unpack_nibbles(qs: &[u8; 16]) -> __m256i {
    // SAFETY: `qs` is exactly 16 readable bytes; loadu has no alignment requirement.
    let packed = unsafe { _mm_loadu_si128(qs.as_ptr().cast()) };
    let both =
        _mm256_insertf128_si256::<1>(_mm256_castsi128_si256(packed), _mm_srli_epi16::<4>(packed));
    _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
}

// ANCHOR: prefetch
/// Where, and how far ahead, a kernel asks the memory system for the weights it will read.
/// A prefetch never faults, even past the end of the matrix.
pub trait Prefetch {
    /// Bytes ahead of the block being read (0: no prefetch).
    const DISTANCE: usize;
    fn ahead(p: *const i8);
}

/// Into L2: what every kernel here does. A core can wait on only a few dozen misses into L1 at
/// once (AMD's Zen 4 on 24), too few to cover a DRAM latency at the rate the memory delivers,
/// however far ahead it asks; lines headed for L2 wait in L2's larger queue instead, and the
/// kernel's own loads then hit L2. The distance: four times the L1 one, far enough ahead that
/// a line arrives before a panel reaches it (the `kernels` bench's q8_0_stream table measures
/// both).
pub struct ToL2;

/// Into L1: the book's first choice, kept to measure against (`kernels` bench).
pub struct ToL1;

/// No prefetch: for passes over weights that an earlier pass has just brought in (the second
/// and later token groups of a panel).
pub struct Resident;

impl Prefetch for Resident {
    const DISTANCE: usize = 0;
    #[inline]
    fn ahead(_: *const i8) {}
}

impl Prefetch for ToL2 {
    const DISTANCE: usize = 8192;
    #[inline]
    fn ahead(p: *const i8) {
        // SAFETY: a prefetch is a hint: it reads nothing and never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(Self::DISTANCE)) }
    }
}

impl Prefetch for ToL1 {
    const DISTANCE: usize = 2048;
    #[inline]
    fn ahead(p: *const i8) {
        // SAFETY: as above.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(Self::DISTANCE)) }
    }
}
// ANCHOR_END: prefetch

/// Hints that the weights a little past `p` will be read soon ([`ToL2`]).
#[inline]
pub(super) fn prefetch_ahead(p: *const i8) {
    ToL2::ahead(p);
}

/// Σ u·s over 32 (unsigned byte, signed byte) pairs, as 8 i32 lanes converted to f32.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256 {
    // Pairs of u8·i8 products summed into i16 (no saturation: 15·127·2 or 128·127·2 < 2^15).
    let pairs = _mm256_maddubs_epi16(u, s);
    let quads = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
    _mm256_cvtepi32_ps(quads)
}

/// Σ a·b over 32 signed byte pairs: |a| times b with a's sign moved onto b.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn dot_i8_i8(a: __m256i, b: __m256i) -> __m256 {
    dot_u8_i8(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a))
}

#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn load_i8x32(q: &[i8; 32]) -> __m256i {
    // SAFETY: `q` is exactly 32 readable bytes.
    unsafe { _mm256_loadu_si256(q.as_ptr().cast()) }
}

// ANCHOR: avx2_q4_1
/// Running sums of one Q4_1 row: `acc` (8 lanes of d_x·d_y·Σq·p) and, in lane 1 of `mins`,
/// Σ m_x·s_y. Rows computed together each keep their own, so the result of a row never
/// depends on which other rows shared the loop.
#[derive(Clone, Copy)]
struct Q4_1Sums {
    acc: __m256,
    mins: __m128,
}

impl Q4_1Sums {
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn new() -> Q4_1Sums {
        Q4_1Sums {
            acc: _mm256_setzero_ps(),
            mins: _mm_setzero_ps(),
        }
    }

    /// Adds block `x` times activation block (`y_scales` = [d_y, s_y], `y_qs`).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn add(&mut self, x: &BlockQ4_1, y_scales: __m128, y_qs: __m256i) {
        // [d_x, m_x] · [d_y, s_y] = [d_x·d_y, m_x·s_y]
        let products = _mm_mul_ps(f16_pair(x.d, x.m), y_scales);
        self.mins = _mm_add_ps(self.mins, products);
        let scale = _mm256_broadcastss_ps(products);
        let sums = dot_u8_i8(unpack_nibbles(&x.qs), y_qs);
        self.acc = _mm256_fmadd_ps(scale, sums, self.acc);
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn total(self) -> f32 {
        hsum_ps(self.acc) + _mm_cvtss_f32(_mm_movehdup_ps(self.mins))
    }
}

/// Q4_1 × Q8_1, one block per iteration.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_q4_1_q8_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let mut sums = Q4_1Sums::new();
    for (x, y) in w.iter().zip(a) {
        sums.add(x, f16_pair(y.d, y.s), load_i8x32(&y.qs));
    }
    sums.total()
}
// ANCHOR_END: avx2_q4_1

// ANCHOR: avx2_q4_1_x4
/// Four Q4_1 rows against the same activations: each activation block is loaded once for
/// four rows, and four independent chains keep the FMA units and the memory system busy.
/// Every row's arithmetic is exactly that of [`dot_q4_1_q8_1`].
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_q4_1_q8_1_x4(w: [&[BlockQ4_1]; 4], a: &[BlockQ8_1]) -> [f32; 4] {
    let mut sums = [Q4_1Sums::new(); 4];
    for (i, y) in a.iter().enumerate() {
        let (y_scales, y_qs) = (f16_pair(y.d, y.s), load_i8x32(&y.qs));
        for (row, s) in w.iter().zip(sums.iter_mut()) {
            prefetch_ahead(row.as_ptr().wrapping_add(i).cast());
            s.add(&row[i], y_scales, y_qs);
        }
    }
    sums.map(|s| s.total())
}
// ANCHOR_END: avx2_q4_1_x4

/// A block's two f16 scales (`d`, `m` — adjacent in the block) as one 32-bit word.
#[inline]
pub(super) fn dm_bits(x: &BlockQ4_1) -> u64 {
    u64::from(x.d) | (u64::from(x.m) << 16)
}

// ANCHOR: avx2_q4_1_x4_scales
/// [`dot_q4_1_q8_1_x4`] with the scales of the four rows' blocks converted together: one
/// `vcvtph2ps` turns [d₀, m₀, d₁, m₁, d₂, m₂, d₃, m₃] into floats and one multiply scales them
/// all by [d_y, s_y]; each row then picks its d_x·d_y with a lane permute. Per block and row,
/// that replaces a conversion, a multiply and an add with one permute. Every row's arithmetic
/// is still exactly that of [`dot_q4_1_q8_1`]: the same products, added in the same order.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_q4_1_q8_1_x4_scales(w: [&[BlockQ4_1]; 4], a: &[BlockQ8_1]) -> [f32; 4] {
    let mut acc = [_mm256_setzero_ps(); 4];
    // Lane 2r + 1 holds row r's Σ m_x·s_y.
    let mut mins = _mm256_setzero_ps();
    for (i, y) in a.iter().enumerate() {
        let (Some(x0), Some(x1), Some(x2), Some(x3)) =
            (w[0].get(i), w[1].get(i), w[2].get(i), w[3].get(i))
        else {
            break;
        };
        let halves = _mm_set_epi64x(
            (dm_bits(x2) | (dm_bits(x3) << 32)) as i64,
            (dm_bits(x0) | (dm_bits(x1) << 32)) as i64,
        );
        let y_scales = f16_pair(y.d, y.s);
        let y_scales = _mm256_castpd_ps(_mm256_broadcastsd_pd(_mm_castps_pd(y_scales)));
        let products = _mm256_mul_ps(_mm256_cvtph_ps(halves), y_scales);
        mins = _mm256_add_ps(mins, products);
        let y_qs = load_i8x32(&y.qs);
        let xs = [x0, x1, x2, x3];
        // An index loop: the compiler unrolls it and keeps `acc` in registers (a zip over
        // the array's by-value iterator did neither, and ran at half the speed).
        for r in 0..4 {
            prefetch_ahead((xs[r] as *const BlockQ4_1).cast());
            let scale = _mm256_permutevar8x32_ps(products, _mm256_set1_epi32(2 * r as i32));
            acc[r] = _mm256_fmadd_ps(scale, dot_u8_i8(unpack_nibbles(&xs[r].qs), y_qs), acc[r]);
        }
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: `lanes` is 8 writable floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), mins) };
    std::array::from_fn(|r| hsum_ps(acc[r]) + lanes[2 * r + 1])
}
// ANCHOR_END: avx2_q4_1_x4_scales

/// Q4_1 × f32: weights dequantized in registers (d·q + m, 8 at a time), then an f32 FMA with
/// the activations — four times the multiply-adds of the integer path, on 8-bit-free inputs.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_q4_1_f32(w: &[BlockQ4_1], x: &[f32]) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    for (b, xs) in w.iter().zip(x.chunks_exact(32)) {
        let dm = f16_pair(b.d, b.m);
        let d = _mm256_broadcastss_ps(dm);
        let m = _mm256_broadcastss_ps(_mm_movehdup_ps(dm));
        let q = unpack_nibbles(&b.qs);
        let (lo, hi) = (_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
        let groups = [lo, _mm_srli_si128::<8>(lo), hi, _mm_srli_si128::<8>(hi)];
        for (k, (bytes, acc)) in groups.into_iter().zip(acc.iter_mut()).enumerate() {
            let weights = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes)), d, m);
            // SAFETY: `xs` holds 32 floats; 8k + 8 <= 32.
            let xv = unsafe { _mm256_loadu_ps(xs.as_ptr().add(8 * k)) };
            *acc = _mm256_fmadd_ps(weights, xv, *acc);
        }
    }
    hsum_ps(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ))
}

/// Q4_0 × Q8_0.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_q4_0_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        let scale = scale_product(x.d, y.d);
        let qx = _mm256_sub_epi8(unpack_nibbles(&x.qs), _mm256_set1_epi8(8));
        acc = _mm256_fmadd_ps(scale, dot_i8_i8(qx, load_i8x32(&y.qs)), acc);
    }
    hsum_ps(acc)
}

/// 32 bits → 32 bytes, byte k = 0xFF when bit k is set: byte k/8 of the word is broadcast to
/// byte k, masked with 1 << (k % 8), and compared with that mask.
#[inline]
#[target_feature(enable = "avx2")]
fn bits_to_bytes(bits: u32) -> __m256i {
    let which_byte = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), which_byte);
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit)
}

/// Q5_0 × Q8_0: the nibbles unpacked as for Q4_0, the fifth bits spread from `qh` into bit 4
/// of each byte, then −16 and the signed byte dot product.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_q5_0_q8_0(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        let scale = scale_product(x.d, y.d);
        let high = _mm256_and_si256(
            bits_to_bytes(u32::from_le_bytes(x.qh)),
            _mm256_set1_epi8(0x10),
        );
        let qx = _mm256_sub_epi8(
            _mm256_or_si256(unpack_nibbles(&x.qs), high),
            _mm256_set1_epi8(16),
        );
        acc = _mm256_fmadd_ps(scale, dot_i8_i8(qx, load_i8x32(&y.qs)), acc);
    }
    hsum_ps(acc)
}

/// Q8_0 × Q8_0.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_q8_0_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        let scale = scale_product(x.d, y.d);
        acc = _mm256_fmadd_ps(scale, dot_i8_i8(load_i8x32(&x.qs), load_i8x32(&y.qs)), acc);
    }
    hsum_ps(acc)
}

/// Four Q8_0 rows against the same activations (see [`dot_q4_1_q8_1_x4_scales`]): the four
/// rows' scales are converted and multiplied by d_y together. Each row's arithmetic is exactly
/// that of [`dot_q8_0_q8_0`].
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_q8_0_q8_0_x4(w: [&[BlockQ8_0]; 4], a: &[BlockQ8_0]) -> [f32; 4] {
    let mut acc = [_mm256_setzero_ps(); 4];
    for (i, y) in a.iter().enumerate() {
        let (Some(x0), Some(x1), Some(x2), Some(x3)) =
            (w[0].get(i), w[1].get(i), w[2].get(i), w[3].get(i))
        else {
            break;
        };
        let bits = u64::from(x0.d)
            | (u64::from(x1.d) << 16)
            | (u64::from(x2.d) << 32)
            | (u64::from(x3.d) << 48);
        let products = _mm_mul_ps(
            _mm_cvtph_ps(_mm_cvtsi64_si128(bits as i64)),
            _mm_set1_ps(f16_to_f32(y.d)),
        );
        let products = _mm256_castps128_ps256(products);
        let y_qs = load_i8x32(&y.qs);
        let xs = [x0, x1, x2, x3];
        for r in 0..4 {
            prefetch_ahead((xs[r] as *const BlockQ8_0).cast());
            let scale = _mm256_permutevar8x32_ps(products, _mm256_set1_epi32(r as i32));
            acc[r] = _mm256_fmadd_ps(scale, dot_i8_i8(load_i8x32(&xs[r].qs), y_qs), acc[r]);
        }
    }
    acc.map(|a| hsum_ps(a))
}

// ANCHOR: avx2_float_canonical
/// The canonical float order (see `scalar::dot_canonical`): four accumulators of eight
/// lanes over each group of 32 elements, fused multiply-adds, the fixed reduction tree, then
/// the last `n mod 32` products added in f64. `load(i)` gives elements i..i+8 of the weights
/// as f32, `tail(j)` element j.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_canonical(
    n: usize,
    load: impl Fn(usize) -> __m256,
    a: &[f32],
    tail: impl Fn(usize) -> f32,
) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8k + 8 <= n elements of `a` are readable.
            let x = unsafe { _mm256_loadu_ps(a.as_ptr().add(i + 8 * k)) };
            *acc = _mm256_fmadd_ps(load(i + 8 * k), x, *acc);
        }
        i += 32;
    }
    let mut sum = f64::from(reduce_32(acc));
    for (j, &x) in a.iter().enumerate().take(n).skip(i) {
        sum += f64::from(tail(j) * x);
    }
    sum as f32
}

/// Four accumulators to one float, in the canonical tree: (0 + 2) + (1 + 3) lane by lane,
/// the two halves, then pairs.
#[inline]
#[target_feature(enable = "avx2")]
fn reduce_32(acc: [__m256; 4]) -> f32 {
    let x = _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]));
    let t = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
    let t = _mm_hadd_ps(t, t);
    _mm_cvtss_f32(_mm_hadd_ps(t, t))
}
// ANCHOR_END: avx2_float_canonical

/// f16 × f32 in the canonical float order.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_f16_f32(w: &[u16], a: &[f32]) -> f32 {
    let n = w.len().min(a.len());
    dot_canonical(
        n,
        // SAFETY: called with i + 8 <= n.
        |i| _mm256_cvtph_ps(unsafe { _mm_loadu_si128(w.as_ptr().add(i).cast()) }),
        a,
        |j| f16_to_f32(w[j]),
    )
}

/// f32 × f32 in the canonical float order.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_f32(w: &[f32], a: &[f32]) -> f32 {
    let n = w.len().min(a.len());
    // SAFETY: called with i + 8 <= n.
    dot_canonical(
        n,
        |i| unsafe { _mm256_loadu_ps(w.as_ptr().add(i)) },
        a,
        |j| w[j],
    )
}

// ANCHOR: avx2_attend_values
/// The value side of attention, as `scalar::attend_values` (its bits): position p is
/// multiplied and added into slot p mod 32 of a (32, head_dim) buffer, eight dimensions per
/// instruction; then the 32 slots of each dimension are reduced in the canonical tree, eight
/// dimensions at a time. `out.len()` must be a multiple of 8 (every head size of this book's
/// models is).
#[target_feature(enable = "avx2,fma,f16c")]
pub fn attend_values(weights: &[f32], values: &[&[u16]], out: &mut [f32]) {
    let hd = out.len();
    debug_assert!(hd.is_multiple_of(8));
    let mut slots = vec![_mm256_setzero_ps(); 32 * hd / 8];
    for (p, &w) in weights.iter().enumerate() {
        let (v, wv) = (values[p], _mm256_set1_ps(w));
        let slot = &mut slots[(p % 32) * hd / 8..(p % 32 + 1) * hd / 8];
        for (k, s) in slot.iter_mut().enumerate() {
            // SAFETY: `v` holds `hd` values; 8k + 8 <= hd.
            let h = unsafe { _mm_loadu_si128(v.as_ptr().add(8 * k).cast()) };
            *s = _mm256_fmadd_ps(_mm256_cvtph_ps(h), wv, *s);
        }
    }
    // Per group of eight dimensions k, the tree of `scalar::reduce_32` over the 32 slots, one
    // dimension per lane: slot 8j + i holds accumulator j's lane i.
    for (k, out) in out.chunks_exact_mut(8).enumerate() {
        let s = |slot: usize| slots[slot * hd / 8 + k];
        let x: [__m256; 8] = std::array::from_fn(|i| {
            _mm256_add_ps(
                _mm256_add_ps(s(i), s(16 + i)),
                _mm256_add_ps(s(8 + i), s(24 + i)),
            )
        });
        let t: [__m256; 4] = std::array::from_fn(|i| _mm256_add_ps(x[i], x[i + 4]));
        let r = _mm256_add_ps(_mm256_add_ps(t[0], t[1]), _mm256_add_ps(t[2], t[3]));
        // SAFETY: `out` is 8 writable floats.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), r) };
    }
}
// ANCHOR_END: avx2_attend_values
