//! From prompt to tokens: one request through every stage of an inference server — load,
//! tokenize, prefill, decode, detokenize — with the time each stage takes.

use anyhow::{Context, Result, bail};
use chapters_code::assets;
use chapters_code::demo::args::parse;
use chapters_code::demo::{
    Column, DemoArgs, ModelArgs, OutputMode, Provenance, Report, Table, chat, progress,
};
use chapters_code::generate::{Request, default_stop_tokens, generate};
use chapters_code::hw::SimdLevel;
use chapters_code::hw::memory::ProcessMemory;
use chapters_code::hw::roofline;
use chapters_code::kernels::pool::{DEFAULT_SPIN, ThreadPool};
use chapters_code::kernels::simd_path;
use chapters_code::model::{KvCache, Llama, Logits};
use chapters_code::parity;
use chapters_code::sampling::{SamplingParams, argmax};
use chapters_code::tokenizer::{ChatMessage, Tokenizer};
use clap::Parser;
use serde_json::json;
use std::io::Write;
use std::time::{Duration, Instant};

/// The prompt when --prompt is not given.
const DEFAULT_PROMPT: &str = "The capital of France is";

/// Run a prompt through a real LLM (SmolLM2-135M-Instruct by default) stage by stage:
/// load the model file (memory-mapped), tokenize, prefill the prompt in one pass, decode token
/// by token, detokenize — and print how long each stage took and the tokens per second.
#[derive(Parser, Debug)]
#[command(
    name = "demo-tgi-architecture",
    version,
    after_help = "Examples:\n  demo-tgi-architecture --prompt \"The capital of France is\"\n  demo-tgi-architecture --chat                  # a conversation, on a terminal\n  echo \"Write a haiku about Rust.\" | demo-tgi-architecture --chat --stream\n  demo-tgi-architecture --temperature 0.7 --top-p 0.9 --seed 7\n"
)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,

    #[command(flatten)]
    run: ModelArgs,

    /// Prompt text. Special tokens such as <|im_start|> are parsed; no BOS token is added
    /// (as llama.cpp does for this model). --verify checks the parity suite, not this prompt
    /// [default: "The capital of France is"].
    #[arg(long)]
    prompt: Option<String>,

    /// Most tokens to generate [default: 48; 512 per answer in an interactive chat].
    #[arg(long)]
    max_tokens: Option<usize>,

    /// Sampling temperature; 0 is greedy (always the most likely token).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = parse::non_negative)]
    temperature: f32,

    /// Keep only the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,

    /// Nucleus sampling: keep tokens up to this cumulative probability.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = parse::probability)]
    top_p: f32,

    /// Drop tokens below this fraction of the most likely token's probability.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = parse::probability)]
    min_p: f32,

    /// Penalize tokens already seen (1 = off).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = parse::positive)]
    repeat_penalty: f32,

    /// Stop when this text appears (repeatable); the text is cut before it. `\n`, `\t` and
    /// `\\` are read as a newline, a tab and a backslash.
    #[arg(long, value_parser = parse::stop_string)]
    stop: Vec<String>,

    /// Chat with the model. On a terminal without --prompt: a conversation (streamed; /reset
    /// starts over, Ctrl-C stops an answer, Ctrl-D or /quit ends). With --prompt, or with the
    /// message piped on stdin: one answer. The text is formatted with the model's chat template.
    #[arg(long)]
    chat: bool,

    /// With --chat: converse even when stdin is not a terminal (for scripts and tests).
    #[arg(long, requires = "chat", conflicts_with = "prompt")]
    interactive: bool,

    /// System message for --chat (default: the template's own).
    #[arg(long, requires = "chat")]
    system: Option<String>,

    /// Print the text as it is generated (stdout mode).
    #[arg(long)]
    stream: bool,

    /// With --verify: skip the check that the scalar path gives this SIMD path's bits (it runs
    /// the suite a second time, with PRODML_SIMD=scalar, in a child process: minutes).
    #[arg(long)]
    no_simd_check: bool,

    /// Print a fingerprint of the logits on the parity suite (teacher-forced on llama.cpp's
    /// tokens) and exit: two SIMD paths with the same fingerprint computed the same bits.
    #[arg(long)]
    parity_digest: bool,

    /// Prompts longer than this many tokens are left out of --parity-digest and the SIMD check.
    #[arg(long, default_value_t = 4096)]
    digest_max_prompt: usize,

    /// With --benchmark: tokens of the prompt that is prefilled (llama-bench's pp512 is 512).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=4096))]
    prompt_tokens: u64,

    /// Tokens of each llama.cpp run fed to the model for --parity-digest and the SIMD check.
    #[arg(long, default_value_t = 128)]
    digest_tokens: usize,
}

