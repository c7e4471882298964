//! From prompt to tokens: one request through every stage of an inference server — load,
//! tokenize, prefill, decode, detokenize — with the time each stage takes.

use anyhow::{Context, Result, bail};
use chapters_code::assets;
use chapters_code::demo::{
    Column, DemoArgs, ModelArgs, OutputMode, Provenance, Report, Table, progress,
};
use chapters_code::generate::{Request, default_stop_tokens, generate};
use chapters_code::hw::memory::ProcessMemory;
use chapters_code::hw::roofline;
use chapters_code::kernels::pool::{DEFAULT_SPIN, ThreadPool};
use chapters_code::model::{KvCache, Llama, Logits};
use chapters_code::reference;
use chapters_code::sampling::{SamplingParams, argmax};
use chapters_code::tokenizer::{ChatMessage, Tokenizer};
use clap::Parser;
use serde_json::json;
use std::io::Write;
use std::time::{Duration, Instant};

/// Run a prompt through a real LLM (SmolLM2-135M-Instruct by default) stage by stage:
/// load the model file (memory-mapped), tokenize, prefill the prompt in one pass, decode token
/// by token, detokenize — and print how long each stage took and the tokens per second.
#[derive(Parser, Debug)]
#[command(name = "demo-tgi-architecture", version)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,

    #[command(flatten)]
    run: ModelArgs,

    /// Prompt text. Special tokens such as <|im_start|> are parsed; no BOS token is added
    /// (as llama.cpp does for this model).
    #[arg(long, default_value = "The capital of France is")]
    prompt: String,

    /// Most tokens to generate.
    #[arg(long, default_value_t = 48)]
    max_tokens: usize,

    /// Sampling temperature; 0 is greedy (always the most likely token).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,

    /// Keep only the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,

    /// Nucleus sampling: keep tokens up to this cumulative probability.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,

    /// Drop tokens below this fraction of the most likely token's probability.
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,

    /// Penalize tokens already seen (1 = off).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,

    /// Stop when this text appears (repeatable); the text is cut before it.
    #[arg(long)]
    stop: Vec<String>,

    /// Treat --prompt as a user message and format it with the model's chat template.
    #[arg(long)]
    chat: bool,

    /// System message for --chat (default: the template's own).
    #[arg(long, requires = "chat")]
    system: Option<String>,

    /// Print the text as it is generated (stdout mode).
    #[arg(long)]
    stream: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    cli.demo.check_output()?;
    let sampling = SamplingParams {
        temperature: cli.temperature,
        top_k: cli.top_k,
        top_p: cli.top_p,
        min_p: cli.min_p,
        repetition_penalty: cli.repeat_penalty,
        seed: cli.demo.seed,
        ..SamplingParams::default()
    };
    sampling.validate()?;
    let threads = cli.run.threads();
    let path = cli.run.model_path();

    let t = Instant::now();
    let gguf = assets::open_model(&path)?;
    let model = Llama::load(&gguf).with_context(|| format!("loading {}", path.display()))?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let pool = ThreadPool::new(threads);
    let load = t.elapsed();

    if cli.demo.benchmark {
        return benchmark(&cli, &model, &tokenizer, &gguf, threads);
    }

    let t = Instant::now();
    let prompt_text = if cli.chat {
        let mut messages = Vec::new();
        if let Some(system) = &cli.system {
            messages.push(ChatMessage::new("system", system));
        }
        messages.push(ChatMessage::new("user", &cli.prompt));
        tokenizer.apply_chat_template(&messages, true)?
    } else {
        cli.prompt.clone()
    };
    let prompt_ids = tokenizer.encode(&prompt_text, true);
    let tokenize = t.elapsed();
    if prompt_ids.is_empty() {
        bail!("the prompt is empty: give some text with --prompt");
    }
    if prompt_ids.len() + 1 > model.config.context_length {
        bail!(
            "the prompt has {} tokens; the model's context is {}",
            prompt_ids.len(),
            model.config.context_length
        );
    }

    let request = Request {
        prompt_ids: prompt_ids.clone(),
        max_tokens: cli.max_tokens,
        sampling,
        stop_tokens: default_stop_tokens(&tokenizer),
        stop_strings: cli.stop.clone(),
    };
    let streaming = cli.stream && cli.demo.output == OutputMode::Stdout;
    if streaming {
        print!("{}", prompt_text);
        std::io::stdout().flush()?;
    }
    let generation = generate(&model, &tokenizer, &pool, &request, |piece| {
        if streaming {
            print!("{piece}");
            let _ = std::io::stdout().flush();
        }
    })?;
    if streaming {
        println!();
    }
    let memory = ProcessMemory::read();

    let verified = cli.demo.verify.then(|| verify(&model, &tokenizer, &pool));
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut stages = Table::new(
        "tgi-stages",
        "Where the time goes (one request)",
        vec![
            Column::new("stage", "Stage"),
            Column::new("ms", "Time").unit("ms").decimals(2),
            Column::new("detail", "Detail"),
        ],
    );
    stages.push(vec![
        json!("load (mmap + parse + tokenizer)"),
        json!(ms(load)),
        json!(format!("{:.1} MB file", gguf.file_len() as f64 / 1e6)),
    ]);
    stages.push(vec![
        json!("tokenize"),
        json!(ms(tokenize)),
        json!(format!("{} prompt tokens", prompt_ids.len())),
    ]);
    stages.push(vec![
        json!("prefill"),
        json!(ms(generation.times.prefill)),
        json!(format!(
            "{:.1} tokens/s",
            generation.prefill_tokens_per_s(prompt_ids.len())
        )),
    ]);
    stages.push(vec![
        json!("decode"),
        json!(ms(generation.times.decode)),
        json!(format!(
            "{:.1} tokens/s over {} steps",
            generation.decode_tokens_per_s(),
            generation.generated_ids.len().saturating_sub(1)
        )),
    ]);
    stages.push(vec![
        json!("detokenize"),
        json!(ms(generation.times.detokenize)),
        json!(format!("{} tokens", generation.generated_ids.len())),
    ]);

    let mut tables = vec![stages];
    if let Some((_, details)) = &verified {
        tables.push(parity_table(details));
    }
    let report = Report {
        demo: "tgi-architecture".into(),
        provenance: Provenance::current(),
        result: json!({
            "model": { "path": path.display().to_string(), "bytes": gguf.file_len(), "mapped": gguf.is_mapped(), "config": model.config },
            "threads": threads,
            "prompt": prompt_text,
            "prompt_ids": prompt_ids,
            "generated_ids": generation.generated_ids,
            "text": generation.text,
            "finish_reason": generation.finish_reason,
            "timings_ms": {
                "load": ms(load), "tokenize": ms(tokenize), "prefill": ms(generation.times.prefill),
                "decode": ms(generation.times.decode), "detokenize": ms(generation.times.detokenize),
            },
            "tokens_per_s": { "prefill": generation.prefill_tokens_per_s(prompt_ids.len()), "decode": generation.decode_tokens_per_s() },
            "memory": memory,
            "verify": verified.as_ref().map(|v| &v.1),
        }),
        tables,
        verified: verified.as_ref().map(|v| v.0),
    };
    report.emit(cli.demo.output, |out| {
        if !streaming {
            writeln!(out, "{}{}", prompt_text, generation.text)?;
        }
        writeln!(
            out,
            "\n[{} prompt tokens, {} generated, finish: {:?}, {} threads]",
            prompt_ids.len(),
            generation.generated_ids.len(),
            generation.finish_reason,
            threads
        )?;
        if let Some(peak) = memory.peak_rss_bytes {
            writeln!(
                out,
                "[peak RSS {:.1} MB, of which the mapped model file {:.1} MB]",
                peak as f64 / 1e6,
                memory.rss_file_bytes.unwrap_or(0) as f64 / 1e6
            )?;
        }
        if let Some((_, details)) = &verified {
            writeln!(out, "{}", details["summary"].as_str().unwrap_or(""))?;
        }
        Ok(())
    })?;
    if verified.is_some_and(|v| !v.0) {
        std::process::exit(1);
    }
    Ok(())
}

