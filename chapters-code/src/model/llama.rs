//! The Llama forward pass: embeddings, then per block RMSNorm → attention (grouped-query, with
//! RoPE and the KV cache) → residual → RMSNorm → SwiGLU feed-forward → residual, then the final
//! norm and the output head (tied to the embeddings when the file has no `output.weight`).
//!
//! One call processes any number of new tokens of one sequence: the whole prompt at once
//! (prefill: every weight matrix is read once for all prompt tokens) or one token (decode).

use super::cache::KvCache;
use super::config::{LlamaConfig, ModelError};
use super::ops::{add_in_place, rmsnorm, rope, swiglu};
use crate::attention::{self, AttentionKind, Heads, KvBatch};
use crate::formats::Gguf;
use crate::kernels::matmul::{ActFormat, Acts, Matmul, QMatrix, matmul, matmul_many};
use crate::kernels::pool::ThreadPool;
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
    /// How attention is computed (naive, llama.cpp's arithmetic, unless a caller picks tiled).
    pub attention: AttentionKind,
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
    /// The attention's output, input of the output projection (`dim` wide).
    AttnOutput,
    /// The residual stream entering block `layer` (`dim` wide); layer `n_layers` is the stream
    /// after the last block, before the final norm.
    BlockInput,
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
            attention: AttentionKind::default(),
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

    /// Runs `tokens`, cut into whole chunks of `ctx` (each on a fresh cache, the rest
    /// dropped), through the model for what `observe` sees (see
    /// [`Llama::forward_batch_observed`]): how calibration reads a text.
    pub fn observe_chunks(
        &self,
        pool: &ThreadPool,
        tokens: &[TokenId],
        ctx: usize,
        observe: &mut dyn FnMut(usize, Site, &[f32]),
    ) -> Result<(), ModelError> {
        let mut cache = KvCache::with_limit(&self.config, ctx);
        for chunk in tokens.chunks_exact(ctx) {
            cache.clear();
            let step = SeqStep {
                tokens: chunk,
                logits: Logits::Last,
            };
            self.forward_batch_observed(pool, &mut cache, &[step], observe)?;
        }
        Ok(())
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
        let news: Vec<usize> = steps.iter().map(|s| s.tokens.len()).collect();
        let heads = Heads {
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
        };

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
            observe(li, Site::BlockInput, &x);
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
            let step = attention::Step {
                heads,
                q: &q,
                kv: &*kv,
                layer: li,
                new: &news,
                firsts: &firsts,
            };
            attention::attend(self.attention, pool, &step, &mut att);
            observe(li, Site::AttnOutput, &att);
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
        observe(self.layers.len(), Site::BlockInput, &x);
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
