//! Speculation in the scheduler: every request's events — tokens, text, log-probabilities,
//! finish — are the ones it gets without speculation, for every drafter, batch, token budget
//! and preemption; drafts are verified (and accepted) where the text copies its input.

use super::tests::{Totals, alone, run, with_model};
use super::*;
use crate::generate::{Request, default_stop_tokens};
use crate::kernels::pool::ThreadPool;
use crate::model::Llama;
use crate::sampling::SamplingParams;
use crate::speculative::DraftLength;
use crate::tokenizer::Tokenizer;
use std::collections::HashMap;

/// Greedy requests that copy their input (drafts stand), free ones (drafts fall), a sampled
/// one (never speculates), one with penalties, stop strings and stop tokens, and short ones.
fn mixed(tokenizer: &Tokenizer) -> Vec<Request> {
    let greedy = SamplingParams::default();
    let cases: [(&str, usize, SamplingParams, &[&str]); 8] = [
        (
            "Repeat this list exactly: apples, pears, plums, figs, dates, limes, kiwis.\nRepeated: apples, pears,",
            24,
            greedy.clone(),
            &[],
        ),
        (
            "fn add(a: u32, b: u32) -> u32 {\n    a + b\n}\n\nThe same function again:\nfn add(a: u32,",
            20,
            greedy.clone(),
            &[],
        ),
        ("Once upon a time", 18, greedy.clone(), &[]),
        (
            "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the",
            16,
            SamplingParams {
                repetition_penalty: 1.3,
                ..Default::default()
            },
            &[],
        ),
        (
            "Copy: one two three four five six seven eight. Copy: one two three",
            24,
            greedy.clone(),
            &[" six"],
        ),
        (
            "Rust is a programming language that",
            12,
            SamplingParams {
                temperature: 0.8,
                top_p: 0.9,
                seed: 3,
                ..Default::default()
            },
            &[],
        ),
        ("The capital of France is", 1, greedy.clone(), &[]),
        ("def fibonacci(n):", 2, greedy, &[]),
    ];
    cases
        .into_iter()
        .map(|(prompt, max_tokens, sampling, stops)| Request {
            prompt_ids: tokenizer.encode(prompt, true),
            max_tokens,
            sampling,
            stop_tokens: default_stop_tokens(tokenizer),
            stop_strings: stops.iter().map(|s| s.to_string()).collect(),
        })
        .collect()
}

/// Every event of every request (log-probabilities asked for by every second one), and what
/// the steps did; `draft`: the model of a draft-file speculation.
fn events<'m>(
    model: &'m Llama<'m>,
    tokenizer: &'m Tokenizer,
    config: SchedulerConfig,
    draft: Option<Llama<'m>>,
    reqs: &[Request],
) -> (HashMap<u64, Vec<Event>>, Totals) {
    let pool = ThreadPool::new(2);
    let mut s = Scheduler::new(model, tokenizer, config);
    if let Some(draft) = draft {
        s.set_draft_model(draft).unwrap();
    }
    for (i, r) in reqs.iter().enumerate() {
        s.submit(EngineRequest {
            id: i as u64,
            request: r.clone(),
            logprobs: (i % 2 == 1).then_some(2),
            deadline: None,
        })
        .unwrap();
    }
    let mut sink = Collect::default();
    let mut totals = Totals::default();
    while !s.is_idle() {
        let report = s.step(&pool, &mut sink).unwrap();
        totals.drafted += report.drafted;
        totals.accepted += report.accepted;
    }
    assert_eq!(
        s.kv().pool().used_blocks(),
        s.kv().cached_blocks(),
        "only the prefix cache holds blocks"
    );
    let mut out: HashMap<u64, Vec<Event>> = HashMap::new();
    for (id, event, _) in sink.events {
        out.entry(id).or_default().push(event);
    }
    (out, totals)
}

fn speculating(source: DraftSource, length: DraftLength) -> SchedulerConfig {
    SchedulerConfig {
        max_running: 4,
        max_batch_tokens: 64,
        speculation: Some(Speculation {
            source,
            length,
            max_batch: 16,
        }),
        ..Default::default()
    }
}

