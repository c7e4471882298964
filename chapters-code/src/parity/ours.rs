//! The book's engine on the parity suite: its tokens for each prompt, its greedy run with the
//! top-5 log-probabilities at every step, and its log-probabilities teacher-forced on a
//! reference run's tokens.

use super::suite::{Prompt, TOP};
use crate::generate::default_stop_tokens;
use crate::kernels::pool::ThreadPool;
use crate::model::{KvCache, Llama, Logits, ModelError};
use crate::sampling::argmax;
use crate::tokenizer::{ChatTemplateError, TokenId, Tokenizer};

/// Log-probabilities of one distribution: log-softmax of the logits, computed in f64 as the
/// reference script does (numpy), so that both sides round the same way.
pub struct LogProbs<'a> {
    logits: &'a [f32],
    log_sum_exp: f64,
}

impl<'a> LogProbs<'a> {
    pub fn new(logits: &'a [f32]) -> LogProbs<'a> {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
        LogProbs {
            logits,
            log_sum_exp: max + sum.ln(),
        }
    }

    /// log p(id).
    pub fn at(&self, id: TokenId) -> f64 {
        self.logits[id as usize] as f64 - self.log_sum_exp
    }

    /// The top-5 ids, best first (ties: the lower id first), and their log-probabilities.
    pub fn top(&self) -> ([TokenId; TOP], [f64; TOP]) {
        let mut ids = [0 as TokenId; TOP];
        let mut n = 0;
        for (id, &l) in self.logits.iter().enumerate() {
            // Insert into the sorted top list if it beats the last kept (strictly: ties keep
            // the earlier, lower id).
            if n == TOP && l <= self.logits[ids[TOP - 1] as usize] {
                continue;
            }
            let mut at = n.min(TOP - 1);
            while at > 0 && l > self.logits[ids[at - 1] as usize] {
                ids[at] = ids[at - 1];
                at -= 1;
            }
            ids[at] = id as TokenId;
            n = (n + 1).min(TOP);
        }
        (ids, ids.map(|id| self.at(id)))
    }
}

/// The prompt's token ids: raw text with special tokens parsed (as llama.cpp's completion tools
/// do), a conversation through the model's chat template with a generation prompt (its
/// content never parsed for special tokens; the suite's content spells none, so the ids are
/// llama.cpp's).
pub fn prompt_ids(
    tokenizer: &Tokenizer,
    prompt: &Prompt,
) -> Result<Vec<TokenId>, ChatTemplateError> {
    match (&prompt.text, &prompt.messages) {
        (Some(text), _) => Ok(tokenizer.encode(text, true)),
        (None, Some(messages)) => tokenizer.encode_chat(messages, true),
        (None, None) => Ok(Vec::new()),
    }
}

/// A greedy run: the same shape as a reference's.
#[derive(Debug, Clone, PartialEq)]
pub struct OurRun {
    pub tokens: Vec<TokenId>,
    pub top_ids: Vec<[TokenId; TOP]>,
    pub top_lps: Vec<[f64; TOP]>,
}

/// One prompt prefilled once, then run as many times as needed from there.
pub struct Prefilled<'m> {
    model: &'m Llama<'m>,
    cache: KvCache,
    prompt_len: usize,
    /// Logits at the last prompt position.
    last: Vec<f32>,
}

