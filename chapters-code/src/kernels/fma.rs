//! Fused multiply-add, `a · b + c` with one rounding — what GGML's kernels get from the FMA
//! instruction, and what the scalar reference must compute to give the same bits.
//!
//! Native targets have the instruction (or a C library that uses it). WebAssembly has none, and
//! `f32::mul_add` there falls back to a software FMA many times slower than the whole dot
//! product around it. [`fma_via_f64`] is exact and fast instead (musl's `fmaf` does the same):
//! the product of two f32 is exact in f64 (48 bits of 53), so `a · b + c` in f64 rounds once;
//! rounding that to f32 rounds a second time, which can only go wrong when the f64 result lies
//! exactly halfway between two f32 — a pattern of its low bits that is checked, and handed to
//! the software FMA in that rare case.

// ANCHOR: fma
/// `a · b + c` rounded once.
#[inline(always)]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(target_arch = "wasm32")]
    {
        fma_via_f64(a, b, c)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        a.mul_add(b, c)
    }
}

/// `a · b + c` rounded once, computed in f64 (for targets without an FMA instruction).
#[inline(always)]
pub fn fma_via_f64(a: f32, b: f32, c: f32) -> f32 {
    let product = f64::from(a) * f64::from(b); // exact
    let sum = product + f64::from(c); // rounded once, to 53 bits
    let bits = sum.to_bits();
    // f64 → f32 drops 29 mantissa bits. Double rounding can differ from one rounding only if
    // those 29 bits are exactly 1000…0 (a tie that the first rounding may have created) …
    let maybe_tie = bits & 0x1fff_ffff == 0x1000_0000;
    // … unless the sum was exact (then it is the true value), or it is not finite. Below the
    // smallest normal f32 the second rounding drops more bits: leave those to the library too.
    let exact = sum - product == f64::from(c) && sum - f64::from(c) == product;
    let normal = sum.abs() >= f64::from(f32::MIN_POSITIVE) || sum == 0.0;
    if (!maybe_tie || exact || !sum.is_finite()) && normal {
        sum as f32
    } else {
        a.mul_add(b, c)
    }
}
// ANCHOR_END: fma

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeded random f32 bit patterns of every kind, halfway cases made on purpose.
    #[test]
    fn fma_via_f64_gives_the_bits_of_a_single_rounding() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut checked = 0;
        for i in 0..2_000_000u32 {
            let r = next();
            let (a, b, c) = match i % 4 {
                // Any bits at all (NaN, infinities, subnormals included).
                0 => (
                    f32::from_bits(r as u32),
                    f32::from_bits((r >> 32) as u32),
                    f32::from_bits(next() as u32),
                ),
                // Magnitudes of a model's weights and activations.
                1 | 2 => {
                    let f = |x: u64| ((x % 2_000_001) as f32 - 1e6) * 1e-4;
                    (f(r), f(r >> 21), f(r >> 42))
                }
                // c = −a·b rounded: the exact result is a tiny remainder; and near ties.
                _ => {
                    let a = f32::from_bits(0x3f80_0000 | (r as u32 & 0x007f_ffff));
                    let b = f32::from_bits(0x3f80_0000 | ((r >> 32) as u32 & 0x007f_ffff));
                    let c = -(a * b) + f32::from_bits(0x3380_0000 | (next() as u32 & 0x7f));
                    (a, b, c)
                }
            };
            let want = a.mul_add(b, c);
            let got = fma_via_f64(a, b, c);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "fma({a:e}, {b:e}, {c:e}): {got:e} against {want:e}"
            );
            checked += 1;
        }
        assert_eq!(checked, 2_000_000);
    }
}
