//! The distillation objective for one position, and its gradient with respect to the
//! student's logits.
//!
//! - Cross-entropy on the text's next token (T = 1).
//! - **Forward KL** at temperature T, KL(p_T ‖ q_T) · T², Hinton's and DistilBERT's: the
//!   student must cover every token the teacher likes (mass-covering). The teacher's
//!   distribution is known only on its cached top-k tokens; p is renormalized over them.
//! - **Reverse KL**, KL(q̃_T ‖ p̃_T) · T² over the same k tokens, both renormalized there
//!   (MiniLLM's direction): the student may drop some of the teacher's modes but is punished
//!   for mass where the teacher has little (mode-seeking). The text's cross-entropy still
//!   covers the rest of the vocabulary.
//!
//! The total is `alpha · KL + (1 − alpha) · CE`.

use crate::tokenizer::TokenId;

/// Which way the KL divergence is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Divergence {
    Forward,
    Reverse,
}

impl Divergence {
    pub fn name(self) -> &'static str {
        match self {
            Divergence::Forward => "forward",
            Divergence::Reverse => "reverse",
        }
    }

    pub fn parse(s: &str) -> Option<Divergence> {
        match s {
            "forward" => Some(Divergence::Forward),
            "reverse" => Some(Divergence::Reverse),
            _ => None,
        }
    }
}

/// How the loss mixes the teacher and the text.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Objective {
    /// Weight of the KL term (0: cross-entropy only, plain fine-tuning).
    pub alpha: f32,
    pub temperature: f32,
    pub divergence: Divergence,
}

/// What one position is scored against: the text's next token and the teacher's top-k
/// logits at that position.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub next: TokenId,
    pub top_ids: &'a [u32],
    pub top_logits: &'a [f32],
}

/// One position's loss terms (nats).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Terms {
    pub total: f64,
    pub ce: f64,
    pub kl: f64,
}

impl std::ops::AddAssign for Terms {
    fn add_assign(&mut self, o: Terms) {
        self.total += o.total;
        self.ce += o.ce;
        self.kl += o.kl;
    }
}

/// log Σ exp(x_i / t), stably.
fn log_sum_exp(x: &[f32], t: f32) -> f64 {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f64 = x.iter().map(|&v| f64::from(((v - max) / t).exp())).sum();
    f64::from(max / t) + sum.ln()
}

