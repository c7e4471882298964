//! Layer Hessians `H = 2XᵀX / N` from calibration tokens: one per matrix input of every block
//! (the inputs of Q/K/V, of the attention output projection, of gate/up and of down), gathered
//! in one forward pass of the unchanged model.
//!
//! (GPTQ and SparseGPT calibrate each block on the outputs of the blocks already compressed;
//! we take every Hessian from the original model, in one pass — simpler, and the
//! difference is small next to the gap between any of them and rounding or magnitude pruning.)

use super::ObsError;
use super::cholesky::InverseFactor;
use crate::kernels::gram::gram;
use crate::kernels::pool::ThreadPool;
use crate::model::{Llama, ModelError, Site};
use crate::tokenizer::TokenId;

/// GPTQ's default dampening: 1% of the Hessian's mean diagonal.
pub const DAMP: f64 = 0.01;

/// `Σ xᵀx` over the calibration tokens of one input (`cols × cols`, f64, row-major).
#[derive(Debug, Clone)]
pub struct Hessian {
    pub cols: usize,
    pub sum: Vec<f64>,
    pub tokens: u64,
}

impl Hessian {
    pub fn new(cols: usize) -> Hessian {
        Hessian {
            cols,
            sum: vec![0.0; cols * cols],
            tokens: 0,
        }
    }

    /// Adds the tokens of `rows` (`cols` floats each).
    pub fn add(&mut self, pool: &ThreadPool, rows: &[f32]) {
        let g = gram(pool, rows, self.cols);
        for (s, v) in self.sum.iter_mut().zip(&g) {
            *s += f64::from(*v);
        }
        self.tokens += (rows.len() / self.cols) as u64;
    }

    /// `H = 2 Σ xᵀx / N`, plus `damp` times the mean of its diagonal on the diagonal (GPTQ's
    /// dampening, 1% by default: it keeps `H` invertible when channels are nearly collinear).
    /// Channels no token ever used get 1 on the diagonal, and are reported as dead.
    pub fn damped(&self, damp: f64) -> Result<(Vec<f64>, Vec<bool>), ObsError> {
        if self.tokens == 0 {
            return Err(ObsError::NoTokens);
        }
        let n = self.cols;
        let scale = 2.0 / self.tokens as f64;
        let mut h: Vec<f64> = self.sum.iter().map(|v| v * scale).collect();
        let dead: Vec<bool> = (0..n).map(|i| h[i * n + i] == 0.0).collect();
        for i in (0..n).filter(|&i| dead[i]) {
            h[i * n + i] = 1.0;
        }
        let mean_diag = (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
        for i in 0..n {
            h[i * n + i] += damp * mean_diag;
        }
        Ok((h, dead))
    }

    /// The Hessian of the inputs `x · diag(d)`: entry (i, j) times `d_i · d_j`. AWQ divides a
    /// matrix's inputs by its factors (folded into the operation before it), so GPTQ on the
    /// rescaled matrix needs the Hessian of the rescaled inputs — this one, with `d = 1/s`.
    pub fn scaled(&self, d: &[f32]) -> Hessian {
        let n = self.cols;
        let mut sum = self.sum.clone();
        for (i, row) in sum.chunks_exact_mut(n).enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v *= f64::from(d[i]) * f64::from(d[j]);
            }
        }
        Hessian {
            cols: n,
            sum,
            tokens: self.tokens,
        }
    }

    /// The factor OBS sweeps with (see [`InverseFactor`]).
    pub fn inverse_factor(&self, pool: &ThreadPool, damp: f64) -> Result<InverseFactor, ObsError> {
        let (h, dead) = self.damped(damp)?;
        InverseFactor::new(pool, h, self.cols, dead)
    }
}

/// The inputs of a block's matrices, in the order of [`Hessians::layers`]' entries.
pub const INPUTS: [Site; 4] = [
    Site::AttnInput,
    Site::FfnInput,
    Site::DownInput,
    Site::AttnOutput,
];

/// Every block's four input Hessians (indexed as [`INPUTS`]: attention, feed-forward, down,
/// attention output — the same indices as `quant::awq::Calibration`).
pub struct Hessians {
    pub layers: Vec<[Hessian; 4]>,
}

/// Runs `tokens`, cut into chunks of `ctx` (each on a fresh cache), through `model` and sums
/// `xᵀx` at every matrix input. Memory: `n_layers · (3·dim² + ffn_dim²)` f64 (800 MB for
/// SmolLM2).
pub fn collect_hessians(
    model: &Llama,
    pool: &ThreadPool,
    tokens: &[TokenId],
    ctx: usize,
) -> Result<Hessians, ModelError> {
    let c = &model.config;
    let width = |site: Site| {
        if site == Site::DownInput {
            c.ffn_dim
        } else {
            c.dim
        }
    };
    let mut layers: Vec<[Hessian; 4]> = (0..c.n_layers)
        .map(|_| INPUTS.map(|s| Hessian::new(width(s))))
        .collect();
    model.observe_chunks(pool, tokens, ctx, &mut |layer, site, rows| {
        if let Some(i) = INPUTS.iter().position(|s| *s == site) {
            layers[layer][i].add(pool, rows);
        }
    })?;
    Ok(Hessians { layers })
}