/// The parity check as a table for the chapter.
fn parity_table(details: &serde_json::Value) -> Table {
    let france = reference::france();
    let mut t = Table::new(
        "tgi-parity",
        "Parity with llama.cpp on \"The capital of France is\" (greedy)",
        vec![
            Column::new("check", "Check"),
            Column::new("ours", "chapters-code"),
            Column::new("llama", "llama.cpp"),
            Column::new("ok", "Identical / within 1e-2"),
        ],
    );
    let top5 = details["top5"].as_array().cloned().unwrap_or_default();
    let ours_ids: Vec<u64> = top5.iter().filter_map(|p| p[0].as_u64()).collect();
    let ref_ids: Vec<u32> = france.last_pos_top5.iter().map(|p| p.0).collect();
    let matching = details["greedy_matching"].as_u64().unwrap_or(0);
    t.push(vec![
        json!("greedy tokens identical"),
        json!(format!("{matching} of {}", france.greedy_ids.len())),
        json!(france.greedy_ids.len()),
        json!(matching as usize == france.greedy_ids.len()),
    ]);
    t.push(vec![
        json!("top-5 token ids, last prompt position"),
        json!(format!("{ours_ids:?}")),
        json!(format!("{ref_ids:?}")),
        json!(
            ours_ids
                .iter()
                .zip(&ref_ids)
                .all(|(a, b)| *a == u64::from(*b))
        ),
    ]);
    for (i, (p, r)) in top5.iter().zip(&france.last_pos_top5).enumerate() {
        let ours = p[1].as_f64().unwrap_or(f64::NAN);
        t.push(vec![
            json!(format!("logit of top-{} token", i + 1)),
            json!(format!("{ours:.4}")),
            json!(format!("{:.4}", r.1)),
            json!((ours - f64::from(r.1)).abs() < 1e-2),
        ]);
    }
    t.push(vec![
        json!("largest |logit difference| in the top 5"),
        json!(format!(
            "{:.5}",
            details["max_logit_diff"].as_f64().unwrap_or(f64::NAN)
        )),
        json!("—"),
        json!(details["max_logit_diff"].as_f64().is_some_and(|d| d < 1e-2)),
    ]);
    t
}

