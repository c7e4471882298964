//! Speculative decoding: a drafter proposes the next k tokens, the model checks them in one
//! pass. By default: one input-grounded task decoded plainly and with n-gram drafts, side by
//! side — the same text, fewer passes of the model.

use anyhow::{Context, Result};
use chapters_code::assets;
use chapters_code::demo::{Column, DemoArgs, ModelArgs, Provenance, Report, Table, progress};
use chapters_code::engine::closed_loop::{self, ClosedLoop};
use chapters_code::engine::speculation::{self, DEFAULT_MAX_BATCH};
use chapters_code::engine::{DraftSource, Scheduler, SchedulerConfig, Speculation};
use chapters_code::generate::{self, Generation, Request, default_stop_tokens};
use chapters_code::kernels::pool::ThreadPool;
use chapters_code::model::{KvCache, Llama, Logits};
use chapters_code::sampling::SamplingParams;
use chapters_code::speculative::{
    DraftLength, Drafter, ModelDrafter, NgramDrafter, SpecStats, generate_speculative, self_draft,
};
use chapters_code::tokenizer::{ChatMessage, TokenId, Tokenizer};
use clap::Parser;
use serde_json::json;
use std::time::{Duration, Instant};

/// Decode with speculation: n-gram (prompt lookup) drafts or a draft model checked by the
/// target in one forward pass. Default: one task that quotes its input, plain and speculative,
/// side by side. --verify checks that greedy speculation gives plain decoding's tokens on every
/// task for k = 1, 2, 4, 8 and both drafters, and for the adaptive length. --benchmark measures
/// what a verify pass of k tokens costs against one (k = 1…16, 32, 64), and acceptance and speed
/// on each task at 1 and N threads.
#[derive(Parser, Debug)]
#[command(
    name = "demo-speculative-decode",
    version,
    after_help = "Examples:\n  demo-speculative-decode\n  demo-speculative-decode --drafter self:8 --k 4\n  demo-speculative-decode --verify\n  demo-speculative-decode --benchmark --output json\n"
)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,

    #[command(flatten)]
    run: ModelArgs,

    /// Draft tokens per target pass.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..33))]
    k: u64,

    /// The drafter: `ngram` (prompt lookup), `self:N` (the model's first N blocks), or
    /// `draft:PATH` (a GGUF model with the same vocabulary).
    #[arg(long, default_value = "ngram")]
    drafter: DraftSource,

    /// The task of the default run (not of --verify or --benchmark, which run them all).
    #[arg(long, default_value = "quote", value_parser = TASKS)]
    task: String,

    /// Adapt the draft length to the verdicts (grow while drafts stand, back off to no draft
    /// while they fall), up to --k.
    #[arg(long)]
    adaptive: bool,

    /// Tokens to generate per task.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..1025))]
    max_tokens: u64,
}

fn main() -> std::process::ExitCode {
    chapters_code::demo::exit::run(demo)
}

/// One of the demo's prompts.
struct Task {
    name: &'static str,
    /// Whether the answer copies from the prompt (where prompt lookup shines).
    grounded: bool,
    prompt: Vec<TokenId>,
}

/// The tasks' names, in the order `tasks` returns them.
const TASKS: [&str; 5] = ["quote", "summarize", "edit-text", "edit-code", "chat"];

/// The tasks: four that work on a given text or code, one free chat question.
fn tasks(tokenizer: &Tokenizer, text: &str) -> Result<Vec<Task>> {
    // A paragraph of the reference text, cut at word boundaries.
    let words: Vec<&str> = text.split_whitespace().skip(40).take(110).collect();
    let para = words.join(" ");
    let code = "fn mean(values: &[f64]) -> f64 {\n    let mut total = 0.0;\n    for v in values {\n        total += v;\n    }\n    total / values.len() as f64\n}\n\nfn main() {\n    let data = vec![1.0, 2.0, 4.0];\n    println!(\"mean = {}\", mean(&data));\n}";
    let specs: [(&str, bool, String); 5] = [
        (
            "quote",
            true,
            format!("Repeat the following text word for word.\n\n{para}"),
        ),
        (
            "summarize",
            true,
            format!("Summarize the following text.\n\n{para}"),
        ),
        (
            "edit-text",
            true,
            format!(
                "Rewrite the following text in the past tense, keeping everything else.\n\n{para}"
            ),
        ),
        (
            "edit-code",
            true,
            format!(
                "Rename the variable `total` to `sum` in this Rust code and show the whole code.\n\n```rust\n{code}\n```"
            ),
        ),
        (
            "chat",
            false,
            "What are three good habits for learning a new language?".to_string(),
        ),
    ];
    debug_assert!(specs.iter().map(|s| s.0).eq(TASKS));
    specs
        .into_iter()
        .map(|(name, grounded, content)| {
            let prompt = tokenizer
                .encode_chat(&[ChatMessage::new("user", &content)], true)
                .context("the model's chat template")?;
            Ok(Task {
                name,
                grounded,
                prompt,
            })
        })
        .collect()
}

