//! Speculative decoding in the server. A running greedy request drafts up to k tokens before a
//! step; the step feeds `[last, draft…]` for it in the same batched forward pass as every other
//! sequence's tokens; its verdict keeps the accepted positions' keys and values
//! ([`crate::kv::PagedKv::truncate`] drops the rest) and streams the accepted tokens and the
//! target's own. Each request keeps its own draft length ([`Budget`]), so one request that
//! copies its input drafts long while a chatty neighbour stops drafting.
//!
//! Only temperature-0 requests speculate: their tokens are the same with or without it, and
//! whatever the batch. A sampled request would keep its distribution but not its draws, and its
//! draws would then depend on its neighbours (the draft lengths do): a seed would no longer
//! give the same text twice, so sampled requests decode plainly.

use crate::model::{Llama, ModelError};
use crate::sampling::{Rng, SamplingParams};
use crate::speculative::{Budget, Draft, DraftLength, Drafter, ModelDrafter, NgramDrafter};
use std::path::PathBuf;
use std::str::FromStr;

/// Where a request's drafts come from.
#[derive(Debug, Clone, PartialEq)]
pub enum DraftSource {
    /// Prompt lookup: no model runs.
    Ngram,
    /// The target's first `n` blocks, its final norm and head.
    SelfDraft(usize),
    /// A draft model file with the target's vocabulary (loaded next to the target).
    File(PathBuf),
}

impl FromStr for DraftSource {
    type Err = String;

    /// `ngram`, `self:N` or `draft:PATH`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "ngram" {
            return Ok(DraftSource::Ngram);
        }
        if let Some(n) = s.strip_prefix("self:") {
            return match n.parse::<usize>() {
                Ok(n) if n > 0 => Ok(DraftSource::SelfDraft(n)),
                _ => Err(format!(
                    "`self:{n}`: give the number of blocks, e.g. self:8"
                )),
            };
        }
        if let Some(path) = s.strip_prefix("draft:") {
            if path.is_empty() {
                return Err(
                    "`draft:` needs the draft model's path, e.g. draft:models/small.gguf".into(),
                );
            }
            return Ok(DraftSource::File(PathBuf::from(path)));
        }
        Err(format!(
            "unknown drafter `{s}`: use ngram, self:N (the model's first N blocks) or draft:PATH"
        ))
    }
}

/// The server's default [`Speculation::max_batch`], chosen from the chapter's table of
/// aggregate throughput against clients.
pub const DEFAULT_MAX_BATCH: usize = 4;

/// The server's speculation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Speculation {
    pub source: DraftSource,
    /// Draft tokens per step, at most, fixed or adapted per request.
    pub length: DraftLength,
    /// Speculate only in steps where at most this many requests decode: a full batch already
    /// reads every weight once for many tokens, and draft tokens there cost nearly a full
    /// token's compute each (the chapter's table of aggregate throughput against clients).
    pub max_batch: usize,
}

impl Speculation {
    /// N-gram drafts of adaptive length up to 8, in steps of at most `max_batch` decodes.
    pub fn ngram(max_batch: usize) -> Speculation {
        Speculation {
            source: DraftSource::Ngram,
            length: DraftLength::Adaptive(8),
            max_batch,
        }
    }

    /// Whether a request with these sampling parameters speculates.
    pub fn applies_to(params: &SamplingParams) -> bool {
        params.temperature == 0.0
    }
}

/// The draft model of a [`Speculation`], checked against the target: a self-draft borrows the
/// target's blocks; a file's model must have the target's vocabulary.
pub fn draft_model<'g>(
    target: &Llama<'g>,
    source: &DraftSource,
    file: Option<Llama<'g>>,
) -> Result<Option<Llama<'g>>, ModelError> {
    match source {
        DraftSource::Ngram => Ok(None),
        DraftSource::SelfDraft(n) => crate::speculative::self_draft(target, *n).map(Some),
        DraftSource::File(path) => {
            let model = file.ok_or_else(|| {
                ModelError::BadConfig(format!("the draft model {} was not loaded", path.display()))
            })?;
            if model.config.vocab_size != target.config.vocab_size {
                return Err(ModelError::BadConfig(format!(
                    "the draft model {} has a vocabulary of {} tokens, the target {}: a drafter \
                     must share the target's tokenizer",
                    path.display(),
                    model.config.vocab_size,
                    target.config.vocab_size
                )));
            }
            Ok(Some(model))
        }
    }
}

/// One request's speculation state.
pub(super) struct SeqSpec<'m> {
    pub budget: Budget,
    pub drafter: Box<dyn Drafter + 'm>,
    /// Only for the acceptance rule's interface: at temperature 0 it decides nothing.
    pub rng: Rng,
    /// The draft for the coming step (empty: a plain decode).
    pub draft: Draft,
}

impl<'m> SeqSpec<'m> {
    /// The state of a request whose prompt and output fill at most `limit` positions.
    pub fn new(
        spec: &Speculation,
        draft_model: Option<&Llama<'m>>,
        params: &SamplingParams,
        limit: usize,
    ) -> Option<SeqSpec<'m>> {
        let drafter: Box<dyn Drafter + 'm> = match (&spec.source, draft_model) {
            (DraftSource::Ngram, _) => Box::new(NgramDrafter::default()),
            (source, Some(model)) => Box::new(ModelDrafter::with_limit(
                crate::speculative::share(model),
                format!("{source:?}"),
                limit.min(model.config.context_length),
            )),
            (_, None) => return None,
        };
        Some(SeqSpec {
            budget: Budget::new(spec.length),
            drafter,
            rng: Rng::new(params.seed),
            draft: Draft::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drafters_parse_and_bad_ones_say_what_to_write() {
        assert_eq!("ngram".parse(), Ok(DraftSource::Ngram));
        assert_eq!("self:8".parse(), Ok(DraftSource::SelfDraft(8)));
        assert_eq!(
            "draft:models/x.gguf".parse(),
            Ok(DraftSource::File("models/x.gguf".into()))
        );
        for bad in ["self:0", "self:x", "draft:", "lookup", ""] {
            let e = bad.parse::<DraftSource>().unwrap_err();
            assert!(e.contains("self:") || e.contains("draft:"), "{bad}: {e}");
        }
    }
}
