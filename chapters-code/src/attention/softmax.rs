//! The softmax of naive attention, as GGML computes it.

crate::multiversion! {
/// In-place softmax as GGML computes it on x86: exponentials by [`crate::kernels::ggml_exp::expf`]
/// in groups of 8, each group summed in f32 as an 8-lane register is (pairs of halves),
/// the groups summed in f64. The input is treated as padded with −∞ to a multiple of 8.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for group in x.chunks_mut(8) {
        let mut lanes = [0.0f32; 8];
        for (lane, v) in lanes.iter_mut().zip(group.iter_mut()) {
            *v = crate::kernels::ggml_exp::expf(*v - max);
            *lane = *v;
        }
        sum += f64::from(crate::kernels::scalar::hsum8(&lanes));
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_survives_large_logits() {
        let mut x = [1000.0f32, 1001.0, 999.0];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[1] > x[0] && x[0] > x[2]);
    }
}
