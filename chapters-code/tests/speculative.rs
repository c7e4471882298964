//! Speculative decoding on the real model: greedy output bit-identical to plain greedy decoding
//! on the parity suite for k = 1…8 with both drafters, and speculative sampling with plain
//! sampling's distribution at the first drafted position and a later one.

use chapters_code::assets;
use chapters_code::formats::Gguf;
use chapters_code::generate::{self, Request, default_stop_tokens};
use chapters_code::kernels::pool::ThreadPool;
use chapters_code::model::{KvCache, Llama, Logits};
use chapters_code::parity::suite::Suite;
use chapters_code::sampling::SamplingParams;
use chapters_code::speculative::{
    DraftLength, Drafter, Mode, ModelDrafter, NgramDrafter, distribution, generate_speculative,
    self_draft,
};
use chapters_code::tokenizer::{TokenId, Tokenizer};

fn with_model(f: impl FnOnce(&Llama, &Tokenizer)) {
    let Some(path) = assets::model_for_tests() else {
        return;
    };
    let gguf = Gguf::open(&path).expect("the model opens");
    let model = Llama::load(&gguf).expect("the model loads");
    let tokenizer = Tokenizer::from_gguf(&gguf).expect("the tokenizer loads");
    f(&model, &tokenizer);
}

/// The suite's prompts as the first reference tokenized them, and two that copy their input
/// (where the n-gram drafter's drafts are accepted, several tokens at a time).
fn prompts(tokenizer: &Tokenizer) -> Vec<(String, Vec<TokenId>)> {
    let suite = Suite::load_default().expect("the parity suite loads");
    let mut out: Vec<_> = suite.references[0]
        .prompts
        .iter()
        .map(|r| (r.id.clone(), r.prompt_ids.clone()))
        .collect();
    for (id, text) in [
        (
            "copy-list",
            "Repeat this list exactly: apples, pears, plums, figs, dates, limes, kiwis.\nRepeated: apples, pears,",
        ),
        (
            "copy-code",
            "fn add(a: u32, b: u32) -> u32 {\n    a + b\n}\n\nThe same function again:\nfn add(a: u32,",
        ),
    ] {
        out.push((id.into(), tokenizer.encode(text, false)));
    }
    out
}

#[test]
fn greedy_speculation_gives_plain_greedys_tokens_for_every_k_and_both_drafters() {
    with_model(|model, tokenizer| {
        let pool = ThreadPool::new(2);
        let draft_model = self_draft(model, 8).unwrap();
        let mut self_drafter = ModelDrafter::new(draft_model, "self-draft (8 of 30 blocks)");
        let mut ngram = NgramDrafter::default();
        let (mut accepted, mut drafted) = (0, 0);
        // Instrumented (cargo llvm-cov) the model runs 100× slower: there, two prompts and the
        // copying ones.
        let all = prompts(tokenizer);
        let n = all.len();
        let chosen = all.into_iter().enumerate().filter(|(i, (_, p))| {
            if cfg!(coverage) {
                *i < 2 || *i >= n - 2
            } else {
                // Every second prompt of up to 120 tokens: the prefills dominate the cost.
                (i % 2 == 0 && p.len() <= 120) || *i >= n - 2
            }
        });
        for (i, (id, prompt)) in chosen {
            let request = Request {
                prompt_ids: prompt,
                max_tokens: 16,
                sampling: SamplingParams::default(),
                stop_tokens: default_stop_tokens(tokenizer),
                stop_strings: vec![],
            };
            let plain = generate::generate(model, tokenizer, &pool, &request, |_| {}).unwrap();
            // Every prompt with two k of the eight, each drafter; every k on several prompts.
            for k in [1 + i % 8, 8 - i % 8] {
                let drafters: [&mut dyn Drafter; 2] = [&mut ngram, &mut self_drafter];
                for drafter in drafters {
                    let name = drafter.name();
                    let (spec, stats) =
                        generate_speculative(model, tokenizer, &pool, drafter, k, &request, |_| {})
                            .unwrap();
                    assert_eq!(
                        spec.generated_ids, plain.generated_ids,
                        "{id}, {name}, k = {k}"
                    );
                    assert_eq!(spec.text, plain.text, "{id}, {name}, k = {k}");
                    assert_eq!(
                        spec.finish_reason, plain.finish_reason,
                        "{id}, {name}, k = {k}"
                    );
                    accepted += stats.accepted;
                    drafted += stats.drafted;
                }
            }
            // The adaptive draft length (it skips drafting after misses): the same tokens too.
            let (spec, _) = generate_speculative(
                model,
                tokenizer,
                &pool,
                &mut ngram,
                DraftLength::Adaptive(8),
                &request,
                |_| {},
            )
            .unwrap();
            assert_eq!(spec.generated_ids, plain.generated_ids, "{id}, adaptive");
            assert_eq!(spec.text, plain.text, "{id}, adaptive");
        }
        eprintln!("{accepted} of {drafted} draft tokens accepted over the suite");
        assert!(
            accepted > 50,
            "the test must exercise accepted drafts, not only rejections"
        );
        assert!(accepted < drafted, "and rejections");
    });
}