/// A drafter built from `--drafter`, checked against the target (the server's own parsing and
/// checks: `DraftSource`, `speculation::draft_model`).
fn drafter<'g>(
    source: &DraftSource,
    model: &Llama<'g>,
    draft_file: Option<&'g chapters_code::formats::Gguf>,
) -> Result<Box<dyn Drafter + 'g>> {
    let loaded = match draft_file {
        Some(gguf) => Some(Llama::load(gguf).context("loading the draft model")?),
        None => None,
    };
    let label = match source {
        DraftSource::Ngram => return Ok(Box::new(NgramDrafter::default())),
        DraftSource::SelfDraft(n) => format!("self-draft ({n} of {} blocks)", model.layers.len()),
        DraftSource::File(path) => format!("draft model {}", path.display()),
    };
    let draft = speculation::draft_model(model, source, loaded)
        .with_context(|| format!("--drafter {}", describe(source)))?
        .context("a model drafter without a model")?;
    Ok(Box::new(ModelDrafter::new(draft, label)))
}

/// `source` as `--drafter` spells it.
fn describe(source: &DraftSource) -> String {
    match source {
        DraftSource::Ngram => "ngram".into(),
        DraftSource::SelfDraft(n) => format!("self:{n}"),
        DraftSource::File(path) => format!("draft:{}", path.display()),
    }
}

fn request(task: &Task, max_tokens: usize, stop_tokens: &[TokenId]) -> Request {
    Request {
        prompt_ids: task.prompt.clone(),
        max_tokens,
        sampling: SamplingParams::default(),
        stop_tokens: stop_tokens.to_vec(),
        stop_strings: vec![],
    }
}

