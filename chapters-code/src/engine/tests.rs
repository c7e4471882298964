//! The scheduler: every request gets exactly what it would get alone, whatever the batch, the
//! policy or the preemptions; cancelled, timed-out and finished requests give back every block.

use super::*;
use crate::formats::Gguf;
use crate::generate::{FinishReason, Request, generate};
use crate::kernels::pool::ThreadPool;
use crate::model::Llama;
use crate::sampling::SamplingParams;
use crate::tokenizer::Tokenizer;
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub(super) fn with_model(f: impl FnOnce(&Llama, &Tokenizer)) {
    let Some(path) = crate::assets::model_for_tests() else {
        return;
    };
    let g = Gguf::open(path).unwrap();
    let model = Llama::load(&g).unwrap();
    let tokenizer = Tokenizer::from_gguf(&g).unwrap();
    f(&model, &tokenizer);
}

pub(super) fn requests(tokenizer: &Tokenizer) -> Vec<Request> {
    let prompts = [
        "The capital of France is",
        "Once upon a time",
        "def fibonacci(n):",
        "The three primary colours are",
        "In 1969, the first person to walk on the Moon",
        "Rust is a programming language that",
    ];
    prompts
        .iter()
        .enumerate()
        .map(|(i, p)| Request {
            prompt_ids: tokenizer.encode(p, true),
            max_tokens: 6 + 3 * i,
            sampling: if i % 2 == 0 {
                SamplingParams::default()
            } else {
                SamplingParams {
                    temperature: 0.8,
                    top_p: 0.9,
                    seed: i as u64,
                    ..Default::default()
                }
            },
            stop_tokens: vec![],
            stop_strings: vec![],
        })
        .collect()
}

/// What the steps of a run did, summed.
#[derive(Debug, Default)]
pub(super) struct Totals {
    pub preempted: usize,
    pub drafted: usize,
    pub accepted: usize,
}

/// Runs `reqs` through a scheduler; returns each request's tokens and finish.
pub(super) fn run(
    model: &Llama,
    tokenizer: &Tokenizer,
    config: SchedulerConfig,
    reqs: &[Request],
) -> (HashMap<u64, (Vec<u32>, Finish)>, Totals) {
    let pool = ThreadPool::new(2);
    let mut s = Scheduler::new(model, tokenizer, config);
    for (i, r) in reqs.iter().enumerate() {
        s.submit(EngineRequest {
            id: i as u64,
            request: r.clone(),
            logprobs: None,
            deadline: None,
        })
        .unwrap();
    }
    let mut sink = Collect::default();
    let mut totals = Totals::default();
    while !s.is_idle() {
        let report = s.step(&pool, &mut sink).unwrap();
        totals.preempted += report.preempted;
        totals.drafted += report.drafted;
        totals.accepted += report.accepted;
    }
    assert_eq!(
        s.kv().pool().used_blocks(),
        s.kv().cached_blocks(),
        "only the prefix cache holds blocks"
    );
    let mut out: HashMap<u64, (Vec<u32>, Option<Finish>)> = HashMap::new();
    for (id, event, _) in sink.events {
        let e = out.entry(id).or_default();
        match event {
            Event::Token { token, .. } => e.0.push(token),
            Event::Finished(f) => e.1 = Some(f),
            Event::Text(_) => {}
        }
    }
    let done = out
        .into_iter()
        .map(|(id, (t, f))| (id, (t, f.expect("every request finishes"))))
        .collect();
    (done, totals)
}

pub(super) fn alone(model: &Llama, tokenizer: &Tokenizer, reqs: &[Request]) -> Vec<Vec<u32>> {
    let pool = ThreadPool::new(1);
    reqs.iter()
        .map(|r| {
            generate(model, tokenizer, &pool, r, |_| {})
                .unwrap()
                .generated_ids
        })
        .collect()
}

#[test]
fn batched_requests_get_what_they_get_alone_under_every_policy() {
    with_model(|m, t| {
        let reqs = requests(t);
        let expected = alone(m, t, &reqs);
        for policy in [Policy::Continuous, Policy::Static] {
            let config = SchedulerConfig {
                policy,
                max_running: 4,
                max_batch_tokens: 8,
                ..Default::default()
            };
            let (got, _) = run(m, t, config, &reqs);
            for (i, want) in expected.iter().enumerate() {
                let (tokens, finish) = &got[&(i as u64)];
                assert_eq!(tokens, want, "{policy:?} request {i}");
                assert_eq!(finish.reason, FinishReason::Length);
                assert_eq!(finish.completion_tokens, want.len());
            }
        }
    });
}

#[test]
fn preemption_recomputes_instead_of_failing() {
    with_model(|m, t| {
        let reqs = requests(t);
        let expected = alone(m, t, &reqs);
        // Room for about three short sequences at a time: the batch must preempt.
        let block_bytes = crate::kv::BlockPool::bytes_per_block(&m.config, 4);
        let config = SchedulerConfig {
            max_running: 6,
            block_tokens: 4,
            kv_budget_bytes: 12 * block_bytes,
            ..Default::default()
        };
        let (got, totals) = run(m, t, config, &reqs);
        assert!(
            totals.preempted > 0,
            "the budget was meant to force preemption"
        );
        for (i, want) in expected.iter().enumerate() {
            assert_eq!(&got[&(i as u64)].0, want, "request {i}");
        }
    });
}

/// A sink that stops listening to one request after `after` tokens.
struct Leaves {
    id: u64,
    after: usize,
    seen: usize,
    inner: Collect,
}

impl EventSink for Leaves {
    fn send(&mut self, id: RequestId, event: Event) -> bool {
        if id == self.id {
            self.seen += 1;
            if self.seen > self.after {
                return false;
            }
        }
        self.inner.send(id, event)
    }
}

