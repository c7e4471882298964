//! The forward pass against llama.cpp's outputs for the course model.

use super::*;
use crate::formats::Gguf;
use crate::kernels::pool::ThreadPool;
use crate::reference;

fn with_model(f: impl FnOnce(&Llama)) {
    let Some(path) = crate::assets::model_for_tests() else {
        return;
    };
    let g = Gguf::open(path).unwrap();
    let model = Llama::load(&g).unwrap();
    f(&model);
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn config_comes_from_the_file() {
    with_model(|m| {
        let c = &m.config;
        assert_eq!(
            (
                c.n_layers,
                c.dim,
                c.ffn_dim,
                c.n_heads,
                c.n_kv_heads,
                c.head_dim
            ),
            (30, 576, 1536, 9, 3, 64)
        );
        assert_eq!(
            (c.vocab_size, c.context_length, c.rope_theta),
            (49_152, 8192, 100_000.0)
        );
        assert!(m.tied_output);
    });
}

#[test]
fn last_position_logits_match_llama_cpp() {
    with_model(|m| {
        let france = reference::france();
        let pool = ThreadPool::new(1);
        let mut cache = KvCache::new(&m.config);
        let logits = m
            .forward(&pool, &mut cache, &france.prompt_ids, Logits::Last)
            .unwrap();
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        eprintln!(
            "ours: {:?}",
            order[..8]
                .iter()
                .map(|&i| (i, logits[i]))
                .collect::<Vec<_>>()
        );
        let max_diff = france
            .last_pos_top5
            .iter()
            .zip(&order)
            .map(|(&(id, value), &ours)| {
                assert_eq!(ours as u32, id, "top-5 ids differ");
                (logits[ours] - value).abs()
            })
            .fold(0.0f32, f32::max);
        assert!(max_diff < 1e-2, "max |logit - llama.cpp| = {max_diff}");
    });
}

#[test]
fn greedy_decoding_reproduces_llama_cpp_token_for_token() {
    with_model(|m| {
        let france = reference::france();
        let pool = ThreadPool::new(2);
        let mut cache = KvCache::new(&m.config);
        let mut logits = m
            .forward(&pool, &mut cache, &france.prompt_ids, Logits::Last)
            .unwrap();
        let mut generated = Vec::new();
        for _ in 0..france.greedy_ids.len() {
            let next = argmax(&logits);
            generated.push(next);
            logits = m.forward(&pool, &mut cache, &[next], Logits::Last).unwrap();
        }
        assert_eq!(generated, france.greedy_ids);
    });
}

#[test]
fn prefill_in_one_pass_equals_token_by_token() {
    with_model(|m| {
        let ids = &reference::france().prompt_ids;
        let pool = ThreadPool::new(1);
        let mut batched = KvCache::new(&m.config);
        let all = m.forward(&pool, &mut batched, ids, Logits::All).unwrap();
        let mut single = KvCache::new(&m.config);
        for (t, &id) in ids.iter().enumerate() {
            let one = m.forward(&pool, &mut single, &[id], Logits::Last).unwrap();
            let row = &all[t * m.config.vocab_size..(t + 1) * m.config.vocab_size];
            let diff = one
                .iter()
                .zip(row)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(diff < 1e-3, "position {t}: {diff}");
        }
    });
}

#[test]
fn results_are_identical_across_thread_counts() {
    with_model(|m| {
        let ids = &reference::france().prompt_ids;
        let run = |threads| {
            let mut cache = KvCache::new(&m.config);
            m.forward(&ThreadPool::new(threads), &mut cache, ids, Logits::All)
                .unwrap()
        };
        assert_eq!(run(1), run(2));
    });
}

#[test]
fn bad_input_is_an_error() {
    with_model(|m| {
        let pool = ThreadPool::new(1);
        let mut cache = KvCache::with_limit(&m.config, 4);
        assert!(matches!(
            m.forward(&pool, &mut cache, &[], Logits::Last),
            Err(ModelError::EmptyInput)
        ));
        assert!(matches!(
            m.forward(&pool, &mut cache, &[49_152], Logits::Last),
            Err(ModelError::TokenOutOfRange { .. })
        ));
        assert!(matches!(
            m.forward(&pool, &mut cache, &[1, 2, 3, 4, 5], Logits::Last),
            Err(ModelError::ContextFull { .. })
        ));
        assert_eq!(cache.len(), 0, "a refused call leaves the cache as it was");
    });
}

#[test]
fn other_architectures_are_refused_by_name() {
    use crate::formats::{GgufWriter, Value};
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Value::String("gpt2".into()));
    let g = Gguf::from_bytes(w.to_bytes()).unwrap();
    let err = Llama::load(&g).err().unwrap();
    assert!(
        matches!(err, ModelError::UnsupportedArchitecture(ref a) if a == "gpt2"),
        "{err}"
    );
    assert!(err.to_string().contains("Llama"));
}

#[test]
fn sampled_generation_depends_only_on_the_seed() {
    use crate::generate::{Request, generate};
    use crate::sampling::SamplingParams;
    let Some(path) = crate::assets::model_for_tests() else {
        return;
    };
    let g = Gguf::open(path).unwrap();
    let model = Llama::load(&g).unwrap();
    let tokenizer = crate::tokenizer::Tokenizer::from_gguf(&g).unwrap();
    let request = |seed| Request {
        prompt_ids: tokenizer.encode("Once upon a time", true),
        max_tokens: 16,
        sampling: SamplingParams {
            temperature: 0.9,
            top_p: 0.95,
            seed,
            ..Default::default()
        },
        stop_tokens: vec![],
        stop_strings: vec![],
    };
    let run = |seed, threads| {
        generate(
            &model,
            &tokenizer,
            &ThreadPool::new(threads),
            &request(seed),
            |_| {},
        )
        .unwrap()
        .generated_ids
    };
    let first = run(42, 1);
    assert_eq!(first, run(42, 1), "same seed, same run");
    assert_eq!(first, run(42, 2), "same seed, other thread count");
    assert_ne!(first, run(43, 1), "another seed, another text");
}
