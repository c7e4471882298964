//! Speculative decoding: a cheap drafter proposes the next k tokens, the target model checks all
//! of them in one forward pass, and every token it agrees with costs no pass of its own. On a GPU
//! a pass over k + 1 positions costs little more than a pass over one; on a CPU each extra
//! position costs a measured share of a decode step (the chapter's verify-cost table), so the
//! draft length is a policy ([`budget`]), not a constant.
//!
//! - [`drafter`]: the [`Drafter`] trait and the draft-model drafter ([`self_draft`]: the target's
//!   first blocks);
//! - [`ngram`]: prompt lookup, the drafter without a model;
//! - [`rule`]: greedy verification and Leviathan et al.'s speculative sampling;
//! - [`budget`]: how many tokens to draft next, fixed or adapted to the verdicts;
//! - [`decode`]: a request decoded speculatively, the same tokens as plain decoding.

pub mod budget;
pub mod decode;
pub mod drafter;
pub mod ngram;
pub mod rule;

pub use budget::{Budget, DraftLength};
pub use decode::{SpecStats, generate_speculative};
pub use drafter::{Draft, Drafter, ModelDrafter, self_draft, share};
pub use ngram::NgramDrafter;
pub use rule::{Mode, Verdict, distribution, residual, verify, verify_greedy, verify_sampled};

#[cfg(test)]
mod tests;