fn main() -> std::process::ExitCode {
    chapters_code::demo::exit::run(demo)
}

fn demo() -> Result<()> {
    let cli = Cli::parse();
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
    if cli.parity_digest {
        let suite = parity::suite::Suite::load_default()?;
        let (digest, prompts) = digest(&cli, &model, &pool, &suite)?;
        println!(
            "{}",
            json!({ "simd": simd_path().to_string(), "digest": format!("{digest:016x}"), "prompts": prompts })
        );
        return Ok(());
    }

    if cli.chat && cli.prompt.is_none() && !cli.demo.verify {
        use std::io::IsTerminal;
        if cli.interactive || std::io::stdin().is_terminal() {
            return converse(&cli, &model, &tokenizer, &pool, sampling);
        }
    }
    let piped = match cli.chat && cli.prompt.is_none() && !cli.demo.verify {
        true => Some(piped_message()?),
        false => None,
    };
    let prompt = piped
        .as_deref()
        .or(cli.prompt.as_deref())
        .unwrap_or(DEFAULT_PROMPT);
    if cli.demo.verify && cli.prompt.is_some() {
        eprintln!(
            "note: --verify checks the parity suite (50 prompts against llama.cpp's stored outputs); \
             your --prompt runs as usual but has no reference to be checked against"
        );
    }
    let t = Instant::now();
    // --chat: the template's markers are special tokens, the user's text never is.
    let (prompt_text, prompt_ids) = if cli.chat {
        let mut messages = Vec::new();
        if let Some(system) = &cli.system {
            messages.push(ChatMessage::new("system", system));
        }
        messages.push(ChatMessage::new("user", prompt));
        (
            tokenizer.apply_chat_template(&messages, true)?,
            tokenizer.encode_chat(&messages, true)?,
        )
    } else {
        (prompt.to_string(), tokenizer.encode(prompt, true))
    };
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
        max_tokens: cli.max_tokens.unwrap_or(48),
        sampling,
        stop_tokens: default_stop_tokens(&tokenizer),
        stop_strings: cli.stop.clone(),
    };
    let streaming = cli.stream && cli.demo.output == OutputMode::Stdout;
    // A chat prints the answer alone; a plain prompt is continued, so it is printed first.
    let echo = if cli.chat { "" } else { prompt_text.as_str() };
    if streaming {
        print!("{echo}");
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

    let verified = match cli.demo.verify {
        true => Some(verify(&cli, &model, &tokenizer, &pool)?),
        false => None,
    };
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

    // With --verify, the parity suite's tables only: the stages of this one run are measured
    // without it (the suite's minutes would not change them, but a table has one source).
    let tables = match &verified {
        Some(v) => v.tables.clone(),
        None => vec![stages],
    };
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
            "verify": verified.as_ref().map(|v| &v.details),
        }),
        tables,
        verified: verified.as_ref().map(|v| v.ok),
    };
    report.emit(cli.demo.output, |out| {
        if !streaming {
            writeln!(out, "{echo}{}", generation.text)?;
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
        if let Some(v) = &verified {
            for bar in &v.bars {
                let verdict = if bar.holds { "OK    " } else { "NOT OK" };
                writeln!(
                    out,
                    "{verdict} {} ({} against {})",
                    bar.name, bar.measured, bar.limit
                )?;
            }
        }
        Ok(())
    })?;
    if verified.as_ref().is_some_and(|v| !v.ok) {
        std::process::exit(1);
    }
    Ok(())
}

