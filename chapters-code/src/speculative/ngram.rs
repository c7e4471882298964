//! Prompt lookup: the n-gram drafter. The last n tokens of the context are looked up earlier in
//! the context (the prompt and everything generated so far); what followed their latest earlier
//! occurrence is the draft. No model runs: the cost is a scan of the context, and the draft is
//! good exactly where the answer copies its input (summaries, quotes, edits of a given text).

use super::drafter::{Draft, Drafter};
use super::rule::Mode;
use crate::kernels::pool::ThreadPool;
use crate::model::ModelError;
use crate::tokenizer::TokenId;

// ANCHOR: ngram
/// Proposes the tokens that followed the longest suffix of the context (of `min_n..=max_n`
/// tokens) at its latest earlier occurrence.
#[derive(Debug, Clone)]
pub struct NgramDrafter {
    /// The longest suffix tried first (llama.cpp's lookup and vLLM use up to 4).
    pub max_n: usize,
    /// The shortest suffix accepted as a match (1: a single repeated token suffices).
    pub min_n: usize,
}

impl Default for NgramDrafter {
    fn default() -> Self {
        NgramDrafter { max_n: 4, min_n: 1 }
    }
}

impl NgramDrafter {
    /// Up to `k` tokens that followed the latest earlier occurrence of the context's longest
    /// matching suffix; empty when no suffix of `min_n` tokens or more occurs earlier.
    pub fn lookup(&self, context: &[TokenId], k: usize) -> Vec<TokenId> {
        let len = context.len();
        for n in (self.min_n.max(1)..=self.max_n).rev() {
            if n >= len {
                continue;
            }
            let suffix = &context[len - n..];
            // Latest start i < len - n with context[i..i + n] == suffix.
            if let Some(i) = (0..len - n).rev().find(|&i| &context[i..i + n] == suffix) {
                let follow = &context[i + n..];
                return follow[..k.min(follow.len())].to_vec();
            }
        }
        Vec::new()
    }
}
// ANCHOR_END: ngram

impl Drafter for NgramDrafter {
    fn name(&self) -> String {
        format!("n-gram (prompt lookup, n ≤ {})", self.max_n)
    }

    fn propose(
        &mut self,
        _pool: &ThreadPool,
        context: &[TokenId],
        k: usize,
        _mode: &mut Mode<'_>,
    ) -> Result<Draft, ModelError> {
        Ok(Draft::one_hot(self.lookup(context, k)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_suffix_at_its_latest_occurrence_wins() {
        let d = NgramDrafter::default();
        // "1 2 3 9 … 1 2 3 7 … 2 3": the suffix [2, 3] last occurred before 7.
        let ctx = [1, 2, 3, 9, 5, 1, 2, 3, 7, 8, 2, 3];
        assert_eq!(d.lookup(&ctx, 2), vec![7, 8]);
        // A longer match beats a later shorter one: [5, 1, 2] occurs once, before 3.
        let ctx = [5, 1, 2, 3, 4, 9, 2, 6, 5, 1, 2];
        assert_eq!(d.lookup(&ctx, 3), vec![3, 4, 9]);
        // The draft stops where the context does.
        assert_eq!(d.lookup(&[4, 4], 5), vec![4]);
    }

    #[test]
    fn no_earlier_occurrence_means_no_draft() {
        let d = NgramDrafter::default();
        assert!(d.lookup(&[1, 2, 3, 4], 4).is_empty());
        assert!(d.lookup(&[], 4).is_empty());
        assert!(d.lookup(&[7], 4).is_empty());
        let strict = NgramDrafter { max_n: 4, min_n: 2 };
        assert!(
            strict.lookup(&[1, 2, 9, 2], 4).is_empty(),
            "one token is not enough"
        );
        assert_eq!(strict.lookup(&[1, 2, 9, 1, 2], 4), vec![9, 1, 2]);
    }
}