/// The factors of one layer's four inputs, made when first asked for and dropped when another
/// layer is asked for (a model file lists a block's tensors together): at most four factors
/// in memory instead of `4 · n_layers`.
pub struct LayerFactors<'h> {
    hessians: &'h Hessians,
    damp: f64,
    layer: usize,
    /// Each input's factor, with the input scales it was made for (see [`Hessian::scaled`]).
    made: [Option<(Option<Vec<f32>>, InverseFactor)>; 4],
}

impl<'h> LayerFactors<'h> {
    pub fn new(hessians: &'h Hessians, damp: f64) -> LayerFactors<'h> {
        LayerFactors {
            hessians,
            damp,
            layer: usize::MAX,
            made: Default::default(),
        }
    }

    /// The factor of input `site` (an index of [`INPUTS`]) of `layer`.
    pub fn get(
        &mut self,
        pool: &ThreadPool,
        layer: usize,
        site: usize,
    ) -> Result<&InverseFactor, ModelError> {
        self.get_scaled(pool, layer, site, None)
    }

    /// The factor of input `site` of `layer` with its channels multiplied by `d` (see
    /// [`Hessian::scaled`]); `None` is the input as calibrated.
    pub fn get_scaled(
        &mut self,
        pool: &ThreadPool,
        layer: usize,
        site: usize,
        d: Option<&[f32]>,
    ) -> Result<&InverseFactor, ModelError> {
        if layer != self.layer {
            self.made = Default::default();
            self.layer = layer;
        }
        let h = self
            .hessians
            .layers
            .get(layer)
            .map(|l| &l[site])
            .ok_or_else(|| ModelError::BadConfig(format!("no Hessians for block {layer}")))?;
        let fresh = self.made[site]
            .as_ref()
            .is_some_and(|(made_for, _)| made_for.as_deref() == d);
        if !fresh {
            if d.is_some_and(|d| d.len() != h.cols) {
                return Err(ModelError::BadConfig(format!(
                    "block {layer}: input scales for {} channels, not {}",
                    d.map_or(0, <[f32]>::len),
                    h.cols
                )));
            }
            let f = match d {
                Some(d) => h.scaled(d).inverse_factor(pool, self.damp),
                None => h.inverse_factor(pool, self.damp),
            }
            .map_err(|e| ModelError::BadConfig(format!("block {layer}: {e}")))?;
            self.made[site] = Some((d.map(<[f32]>::to_vec), f));
        }
        Ok(&self.made[site].as_ref().expect("made just above").1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scaled_hessian_is_the_hessian_of_the_scaled_inputs() {
        let pool = ThreadPool::new(2);
        let cols = 40;
        let x = crate::obs::test_inputs::correlated(50, cols, 7);
        let d: Vec<f32> = (0..cols).map(|i| 0.25 + i as f32 / 16.0).collect();
        let xd: Vec<f32> = x.iter().enumerate().map(|(i, v)| v * d[i % cols]).collect();
        let (mut h, mut hd) = (Hessian::new(cols), Hessian::new(cols));
        h.add(&pool, &x);
        hd.add(&pool, &xd);
        let scaled = h.scaled(&d);
        for (a, b) in scaled.sum.iter().zip(&hd.sum) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
        assert_eq!(scaled.tokens, hd.tokens);
    }

    #[test]
    fn damping_adds_a_share_of_the_mean_diagonal_and_revives_dead_channels() {
        let pool = ThreadPool::new(1);
        let mut h = Hessian::new(3);
        // Two tokens; channel 2 is always zero.
        h.add(&pool, &[1.0, 2.0, 0.0, 3.0, -1.0, 0.0]);
        assert_eq!(h.tokens, 2);
        let (d, dead) = h.damped(0.1).unwrap();
        assert_eq!(dead, [false, false, true]);
        // 2/N · XᵀX = [[10, −1], [−1, 5]] (and 1 for the dead channel); mean diagonal 16 / 3.
        let extra = 0.1 * 16.0 / 3.0;
        assert!((d[0] - (10.0 + extra)).abs() < 1e-9);
        assert!((d[1] + 1.0).abs() < 1e-9);
        assert!((d[4] - (5.0 + extra)).abs() < 1e-9);
        assert!((d[8] - (1.0 + extra)).abs() < 1e-9);
        assert_eq!(Hessian::new(2).damped(0.01), Err(ObsError::NoTokens));
    }
}