/// llm.c-style check against llama.cpp's reference: greedy ids and last-position logits.
fn verify(model: &Llama, tokenizer: &Tokenizer, pool: &ThreadPool) -> (bool, serde_json::Value) {
    let france = reference::france();
    let prompt = tokenizer.encode(&france.prompt, true);
    let mut cache = KvCache::new(&model.config);
    let Ok(mut logits) = model.forward(pool, &mut cache, &prompt, Logits::Last) else {
        return (false, json!({"summary": "NOT OK: the forward pass failed"}));
    };
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    let top5: Vec<(usize, f32)> = order[..5].iter().map(|&i| (i, logits[i])).collect();
    let top5_ids_ok = top5
        .iter()
        .zip(&france.last_pos_top5)
        .all(|(a, b)| a.0 as u32 == b.0);
    let max_diff = top5
        .iter()
        .zip(&france.last_pos_top5)
        .map(|(a, b)| (a.1 - b.1).abs())
        .fold(0.0f32, f32::max);
    let mut ids = Vec::new();
    for _ in 0..france.greedy_ids.len() {
        let next = argmax(&logits);
        ids.push(next);
        match model.forward(pool, &mut cache, &[next], Logits::Last) {
            Ok(l) => logits = l,
            Err(_) => break,
        }
    }
    let matching = ids
        .iter()
        .zip(&france.greedy_ids)
        .take_while(|(a, b)| a == b)
        .count();
    let ok = prompt == france.prompt_ids
        && matching == france.greedy_ids.len()
        && top5_ids_ok
        && max_diff < 1e-2;
    let summary = format!(
        "verify against llama.cpp: {} — prompt ids {}, greedy {}/{} tokens identical, top-5 ids {}, max |logit diff| {:.4}",
        if ok { "OK" } else { "NOT OK" },
        if prompt == france.prompt_ids {
            "identical"
        } else {
            "DIFFER"
        },
        matching,
        france.greedy_ids.len(),
        if top5_ids_ok { "identical" } else { "DIFFER" },
        max_diff
    );
    (
        ok,
        json!({ "summary": summary, "greedy_matching": matching, "top5": top5, "max_logit_diff": max_diff }),
    )
}

/// Prefills `prompt` into a fresh cache, then decodes `decode_tokens` greedily; returns
/// (prefill, decode) in tokens per second.
fn prefill_and_decode(
    model: &Llama,
    pool: &ThreadPool,
    prompt: &[u32],
    decode_tokens: usize,
) -> Result<(f64, f64)> {
    let mut cache = KvCache::with_limit(&model.config, prompt.len() + decode_tokens + 1);
    let t = Instant::now();
    let mut logits = model.forward(pool, &mut cache, prompt, Logits::Last)?;
    let prefill = prompt.len() as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..decode_tokens {
        let next = argmax(&logits);
        logits = model.forward(pool, &mut cache, &[next], Logits::Last)?;
    }
    Ok((prefill, decode_tokens as f64 / t.elapsed().as_secs_f64()))
}

/// Rounds of the two-decoder measurement.
const CONTENTION_ROUNDS: usize = 3;

/// The two ways a pool's threads wait that the benchmark compares: sleep at once, or spin for
/// the default budget first.
const WAITS: [Duration; 2] = [Duration::ZERO, DEFAULT_SPIN];

