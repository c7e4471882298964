//! The second-order solver that GPTQ (quantization) and SparseGPT (pruning) share: Optimal
//! Brain Surgeon, one column at a time (Frantar & Alistarh, 2022–23).
//!
//! A weight matrix `W` (`rows × cols`, one row per output) reads inputs `x` (`cols` wide). Over
//! calibration inputs `X` (one row per token), changing a row `w` to `ŵ` changes that output by
//! `X (w − ŵ)ᵀ`, and its squared error is `(w − ŵ) H (w − ŵ)ᵀ` with the Hessian `H = 2XᵀX`
//! ([`hessian`]). Fix the columns of the row in order. When column `j` is set to `q` (a
//! quantized value, or 0 for a pruned weight), the columns after it can absorb the change
//! optimally — that is the OBS update:
//!
//! ```text
//! e = (w_j − q) / U[j, j]          w_{j+1..} −= e · U[j, j+1..]          loss += e² / 2
//! ```
//!
//! where `U` is the upper Cholesky factor of `H⁻¹` (`H⁻¹ = UᵀU`, [`cholesky`]): row `j` of
//! `U` is exactly what OBS needs once columns `0..j` are fixed. What is stored in column `j`
//! is the caller's decision ([`sweep`]): GPTQ rounds it to its 4-bit grid, SparseGPT keeps it
//! or zeroes it. Each row is independent of the others, so rows are swept in parallel.

pub mod cholesky;
pub mod hessian;
pub mod sweep;
#[cfg(test)]
pub(crate) mod test_inputs;

pub use cholesky::InverseFactor;
pub use hessian::{DAMP, Hessian, Hessians, LayerFactors, collect_hessians};
pub use sweep::{par_rows, sweep_row};

/// Why the solver cannot run.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ObsError {
    #[error(
        "the Hessian is not positive definite at column {0} even after damping: give more calibration tokens or a larger damping"
    )]
    NotPositiveDefinite(usize),
    #[error("the Hessian has seen no calibration tokens")]
    NoTokens,
}