// ANCHOR: loss
/// The loss at one position; overwrites `logits` (the student's, `vocab` long) with
/// `scale · ∂loss/∂logits`.
pub fn loss_and_grad(obj: &Objective, logits: &mut [f32], target: &Target, scale: f32) -> Terms {
    let (a, t) = (obj.alpha, obj.temperature);
    let forward = a > 0.0 && obj.divergence == Divergence::Forward;
    let y = target.next as usize;
    let z_top: Vec<f32> = target.top_ids.iter().map(|&i| logits[i as usize]).collect();
    let z_y = logits[y];
    // One pass of exponentials, kept: e^(z − max) and e^((z − max)/t); their sums normalize.
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut e_t = if forward {
        vec![0.0f32; logits.len()]
    } else {
        vec![]
    };
    let (mut sum1, mut sum_t) = (0.0f64, 0.0f64);
    for (i, z) in logits.iter_mut().enumerate() {
        let d = *z - max;
        *z = d.exp();
        sum1 += f64::from(*z);
        if forward {
            e_t[i] = (d / t).exp();
            sum_t += f64::from(e_t[i]);
        }
    }
    let lse1 = f64::from(max) + sum1.ln();
    let lse_t = f64::from(max / t) + sum_t.ln();
    // Cross-entropy: softmax(z) − onehot(y).
    let ce = lse1 - f64::from(z_y);
    // Teacher on its top k at temperature t: p̃ = softmax(top / t).
    let lse_teacher = log_sum_exp(target.top_logits, t);
    let log_p: Vec<f64> = target
        .top_logits
        .iter()
        .map(|&v| f64::from(v / t) - lse_teacher)
        .collect();
    let mut kl = 0.0f64;
    let mut top_grad = vec![0.0f64; target.top_ids.len()];
    if a > 0.0 {
        match obj.divergence {
            Divergence::Forward => {
                // T² · Σ p̃ (log p̃ − log q_T); ∂/∂z = T · (q_T − p̃).
                for (k, (&z, &lp)) in z_top.iter().zip(&log_p).enumerate() {
                    let log_q = f64::from(z / t) - lse_t;
                    kl += lp.exp() * (lp - log_q);
                    top_grad[k] = -lp.exp();
                }
            }
            Divergence::Reverse => {
                // Over the top k only: q̃ = softmax(z_top / t);
                // T² · Σ q̃ (log q̃ − log p̃); ∂/∂z_top = T · q̃ (log q̃ − log p̃ − KL).
                let lse_top = log_sum_exp(&z_top, t);
                let log_q: Vec<f64> = z_top.iter().map(|&z| f64::from(z / t) - lse_top).collect();
                for (lq, lp) in log_q.iter().zip(&log_p) {
                    kl += lq.exp() * (lq - lp);
                }
                for (k, (lq, lp)) in log_q.iter().zip(&log_p).enumerate() {
                    top_grad[k] = lq.exp() * (lq - lp - kl);
                }
            }
        }
    }
    // (1 − a)·softmax(z) + a·T·softmax(z/T) (the forward KL's share), scaled.
    let w1 = (f64::from(scale) * (1.0 - f64::from(a)) / sum1) as f32;
    if forward {
        let w_t = (f64::from(scale) * f64::from(a) * f64::from(t) / sum_t) as f32;
        for (z, &e) in logits.iter_mut().zip(&e_t) {
            *z = *z * w1 + e * w_t;
        }
    } else {
        logits.iter_mut().for_each(|z| *z *= w1);
    }
    logits[y] -= scale * (1.0 - a);
    let (a64, t64) = (f64::from(a), f64::from(t));
    for (&id, g) in target.top_ids.iter().zip(&top_grad) {
        logits[id as usize] += (f64::from(scale) * a64 * t64 * g) as f32;
    }
    let kl = kl * t64 * t64;
    Terms {
        total: a64 * kl + (1.0 - a64) * ce,
        ce,
        kl,
    }
}
// ANCHOR_END: loss

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::wave;

    fn loss_only(obj: &Objective, logits: &[f32], target: &Target) -> f64 {
        loss_and_grad(obj, &mut logits.to_vec(), target, 1.0).total
    }

    #[test]
    fn gradients_match_finite_differences_for_both_divergences() {
        let logits: Vec<f32> = wave(40, 5).iter().map(|x| 3.0 * x).collect();
        let top_ids = [3u32, 17, 8, 30, 0];
        let top_logits = [2.0f32, 1.5, 0.3, -0.2, -1.0];
        let target = Target {
            next: 17,
            top_ids: &top_ids,
            top_logits: &top_logits,
        };
        for divergence in [Divergence::Forward, Divergence::Reverse] {
            for (alpha, temperature) in [(0.0, 1.0), (0.5, 2.0), (1.0, 1.0), (0.7, 4.0)] {
                let obj = Objective {
                    alpha,
                    temperature,
                    divergence,
                };
                let mut grad = logits.clone();
                loss_and_grad(&obj, &mut grad, &target, 1.0);
                for i in 0..logits.len() {
                    let eps = 1e-2f32;
                    let mut plus = logits.clone();
                    plus[i] += eps;
                    let mut minus = logits.clone();
                    minus[i] -= eps;
                    let fd = (loss_only(&obj, &plus, &target) - loss_only(&obj, &minus, &target))
                        / (2.0 * f64::from(eps));
                    assert!(
                        (fd - f64::from(grad[i])).abs() < 2e-3,
                        "{divergence:?} α {alpha} T {temperature} logit {i}: analytic {} vs {fd}",
                        grad[i]
                    );
                }
            }
        }
    }

    #[test]
    fn a_student_equal_to_the_teacher_on_its_top_k_has_zero_reverse_kl() {
        let mut logits = vec![-30.0f32; 10];
        let (ids, top) = ([2u32, 5], [1.0f32, 0.0]);
        logits[2] = 1.0;
        logits[5] = 0.0;
        let obj = Objective {
            alpha: 1.0,
            temperature: 2.0,
            divergence: Divergence::Reverse,
        };
        let target = Target {
            next: 2,
            top_ids: &ids,
            top_logits: &top,
        };
        let terms = loss_and_grad(&obj, &mut logits, &target, 1.0);
        assert!(terms.kl.abs() < 1e-9, "{terms:?}");
        // Forward KL is near zero too: the other tokens hold almost no mass.
        let obj = Objective {
            divergence: Divergence::Forward,
            ..obj
        };
        let mut logits = vec![-30.0f32; 10];
        logits[2] = 1.0;
        logits[5] = 0.0;
        assert!(loss_and_grad(&obj, &mut logits, &target, 1.0).kl < 1e-5);
    }
}
