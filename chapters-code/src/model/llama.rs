//! The Llama forward pass: embeddings, then per block RMSNorm → attention (grouped-query, with
//! RoPE and the KV cache) → residual → RMSNorm → SwiGLU feed-forward → residual, then the final
//! norm and the output head (tied to the embeddings when the file has no `output.weight`).
//!
//! One call processes any number of new tokens of one sequence: the whole prompt at once
//! (prefill: every weight matrix is read once for all prompt tokens) or one token (decode).

use super::cache::KvCache;
use super::config::{LlamaConfig, ModelError};
use super::ops::{add_in_place, rmsnorm, rope, softmax, swiglu};
use crate::formats::Gguf;
use crate::kernels::matmul::{ActFormat, Acts, Matmul, QMatrix, matmul, matmul_many};
use crate::kernels::pool::ThreadPool;
use crate::kernels::scalar::axpy_q8_0;
use crate::kernels::{attend_values, dot_f16_f32, dot_q8_0_q8_0, simd};
use crate::kv::{KvBatch, KvRows};
use crate::quant::quantize::quantize_acts_q8_0;
use crate::quant::{f16_to_f32, f32_to_f16};
use crate::tokenizer::TokenId;

// ANCHOR: layer
/// One transformer block's weights, borrowed from the mapped file.
pub struct Layer<'a> {
    pub attn_norm: &'a [f32], // (dim)
    pub wq: QMatrix<'a>,      // (n_heads · head_dim, dim)
    pub wk: QMatrix<'a>,      // (n_kv_heads · head_dim, dim)
    pub wv: QMatrix<'a>,      // (n_kv_heads · head_dim, dim)
    pub wo: QMatrix<'a>,      // (dim, n_heads · head_dim)
    pub ffn_norm: &'a [f32],  // (dim)
    pub w_gate: QMatrix<'a>,  // (ffn_dim, dim)
    pub w_up: QMatrix<'a>,    // (ffn_dim, dim)
    pub w_down: QMatrix<'a>,  // (dim, ffn_dim)
}

/// A Llama-family model over a memory-mapped GGUF file.
pub struct Llama<'a> {
    pub config: LlamaConfig,
    pub token_embd: QMatrix<'a>, // (vocab, dim)
    pub layers: Vec<Layer<'a>>,
    pub output_norm: &'a [f32], // (dim)
    /// The output head: `output.weight`, or `token_embd.weight` when tied.
    pub output: QMatrix<'a>, // (vocab, dim)
    pub tied_output: bool,
}
// ANCHOR_END: layer

/// One sequence's part of a batched forward step.
#[derive(Debug, Clone, Copy)]
pub struct SeqStep<'t> {
    /// The sequence's new tokens.
    pub tokens: &'t [TokenId],
    /// Which of them need logits.
    pub logits: Logits,
}

/// Where [`Llama::forward_batch_observed`] shows the activations: the inputs of a layer's
/// weight matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// The attention norm's output, input of Q, K and V (`dim` wide).
    AttnInput,
    /// The feed-forward norm's output, input of gate and up (`dim` wide).
    FfnInput,
    /// SwiGLU's output, input of down (`ffn_dim` wide).
    DownInput,
}

/// Which positions' logits a forward call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last new token's (generation).
    Last,
    /// Every new token's (speculative decoding).
    All,
    /// The new tokens' from index `i` on (perplexity scores only the second half of a chunk).
    From(usize),
}

