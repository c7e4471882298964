//! The Llama forward pass: embeddings, then per block RMSNorm → attention (grouped-query, with
//! RoPE and the KV cache) → residual → RMSNorm → SwiGLU feed-forward → residual, then the final
//! norm and the output head (tied to the embeddings when the file has no `output.weight`).
//!
//! One call processes any number of new tokens of one sequence: the whole prompt at once
//! (prefill: every weight matrix is read once for all prompt tokens) or one token (decode).

use super::block::{BlockShape, Scratch, StepRows, run_block};
use super::cache::KvCache;
use super::config::{LlamaConfig, ModelError};
use super::ops::rmsnorm;
use crate::attention::{AttentionKind, KvBatch};
use crate::formats::Gguf;
use crate::kernels::matmul::{Acts, QMatrix, matmul};
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
        let d = c.dim;
        let news: Vec<usize> = steps.iter().map(|s| s.tokens.len()).collect();

        // The residual stream: one row of `dim` floats per token.
        let mut x = vec![0.0f32; n * d];
        let all_tokens = steps.iter().flat_map(|s| s.tokens.iter());
        for (row, &id) in x.chunks_exact_mut(d).zip(all_tokens) {
            self.token_embd.row_f32(id as usize, row);
        }
        let rows = StepRows {
            positions: &positions,
            news: &news,
            firsts: &firsts,
        };
        let mut scratch = Scratch::new(c, n);
        let shape = BlockShape {
            config: c,
            attention: self.attention,
        };
        // ANCHOR_END: forward_batch

        for (li, layer) in self.layers.iter().enumerate() {
            let mut whole = |_: &mut [f32]| {}; // one process holds every product whole
            run_block(
                pool,
                shape,
                li,
                layer,
                &mut x,
                &rows,
                kv,
                &mut scratch,
                observe,
                &mut whole,
            );
        }
        observe(self.layers.len(), Site::BlockInput, &x);
        for (s, step) in steps.iter().enumerate() {
            kv.commit(s, step.tokens.len());
        }

        // Final norm and output head, for the rows whose logits are wanted — all sequences'
        // rows in one product.
        let wanted = wanted_rows(steps, &firsts);
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

/// The batch rows whose logits each sequence of `steps` wants (its first row is `firsts[s]`).
pub(crate) fn wanted_rows(steps: &[SeqStep<'_>], firsts: &[usize]) -> Vec<std::ops::Range<usize>> {
    steps
        .iter()
        .zip(firsts)
        .map(|(step, &first)| {
            let len = step.tokens.len();
            let from = match step.logits {
                Logits::Last => len - 1,
                Logits::All => 0,
                Logits::From(i) => i.min(len - 1),
            };
            first + from..first + len
        })
        .collect()
}
