//! Speculative decoding: a drafter proposes the next k tokens, the model checks them in one
//! pass. By default: one input-grounded task decoded plainly and with n-gram drafts, side by
//! side — the same text, fewer passes of the model.

use anyhow::{Context, Result, bail};
use chapters_code::assets;
use chapters_code::demo::{Column, DemoArgs, ModelArgs, Provenance, Report, Table, progress};
use chapters_code::generate::{self, Generation, Request, default_stop_tokens};
use chapters_code::kernels::pool::ThreadPool;
use chapters_code::model::{KvCache, Llama, Logits};
use chapters_code::sampling::SamplingParams;
use chapters_code::speculative::{
    Drafter, ModelDrafter, NgramDrafter, SpecStats, generate_speculative, self_draft,
};
use chapters_code::tokenizer::{ChatMessage, TokenId, Tokenizer};
use clap::Parser;
use serde_json::json;
use std::time::{Duration, Instant};

/// Decode with speculation: n-gram (prompt lookup) drafts or a draft model checked by the
/// target in one forward pass. Default: one task that quotes its input, plain and speculative,
/// side by side. --verify checks that greedy speculation gives plain decoding's tokens on every
/// task for k = 1, 2, 4, 8 and both drafters. --benchmark measures what a verify pass of k
/// tokens costs against one (k = 1…16), and acceptance and speed on each task at 1 and N
/// threads.
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
    drafter: String,

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