#[test]
fn greedy_with_penalties_speculates_to_plain_decodings_tokens() {
    with_model(|model, tokenizer| {
        let pool = ThreadPool::new(2);
        let all = prompts(tokenizer);
        // Temperature 0 with penalties: plain decoding takes the argmax after the penalties,
        // over a history that grows with every accepted draft token.
        let sampling = SamplingParams {
            repetition_penalty: 1.3,
            frequency_penalty: 0.4,
            ..Default::default()
        };
        let mut self_drafter = ModelDrafter::new(self_draft(model, 8).unwrap(), "self-draft");
        for (id, prompt) in &all[all.len() - 2..] {
            let request = Request {
                prompt_ids: prompt.clone(),
                max_tokens: 16,
                sampling: sampling.clone(),
                stop_tokens: default_stop_tokens(tokenizer),
                stop_strings: vec![],
            };
            let plain = generate::generate(model, tokenizer, &pool, &request, |_| {}).unwrap();
            let drafters: [&mut dyn Drafter; 2] = [&mut NgramDrafter::default(), &mut self_drafter];
            let mut drafted = 0;
            for drafter in drafters {
                let (spec, stats) =
                    generate_speculative(model, tokenizer, &pool, drafter, 4, &request, |_| {})
                        .unwrap();
                assert_eq!(
                    spec.generated_ids,
                    plain.generated_ids,
                    "{id}, {}",
                    drafter.name()
                );
                drafted += stats.drafted;
            }
            // (Penalties keep the text from repeating itself, so prompt lookup rarely finds a
            // match; the self-draft always drafts.)
            assert!(drafted > 0, "{id}: drafts were verified");
        }
    });
}

#[test]
fn the_draft_models_rollback_proposes_what_a_fresh_drafter_proposes() {
    with_model(|model, tokenizer| {
        let pool = ThreadPool::new(1);
        let context = tokenizer.encode(
            "The capital of France is Paris. The capital of Italy",
            false,
        );
        let mut kept = ModelDrafter::new(self_draft(model, 6).unwrap(), "kept");
        // Propose from a longer, diverging context, then go back: the cache must forget it.
        let mut longer = context.clone();
        longer.extend([11, 22, 33]);
        kept.propose(&pool, &longer, 4, &mut Mode::Greedy).unwrap();
        let again = kept.propose(&pool, &context, 5, &mut Mode::Greedy).unwrap();
        let mut fresh = ModelDrafter::new(self_draft(model, 6).unwrap(), "fresh");
        let first = fresh
            .propose(&pool, &context, 5, &mut Mode::Greedy)
            .unwrap();
        assert_eq!(again, first);
        assert_eq!(first.tokens.len(), 5);
        assert!(self_draft(model, 0).is_err() && self_draft(model, 30).is_err());
    });
}