#[test]
fn speculation_changes_no_event_of_any_request_for_every_drafter() {
    with_model(|m, t| {
        let reqs = mixed(t);
        let plain = SchedulerConfig {
            max_running: 4,
            max_batch_tokens: 64,
            ..Default::default()
        };
        let (want, none) = events(m, t, plain, None, &reqs);
        assert_eq!(none.drafted, 0);
        // The model itself as a draft file: every greedy draft must stand (its drafts are the
        // target's own picks), which checks the draft model's cache and rollback too.
        let file = DraftSource::File("the target itself".into());
        for (source, length, draft) in [
            (DraftSource::Ngram, DraftLength::Fixed(4), None),
            (DraftSource::Ngram, DraftLength::Adaptive(8), None),
            (DraftSource::SelfDraft(8), DraftLength::Adaptive(4), None),
            (
                file,
                DraftLength::Fixed(3),
                Some(crate::speculative::share(m)),
            ),
        ] {
            let label = format!("{source:?} {length:?}");
            let whole = draft.is_some();
            let (got, totals) = events(m, t, speculating(source, length), draft, &reqs);
            for i in 0..reqs.len() as u64 {
                assert_eq!(got[&i], want[&i], "{label}: request {i}");
            }
            assert!(totals.drafted > 0, "{label}: {totals:?}");
            if whole {
                assert_eq!(totals.accepted, totals.drafted, "{label}");
            } else if label.starts_with("Ngram") {
                assert!(
                    totals.accepted > 0 && totals.drafted > totals.accepted,
                    "{label}: drafts were meant to stand on the copying prompts and fall on \
                     the others ({totals:?})"
                );
            }
        }
    });
}

#[test]
fn speculation_survives_preemption_and_a_tight_token_budget() {
    with_model(|m, t| {
        let reqs = mixed(t);
        let expected = alone(m, t, &reqs);
        // Room for a few short sequences at a time, and 8 tokens a step: drafts get dropped,
        // sequences preempted, and every request still gets its tokens.
        let block_bytes = crate::kv::BlockPool::bytes_per_block(&m.config, 4);
        let config = SchedulerConfig {
            max_running: 6,
            max_batch_tokens: 8,
            block_tokens: 4,
            kv_budget_bytes: 20 * block_bytes,
            ..speculating(DraftSource::Ngram, DraftLength::Fixed(6))
        };
        let (got, totals) = run(m, t, config, &reqs);
        assert!(
            totals.preempted > 0,
            "the budget was meant to force preemption"
        );
        assert!(totals.accepted > 0, "{totals:?}");
        for (i, want) in expected.iter().enumerate() {
            assert_eq!(&got[&(i as u64)].0, want, "request {i}");
        }
    });
}

#[test]
fn no_drafts_in_steps_with_more_decodes_than_max_batch() {
    with_model(|m, t| {
        let reqs = mixed(t);
        let mut config = speculating(DraftSource::Ngram, DraftLength::Fixed(4));
        if let Some(s) = &mut config.speculation {
            s.max_batch = 0;
        }
        let (got, totals) = run(m, t, config, &reqs);
        assert_eq!(totals.drafted, 0);
        let expected = alone(m, t, &reqs);
        for (i, want) in expected.iter().enumerate() {
            assert_eq!(&got[&(i as u64)].0, want, "request {i}");
        }
    });
}

#[test]
fn clients_in_a_closed_loop_get_the_same_tokens_with_and_without_speculation() {
    with_model(|m, t| {
        let reqs = mixed(t);
        let pool = ThreadPool::new(2);
        // Each client sends its first request again at the end: its prompt's blocks, written by
        // a speculating run, come back from the prefix cache.
        let per_client = |c: usize| {
            vec![
                reqs[c].clone(),
                reqs[(c + 3) % reqs.len()].clone(),
                reqs[c].clone(),
            ]
        };
        let mut plain = Scheduler::new(m, t, SchedulerConfig::default());
        let a = closed_loop::run(&mut plain, &pool, 3, per_client).unwrap();
        let config = SchedulerConfig {
            speculation: Some(Speculation::ngram(16)),
            ..Default::default()
        };
        let mut speculating = Scheduler::new(m, t, config);
        let b = closed_loop::run(&mut speculating, &pool, 3, per_client).unwrap();
        assert_eq!(a.outputs.len(), 9, "every request of every client finished");
        assert_eq!(a.outputs, b.outputs);
        assert!(
            speculating.kv().prefix_hit_tokens > 0,
            "the prefix cache served prompts"
        );
        assert_eq!(a.drafted, 0);
        assert!(b.accepted > 0, "{} drafted", b.drafted);
        assert!(b.steps < a.steps, "accepted drafts save steps");
    });
}
