//! Distillation: heal a depth-pruned student on its teacher's output distribution.
//!
//! The student is the teacher with most of its blocks dropped ([`student`]); its embedding,
//! which is also its output head, stays frozen and shared. Training runs here, in plain Rust:
//! the forward pass keeps what the backward pass needs ([`network`], [`layers`]), the
//! gradient of the objective ([`loss`]: cross-entropy on the text plus forward or reverse KL
//! to the teacher's cached top-k logits, [`teacher`]) flows back into every block, and AdamW
//! updates the weights ([`train`]). The matrix products go through one `sgemm` ([`gemm`]).
//! The tests check every gradient against finite differences.

pub mod gemm;
pub mod layers;
pub mod loss;
pub mod network;
pub mod params;
pub mod recipe;
pub mod student;
pub mod teacher;
pub mod train;
pub mod wikitext;

#[cfg(test)]
mod tests;

pub use loss::{Divergence, Objective};
pub use params::{Dims, Frozen};
pub use recipe::{DistillError, cached_teacher, choose_blocks, training_tokens};
pub use student::Student;
pub use teacher::TeacherCache;
pub use train::{StepLog, TrainConfig, evaluate, train};
