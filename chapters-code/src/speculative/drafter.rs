//! What proposes tokens: the [`Drafter`] trait, and the draft-model drafter — any Llama-family
//! model with the target's vocabulary, or the target's own first blocks ([`self_draft`]).

use super::rule::{Mode, distribution, draw};
use crate::kernels::pool::ThreadPool;
use crate::model::llama::Layer;
use crate::model::{KvCache, Llama, Logits, ModelError};
use crate::sampling::argmax;
use crate::tokenizer::TokenId;

// ANCHOR: draft
/// Tokens proposed to follow the context, with the distribution each was drawn from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Draft {
    pub tokens: Vec<TokenId>,
    /// q: `tokens.len()` distributions over the vocabulary, or `None` for a deterministic
    /// drafter (an n-gram lookup), whose q is one-hot on its token.
    pub q: Option<Vec<Vec<f32>>>,
}

/// Proposes up to `k` tokens to follow `context` (the prompt and every token decided so far).
pub trait Drafter {
    fn name(&self) -> String;
    fn propose(
        &mut self,
        pool: &ThreadPool,
        context: &[TokenId],
        k: usize,
        mode: &mut Mode<'_>,
    ) -> Result<Draft, ModelError>;
}
// ANCHOR_END: draft

impl Draft {
    /// A deterministic draft (q one-hot).
    pub fn one_hot(tokens: Vec<TokenId>) -> Draft {
        Draft { tokens, q: None }
    }

    /// q(token i) of draft position `i`: 1 for a one-hot draft.
    pub fn q_of(&self, i: usize) -> f32 {
        match &self.q {
            None => 1.0,
            Some(q) => q[i][self.tokens[i] as usize],
        }
    }
}

// ANCHOR: self_draft
/// The target's first `n_layers` blocks, then its final norm and output head: a draft model
/// that costs `n_layers / N` of the target per token, needs no file of its own, and shares the
/// target's memory (every tensor is borrowed from the same mapped file).
pub fn self_draft<'g>(target: &Llama<'g>, n_layers: usize) -> Result<Llama<'g>, ModelError> {
    let total = target.layers.len();
    if n_layers == 0 || n_layers >= total {
        return Err(ModelError::BadConfig(format!(
            "a self-draft keeps 1 to {} of the model's {total} blocks, not {n_layers}",
            total - 1
        )));
    }
    Ok(first_blocks(target, n_layers))
}
// ANCHOR_END: self_draft

/// A second handle on `model`: the same tensors, borrowed from the same file, at no cost in
/// memory (each sequence's draft model in the server).
pub fn share<'g>(model: &Llama<'g>) -> Llama<'g> {
    first_blocks(model, model.layers.len())
}

/// `target`'s first `n_layers` blocks with its embedding, final norm and head.
fn first_blocks<'g>(target: &Llama<'g>, n_layers: usize) -> Llama<'g> {
    let mut config = target.config.clone();
    config.n_layers = n_layers;
    let layers = target.layers[..n_layers]
        .iter()
        .map(|l| Layer {
            attn_norm: l.attn_norm,
            wq: l.wq,
            wk: l.wk,
            wv: l.wv,
            wo: l.wo,
            ffn_norm: l.ffn_norm,
            w_gate: l.w_gate,
            w_up: l.w_up,
            w_down: l.w_down,
        })
        .collect();
    Llama {
        config,
        token_embd: target.token_embd,
        layers,
        output_norm: target.output_norm,
        output: target.output,
        tied_output: target.tied_output,
        attention: target.attention,
    }
}

/// A draft model decoding ahead of the target, with its own KV cache. Between calls it keeps
/// the cache of the context it has seen, rolls back to the longest prefix the new context
/// shares with it (the rejected drafts), and prefills only what is new.
pub struct ModelDrafter<'g> {
    pub model: Llama<'g>,
    label: String,
    cache: KvCache,
    /// The tokens whose keys and values are in `cache`, in order.
    cached: Vec<TokenId>,
}

impl<'g> ModelDrafter<'g> {
    pub fn new(model: Llama<'g>, label: impl Into<String>) -> ModelDrafter<'g> {
        let limit = model.config.context_length;
        ModelDrafter::with_limit(model, label, limit)
    }

    /// A drafter whose cache holds at most `limit` positions (a request's prompt and
    /// `max_tokens`: a server keeps one drafter per running request).
    pub fn with_limit(
        model: Llama<'g>,
        label: impl Into<String>,
        limit: usize,
    ) -> ModelDrafter<'g> {
        let cache = KvCache::with_limit(&model.config, limit);
        ModelDrafter {
            model,
            label: label.into(),
            cache,
            cached: Vec::new(),
        }
    }
}

impl Drafter for ModelDrafter<'_> {
    fn name(&self) -> String {
        self.label.clone()
    }

    fn propose(
        &mut self,
        pool: &ThreadPool,
        context: &[TokenId],
        k: usize,
        mode: &mut Mode<'_>,
    ) -> Result<Draft, ModelError> {
        if k == 0 || context.is_empty() {
            return Ok(Draft::default());
        }
        // Keep the shared prefix, less one token: the forward pass needs a new token to give logits.
        let shared = self
            .cached
            .iter()
            .zip(context)
            .take_while(|(a, b)| a == b)
            .count()
            .min(context.len() - 1);
        self.cache.truncate(shared);
        self.cached.truncate(shared);
        let room = self.cache.limit() - shared;
        let k = k.min(room.saturating_sub(context.len() - shared));
        if k == 0 {
            return Ok(Draft::default());
        }
        let mut logits =
            self.model
                .forward(pool, &mut self.cache, &context[shared..], Logits::Last)?;
        self.cached.extend_from_slice(&context[shared..]);
        let mut history = context.to_vec();
        let mut draft = Draft {
            tokens: Vec::with_capacity(k),
            q: matches!(mode, Mode::Sample { .. }).then(Vec::new),
        };
        for i in 0..k {
            let token = match mode {
                Mode::Greedy => argmax(&logits),
                Mode::Sample { params, rng } => {
                    let q = distribution(params, &logits, &history);
                    let t = draw(&q, rng.next_f32());
                    if let Some(qs) = &mut draft.q {
                        qs.push(q);
                    }
                    t
                }
            };
            draft.tokens.push(token);
            history.push(token);
            if i + 1 < k {
                logits = self
                    .model
                    .forward(pool, &mut self.cache, &[token], Logits::Last)?;
                self.cached.push(token);
            }
        }
        Ok(draft)
    }
}