impl<'a> Llama<'a> {
    /// Checks and borrows every tensor the forward pass needs.
    pub fn load(g: &'a Gguf) -> Result<Llama<'a>, ModelError> {
        let c = LlamaConfig::from_gguf(g)?;
        let matrix = |name: &str, rows: usize, cols: usize| -> Result<QMatrix<'a>, ModelError> {
            let view = g.tensor(name)?;
            let expected = vec![cols as u64, rows as u64];
            if view.info.dims != expected {
                return Err(ModelError::BadShape {
                    name: name.into(),
                    expected,
                    found: view.info.dims.clone(),
                });
            }
            Ok(QMatrix::from_view(view)?)
        };
        let vector = |name: &str, len: usize| -> Result<&'a [f32], ModelError> {
            let view = g.tensor(name)?;
            if view.info.dims != [len as u64] {
                return Err(ModelError::BadShape {
                    name: name.into(),
                    expected: vec![len as u64],
                    found: view.info.dims.clone(),
                });
            }
            Ok(view.as_f32()?)
        };
        let (d, hd) = (c.dim, c.head_dim);
        let layers = (0..c.n_layers)
            .map(|i| {
                let n = |suffix: &str| format!("blk.{i}.{suffix}.weight");
                Ok(Layer {
                    attn_norm: vector(&n("attn_norm"), d)?,
                    wq: matrix(&n("attn_q"), c.n_heads * hd, d)?,
                    wk: matrix(&n("attn_k"), c.n_kv_heads * hd, d)?,
                    wv: matrix(&n("attn_v"), c.n_kv_heads * hd, d)?,
                    wo: matrix(&n("attn_output"), d, c.n_heads * hd)?,
                    ffn_norm: vector(&n("ffn_norm"), d)?,
                    w_gate: matrix(&n("ffn_gate"), c.ffn_dim, d)?,
                    w_up: matrix(&n("ffn_up"), c.ffn_dim, d)?,
                    w_down: matrix(&n("ffn_down"), d, c.ffn_dim)?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let token_embd = matrix("token_embd.weight", c.vocab_size, d)?;
        let (output, tied_output) = match g.tensor_info("output.weight") {
            Some(_) => (matrix("output.weight", c.vocab_size, d)?, false),
            None => (token_embd, true),
        };
        Ok(Llama {
            output_norm: vector("output_norm.weight", d)?,
            config: c,
            token_embd,
            layers,
            output,
            tied_output,
        })
    }

    /// Bytes of weights read to decode one token: every matrix once, plus one embedding row.
    pub fn bytes_per_token(&self) -> u64 {
        let m = |q: &QMatrix| (q.rows * q.row_bytes) as u64;
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| {
                m(&l.wq)
                    + m(&l.wk)
                    + m(&l.wv)
                    + m(&l.wo)
                    + m(&l.w_gate)
                    + m(&l.w_up)
                    + m(&l.w_down)
                    + 8 * self.config.dim as u64
            })
            .sum();
        layers + m(&self.output) + self.token_embd.row_bytes as u64 + 4 * self.config.dim as u64
    }

    /// Floating-point operations of the matrix products that decode one token: a multiply and
    /// an add per weight of every matrix (attention over the cache, norms and the embedding
    /// lookup are not counted; at short contexts they are under 1% of it).
    pub fn flops_per_token(&self) -> u64 {
        let m = |q: &QMatrix| 2 * (q.rows * q.cols) as u64;
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| {
                m(&l.wq) + m(&l.wk) + m(&l.wv) + m(&l.wo) + m(&l.w_gate) + m(&l.w_up) + m(&l.w_down)
            })
            .sum();
        layers + m(&self.output)
    }

    // ANCHOR: forward
    /// Runs `tokens` (the next tokens of the sequence in `cache`) through the model, appends
    /// their keys and values to the cache, and returns logits: `vocab` floats per returned
    /// position (the last token's, or every token's).
    pub fn forward(
        &self,
        pool: &ThreadPool,
        cache: &mut KvCache,
        tokens: &[TokenId],
        which: Logits,
    ) -> Result<Vec<f32>, ModelError> {
        let mut logits = self.forward_batch(
            pool,
            cache,
            &[SeqStep {
                tokens,
                logits: which,
            }],
        )?;
        Ok(logits.pop().unwrap_or_default())
    }

    /// One forward step of several sequences at once: every sequence's new tokens go through
    /// each weight matrix together — the weights are read once for the whole batch — while
    /// attention runs per sequence over its own keys and values in `kv`. Returns each
    /// sequence's logits, in order.
    pub fn forward_batch(
        &self,
        pool: &ThreadPool,
        kv: &mut dyn KvBatch,
        steps: &[SeqStep<'_>],
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        self.forward_batch_observed(pool, kv, steps, &mut |_, _, _| {})
    }

    // ANCHOR: forward_batch
    /// [`Llama::forward_batch`], showing `observe(layer, site, rows)` the input of the weight
    /// matrices at each [`Site`] (`rows`: one row per token, `dim` or `ffn_dim` wide) — what
    /// activation-aware quantization calibrates on.
    pub fn forward_batch_observed(
        &self,
        pool: &ThreadPool,
        kv: &mut dyn KvBatch,
        steps: &[SeqStep<'_>],
        observe: &mut dyn FnMut(usize, Site, &[f32]),
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let c = &self.config;
        if steps.is_empty() || steps.iter().any(|s| s.tokens.is_empty()) {
            return Err(ModelError::EmptyInput);
        }
        for (s, step) in steps.iter().enumerate() {
            if let Some(&id) = step.tokens.iter().find(|&&id| id as usize >= c.vocab_size) {
                return Err(ModelError::TokenOutOfRange {
                    id,
                    vocab: c.vocab_size,
                });
            }
            kv.check_room(s, step.tokens.len())?;
        }
        // Row r of the batch is token `positions[r]` of sequence `owner[r]`.
        let n: usize = steps.iter().map(|s| s.tokens.len()).sum();
        let mut positions = Vec::with_capacity(n);
        let mut firsts = Vec::with_capacity(steps.len()); // first batch row of each sequence
        for (s, step) in steps.iter().enumerate() {
            firsts.push(positions.len());
            positions.extend(kv.len(s)..kv.len(s) + step.tokens.len());
        }
        let (d, kvd) = (c.dim, c.kv_dim());

        // The residual stream: one row of `dim` floats per token.
        let mut x = vec![0.0f32; n * d];
        let all_tokens = steps.iter().flat_map(|s| s.tokens.iter());
        for (row, &id) in x.chunks_exact_mut(d).zip(all_tokens) {
            self.token_embd.row_f32(id as usize, row);
        }
        let mut xn = vec![0.0f32; n * d];
        let (mut q, mut k, mut v) = (vec![0.0; n * d], vec![0.0; n * kvd], vec![0.0; n * kvd]);
        let mut att = vec![0.0f32; n * d];
        let mut proj = vec![0.0f32; n * d];
        let (mut gate, mut up) = (vec![0.0f32; n * c.ffn_dim], vec![0.0f32; n * c.ffn_dim]);
        // ANCHOR_END: forward_batch

        for (li, layer) in self.layers.iter().enumerate() {
            // Attention block.
            rmsnorm(&x, layer.attn_norm, c.rms_eps, &mut xn);
            observe(li, Site::AttnInput, &xn);
            let acts = ActsFor::new(&xn, d, &[&layer.wq, &layer.wk, &layer.wv]);
            matmul_many(
                pool,
                &mut [
                    acts.product(&layer.wq, &mut q),
                    acts.product(&layer.wk, &mut k),
                    acts.product(&layer.wv, &mut v),
                ],
            );
            rope(
                &mut q,
                &positions,
                c.n_heads,
                c.head_dim,
                c.rope_dims,
                c.rope_theta,
            );
            rope(
                &mut k,
                &positions,
                c.n_kv_heads,
                c.head_dim,
                c.rope_dims,
                c.rope_theta,
            );
            for (s, step) in steps.iter().enumerate() {
                let rows = firsts[s]..firsts[s] + step.tokens.len();
                kv.append(
                    s,
                    li,
                    &k[rows.start * kvd..rows.end * kvd],
                    &v[rows.start * kvd..rows.end * kvd],
                );
            }
            attention(pool, c, &q, &*kv, li, steps, &firsts, &mut att);
            matmul(
                pool,
                &layer.wo,
                &Acts::new(layer.wo.act_format(), &att, d),
                &mut proj,
            );
            add_in_place(&mut x, &proj);

            // Feed-forward block.
            rmsnorm(&x, layer.ffn_norm, c.rms_eps, &mut xn);
            observe(li, Site::FfnInput, &xn);
            let acts = ActsFor::new(&xn, d, &[&layer.w_gate, &layer.w_up]);
            matmul_many(
                pool,
                &mut [
                    acts.product(&layer.w_gate, &mut gate),
                    acts.product(&layer.w_up, &mut up),
                ],
            );
            swiglu(&mut gate, &up);
            observe(li, Site::DownInput, &gate);
            matmul(
                pool,
                &layer.w_down,
                &Acts::new(layer.w_down.act_format(), &gate, c.ffn_dim),
                &mut proj,
            );
            add_in_place(&mut x, &proj);
        }
        for (s, step) in steps.iter().enumerate() {
            kv.commit(s, step.tokens.len());
        }

        // Final norm and output head, for the rows whose logits are wanted — all sequences'
        // rows in one product.
        let mut wanted: Vec<std::ops::Range<usize>> = Vec::with_capacity(steps.len());
        for (s, step) in steps.iter().enumerate() {
            let len = step.tokens.len();
            let from = match step.logits {
                Logits::Last => len - 1,
                Logits::All => 0,
                Logits::From(i) => i.min(len - 1),
            };
            wanted.push(firsts[s] + from..firsts[s] + len);
        }
        let rows: Vec<f32> = wanted
            .iter()
            .flat_map(|r| x[r.start * d..r.end * d].iter().copied())
            .collect();
        let mut normed = vec![0.0f32; rows.len()];
        rmsnorm(&rows, self.output_norm, c.rms_eps, &mut normed);
        let mut logits = vec![0.0f32; rows.len() / d * c.vocab_size];
        matmul(
            pool,
            &self.output,
            &Acts::new(self.output.act_format(), &normed, d),
            &mut logits,
        );
        let mut out = Vec::with_capacity(steps.len());
        let mut at = 0;
        for r in wanted {
            let len = r.len() * c.vocab_size;
            out.push(logits[at..at + len].to_vec());
            at += len;
        }
        Ok(out)
    }
    // ANCHOR_END: forward
}

/// One input quantized once per activation format its weight matrices need (Q, K and V
/// usually share one format, so the input is quantized once for all three).
struct ActsFor {
    made: Vec<(ActFormat, Acts)>,
}

impl ActsFor {
    fn new(x: &[f32], cols: usize, weights: &[&QMatrix]) -> ActsFor {
        let mut made: Vec<(ActFormat, Acts)> = Vec::new();
        for w in weights {
            let format = w.act_format();
            if !made.iter().any(|(f, _)| *f == format) {
                made.push((format, Acts::new(format, x, cols)));
            }
        }
        ActsFor { made }
    }

    /// The product of `w` with these activations, into `out`.
    fn product<'s, 'w>(&'s self, w: &'s QMatrix<'w>, out: &'s mut [f32]) -> Matmul<'s, 'w> {
        let format = w.act_format();
        let acts = &self
            .made
            .iter()
            .find(|(f, _)| *f == format)
            .expect("quantized in ActsFor::new")
            .1;
        Matmul { w, acts, out }
    }
}

// ANCHOR: attention
/// Causal grouped-query attention for every new token of every sequence of the step: token
/// `r` of the batch (a query at position `p` of its sequence) attends to positions `0..=p`
/// of its own sequence, read from `kv` in chunks. One pool task per (sequence, query head).
/// Like llama.cpp, the query and the attention weights are rounded to f16 before their
/// products with an f16 cache, and each output is a dot product over positions in the
/// canonical float order (llama.cpp's `ggml_vec_dot_f16` of the weights with a value column:
/// [`attend_values`]); with a Q8_0 cache the query is quantized to Q8_0 (an integer dot
/// product, as llama.cpp does) and each value is dequantized as it is added.
#[allow(clippy::too_many_arguments)]
fn attention(
    pool: &ThreadPool,
    c: &LlamaConfig,
    q: &[f32],
    kv: &dyn KvBatch,
    layer: usize,
    steps: &[SeqStep<'_>],
    firsts: &[usize],
    out: &mut [f32],
) {
    let (hd, d) = (c.head_dim, c.dim);
    let group = c.n_heads / c.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let level = simd();
    let shared = SharedRows(out.as_mut_ptr());
    pool.run(steps.len() * c.n_heads, &|task| {
        let (s, h) = (task / c.n_heads, task % c.n_heads);
        let n = steps[s].tokens.len();
        let start = kv.len(s);
        let chunks = kv.chunks(s, layer, start + n);
        let head = (h / group) * hd..(h / group + 1) * hd; // this head's columns of a KV row
        let kv_dim = c.kv_dim();
        let mut scores = Vec::with_capacity(start + n);
        let mut acc = vec![0.0f32; hd];
        // This head's value rows of every position, when the cache holds f16 (empty for Q8_0).
        let f16_values: Vec<&[u16]> = chunks
            .iter()
            .flat_map(|chunk| {
                (0..chunk.len).filter_map(|p| match chunk.values.slice(p, kv_dim, head.clone()) {
                    KvRows::F16(v) => Some(v),
                    KvRows::Q8_0(_) => None,
                })
            })
            .collect();
        for t in 0..n {
            let row = firsts[s] + t;
            let q_t: Vec<f32> = q[row * d + h * hd..row * d + (h + 1) * hd]
                .iter()
                .map(|&x| f16_to_f32(f32_to_f16(x)))
                .collect();
            // The query as Q8_0, made on first use by a Q8_0 cache.
            let mut q_8 = None;
            let mut visible = start + t + 1; // causal: positions 0..=start+t
            scores.clear();
            for chunk in &chunks {
                for p in 0..chunk.len.min(visible) {
                    let score = match chunk.keys.slice(p, kv_dim, head.clone()) {
                        KvRows::F16(k) => dot_f16_f32(level, k, &q_t),
                        KvRows::Q8_0(k) => {
                            let q_8 = q_8.get_or_insert_with(|| {
                                quantize_acts_q8_0(&q[row * d + h * hd..row * d + (h + 1) * hd])
                            });
                            dot_q8_0_q8_0(level, k, q_8)
                        }
                    };
                    scores.push(score * scale);
                }
                visible = visible.saturating_sub(chunk.len);
            }
            softmax(&mut scores);
            // The weights in f16, as llama.cpp multiplies them with an f16 cache.
            for w in scores.iter_mut() {
                *w = f16_to_f32(f32_to_f16(*w));
            }
            if f16_values.is_empty() {
                acc.fill(0.0);
                let mut weights = scores.iter();
                'chunks: for chunk in &chunks {
                    for p in 0..chunk.len {
                        let Some(&w) = weights.next() else {
                            break 'chunks;
                        };
                        if let KvRows::Q8_0(v) = chunk.values.slice(p, kv_dim, head.clone()) {
                            axpy_q8_0(w, v, &mut acc);
                        }
                    }
                }
            } else {
                attend_values(level, &scores, &f16_values, &mut acc);
            }
            // SAFETY: task (s, h) writes only columns h·hd..(h+1)·hd of its sequence's rows.
            unsafe {
                std::ptr::copy_nonoverlapping(acc.as_ptr(), shared.get().add(row * d + h * hd), hd)
            };
        }
    });
}
// ANCHOR_END: attention

struct SharedRows(*mut f32);

impl SharedRows {
    fn get(&self) -> *mut f32 {
        self.0
    }
}
// SAFETY: attention tasks write disjoint column ranges, and pool.run returns after all tasks.
unsafe impl Sync for SharedRows {}