#[test]
fn a_listener_that_leaves_cancels_its_request_and_frees_its_blocks() {
    with_model(|m, t| {
        let pool = ThreadPool::new(1);
        let mut s = Scheduler::new(m, t, SchedulerConfig::default());
        let reqs = requests(t);
        for (i, r) in reqs.iter().take(2).enumerate() {
            let mut r = r.clone();
            r.max_tokens = 30;
            s.submit(EngineRequest {
                id: i as u64,
                request: r,
                logprobs: None,
                deadline: None,
            })
            .unwrap();
        }
        let mut sink = Leaves {
            id: 0,
            after: 3,
            seen: 0,
            inner: Collect::default(),
        };
        while !s.is_idle() {
            s.step(&pool, &mut sink).unwrap();
        }
        let finished: Vec<u64> = sink
            .inner
            .events
            .iter()
            .filter(|e| matches!(e.1, Event::Finished(_)))
            .map(|e| e.0)
            .collect();
        assert_eq!(finished, vec![1], "request 0 was cancelled, not finished");
        s.cancel(99); // unknown ids are ignored
        assert_eq!(s.kv().pool().used_blocks(), s.kv().cached_blocks());
    });
}

#[test]
fn cancel_and_deadlines_end_requests_wherever_they_are() {
    with_model(|m, t| {
        let pool = ThreadPool::new(1);
        let mut s = Scheduler::new(m, t, SchedulerConfig::default());
        let r = requests(t)[0].clone();
        s.submit(EngineRequest {
            id: 1,
            request: r.clone(),
            logprobs: None,
            deadline: None,
        })
        .unwrap();
        s.submit(EngineRequest {
            id: 2,
            request: r.clone(),
            logprobs: None,
            deadline: Some(Instant::now()),
        })
        .unwrap();
        s.submit(EngineRequest {
            id: 3,
            request: r,
            logprobs: Some(2),
            deadline: Some(Instant::now() + Duration::from_secs(600)),
        })
        .unwrap();
        let mut sink = Collect::default();
        s.step(&pool, &mut sink).unwrap();
        assert!(s.cancel(1), "running or waiting, it is cancelled");
        while !s.is_idle() {
            s.step(&pool, &mut sink).unwrap();
        }
        let finish = |id| {
            sink.events.iter().find_map(|(i, e, _)| match e {
                Event::Finished(f) if *i == id => Some(f.reason),
                _ => None,
            })
        };
        assert_eq!(finish(1), None);
        assert_eq!(finish(2), Some(FinishReason::Timeout));
        assert_eq!(finish(3), Some(FinishReason::Length));
        let with_logprobs = sink.events.iter().find_map(|(i, e, _)| match e {
            Event::Token {
                logprob: Some(lp), ..
            } if *i == 3 => Some(lp.clone()),
            _ => None,
        });
        let lp = with_logprobs.expect("logprobs were asked for");
        assert_eq!(lp.top.len(), 2);
        assert!(lp.logprob <= 0.0 && lp.top[0].1 >= lp.top[1].1);
        assert_eq!(s.kv().pool().used_blocks(), s.kv().cached_blocks());
    });
}

#[test]
fn prompts_that_cannot_fit_are_refused_at_submit() {
    with_model(|m, t| {
        let mut s = Scheduler::new(
            m,
            t,
            SchedulerConfig {
                kv_budget_bytes: 1,
                ..Default::default()
            },
        );
        let long = Request {
            prompt_ids: vec![504; 40],
            ..requests(t)[0].clone()
        };
        assert!(
            s.submit(EngineRequest {
                id: 1,
                request: long,
                logprobs: None,
                deadline: None
            })
            .is_err()
        );
        let empty = Request {
            prompt_ids: vec![],
            ..requests(t)[0].clone()
        };
        assert!(
            s.submit(EngineRequest {
                id: 2,
                request: empty,
                logprobs: None,
                deadline: None
            })
            .is_err()
        );
    });
}

#[test]
fn the_replay_counts_arrivals_in_steps_so_a_slower_machine_gives_the_same_replay() {
    use super::replay::{WorkloadSpec, config_for, replay_with, workload};
    with_model(|model, tokenizer| {
        let spec = WorkloadSpec {
            requests: 8,
            prompt_tokens: (8, 32),
            output_tokens: (4, 12),
            mean_interarrival_steps: 1.5,
            seed: 7,
        };
        let items = workload(&spec, tokenizer);
        let pool = ThreadPool::new(1);
        let run = |policy, delay: Duration| {
            replay_with(
                model,
                tokenizer,
                &pool,
                config_for(policy, 4, 8 << 20),
                &items,
                || std::thread::sleep(delay),
            )
            .unwrap()
        };
        for policy in [Policy::Static, Policy::Continuous] {
            let fast = run(policy, Duration::ZERO);
            // A machine several times slower: every step takes 30 ms longer.
            let slow = run(policy, Duration::from_millis(30));
            assert_eq!(slow.steps, fast.steps, "{policy:?}: steps");
            assert_eq!(slow.batch_utilization, fast.batch_utilization, "{policy:?}");
            assert_eq!(slow.preemptions, fast.preemptions, "{policy:?}");
            assert_eq!(slow.blocks_per_step, fast.blocks_per_step, "{policy:?}");
            assert_eq!(slow.tokens, fast.tokens, "{policy:?}");
            println!(
                "{policy:?}: {} steps, utilization {:.3}, {:.2} s fast, {:.2} s slowed",
                fast.steps, fast.batch_utilization, fast.seconds, slow.seconds
            );
        }
    });
}
