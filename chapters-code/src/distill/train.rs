//! The training loop: AdamW over the flat parameters, a learning rate that warms up and
//! decays along a cosine, gradients clipped by their global norm, sequences drawn in a
//! seeded order.

use super::layers::RopeTable;
use super::loss::{Objective, Terms};
use super::network::Net;
use super::params::Frozen;
use super::student::Student;
use super::teacher::TeacherCache;
use crate::kernels::pool::ThreadPool;
use crate::sampling::Rng;
use serde::Serialize;

/// Settings of one training run.
#[derive(Debug, Clone, Serialize)]
pub struct TrainConfig {
    pub steps: usize,
    /// Sequences per step.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Steps of linear warm-up; then a cosine decay to a tenth of the peak.
    pub warmup: usize,
    /// Decoupled weight decay of the matrices (norms are not decayed).
    pub weight_decay: f32,
    /// Largest global gradient norm; larger gradients are scaled down to it.
    pub clip: f32,
    pub seed: u64,
    pub objective: Objective,
}

/// What one step did.
#[derive(Debug, Clone, Serialize)]
pub struct StepLog {
    pub step: usize,
    /// Positions trained on so far.
    pub tokens: usize,
    /// Mean loss terms per position of this step's batch.
    pub loss: f64,
    pub ce: f64,
    pub kl: f64,
    pub lr: f32,
    pub grad_norm: f64,
    pub seconds: f64,
}

// ANCHOR: adamw
/// Adam's moment estimates, one pair per parameter.
pub struct AdamW {
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl AdamW {
    const BETA1: f32 = 0.9;
    const BETA2: f32 = 0.999;
    const EPS: f32 = 1e-8;

    pub fn new(n: usize) -> AdamW {
        AdamW {
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    /// One update: w ← w − lr·(m̂/(√v̂ + ε) + decay(i)·w).
    pub fn step(&mut self, w: &mut [f32], g: &[f32], lr: f32, decay: impl Fn(usize) -> f32) {
        self.t += 1;
        let (c1, c2) = (
            1.0 - Self::BETA1.powi(self.t),
            1.0 - Self::BETA2.powi(self.t),
        );
        for (i, ((w, &g), (m, v))) in w
            .iter_mut()
            .zip(g)
            .zip(self.m.iter_mut().zip(&mut self.v))
            .enumerate()
        {
            *m = Self::BETA1 * *m + (1.0 - Self::BETA1) * g;
            *v = Self::BETA2 * *v + (1.0 - Self::BETA2) * g * g;
            let update = (*m / c1) / ((*v / c2).sqrt() + Self::EPS);
            *w -= lr * (update + decay(i) * *w);
        }
    }
}
// ANCHOR_END: adamw

/// Learning rate at `step` (0-based): linear warm-up, then cosine down to lr/10.
pub fn learning_rate(cfg: &TrainConfig, step: usize) -> f32 {
    if step < cfg.warmup {
        return cfg.lr * (step + 1) as f32 / cfg.warmup as f32;
    }
    let span = cfg.steps.saturating_sub(cfg.warmup).max(1) as f32;
    let progress = ((step - cfg.warmup) as f32 / span).min(1.0);
    let cosine = 0.5 * (1.0 + (std::f32::consts::PI * progress).cos());
    cfg.lr * (0.1 + 0.9 * cosine)
}

/// The seeded order in which `seqs` are visited, one shuffle per pass.
fn order(seqs: &[usize], steps: usize, batch: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(steps * batch);
    while out.len() < steps * batch && !seqs.is_empty() {
        let mut pass = seqs.to_vec();
        for i in (1..pass.len()).rev() {
            pass.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        out.extend(pass);
    }
    out.truncate(steps * batch);
    out
}

// ANCHOR: train
/// Trains `student` on the sequences `train` of `data`; `on_step` sees every step's log.
pub fn train(
    pool: &ThreadPool,
    student: &mut Student,
    frozen: &Frozen,
    data: &TeacherCache,
    train: &[usize],
    cfg: &TrainConfig,
    mut on_step: impl FnMut(&StepLog),
) -> Vec<StepLog> {
    let dims = student.dims.clone();
    let rope = RopeTable::new(data.seq_len, dims.rope_dims, dims.rope_theta);
    let mut opt = AdamW::new(dims.n_params());
    let mut grads = vec![0.0f32; dims.n_params()];
    let schedule = order(train, cfg.steps, cfg.batch, cfg.seed);
    let mut logs = Vec::with_capacity(cfg.steps);
    let started = std::time::Instant::now();
    let positions = (cfg.batch * data.seq_len) as f32;
    for (step, batch) in schedule.chunks(cfg.batch).enumerate() {
        grads.fill(0.0);
        let mut terms = Terms::default();
        let net = Net {
            dims: &dims,
            params: &student.params,
            frozen,
            rope: &rope,
        };
        for &s in batch {
            let (inputs, targets) = data.sequence(s);
            terms += net.train_sequence(
                pool,
                &cfg.objective,
                inputs,
                &targets,
                1.0 / positions,
                &mut grads,
            );
        }
        let norm = grads
            .iter()
            .map(|&g| f64::from(g) * f64::from(g))
            .sum::<f64>()
            .sqrt();
        if norm > f64::from(cfg.clip) {
            let shrink = (f64::from(cfg.clip) / norm) as f32;
            grads.iter_mut().for_each(|g| *g *= shrink);
        }
        let lr = learning_rate(cfg, step);
        let decay = |i: usize| {
            if dims.is_norm(i) {
                0.0
            } else {
                cfg.weight_decay
            }
        };
        opt.step(&mut student.params, &grads, lr, decay);
        let n = f64::from(positions);
        let log = StepLog {
            step: step + 1,
            tokens: (step + 1) * cfg.batch * data.seq_len,
            loss: terms.total / n,
            ce: terms.ce / n,
            kl: terms.kl / n,
            lr,
            grad_norm: norm,
            seconds: started.elapsed().as_secs_f64(),
        };
        on_step(&log);
        logs.push(log);
    }
    logs
}
// ANCHOR_END: train

/// Mean loss terms per position of `student` on the sequences `seqs` (forward only).
pub fn evaluate(
    pool: &ThreadPool,
    student: &Student,
    frozen: &Frozen,
    data: &TeacherCache,
    seqs: &[usize],
    objective: &Objective,
) -> Terms {
    let rope = RopeTable::new(
        data.seq_len,
        student.dims.rope_dims,
        student.dims.rope_theta,
    );
    let net = Net {
        dims: &student.dims,
        params: &student.params,
        frozen,
        rope: &rope,
    };
    let mut sum = Terms::default();
    for &s in seqs {
        let (inputs, targets) = data.sequence(s);
        sum += net.loss(pool, objective, inputs, &targets);
    }
    let n = (seqs.len() * data.seq_len).max(1) as f64;
    Terms {
        total: sum.total / n,
        ce: sum.ce / n,
        kl: sum.kl / n,
    }
}