impl<'m> Prefilled<'m> {
    /// Prefills `prompt` (one pass) with room for `extra` more tokens.
    pub fn new(
        model: &'m Llama<'m>,
        pool: &ThreadPool,
        prompt: &[TokenId],
        extra: usize,
    ) -> Result<Prefilled<'m>, ModelError> {
        let mut cache = KvCache::with_limit(&model.config, prompt.len() + extra);
        let last = model.forward(pool, &mut cache, prompt, Logits::Last)?;
        Ok(Prefilled {
            model,
            cache,
            prompt_len: prompt.len(),
            last,
        })
    }

    /// Logits at every step of `tokens`: step k is the distribution that predicts `tokens[k]`
    /// after the prompt and `tokens[..k]`. The tokens go through in one pass: the engine is
    /// batch-invariant (`tests/parity.rs` checks one pass against one token at a time, bit for
    /// bit), so this is what token-by-token decoding gives.
    pub fn forced_logits(
        &mut self,
        pool: &ThreadPool,
        tokens: &[TokenId],
    ) -> Result<Vec<f32>, ModelError> {
        self.cache.truncate(self.prompt_len);
        let mut all = self.last.clone();
        if tokens.len() > 1 {
            let rest = self.model.forward(
                pool,
                &mut self.cache,
                &tokens[..tokens.len() - 1],
                Logits::All,
            )?;
            all.extend_from_slice(&rest);
        }
        Ok(all)
    }

    /// Our log-probabilities of `ids[k]` at each step k, from logits of [`Self::forced_logits`].
    pub fn log_probs_of(&self, logits: &[f32], ids: &[[TokenId; TOP]]) -> Vec<[f64; TOP]> {
        logits
            .chunks_exact(self.model.config.vocab_size)
            .zip(ids)
            .map(|(row, ids)| {
                let lp = LogProbs::new(row);
                ids.map(|id| lp.at(id))
            })
            .collect()
    }

    /// Our greedy run of up to `max_tokens`, stopping after an end-of-generation token
    /// (included, as in the references): one forward pass per token.
    pub fn greedy(
        &mut self,
        pool: &ThreadPool,
        tokenizer: &Tokenizer,
        max_tokens: usize,
    ) -> Result<OurRun, ModelError> {
        let last = self.last.clone();
        self.greedy_after(pool, tokenizer, max_tokens, &[], &last)
    }

    /// [`Self::greedy`], reusing `known_logits` — our logits for the steps of `known`, as
    /// [`Self::forced_logits`] computed them — for as long as our greedy tokens are `known`'s:
    /// by batch invariance they are the logits a token-by-token decode would compute. From the
    /// first token that differs, one forward pass per token. `tests/parity.rs` checks that this
    /// equals [`Self::greedy`] bit for bit.
    pub fn greedy_after(
        &mut self,
        pool: &ThreadPool,
        tokenizer: &Tokenizer,
        max_tokens: usize,
        known: &[TokenId],
        known_logits: &[f32],
    ) -> Result<OurRun, ModelError> {
        let vocab = self.model.config.vocab_size;
        let stops = default_stop_tokens(tokenizer);
        let mut run = OurRun {
            tokens: Vec::new(),
            top_ids: Vec::new(),
            top_lps: Vec::new(),
        };
        let mut logits = known_logits[..vocab].to_vec();
        let (mut on_known, mut decoding) = (true, false);
        loop {
            let k = run.tokens.len();
            let (ids, lps) = LogProbs::new(&logits).top();
            let token = argmax(&logits);
            run.tokens.push(token);
            run.top_ids.push(ids);
            run.top_lps.push(lps);
            if stops.contains(&token) || run.tokens.len() == max_tokens {
                return Ok(run);
            }
            on_known &= known.get(k) == Some(&token);
            if on_known && (k + 2) * vocab <= known_logits.len() {
                logits = known_logits[(k + 1) * vocab..(k + 2) * vocab].to_vec();
                continue;
            }
            logits = if decoding {
                self.model
                    .forward(pool, &mut self.cache, &[token], Logits::Last)?
            } else {
                // Leaving `known` (whatever the cache held after the prompt): our tokens so far
                // in one pass, which by batch invariance leaves the cache a decode would have.
                decoding = true;
                self.cache.truncate(self.prompt_len);
                self.model
                    .forward(pool, &mut self.cache, &run.tokens, Logits::Last)?
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_keeps_the_five_best_in_order_and_the_lower_id_on_ties() {
        let logits = [0.5f32, 3.0, -1.0, 3.0, 2.0, 7.0, 0.5, 2.5];
        let lp = LogProbs::new(&logits);
        let (ids, lps) = lp.top();
        assert_eq!(ids, [5, 1, 3, 7, 4]);
        let total: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        assert!((lps[0] - (7.0 - total.ln())).abs() < 1e-12);
        assert!(lps.windows(2).all(|w| w[0] >= w[1]));
    }
}