/// `--chat` on a terminal: a conversation until Ctrl-D or /quit.
fn converse(
    cli: &Cli,
    model: &Llama,
    tokenizer: &Tokenizer,
    pool: &ThreadPool,
    sampling: SamplingParams,
) -> Result<()> {
    if cli.demo.output != OutputMode::Stdout || cli.demo.benchmark {
        bail!(
            "an interactive chat writes text on the terminal: drop --output {:?}/--benchmark, \
             or give the message with --prompt for a report",
            cli.demo.output
        );
    }
    let mut chat = chat::Chat::new(model, tokenizer, pool);
    chat.system = cli.system.clone();
    chat.sampling = sampling;
    chat.stop_strings = cli.stop.clone();
    if let Some(max) = cli.max_tokens {
        chat.max_tokens = max;
    }
    let interrupt = std::sync::Arc::new(chat::Interrupt::default());
    interrupt.catch_ctrl_c()?;
    let path = cli.run.model_path();
    let name = path
        .file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy();
    eprintln!(
        "Chat with {name} ({} threads, {} tokens of context).\n{}",
        pool.n_threads(),
        model.config.context_length,
        chat::HELP
    );
    let stdin = std::io::stdin();
    chat::repl(
        &mut chat,
        &mut stdin.lock(),
        &mut std::io::stdout(),
        &interrupt,
    )
}

/// `--chat` with stdin piped: the whole input is the one user message.
fn piped_message() -> Result<String> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
        .context("reading the message from stdin")?;
    let text = text.trim_end_matches(['\n', '\r']).to_string();
    if text.trim().is_empty() {
        bail!(
            "--chat has nothing to answer: stdin is not a terminal and is empty; give the \
             message with --prompt, pipe it in, or run on a terminal for a conversation"
        );
    }
    Ok(text)
}

/// What `--verify` found: the parity suite's tables and bars, and their JSON.
struct Verified {
    ok: bool,
    bars: Vec<parity::Bar>,
    tables: Vec<Table>,
    details: serde_json::Value,
}

