//! Naive attention: per (sequence, query head), the whole score matrix of the step's new
//! queries against every visible key — `new × (len + new)` floats — then a softmax per row and
//! the weighted sum of the values. This is llama.cpp's arithmetic without flash attention,
//! bit for bit (the parity suite checks it against llama.cpp's logits).

use super::softmax::softmax;
use super::{KvRows, SharedRows, Step};
use crate::kernels::pool::ThreadPool;
use crate::kernels::scalar::axpy_q8_0;
use crate::kernels::{attend_values, f16_f32_kernel, q8_0_q8_0_kernel, simd};
use crate::quant::quantize::quantize_acts_q8_0;
use crate::quant::{f16_to_f32, f32_to_f16};

// ANCHOR: naive
/// Causal grouped-query attention for every new token of every sequence of the step. One pool
/// task per (sequence, query head) holds that head's `new × visible` score matrix. Like
/// llama.cpp, the query and the attention weights are rounded to f16 before their products
/// with an f16 cache, and each output is a dot product over positions in the canonical float
/// order (llama.cpp's `ggml_vec_dot_f16` of the weights with a value column:
/// [`attend_values`]); with a Q8_0 cache the query is quantized to Q8_0 (an integer dot
/// product, as llama.cpp does) and each value is dequantized as it is added.
pub fn attend(pool: &ThreadPool, step: &Step<'_>, out: &mut [f32]) {
    let Step {
        heads,
        q,
        kv,
        layer,
        new,
        firsts,
    } = *step;
    let (hd, d, kv_dim) = (heads.head_dim, heads.q_dim(), heads.kv_dim());
    let group = heads.group();
    let scale = 1.0 / (hd as f32).sqrt();
    let level = simd();
    // The dot products' functions, chosen once for the step.
    let (dot_f16, dot_q8) = (f16_f32_kernel(level), q8_0_q8_0_kernel(level));
    let shared = SharedRows::new(out);
    pool.run(new.len() * heads.n_heads, &|task| {
        let (s, h) = (task / heads.n_heads, task % heads.n_heads);
        let (n, start) = (new[s], kv.len(s));
        let total = start + n; // keys visible to the last query
        let chunks = kv.chunks(s, layer, total);
        let head = (h / group) * hd..(h / group + 1) * hd; // this head's columns of a KV row
        let query = |t: usize| &q[(firsts[s] + t) * d + h * hd..][..hd];

        // scores[t][p]: query t against key p, for p < start + t + 1 (the rest is masked).
        let mut scores = vec![0.0f32; n * total];
        for (t, row) in scores.chunks_exact_mut(total).enumerate() {
            let q_16: Vec<f32> = query(t)
                .iter()
                .map(|&x| f16_to_f32(f32_to_f16(x)))
                .collect();
            let q_8 =
                matches!(chunks[0].keys, KvRows::Q8_0(_)).then(|| quantize_acts_q8_0(query(t)));
            let visible = start + t + 1;
            let mut p0 = 0;
            for chunk in &chunks {
                let seen = chunk.len.min(visible.saturating_sub(p0));
                let scores = &mut row[p0..p0 + seen];
                match (chunk.keys, &q_8) {
                    // One match per chunk, not per position: a key is 64 numbers, so a
                    // dispatch per dot product cost a fair share of the product.
                    (KvRows::F16(keys), _) => {
                        for (score, key) in scores.iter_mut().zip(keys.chunks_exact(kv_dim)) {
                            *score = scale * dot_f16(&key[head.clone()], &q_16);
                        }
                    }
                    (KvRows::Q8_0(_), Some(q_8)) => {
                        for (p, score) in scores.iter_mut().enumerate() {
                            if let KvRows::Q8_0(k) = chunk.keys.slice(p, kv_dim, head.clone()) {
                                *score = scale * dot_q8(k, q_8);
                            }
                        }
                    }
                    (KvRows::Q8_0(_), None) => unreachable!("a Q8_0 cache quantizes the query"),
                }
                p0 += chunk.len;
            }
            softmax(&mut row[..visible]);
            // The weights in f16, as llama.cpp multiplies them with an f16 cache.
            for w in row[..visible].iter_mut() {
                *w = f16_to_f32(f32_to_f16(*w));
            }
        }

        // out[t] = Σ_p weight[t][p] · value[p].
        let values: Vec<KvRows<'_>> = chunks
            .iter()
            .flat_map(|chunk| (0..chunk.len).map(|p| chunk.values.slice(p, kv_dim, head.clone())))
            .collect();
        let f16_values: Vec<&[u16]> = values.iter().filter_map(|v| v.as_f16()).collect();
        let mut acc = vec![0.0f32; hd];
        for (t, row) in scores.chunks_exact(total).enumerate() {
            let weights = &row[..start + t + 1];
            if f16_values.is_empty() {
                acc.fill(0.0);
                for (&w, v) in weights.iter().zip(&values) {
                    if let KvRows::Q8_0(v) = v {
                        axpy_q8_0(w, v, &mut acc);
                    }
                }
            } else {
                attend_values(level, weights, &f16_values, &mut acc);
            }
            // SAFETY: task (s, h) writes only columns h·hd..(h+1)·hd of its sequence's rows.
            unsafe { shared.write((firsts[s] + t) * d + h * hd, &acc) };
        }
    });
}
// ANCHOR_END: naive