/// A drafter built from `--drafter`.
fn drafter<'g>(
    spec: &str,
    model: &Llama<'g>,
    draft_file: Option<&'g chapters_code::formats::Gguf>,
) -> Result<Box<dyn Drafter + 'g>> {
    if spec == "ngram" {
        return Ok(Box::new(NgramDrafter::default()));
    }
    if let Some(n) = spec.strip_prefix("self:") {
        let n: usize = n
            .parse()
            .with_context(|| format!("--drafter {spec}: N must be a number of blocks"))?;
        let draft = self_draft(model, n)?;
        return Ok(Box::new(ModelDrafter::new(
            draft,
            format!("self-draft ({n} of {} blocks)", model.layers.len()),
        )));
    }
    if let Some(path) = spec.strip_prefix("draft:") {
        let Some(gguf) = draft_file else {
            bail!("--drafter {spec}: the draft model's file is not open");
        };
        let draft = Llama::load(gguf).context("loading the draft model")?;
        if draft.config.vocab_size != model.config.vocab_size {
            bail!(
                "--drafter {spec}: the draft model's vocabulary has {} tokens, the target's {}",
                draft.config.vocab_size,
                model.config.vocab_size
            );
        }
        return Ok(Box::new(ModelDrafter::new(
            draft,
            format!("draft model {path}"),
        )));
    }
    bail!("--drafter {spec}: expected ngram, self:N or draft:PATH")
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
    let draft_gguf = match cli.drafter.strip_prefix("draft:") {
        Some(path) => Some(assets::open_model(std::path::Path::new(path))?),
        None => None,
    };
    let mut chosen = drafter(&cli.drafter, &model, draft_gguf.as_ref())?;
    let text = assets::read_text(&assets::perplexity_text_path())?;
    let tasks = tasks(&tokenizer, &text)?;
    let stops = default_stop_tokens(&tokenizer);
    let threads = cli.run.threads();
    let pool = ThreadPool::new(threads);
    let (k, max_tokens) = (cli.k as usize, cli.max_tokens as usize);

    // The default run: the quote task, plain and speculative.
    let quote = request(&tasks[0], max_tokens, &stops);
    let plain = generate::generate(&model, &tokenizer, &pool, &quote, |_| {})?;
    let (spec, stats) = generate_speculative(
        &model,
        &tokenizer,
        &pool,
        chosen.as_mut(),
        k,
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
        tables.push(cost_table(&model, &tasks[0].prompt)?);
        tables.push(tasks_table(
            &model, &tokenizer, &tasks, threads, max_tokens, &stops,
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
            "task": tasks[0].name,
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
        writeln!(out, "task \"{}\" ({} prompt tokens), greedy, {} threads", tasks[0].name, tasks[0].prompt.len(), threads)?;
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
            "{} with k = {k}: {} passes, {:.0}% of drafts accepted, {:.2} tokens per pass, {:.0} ms of decoding — {}",
            chosen.name(),
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

/// Greedy speculation against plain greedy decoding on every task, k = 1, 2, 4, 8, both drafters.
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
        (tasks.len() * ks.len() * 2) as u64,
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
    bar.finish_and_clear();
    Ok((table, ok))
}

/// Median of `samples`.
fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The target's pass over k new tokens against its pass over one, after `prompt`, at 1 and 2
/// threads: what a verify pass costs. Every k is timed in each round (side by side).
fn cost_table(model: &Llama, prompt: &[TokenId]) -> Result<Table> {
    let mut table = Table::new(
        "spec-verify-cost",
        &format!(
            "A forward pass over k tokens after a {}-token prompt, against one token",
            prompt.len()
        ),
        vec![
            Column::new("k", "k (tokens in the pass)"),
            Column::new("ms_1", "1 thread").unit("ms").decimals(2),
            Column::new("ratio_1", "T(k)/T(1), 1 thread").decimals(2),
            Column::new("ms_2", "2 threads").unit("ms").decimals(2),
            Column::new("ratio_2", "T(k)/T(1), 2 threads").decimals(2),
        ],
    );
    let ks: Vec<usize> = (1..=16).chain([32, 64]).collect();
    let rounds = 7;
    let mut per_threads = Vec::new();
    let bar = progress::steps((2 * rounds) as u64, "verify passes of 1 to 16 tokens");
    for threads in [1, 2] {
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
    for (i, &k) in ks.iter().enumerate() {
        let (one, two) = (&per_threads[0], &per_threads[1]);
        table.push(vec![
            json!(k),
            json!(one[i].as_secs_f64() * 1e3),
            json!(one[i].as_secs_f64() / one[0].as_secs_f64()),
            json!(two[i].as_secs_f64() * 1e3),
            json!(two[i].as_secs_f64() / two[0].as_secs_f64()),
        ]);
    }
    table.notes.push(format!("Median of {rounds} rounds; each round times every k in turn, the cache rolled back after each pass."));
    Ok(table)
}

/// Each task plain and with each drafter, at 1 thread and at `threads`: acceptance, tokens per
/// pass and end-to-end speed, each method timed in the same rounds as plain decoding.
fn tasks_table(
    model: &Llama,
    tokenizer: &Tokenizer,
    tasks: &[Task],
    threads: usize,
    max_tokens: usize,
    stops: &[TokenId],
) -> Result<Table> {
    let mut table = Table::new(
        "spec-tasks",
        "Speculative against plain greedy decoding, end to end (prefill included)",
        vec![
            Column::new("task", "Task"),
            Column::new("threads", "Threads"),
            Column::new("method", "Method"),
            Column::new("tokens", "Tokens"),
            Column::new("passes", "Target passes"),
            Column::new("acceptance", "Drafts accepted")
                .unit("%")
                .decimals(0),
            Column::new("per_pass", "Tokens per pass").decimals(2),
            Column::new("tok_s", "Speed").unit("tok/s").decimals(1),
            Column::new("speedup", "Speedup").unit("×").decimals(2),
        ],
    );
    let mut thread_counts = vec![1];
    if threads > 1 {
        thread_counts.push(threads);
    }
    let methods: [(&str, usize); 4] = [("plain", 0), ("ngram", 4), ("ngram", 8), ("self:8", 4)];
    let rounds = 3;
    let bar = progress::steps(
        (thread_counts.len() * tasks.len() * rounds) as u64,
        "tasks, plain and speculative",
    );
    for &t in &thread_counts {
        let pool = ThreadPool::new(t);
        for task in tasks {
            let req = request(task, max_tokens, stops);
            // times[m]: each round's end-to-end time of method m; the last round's result.
            let mut times = vec![Vec::new(); methods.len()];
            let mut results: Vec<Option<(Generation, Option<SpecStats>)>> =
                vec![None; methods.len()];
            for _ in 0..rounds {
                for (m, &(name, k)) in methods.iter().enumerate() {
                    let start = Instant::now();
                    let result = if name == "plain" {
                        (
                            generate::generate(model, tokenizer, &pool, &req, |_| {})?,
                            None,
                        )
                    } else {
                        let mut d = drafter(name, model, None)?;
                        let (g, s) = generate_speculative(
                            model,
                            tokenizer,
                            &pool,
                            d.as_mut(),
                            k,
                            &req,
                            |_| {},
                        )?;
                        (g, Some(s))
                    };
                    times[m].push(start.elapsed());
                    results[m] = Some(result);
                }
                bar.inc(1);
            }
            let plain_time = median(times[0].clone()).as_secs_f64();
            for (m, &(name, k)) in methods.iter().enumerate() {
                let (g, stats) = results[m].take().expect("every method ran");
                let secs = median(times[m].clone()).as_secs_f64();
                let method = if k == 0 {
                    name.to_string()
                } else {
                    format!("{name}, k = {k}")
                };
                let passes = stats
                    .as_ref()
                    .map_or(g.generated_ids.len().saturating_sub(1), |s| s.target_passes);
                table.push(vec![
                    json!(task.name),
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
                    json!(g.generated_ids.len() as f64 / secs),
                    json!(plain_time / secs),
                ]);
            }
        }
    }
    bar.finish_and_clear();
    table.notes.push(format!(
        "Greedy, up to the given tokens per task, {} of the tasks input-grounded; median of {rounds} rounds, every method run in each round.",
        tasks.iter().filter(|t| t.grounded).count()
    ));
    Ok(table)
}