/// Two decoders at once, each with its own pool of `threads`, so that twice as many threads as
/// cores want to run: what a spinning pool does to a machine it shares, measured for a pool
/// that sleeps at once and for the default one.
fn contention_table(
    model: &Llama,
    prompt: &[u32],
    threads: usize,
    decode_tokens: usize,
    bar: &indicatif::ProgressBar,
) -> Result<Table> {
    const DECODERS: usize = 2;
    // Best total (both decoders) per wait, and each decoder's speed in that round.
    let mut best = [(0.0f64, [0.0f64; DECODERS]); WAITS.len()];
    for _ in 0..CONTENTION_ROUNDS {
        for (spin, best) in WAITS.iter().zip(&mut best) {
            let speeds: Vec<f64> = std::thread::scope(|scope| {
                let runs: Vec<_> = (0..DECODERS)
                    .map(|_| {
                        scope.spawn(|| {
                            let pool = ThreadPool::with_spin(threads, *spin);
                            prefill_and_decode(model, &pool, prompt, decode_tokens)
                        })
                    })
                    .collect();
                runs.into_iter()
                    .map(|r| match r.join() {
                        Ok(speed) => speed.map(|(_, decode)| decode),
                        Err(_) => bail!("a decoder thread panicked"),
                    })
                    .collect::<Result<Vec<f64>>>()
            })?;
            bar.inc(1);
            let total: f64 = speeds.iter().sum();
            if total > best.0 {
                *best = (total, std::array::from_fn(|i| speeds[i]));
            }
        }
    }
    let mut table = Table::new(
        "engine-contention",
        "Two decoders sharing the machine, each with its own thread pool",
        vec![
            Column::new("threads", "Threads per decoder"),
            Column::new("spin_us", "Spin before sleeping")
                .unit("µs")
                .decimals(0),
            Column::new("first", "Decoder 1")
                .unit("tokens/s")
                .decimals(1),
            Column::new("second", "Decoder 2")
                .unit("tokens/s")
                .decimals(1),
            Column::new("total", "Both").unit("tokens/s").decimals(1),
        ],
    );
    for (spin, (total, each)) in WAITS.iter().zip(best) {
        table.push(vec![
            json!(threads),
            json!(spin.as_secs_f64() * 1e6),
            json!(each[0]),
            json!(each[1]),
            json!(total),
        ]);
    }
    table.notes.push(format!(
        "Best of {CONTENTION_ROUNDS} rounds (by the total), the pools taking turns. Each decoder prefills the same {}-token prompt and decodes {decode_tokens} tokens, at the same time as the other.",
        prompt.len()
    ));
    Ok(table)
}