fn demo() -> Result<()> {
    let cli = Cli::parse();
    let model_path = cli.run.model_path();
    let gguf = assets::open_model(&model_path)?;
    let model = Llama::load(&gguf).with_context(|| format!("loading {}", model_path.display()))?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let draft_gguf = match &cli.drafter {
        DraftSource::File(path) => Some(assets::open_draft_model(path, "--drafter draft:PATH")?),
        _ => None,
    };
    let mut chosen = drafter(&cli.drafter, &model, draft_gguf.as_ref())?;
    let text = assets::read_text(&assets::perplexity_text_path())?;
    let tasks = tasks(&tokenizer, &text)?;
    let stops = default_stop_tokens(&tokenizer);
    let threads = cli.run.threads();
    let pool = ThreadPool::new(threads);
    let (k, max_tokens) = (cli.k as usize, cli.max_tokens as usize);
    let length = if cli.adaptive {
        DraftLength::Adaptive(k)
    } else {
        DraftLength::Fixed(k)
    };

    // The default run: one task (--task), plain and speculative.
    let task = tasks
        .iter()
        .find(|t| t.name == cli.task)
        .context("--task names one of the tasks")?;
    let quote = request(task, max_tokens, &stops);
    let plain = generate::generate(&model, &tokenizer, &pool, &quote, |_| {})?;
    let (spec, stats) = generate_speculative(
        &model,
        &tokenizer,
        &pool,
        chosen.as_mut(),
        length,
        &quote,
        |_| {},
    )?;
    let mut tables = Vec::new();
    let mut verified = None;
    if cli.demo.verify {
        let (table, ok) = verify_table(&model, &tokenizer, &pool, &tasks, max_tokens, &stops)?;
        tables.push(table);
        verified = Some(ok && spec.generated_ids == plain.generated_ids);
    }
    if cli.demo.benchmark {
        let (table, costs) = cost_table(&model, &tasks[0].prompt, threads)?;
        tables.push(table);
        tables.push(tasks_table(
            &model, &tokenizer, &tasks, &costs, max_tokens, &stops,
        )?);
        tables.push(server_table(
            &model, &tokenizer, &pool, &tasks, max_tokens, &stops,
        )?);
    }
    let same = spec.generated_ids == plain.generated_ids;
    let report = Report {
        demo: "speculative-decode".into(),
        provenance: Provenance::current(),
        result: json!({
            "threads": threads,
            "k": k,
            "drafter": chosen.name(),
            "task": task.name,
            "prompt_ids": task.prompt,
            "stop_ids": stops,
            "max_tokens": max_tokens,
            "generated_ids": spec.generated_ids,
            "same_tokens": same,
            "plain_passes": plain.generated_ids.len().saturating_sub(1),
            "target_passes": stats.target_passes,
            "acceptance": stats.acceptance(),
            "tokens_per_pass": stats.tokens_per_pass(),
            "plain_decode_s": plain.times.decode.as_secs_f64(),
            "speculative_decode_s": spec.times.decode.as_secs_f64(),
            "text": spec.text,
        }),
        tables,
        verified,
    };
    report.emit(cli.demo.output, |out| {
        writeln!(out, "task \"{}\" ({} prompt tokens), greedy, {} threads", task.name, task.prompt.len(), threads)?;
        writeln!(out, "answer: {}", spec.text.trim())?;
        writeln!(
            out,
            "plain: {} tokens in {} passes, {:.0} ms of decoding",
            plain.generated_ids.len(),
            plain.generated_ids.len().saturating_sub(1),
            plain.times.decode.as_secs_f64() * 1e3
        )?;
        writeln!(
            out,
            "{} with {}k = {k}: {} passes, {:.0}% of drafts accepted, {:.2} tokens per pass, {:.0} ms of decoding — {}",
            chosen.name(),
            if cli.adaptive { "adaptive " } else { "" },
            stats.target_passes,
            100.0 * stats.acceptance(),
            stats.tokens_per_pass(),
            spec.times.decode.as_secs_f64() * 1e3,
            if same { "the same tokens" } else { "DIFFERENT TOKENS" }
        )
    })?;
    if verified == Some(false) {
        std::process::exit(1);
    }
    Ok(())
}

