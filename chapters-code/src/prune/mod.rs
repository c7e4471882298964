//! Pruning: remove weights and measure what the model loses. [`mask`] decides which weights of
//! a matrix go (magnitude, Wanda; any fraction, or n of every m); [`sparsegpt`] also repairs
//! the weights it keeps; [`model`] applies a method to every block matrix of a model file and
//! writes a new one; [`structured`] removes whole blocks (depth) or feed-forward channels
//! (width), which makes the file — and decoding — smaller.

pub mod mask;
pub mod model;
pub mod sparsegpt;
pub mod structured;

pub use mask::{Method, Pattern};
pub use model::{Evidence, Pruned, prune_model};