/// Prefill and decode speed at 1 thread and at `threads`, next to the decode bound measured
/// in the same run.
fn benchmark(
    cli: &Cli,
    model: &Llama,
    tokenizer: &Tokenizer,
    gguf: &chapters_code::formats::Gguf,
    threads: usize,
) -> Result<()> {
    const PROMPT_TOKENS: usize = 128;
    const DECODE_TOKENS: usize = 128;
    const REPEATS: usize = 5;
    // A fixed English paragraph, repeated: a realistic token mix for pp128.
    let text = "The history of the city begins with a small fishing village on the banks of the river. \
                Over the centuries it grew into a trading port, then an industrial centre, and today it is \
                known for its universities, its museums and its parks. ".repeat(8);
    let prompt: Vec<u32> = tokenizer
        .encode(&text, false)
        .into_iter()
        .take(PROMPT_TOKENS)
        .collect();
    let counts: Vec<usize> = if threads > 1 {
        vec![1, threads]
    } else {
        vec![1]
    };
    // With several threads, the pool is measured twice: threads that sleep as soon as a job is
    // done, and threads that watch for the next job for a moment first (the default).
    let pools: Vec<(usize, Duration)> = counts
        .iter()
        .flat_map(|&n| {
            if n > 1 {
                WAITS.map(|spin| (n, spin)).to_vec()
            } else {
                vec![(n, DEFAULT_SPIN)]
            }
        })
        .collect();
    let bytes_per_token = model.bytes_per_token();
    let mut speed = Table::new(
        "engine-speed",
        "Prefill and decode speed, next to the decode bound of this machine",
        vec![
            Column::new("threads", "Threads"),
            Column::new("spin_us", "Spin before sleeping")
                .unit("µs")
                .decimals(0),
            Column::new("prefill", "Prefill, 128-token prompt")
                .unit("tokens/s")
                .decimals(1),
            Column::new("decode", "Decode, 128 tokens")
                .unit("tokens/s")
                .decimals(1),
            Column::new("bound", "Decode bound")
                .unit("tokens/s")
                .decimals(1),
            Column::new("share", "Share of bound").unit("%").decimals(0),
        ],
    );
    let contention_steps = if threads > 1 {
        2 * CONTENTION_ROUNDS
    } else {
        0
    };
    let bar = progress::steps(
        (pools.len() * REPEATS + counts.len() + contention_steps) as u64,
        "benchmark",
    );
    // The engine first, on every thread count; the bandwidth probes after, so that their large
    // arrays do not count in the engine's peak memory. The pools take turns, run after run, so
    // that a slow minute of a shared machine does not favour one of them.
    let pool_of: Vec<ThreadPool> = pools
        .iter()
        .map(|&(n, spin)| ThreadPool::with_spin(n, spin))
        .collect();
    let mut best = vec![(0.0f64, 0.0f64); pools.len()];
    for _ in 0..REPEATS {
        for (pool, (best_prefill, best_decode)) in pool_of.iter().zip(&mut best) {
            let (prefill, decode) = prefill_and_decode(model, pool, &prompt, DECODE_TOKENS)?;
            *best_prefill = best_prefill.max(prefill);
            *best_decode = best_decode.max(decode);
            bar.inc(1);
        }
    }
    drop(pool_of);
    let memory = ProcessMemory::read();
    let contention = (threads > 1)
        .then(|| contention_table(model, &prompt, threads, DECODE_TOKENS, &bar))
        .transpose()?;
    let llc = chapters_code::hw::CpuInfo::detect().last_level_cache_bytes;
    for &n in &counts {
        let bandwidth =
            roofline::triad_bandwidth(roofline::triad_elems_for_cache(llc, 1 << 30), n, 5);
        bar.inc(1);
        let bound = roofline::decode_bound_tokens_per_s(bandwidth.rate, bytes_per_token);
        for (&(_, spin), &(prefill, decode)) in
            pools.iter().zip(&best).filter(|((m, _), _)| *m == n)
        {
            // One thread never waits for another: no spin to report.
            let spin_us = (n > 1).then_some(spin.as_secs_f64() * 1e6);
            speed.push(vec![
                json!(n),
                json!(spin_us),
                json!(prefill),
                json!(decode),
                json!(bound),
                json!(100.0 * decode / bound),
            ]);
        }
    }
    bar.finish_and_clear();
    speed.notes.push(format!(
        "Best of {REPEATS} runs, the configurations taking turns. Decode bound: triad bandwidth measured in the same run on the same thread count, divided by the {:.1} MB of weights read per token. SIMD path: {}.",
        bytes_per_token as f64 / 1e6,
        chapters_code::kernels::simd()
    ));

    let mb = |b: Option<u64>| json!(b.map(|b| b as f64 / 1e6));
    let kv_per_token = 2 * model.config.n_layers * model.config.kv_dim() * 2;
    let mut mem = Table::new(
        "engine-memory",
        "Memory of the benchmark process",
        vec![
            Column::new("what", "What"),
            Column::new("mb", "Size").unit("MB").decimals(1),
        ],
    );
    mem.push(vec![
        json!("model file (memory-mapped, not copied)"),
        json!(gguf.file_len() as f64 / 1e6),
    ]);
    mem.push(vec![
        json!("peak resident memory (VmHWM)"),
        mb(memory.peak_rss_bytes),
    ]);
    mem.push(vec![
        json!("resident file pages at the end (RssFile)"),
        mb(memory.rss_file_bytes),
    ]);
    mem.push(vec![
        json!("resident anonymous memory at the end (RssAnon)"),
        mb(memory.rss_anon_bytes),
    ]);
    mem.push(vec![
        json!(format!(
            "KV cache for the full context ({} tokens, f16 keys and values)",
            model.config.context_length
        )),
        json!((kv_per_token * model.config.context_length) as f64 / 1e6),
    ]);

    mem.notes.push(format!(
        "The KV cache grows by {:.1} KB per token of context.",
        kv_per_token as f64 / 1e3
    ));
    let report = Report {
        demo: "tgi-architecture".into(),
        provenance: Provenance::current(),
        result: json!({ "threads": counts, "bytes_per_token": bytes_per_token, "memory": memory }),
        tables: [speed, mem].into_iter().chain(contention).collect(),
        verified: None,
    };
    report.emit(cli.demo.output, |out| {
        writeln!(out, "benchmark of {}", cli.run.model_path().display())
    })
}
