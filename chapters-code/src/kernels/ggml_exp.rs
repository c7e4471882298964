//! GGML's vectorized exp (adapted by GGML from Arm's optimized routines; its maximum error is
//! 1.45 ulp plus 0.5), computed lane by lane with fused multiply-adds. It gives the same bits
//! as GGML's AVX2 and NEON versions: softmax and SiLU need it to match llama.cpp's logits.

use super::fma::fma;

const SHIFT: f32 = 12_582_912.0; // 0x1.8p23: rounds z to an integer in its low mantissa bits
const LOG2E: u32 = 0x3fb8_aa3b; // 0x1.715476p+0
const LN2_LO: u32 = 0x35bf_be8e; // 0x1.7f7d1cp-20
const LN2_HI: u32 = 0x3f31_7200; // 0x1.62e4p-1
const C5: u32 = 0x3c07_2010; // 0x1.0e4020p-7
const C4: u32 = 0x3d2b_9f17; // 0x1.573e2ep-5
const C3: u32 = 0x3e2a_af33; // 0x1.555e66p-3
const C2: u32 = 0x3eff_fedb; // 0x1.fffdb6p-2
const C1: u32 = 0x3f7f_fff6; // 0x1.ffffecp-1

fn c(bits: u32) -> f32 {
    f32::from_bits(bits)
}

// ANCHOR: ggml_expf
/// e^x as GGML's `ggml_v_expf` computes it: x = n·ln2 + b with n an integer, e^b from a
/// degree-5 polynomial, then scaled by 2^n through the exponent bits.
#[inline]
pub fn expf(x: f32) -> f32 {
    let (j, k, n, e) = parts(x);
    if n.abs() <= 126.0 {
        return fma(j, k, k);
    }
    // Far from 1: scale in two steps so 2^n neither overflows nor underflows too early.
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        fma(s2, j, s2) * s1
    }
}

/// The polynomial e^b − 1 (`j`), 2^n (`k`), n, and n's exponent bits, for x = n·ln2 + b.
#[inline(always)]
fn parts(x: f32) -> (f32, f32, f32, u32) {
    let z = fma(x, c(LOG2E), SHIFT);
    let n = z - SHIFT;
    let b = fma(-n, c(LN2_LO), fma(-n, c(LN2_HI), x));
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1.0f32.to_bits()));
    let u = b * b;
    let j = fma(
        fma(fma(c(C5), b, c(C4)), u, fma(c(C3), b, c(C2))),
        u,
        c(C1) * b,
    );
    (j, k, n, e)
}
// ANCHOR_END: ggml_expf

/// e^x for x ≤ 0 without a branch, so that a loop over it vectorizes: [`expf`]'s polynomial
/// on max(x, −87). Where [`expf`] gives less than 1.7e−38 (x < −87), this gives about 1.6e−38:
/// nothing, next to the 1 that the largest term of a softmax contributes. e^(−∞) is that too.
#[inline(always)]
pub fn expf_nonpositive(x: f32) -> f32 {
    let (j, k, _, _) = parts(x.max(-87.0));
    fma(j, k, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_to_the_exact_exponential_everywhere() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let ours = f64::from(expf(x));
            let exact = f64::from(x).exp();
            assert!(
                (ours - exact).abs() <= 3e-7 * exact,
                "exp({x}) = {ours}, exact {exact}"
            );
            x += 0.173;
        }
        assert_eq!(expf(0.0), 1.0);
        assert_eq!(expf(f32::NEG_INFINITY), 0.0);
        assert_eq!(expf(-200.0), 0.0);
        assert_eq!(expf(100.0), f32::INFINITY);
    }

    #[test]
    fn the_branch_free_exponential_is_expf_down_to_minus_87() {
        let mut x = -87.0f32;
        while x <= 0.0 {
            assert_eq!(expf_nonpositive(x), expf(x), "{x}");
            x += 0.0371;
        }
        for x in [-87.5, -200.0, f32::NEG_INFINITY] {
            assert!(expf_nonpositive(x) < 2e-38, "{x}");
        }
    }
}
