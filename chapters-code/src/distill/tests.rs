//! The backward pass against finite differences on a tiny random student, and training
//! lowering the loss.

use super::layers::RopeTable;
use super::loss::{Divergence, Objective, Target};
use super::network::Net;
use super::params::{Dims, Frozen};
use super::student::Student;
use super::teacher::TeacherCache;
use super::train::{TrainConfig, evaluate, train};
use crate::kernels::pool::ThreadPool;
use crate::testutil::wave;

fn tiny() -> Dims {
    Dims {
        n_blocks: 2,
        dim: 16,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 4,
        ffn_dim: 24,
        vocab: 37,
        rope_dims: 4,
        rope_theta: 10_000.0,
        eps: 1e-5,
    }
}

/// Random weights (norm weights near 1) and a random embedding.
fn random_student(d: &Dims, seed: u32) -> (Student, Frozen) {
    let mut params: Vec<f32> = wave(d.n_params(), seed).iter().map(|x| 0.4 * x).collect();
    for (i, p) in params.iter_mut().enumerate() {
        if d.is_norm(i) {
            *p = 1.0 + 0.5 * *p;
        }
    }
    let embed = wave(d.vocab * d.dim, seed + 1);
    let student = Student {
        dims: d.clone(),
        params,
        kept: vec![0, 1],
    };
    (student, Frozen { embed })
}

/// A cache of `n_seq` sequences of `t` positions with made-up teacher logits.
fn random_cache(d: &Dims, n_seq: usize, t: usize, k: usize) -> TeacherCache {
    let tokens: Vec<u32> = wave(n_seq * (t + 1), 9)
        .iter()
        .map(|x| ((x + 1.0) * 0.5 * d.vocab as f32) as u32 % d.vocab as u32)
        .collect();
    let mut ids = Vec::new();
    for p in 0..n_seq * t {
        ids.extend((0..k).map(|j| ((p * 7 + j * 5) % d.vocab) as u32));
    }
    let logits = wave(n_seq * t * k, 4).iter().map(|x| 4.0 * x).collect();
    TeacherCache {
        seq_len: t,
        k,
        tokens,
        ids,
        logits,
        key: 0,
    }
}

fn total_loss(
    pool: &ThreadPool,
    d: &Dims,
    params: &[f32],
    frozen: &Frozen,
    obj: &Objective,
    inputs: &[u32],
    targets: &[Target],
) -> f64 {
    let rope = RopeTable::new(inputs.len(), d.rope_dims, d.rope_theta);
    let net = Net {
        dims: d,
        params,
        frozen,
        rope: &rope,
    };
    net.loss(pool, obj, inputs, targets).total
}

// ANCHOR: gradient_check
#[test]
fn every_gradient_matches_finite_differences() {
    let pool = ThreadPool::new(2);
    let d = tiny();
    let (student, frozen) = random_student(&d, 3);
    let cache = random_cache(&d, 1, 7, 5);
    let (inputs, targets) = cache.sequence(0);
    for divergence in [Divergence::Forward, Divergence::Reverse] {
        let obj = Objective {
            alpha: 0.6,
            temperature: 2.0,
            divergence,
        };
        let rope = RopeTable::new(inputs.len(), d.rope_dims, d.rope_theta);
        let net = Net {
            dims: &d,
            params: &student.params,
            frozen: &frozen,
            rope: &rope,
        };
        let mut grads = vec![0.0f32; d.n_params()];
        net.train_sequence(&pool, &obj, inputs, &targets, 1.0, &mut grads);
        // Every parameter of this tiny model, one central difference each (f32 weights, so
        // ε is large and the tolerance relative).
        let mut worst = 0.0f64;
        for i in 0..d.n_params() {
            let eps = 1e-2f32;
            let mut p = student.params.clone();
            p[i] += eps;
            let plus = total_loss(&pool, &d, &p, &frozen, &obj, inputs, &targets);
            p[i] -= 2.0 * eps;
            let minus = total_loss(&pool, &d, &p, &frozen, &obj, inputs, &targets);
            let fd = (plus - minus) / (2.0 * f64::from(eps));
            let err = (fd - f64::from(grads[i])).abs() / (1e-2 + fd.abs());
            assert!(
                err < 0.05,
                "{divergence:?}: parameter {i}: analytic {} vs finite difference {fd}",
                grads[i]
            );
            worst = worst.max(err);
        }
        println!(
            "{divergence:?} KL: {} gradients, worst relative error {worst:.2e}",
            d.n_params()
        );
    }
}
// ANCHOR_END: gradient_check

#[test]
fn training_lowers_the_loss_and_is_deterministic() {
    let pool = ThreadPool::new(2);
    let d = tiny();
    let cache = random_cache(&d, 6, 9, 4);
    let seqs: Vec<usize> = (0..6).collect();
    let cfg = TrainConfig {
        steps: 30,
        batch: 2,
        lr: 3e-3,
        warmup: 3,
        weight_decay: 0.0,
        clip: 1.0,
        seed: 42,
        objective: Objective {
            alpha: 0.5,
            temperature: 2.0,
            divergence: Divergence::Forward,
        },
    };
    let run = || {
        let (mut student, frozen) = random_student(&d, 3);
        let before = evaluate(&pool, &student, &frozen, &cache, &seqs, &cfg.objective);
        let logs = train(&pool, &mut student, &frozen, &cache, &seqs, &cfg, |_| {});
        let after = evaluate(&pool, &student, &frozen, &cache, &seqs, &cfg.objective);
        (before, after, logs, student.params)
    };
    let (before, after, logs, params) = run();
    assert_eq!(logs.len(), 30);
    assert!(
        after.total < 0.8 * before.total,
        "loss {} → {}",
        before.total,
        after.total
    );
    assert!(
        after.kl < before.kl && after.ce < before.ce,
        "{before:?} → {after:?}"
    );
    assert_eq!(run().3, params, "the same seed trains the same weights");
}