/// The logits fingerprint of this process's SIMD path on the suite.
fn digest(
    cli: &Cli,
    model: &Llama,
    pool: &ThreadPool,
    suite: &parity::suite::Suite,
) -> Result<(u64, usize)> {
    let bar = progress::steps(
        suite.prompts.len() as u64,
        format!("logits digest ({})", simd_path()),
    );
    let digest = parity::logits_digest(
        model,
        pool,
        suite,
        cli.digest_max_prompt,
        cli.digest_tokens,
        &mut |done, _| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    Ok(digest)
}

/// The scalar path's fingerprint, from this binary run again with `PRODML_SIMD=scalar`.
fn scalar_digest(cli: &Cli) -> Result<(String, usize)> {
    let exe = std::env::current_exe().context("finding this program to run it again")?;
    let out = std::process::Command::new(exe)
        .env("PRODML_SIMD", "scalar")
        .args(["--parity-digest", "--model"])
        .arg(cli.run.model_path())
        .args([
            "--threads".to_string(),
            cli.run.threads().to_string(),
            "--digest-max-prompt".to_string(),
            cli.digest_max_prompt.to_string(),
            "--digest-tokens".to_string(),
            cli.digest_tokens.to_string(),
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running the scalar path")?;
    if !out.status.success() {
        bail!("the scalar run failed ({})", out.status);
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("the scalar run printed no digest")?;
    Ok((
        v["digest"].as_str().unwrap_or("?").to_string(),
        v["prompts"].as_u64().unwrap_or(0) as usize,
    ))
}

/// The parity suite: llama.cpp's noise floor and the engine inside it, and (unless
/// `--no-simd-check`) the scalar path's bits against this one's.
fn verify(cli: &Cli, model: &Llama, tokenizer: &Tokenizer, pool: &ThreadPool) -> Result<Verified> {
    let suite = parity::suite::Suite::load_default()?;
    let bar = progress::steps(suite.prompts.len() as u64, "parity suite");
    let ours = parity::run_ours(model, tokenizer, pool, &suite, &mut |done, _| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    let report = parity::Report::new(&suite, &ours);
    let mut bars = report.bars();
    let level = simd_path();
    if level != SimdLevel::Scalar && !cli.no_simd_check {
        let (mine, prompts) = digest(cli, model, pool, &suite)?;
        let (scalar, scalar_prompts) = scalar_digest(cli)?;
        let mine = format!("{mine:016x}");
        bars.push(parity::Bar {
            id: format!("simd-{level}"),
            name: format!(
                "the {level} path gives the scalar path's logits bit for bit, {prompts} prompts × {} tokens",
                cli.digest_tokens
            ),
            measured: mine.clone(),
            limit: scalar.clone(),
            holds: mine == scalar && prompts == scalar_prompts,
        });
    }
    let seqs = parity::invariance::sequences_from(&suite, 8, 600, 6);
    let bar = progress::spinner("batch invariance: 8 sequences, every way, 1 and 2 threads");
    let variants = parity::invariance::check(model, &seqs, &[1, 2])
        .map_err(|e| anyhow::anyhow!("the batch-invariance check failed: {e}"))?;
    bar.finish_and_clear();
    let same = variants.iter().filter(|v| v.difference.is_none()).count();
    bars.push(parity::Bar {
        id: "batch-invariance".into(),
        name: format!(
            "a sequence's logits, the same bits alone, batched, chunked, through the prefix cache and at 1 or 2 threads ({} prompts of {}–{} tokens)",
            seqs.len(),
            seqs.iter().map(|s| s.prompt.len()).min().unwrap_or(0),
            seqs.iter().map(|s| s.prompt.len()).max().unwrap_or(0)
        ),
        measured: format!("{same} of {} ways", variants.len()),
        limit: format!("{} of {}", variants.len(), variants.len()),
        holds: same == variants.len(),
    });
    let ok = bars.iter().all(|b| b.holds);
    let details = json!({
        "batch_invariance": variants.iter().map(|v| json!({"way": v.name, "first_difference": v.difference})).collect::<Vec<_>>(),
        "ok": ok,
        "floor": report.floor(),
        "bars": bars.iter().map(|b| json!({"id": b.id, "bar": b.name, "measured": b.measured, "limit": b.limit, "holds": b.holds})).collect::<Vec<_>>(),
        "divergences": report.ours.iter().map(|p| json!({"build": p.build, "at": p.agreement.divergences.iter().map(|d| json!({"prompt": d.prompt, "step": d.step, "margin_ours": d.margin_a, "margin_build": d.margin_b})).collect::<Vec<_>>()})).collect::<Vec<_>>(),
    });
    let mut tables = vec![
        parity::tables::noise_floor(&report),
        parity::tables::bars(&bars),
    ];
    if cli.demo.output == OutputMode::Json {
        // The chart's data: 41 rows per comparison, for scripts and `cargo xtask bench`.
        tables.push(parity::tables::quantiles(&report));
    }
    Ok(Verified {
        ok,
        tables,
        bars,
        details,
    })
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
    let prompt_tokens = cli.prompt_tokens as usize;
    const DECODE_TOKENS: usize = 128;
    const REPEATS: usize = 5;
    // A fixed English paragraph, repeated: a realistic token mix for pp128 (or ppN).
    let text = "The history of the city begins with a small fishing village on the banks of the river. \
                Over the centuries it grew into a trading port, then an industrial centre, and today it is \
                known for its universities, its museums and its parks. "
        .repeat(8 * prompt_tokens.div_ceil(128));
    let prompt: Vec<u32> = tokenizer
        .encode(&text, false)
        .into_iter()
        .take(prompt_tokens)
        .collect();
    // The table's column says how long the prompt was: never fewer tokens than that.
    if prompt.len() < prompt_tokens {
        bail!(
            "the benchmark text gave {} tokens, not the {prompt_tokens} asked for",
            prompt.len()
        );
    }
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
            Column::new("prefill", &format!("Prefill, {prompt_tokens}-token prompt"))
                .unit("tokens/s")
                .decimals(1),
            Column::new("decode", "Decode, 128 tokens")
                .unit("tokens/s")
                .decimals(1),
            Column::new("bound", "Decode bound")
                .unit("tokens/s")
                .decimals(1),
            Column::new("share", "Share of bound").unit("%").decimals(0),
            Column::new("intensity", "Arithmetic intensity")
                .unit("FLOP/byte")
                .decimals(2),
            Column::new("gflops", "Decode compute")
                .unit("GFLOP/s")
                .decimals(1),
        ],
    );
    let flops_per_token = model.flops_per_token();
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
                json!(flops_per_token as f64 / bytes_per_token as f64),
                json!(decode * flops_per_token as f64 / 1e9),
            ]);
        }
    }
    bar.finish_and_clear();
    speed.notes.push(format!(
        "Best of {REPEATS} runs, the configurations taking turns. Decode bound: triad bandwidth measured in the same run on the same thread count, divided by the {:.1} MB of weights read per token. Decode compute: {:.1} MFLOP of matrix products per token times the decode rate. SIMD path: {}.",
        bytes_per_token as f64 / 1e6,
        flops_per_token as f64 / 1e6,
        chapters_code::kernels::path_summary()
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