/// Pearson's χ² of counts against probabilities, cells expected under 5 pooled; and the value a
/// correct sampler exceeds with probability 0.001 (Wilson–Hilferty).
fn chi_square(counts: &[u64], expected: &[f64]) -> (f64, f64) {
    let n: u64 = counts.iter().sum();
    let (mut chi, mut cells, mut po, mut pe) = (0.0, 0usize, 0.0, 0.0);
    for (&o, &p) in counts.iter().zip(expected) {
        let e = p * n as f64;
        if e < 5.0 {
            po += o as f64;
            pe += e;
        } else if e > 0.0 {
            chi += (o as f64 - e).powi(2) / e;
            cells += 1;
        }
    }
    if pe > 0.0 {
        chi += (po - pe).powi(2) / pe;
        cells += 1;
    }
    let k = (cells.max(2) - 1) as f64;
    let critical = k * (1.0 - 2.0 / (9.0 * k) + 3.090_232 * (2.0 / (9.0 * k)).sqrt()).powi(3);
    (chi, critical)
}

#[test]
fn speculative_sampling_has_plain_samplings_distribution_on_the_model() {
    with_model(|model, tokenizer| {
        let pool = ThreadPool::new(1);
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 5,
            ..Default::default()
        };
        let prompt = tokenizer.encode("My favourite fruit is", false);
        let vocab = model.config.vocab_size;
        // Exact marginals of generated tokens 2 and 3 under plain sampling: p(t1) p(t2 | t1)
        // p(t3 | t1 t2), summed over the ≤ 5 candidates at each step.
        let mut cache = KvCache::new(&model.config);
        let dist = |cache: &mut KvCache, tokens: &[TokenId], history: &[TokenId]| {
            let logits = model.forward(&pool, cache, tokens, Logits::Last).unwrap();
            distribution(&params, &logits, history)
        };
        let p1 = dist(&mut cache, &prompt, &prompt);
        let (mut second, mut third) = (vec![0.0f64; vocab], vec![0.0f64; vocab]);
        let base = cache.len();
        for (t1, &a) in p1.iter().enumerate().filter(|(_, p)| **p > 0.0) {
            let h1: Vec<TokenId> = prompt.iter().copied().chain([t1 as TokenId]).collect();
            let p2 = dist(&mut cache, &[t1 as TokenId], &h1);
            for (t2, &b) in p2.iter().enumerate().filter(|(_, p)| **p > 0.0) {
                second[t2] += f64::from(a) * f64::from(b);
                let h2: Vec<TokenId> = h1.iter().copied().chain([t2 as TokenId]).collect();
                let p3 = dist(&mut cache, &[t2 as TokenId], &h2);
                for (t3, &c) in p3.iter().enumerate() {
                    third[t3] += f64::from(a) * f64::from(b) * f64::from(c);
                }
                cache.truncate(base + 1);
            }
            cache.truncate(base);
        }
        // Generated token 2 is the first drafted position, token 3 the second (k = 2 fits).
        let runs = if cfg!(coverage) { 20 } else { 800 };
        let mut drafter = ModelDrafter::new(self_draft(model, 10).unwrap(), "self-draft");
        let (mut c2, mut c3) = (vec![0u64; vocab], vec![0u64; vocab]);
        let mut accepted = 0;
        for seed in 0..runs {
            let request = Request {
                prompt_ids: prompt.clone(),
                max_tokens: 4,
                sampling: SamplingParams {
                    seed,
                    ..params.clone()
                },
                stop_tokens: vec![],
                stop_strings: vec![],
            };
            let (g, stats) =
                generate_speculative(model, tokenizer, &pool, &mut drafter, 4, &request, |_| {})
                    .unwrap();
            c2[g.generated_ids[1] as usize] += 1;
            c3[g.generated_ids[2] as usize] += 1;
            accepted += stats.accepted;
        }
        eprintln!("{accepted} draft tokens accepted in {runs} runs");
        if cfg!(coverage) {
            return; // too few runs for a χ² test; the code ran
        }
        for (what, c, e) in [("second", &c2, &second), ("third", &c3, &third)] {
            let (chi, critical) = chi_square(c, e);
            eprintln!("generated token {what}: χ² = {chi:.1}, critical {critical:.1}");
            assert!(chi < critical, "{what} token: χ² {chi:.1} ≥ {critical:.1}");
        }
        assert!(accepted > 0);
    });
}
