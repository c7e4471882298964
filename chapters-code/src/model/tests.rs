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
fn a_context_length_of_zero_is_refused_with_what_to_change() {
    use crate::formats::{GgufWriter, Value};
    let config = |context: u32| {
        let mut w = GgufWriter::new();
        w.meta("general.architecture", Value::String("llama".into()));
        for (key, v) in [
            ("attention.head_count", 4),
            ("embedding_length", 64),
            ("block_count", 2),
            ("feed_forward_length", 128),
            ("vocab_size", 100),
            ("context_length", context),
        ] {
            w.meta(&format!("llama.{key}"), Value::U32(v));
        }
        crate::model::LlamaConfig::from_gguf(&Gguf::from_bytes(w.to_bytes()).unwrap())
    };
    assert_eq!(config(2048).unwrap().context_length, 2048);
    let err = config(0).unwrap_err();
    assert!(matches!(err, ModelError::BadConfig(_)), "{err}");
    assert!(err.to_string().contains("context_length` is 0"), "{err}");
}

#[test]
fn a_kv_budget_above_available_memory_is_refused_before_allocating() {
    use crate::engine::runner::check_kv_budget;
    assert!(check_kv_budget(256 << 20, Some(1 << 30)).is_ok());
    assert!(check_kv_budget(256 << 20, None).is_ok());
    let err = check_kv_budget(1 << 40, Some(24 << 30)).unwrap_err();
    assert!(err.to_string().contains("--kv-mib"), "{err}");
    assert!(err.to_string().contains("1048576 MiB"), "{err}");
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

/// The course model's configuration with another head size (for the cache's checks).
fn config_with_head_dim(head_dim: usize) -> LlamaConfig {
    LlamaConfig {
        n_layers: 2,
        dim: 2 * head_dim,
        ffn_dim: 16,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim,
        rope_dims: head_dim,
        rope_theta: 10_000.0,
        rms_eps: 1e-5,
        context_length: 64,
        vocab_size: 32,
    }
}

#[test]
fn q8_0_cache_stores_34_bytes_per_32_values_and_rewinds() {
    let c = config_with_head_dim(64);
    let mut cache = KvCache::with_precision(&c, 64, KvPrecision::Q8_0).unwrap();
    let row: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) / 8.0).collect();
    for layer in 0..2 {
        cache.append(
            layer,
            &[row.clone(), row.clone(), row.clone()].concat(),
            &row.repeat(3),
        );
    }
    cache.commit(3);
    // 3 positions × 2 layers × (keys + values) × 2 blocks of 34 bytes.
    assert_eq!(cache.bytes(), 3 * 2 * 2 * 2 * 34);
    assert_eq!(KvPrecision::Q8_0.row_bytes(64), 68);
    assert_eq!(KvPrecision::F16.row_bytes(64), 128);
    let crate::kv::KvRows::Q8_0(keys) = cache.keys(1, 3) else {
        panic!("a Q8_0 cache hands out Q8_0 rows")
    };
    assert_eq!(keys.len(), 6);
    let mut back = vec![0.0; 64];
    crate::quant::quantize::dequantize_q8_0(&keys[2..4], &mut back);
    for (x, y) in row.iter().zip(&back) {
        assert!((x - y).abs() <= 4.0 / 127.0 / 2.0 + 1e-6, "{x} vs {y}");
    }
    cache.truncate(1);
    assert_eq!((cache.len(), cache.bytes()), (1, 2 * 2 * 2 * 34));
    cache.clear();
    assert_eq!((cache.len(), cache.bytes()), (0, 0));
}

#[test]
fn q8_0_cache_needs_heads_of_whole_blocks() {
    let err = KvCache::with_precision(&config_with_head_dim(48), 8, KvPrecision::Q8_0)
        .err()
        .expect("48 is not a multiple of 32");
    assert!(err.to_string().contains("multiple of 32"), "{err}");
    assert!(KvCache::with_precision(&config_with_head_dim(48), 8, KvPrecision::F16).is_ok());
    assert_eq!(KvPrecision::parse("Q8_0"), Some(KvPrecision::Q8_0));
    assert_eq!(KvPrecision::parse("int8"), None);
}

#[test]
fn q8_0_cache_keeps_the_reference_prompts_answer() {
    with_model(|m| {
        let france = reference::france();
        let pool = ThreadPool::new(2);
        let run = |precision| {
            let mut cache = KvCache::with_precision(&m.config, 256, precision).unwrap();
            let mut ids = france.prompt_ids.clone();
            let mut logits = m.forward(&pool, &mut cache, &ids, Logits::Last).unwrap();
            let first_logits = logits.clone();
            for _ in 0..16 {
                let next = argmax(&logits);
                ids.push(next);
                logits = m.forward(&pool, &mut cache, &[next], Logits::Last).unwrap();
            }
            (first_logits, ids)
        };
        let (f16_logits, f16_ids) = run(KvPrecision::F16);
        let (q8_logits, q8_ids) = run(KvPrecision::Q8_0);
        assert_ne!(f16_logits, q8_logits, "the 8-bit cache is really used");
        let worst = f16_logits
            .iter()
            .zip(&q8_logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let mean = f16_logits
            .iter()
            .zip(&q8_logits)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / f16_logits.len() as f32;
        // Measured: worst 0.90 and mean 0.14, on logits up to 20 in magnitude.
        assert!(
            worst < 2.0 && mean < 0.3,
            "logits moved by {mean} on average, {worst} at most"
        );
        assert_eq!(f16_ids, q8_ids, "16 greedy tokens of the reference prompt");
    });
}
