//! Pruning: remove weights and measure what the model loses. [`mask`] decides which weights of a
//! matrix go (magnitude, Wanda; any fraction, or n of every m); [`model`] applies a method to
//! every block matrix of a model file and writes a new one.

pub mod mask;
pub mod model;

pub use mask::{Method, Pattern};
pub use model::{Pruned, prune_model};