/// Greedy speculation against plain greedy decoding on every task, k = 1, 2, 4, 8, both drafters,
/// and the adaptive draft length with the n-gram drafter.
fn verify_table(
    model: &Llama,
    tokenizer: &Tokenizer,
    pool: &ThreadPool,
    tasks: &[Task],
    max_tokens: usize,
    stops: &[TokenId],
) -> Result<(Table, bool)> {
    let mut table = Table::new(
        "spec-verify",
        "Greedy speculative decoding against plain greedy decoding",
        vec![
            Column::new("task", "Task"),
            Column::new("drafter", "Drafter"),
            Column::new("k", "k"),
            Column::new("tokens", "Tokens"),
            Column::new("same", "Same tokens"),
        ],
    );
    let ks = [1, 2, 4, 8];
    let bar = progress::steps(
        (tasks.len() * (ks.len() * 2 + 1)) as u64,
        "greedy, plain and speculative",
    );
    let mut ngram = NgramDrafter::default();
    let mut self_drafter = ModelDrafter::new(self_draft(model, 8)?, "self-draft (8 blocks)");
    let mut ok = true;
    for task in tasks {
        let req = request(task, max_tokens, stops);
        let plain = generate::generate(model, tokenizer, pool, &req, |_| {})?;
        for k in ks {
            let drafters: [&mut dyn Drafter; 2] = [&mut ngram, &mut self_drafter];
            for d in drafters {
                let (spec, _) = generate_speculative(model, tokenizer, pool, d, k, &req, |_| {})?;
                let same = spec.generated_ids == plain.generated_ids && spec.text == plain.text;
                ok &= same;
                table.push(vec![
                    json!(task.name),
                    json!(d.name()),
                    json!(k),
                    json!(plain.generated_ids.len()),
                    json!(same),
                ]);
                bar.inc(1);
            }
        }
    }
    // The adaptive draft length, with the n-gram drafter.
    for task in tasks {
        let req = request(task, max_tokens, stops);
        let plain = generate::generate(model, tokenizer, pool, &req, |_| {})?;
        let (spec, _) = generate_speculative(
            model,
            tokenizer,
            pool,
            &mut ngram,
            DraftLength::Adaptive(8),
            &req,
            |_| {},
        )?;
        let same = spec.generated_ids == plain.generated_ids && spec.text == plain.text;
        ok &= same;
        table.push(vec![
            json!(task.name),
            json!(ngram.name()),
            json!("adaptive ≤ 8"),
            json!(plain.generated_ids.len()),
            json!(same),
        ]);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((table, ok))
}

/// Median of `samples`.
fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The target's pass over k new tokens against its pass over one, after `prompt`, at 1 thread
/// and at `threads`: what a verify pass costs. Every k is timed in each round (side by side).
fn cost_table(model: &Llama, prompt: &[TokenId], threads: usize) -> Result<(Table, Vec<Cost>)> {
    let thread_counts = if threads > 1 {
        vec![1, threads]
    } else {
        vec![1]
    };
    let mut columns = vec![Column::new("k", "k (tokens in the pass)")];
    for &t in &thread_counts {
        let label = if t == 1 {
            "1 thread".to_string()
        } else {
            format!("{t} threads")
        };
        columns.push(
            Column::new(&format!("ms_{t}"), &label)
                .unit("ms")
                .decimals(2),
        );
        columns
            .push(Column::new(&format!("ratio_{t}"), &format!("T(k)/T(1), {label}")).decimals(2));
    }
    let mut table = Table::new(
        "spec-verify-cost",
        &format!(
            "A forward pass over k tokens after a {}-token prompt, against one token",
            prompt.len()
        ),
        columns,
    );
    let ks: Vec<usize> = (1..=16).chain([32, 64]).collect();
    let rounds = 7;
    let mut per_threads = Vec::new();
    let bar = progress::steps(
        (thread_counts.len() * rounds) as u64,
        "verify passes of 1 to 64 tokens",
    );
    for &threads in &thread_counts {
        let pool = ThreadPool::new(threads);
        let mut cache = KvCache::new(&model.config);
        model.forward(&pool, &mut cache, prompt, Logits::Last)?;
        let base = cache.len();
        let tokens: Vec<TokenId> = prompt.iter().cycle().take(64).copied().collect();
        let mut samples = vec![Vec::new(); ks.len()];
        for _ in 0..rounds {
            for (i, &k) in ks.iter().enumerate() {
                let t = Instant::now();
                model.forward(&pool, &mut cache, &tokens[..k], Logits::All)?;
                samples[i].push(t.elapsed());
                cache.truncate(base);
            }
            bar.inc(1);
        }
        per_threads.push(samples.into_iter().map(median).collect::<Vec<_>>());
    }
    bar.finish_and_clear();
    let costs = thread_counts
        .iter()
        .zip(&per_threads)
        .map(|(&threads, times)| Cost {
            threads,
            ratio: times[..16]
                .iter()
                .map(|t| t.as_secs_f64() / times[0].as_secs_f64())
                .collect(),
        })
        .collect();
    for (i, &k) in ks.iter().enumerate() {
        let mut row = vec![json!(k)];
        for times in &per_threads {
            row.push(json!(times[i].as_secs_f64() * 1e3));
            row.push(json!(times[i].as_secs_f64() / times[0].as_secs_f64()));
        }
        table.push(row);
    }
    table.notes.push(format!("Median of {rounds} rounds; each round times every k in turn, the cache rolled back after each pass. Matrix kernels: {}.", chapters_code::kernels::path_summary()));
    Ok((table, costs))
}

/// T(k)/T(1) for k = 1…16 at one thread count, as measured by [`cost_table`].
struct Cost {
    threads: usize,
    ratio: Vec<f64>,
}

impl Cost {
    /// Σ T(1 + d)/T(1) over the target passes of `s`, a pass that drafted d tokens costing a
    /// pass over 1 + d (a pass that drafted nothing, one plain step).
    fn of_passes(&self, s: &SpecStats) -> f64 {
        // proposed_at[i]: passes whose draft had a position i + 1.
        let p = &s.proposed_at;
        let mut total = (s.target_passes - p.first().copied().unwrap_or(0)) as f64;
        for d in 1..=p.len() {
            let exactly = p[d - 1] - p.get(d).copied().unwrap_or(0);
            total += exactly as f64 * self.at((1 + d) as f64);
        }
        total.max(1e-9)
    }

    /// T(x)/T(1) at a mean pass length x (linear between measured k, clamped to 1…16).
    fn at(&self, x: f64) -> f64 {
        let x = x.clamp(1.0, self.ratio.len() as f64);
        let (lo, frac) = (x.floor() as usize, x.fract());
        let hi = (lo + 1).min(self.ratio.len());
        self.ratio[lo - 1] * (1.0 - frac) + self.ratio[hi - 1] * frac
    }
}

/// Each task plain and with each drafter, at 1 thread and at `threads`: acceptance, tokens per
/// pass, and speed — of the decode phase (after the first token; prefill is the same work with
/// or without speculation) and end to end — each method timed in the same rounds as plain.
fn tasks_table(
    model: &Llama,
    tokenizer: &Tokenizer,
    tasks: &[Task],
    costs: &[Cost],
    max_tokens: usize,
    stops: &[TokenId],
) -> Result<Table> {
    let mut table = Table::new(
        "spec-tasks",
        "Speculative against plain greedy decoding",
        vec![
            Column::new("task", "Task"),
            Column::new("grounded", "Input-grounded"),
            Column::new("threads", "Threads"),
            Column::new("method", "Method"),
            Column::new("tokens", "Tokens"),
            Column::new("passes", "Target passes"),
            Column::new("acceptance", "Drafts accepted")
                .unit("%")
                .decimals(0),
            Column::new("per_pass", "Tokens per pass").decimals(2),
            Column::new("decode_tok_s", "Decode speed")
                .unit("tok/s")
                .decimals(1),
            Column::new("decode_speedup", "Decode speedup")
                .unit("×")
                .decimals(2),
            Column::new("predicted", "Predicted").unit("×").decimals(2),
            Column::new("speedup", "End-to-end speedup")
                .unit("×")
                .decimals(2),
        ],
    );
    let methods: [(&str, DraftLength); 6] = [
        ("plain", DraftLength::Fixed(0)),
        ("ngram", DraftLength::Fixed(2)),
        ("ngram", DraftLength::Fixed(4)),
        ("ngram", DraftLength::Fixed(8)),
        ("ngram", DraftLength::Adaptive(8)),
        ("self:8", DraftLength::Fixed(4)),
    ];
    let rounds = 5;
    let bar = progress::steps(
        (costs.len() * tasks.len() * rounds) as u64,
        "tasks, plain and speculative",
    );
    for cost in costs {
        let t = cost.threads;
        let pool = ThreadPool::new(t);
        for task in tasks {
            let req = request(task, max_tokens, stops);
            // Each round's (decode, end-to-end) time of method m; the last round's result.
            let mut times = vec![(Vec::new(), Vec::new()); methods.len()];
            let mut results: Vec<Option<(Generation, Option<SpecStats>)>> =
                vec![None; methods.len()];
            for _ in 0..rounds {
                for (m, &(name, length)) in methods.iter().enumerate() {
                    // Built before the clock starts: a drafter is set up once per server, not
                    // per request.
                    let mut d = if name == "plain" {
                        None
                    } else {
                        Some(drafter(
                            &name.parse().map_err(anyhow::Error::msg)?,
                            model,
                            None,
                        )?)
                    };
                    let start = Instant::now();
                    let result = match d.as_mut() {
                        None => (
                            generate::generate(model, tokenizer, &pool, &req, |_| {})?,
                            None,
                        ),
                        Some(d) => {
                            let (g, s) = generate_speculative(
                                model,
                                tokenizer,
                                &pool,
                                d.as_mut(),
                                length,
                                &req,
                                |_| {},
                            )?;
                            (g, Some(s))
                        }
                    };
                    times[m].1.push(start.elapsed());
                    times[m].0.push(result.0.times.decode);
                    results[m] = Some(result);
                }
                bar.inc(1);
            }
            let decode = |m: usize| median(times[m].0.clone()).as_secs_f64().max(1e-9);
            let total = |m: usize| median(times[m].1.clone()).as_secs_f64();
            for (m, &(name, length)) in methods.iter().enumerate() {
                let (g, stats) = results[m].take().expect("every method ran");
                let method = match length {
                    DraftLength::Fixed(0) => name.to_string(),
                    DraftLength::Fixed(k) => format!("{name}, k = {k}"),
                    DraftLength::Adaptive(k) => format!("{name}, adaptive k ≤ {k}"),
                };
                let decoded = g.generated_ids.len().saturating_sub(1);
                let passes = stats.as_ref().map_or(decoded, |s| s.target_passes);
                // The tokens decided per unit of plain-pass cost, drafting free: the chapter's
                // formula with this run's T(k)/T(1). Only n-gram drafts are free.
                let predicted = stats
                    .as_ref()
                    .filter(|_| name == "ngram")
                    .map(|s| (s.accepted + s.target_passes) as f64 / cost.of_passes(s));
                table.push(vec![
                    json!(task.name),
                    json!(task.grounded),
                    json!(t),
                    json!(method),
                    json!(g.generated_ids.len()),
                    json!(passes),
                    stats
                        .as_ref()
                        .map_or(json!(null), |s| json!(100.0 * s.acceptance())),
                    stats
                        .as_ref()
                        .map_or(json!(1.0), |s| json!(s.tokens_per_pass())),
                    json!(decoded as f64 / decode(m)),
                    json!(decode(0) / decode(m)),
                    predicted.map_or(json!(null), |p| json!(p)),
                    json!(total(0) / total(m)),
                ]);
            }
        }
    }
    bar.finish_and_clear();
    table.notes.push(format!(
        "Greedy, up to {max_tokens} tokens per task (every method gives the same tokens: --verify checks it), {} of the {} tasks input-grounded; median of {rounds} rounds, every method run in each round. Decode: the tokens after the first, and their time; end to end includes the prefill. Predicted: the tokens decided ÷ Σ T(1 + d)/T(1) over the target passes, d the tokens each pass verified (0 for a pass without a draft), from the verify-cost table of the same run (n-gram drafts cost nothing to make). Matrix kernels: {}.",
        tasks.iter().filter(|t| t.grounded).count(),
        tasks.len(),
        chapters_code::kernels::path_summary()
    ));
    Ok(table)
}

// ANCHOR: server_table
/// The server's scheduler under a closed-loop load of 1, 2, 4 and 8 clients, each sending every
/// task once (starting at a different one), plainly and with n-gram speculation — in every
/// step, and under the server's default policy (only in steps of at most
/// [`DEFAULT_MAX_BATCH`] decodes): aggregate throughput, mean latency, and whether every
/// request got plain decoding's tokens.
fn server_table(
    model: &Llama,
    tokenizer: &Tokenizer,
    pool: &ThreadPool,
    tasks: &[Task],
    max_tokens: usize,
    stops: &[TokenId],
) -> Result<Table> {
    let mut table = Table::new(
        "spec-server",
        "Speculation in the server: aggregate throughput against clients",
        vec![
            Column::new("clients", "Clients"),
            Column::new("method", "Method"),
            Column::new("tokens", "Tokens"),
            Column::new("steps", "Steps"),
            Column::new("drafted", "Draft tokens"),
            Column::new("acceptance", "Drafts accepted")
                .unit("%")
                .decimals(0),
            Column::new("tok_s", "Throughput").unit("tok/s").decimals(1),
            Column::new("speedup", "Against plain")
                .unit("×")
                .decimals(2),
            Column::new("latency_s", "Mean latency")
                .unit("s")
                .decimals(2),
            Column::new("spread", "Round spread").unit("%").decimals(0),
            Column::new("same", "Same tokens"),
        ],
    );
    let ngram = |max_batch| Speculation {
        source: DraftSource::Ngram,
        length: DraftLength::Adaptive(8),
        max_batch,
    };
    let methods: [(String, Option<Speculation>); 3] = [
        ("plain".into(), None),
        (
            "ngram, adaptive k ≤ 8, every step".into(),
            Some(ngram(usize::MAX)),
        ),
        (
            format!("ngram, adaptive k ≤ 8, while ≤ {DEFAULT_MAX_BATCH} decode (default)"),
            Some(ngram(DEFAULT_MAX_BATCH)),
        ),
    ];
    let client_counts = [1, 2, 4, 8];
    let rounds = 5;
    let bar = progress::steps(
        (client_counts.len() * rounds * methods.len()) as u64,
        "closed-loop clients, plain and speculative",
    );
    for clients in client_counts {
        // Client c sends task c, c + 1, … (every task once, in turn).
        let requests = |c: usize| -> Vec<Request> {
            (0..tasks.len())
                .map(|n| request(&tasks[(c + n) % tasks.len()], max_tokens, stops))
                .collect()
        };
        let mut runs: Vec<Vec<ClosedLoop>> = vec![Vec::new(); methods.len()];
        for round in 0..rounds {
            // Each round starts with another method, so that no method always runs first.
            for m in (0..methods.len()).map(|i| (i + round) % methods.len()) {
                let speculation = &methods[m].1;
                let config = SchedulerConfig {
                    speculation: speculation.clone(),
                    ..SchedulerConfig::default()
                };
                let mut scheduler = Scheduler::new(model, tokenizer, config);
                runs[m].push(closed_loop::run(&mut scheduler, pool, clients, requests)?);
                bar.inc(1);
            }
        }
        // Against plain: the median over rounds of plain's wall time ÷ the method's in the
        // same round (the same tokens either way), so that a slow stretch of the machine
        // slows both sides of a ratio. Spread: (slowest − fastest) ÷ median wall time of a
        // method's rounds, the noise to read every difference against.
        let walls =
            |m: usize| -> Vec<f64> { runs[m].iter().map(|r| r.wall.as_secs_f64()).collect() };
        let median_of = |mut v: Vec<f64>| -> f64 {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let speedups: Vec<f64> = (0..methods.len())
            .map(|m| median_of(walls(0).iter().zip(walls(m)).map(|(p, w)| p / w).collect()))
            .collect();
        let spreads: Vec<f64> = (0..methods.len())
            .map(|m| {
                let w = walls(m);
                let (lo, hi) = (
                    w.iter().copied().fold(f64::MAX, f64::min),
                    w.iter().copied().fold(0.0, f64::max),
                );
                100.0 * (hi - lo) / median_of(w)
            })
            .collect();
        // Each method's median round by wall time gives the other columns.
        let picked: Vec<ClosedLoop> = runs
            .into_iter()
            .map(|mut r| {
                r.sort_by_key(|x| x.wall);
                r.swap_remove(r.len() / 2)
            })
            .collect();
        for (m, ((name, _), run)) in methods.iter().zip(&picked).enumerate() {
            table.push(vec![
                json!(clients),
                json!(name),
                json!(run.tokens()),
                json!(run.steps),
                json!(run.drafted),
                if run.drafted > 0 {
                    json!(100.0 * run.accepted as f64 / run.drafted as f64)
                } else {
                    json!(null)
                },
                json!(run.tokens_per_s()),
                json!(speedups[m]),
                json!(run.mean_latency().as_secs_f64()),
                json!(spreads[m]),
                json!(run.outputs == picked[0].outputs),
            ]);
        }
    }
    bar.finish_and_clear();
    table.notes.push(format!(
        "Greedy, up to {max_tokens} tokens per request; every client sends the {} tasks one after another, each as soon as the previous finished, so that up to `clients` requests share each step. Continuous batching, {} threads, up to 16 sequences and 256 tokens per step; {rounds} rounds, every method run in each round (each round starting with another); throughput and latency from each method's median round, against plain: the median over rounds of the ratio within a round; round spread: (slowest − fastest) ÷ median wall time. Same tokens: every request's tokens equal the plain run's. Matrix kernels: {}.",
        tasks.len(),
        pool.n_threads(),
        chapters_code::kernels::path_summary()
    ));
    Ok(table)
}
// ANCHOR_END: server_table
