//! Tensor parallelism: the course model split Megatron-style over shards (threads on this
//! machine, GPUs in production), checked against the one-process engine, its communication
//! counted and timed, pipeline parallelism beside it, and a cost model that projects the
//! measured volumes onto real interconnects for Llama 2 7B and 70B.

use anyhow::{Context, Result, bail};
use chapters_code::assets;
use chapters_code::demo::{Column, DemoArgs, ModelArgs, Provenance, Report, Table, progress};
use chapters_code::eval::bench::median;
use chapters_code::generate::default_stop_tokens;
use chapters_code::kernels::pool::ThreadPool;
use chapters_code::model::{KvCache, Llama, Logits};
use chapters_code::parallel::collective::time_collectives;
use chapters_code::parallel::cost::{
    self, Device, H100_SXM, LLAMA2_7B, LLAMA2_70B, Link, NVLINK4, PCIE4, PCIE5, Shape,
};
use chapters_code::parallel::{Kind, TensorParallel, pipeline_greedy, valid_sizes};
use chapters_code::parity::ours::LogProbs;
use chapters_code::parity::suite::Suite;
use chapters_code::parity::{self, MAX_TOKENS, OursOnSuite};
use chapters_code::sampling::argmax;
use chapters_code::tokenizer::{TokenId, Tokenizer};
use clap::Parser;
use serde_json::json;
use std::time::{Duration, Instant};

/// Split the course model over --shards tensor-parallel shards (one thread each) and compare
/// it with the one-process engine. By default: the split, one prompt decoded both ways, and
/// the bytes the shards exchange per token. --verify decodes every prompt of the parity suite
/// both ways (greedy tokens and |Δ log p| against the parity chapter's bar). --benchmark
/// measures decode and prefill speed (engine and shards, in turns), where the shards' time
/// goes, what one collective costs here, pipeline parallelism over 1 to 3 stages, and
/// projects the measured volumes onto PCIe and NVLink for Llama 2 7B and 70B.
#[derive(Parser, Debug)]
#[command(
    name = "demo-tensor-parallel",
    version,
    after_help = "Examples:\n  demo-tensor-parallel\n  demo-tensor-parallel --verify --prompts 10\n  demo-tensor-parallel --benchmark --output json\n  demo-tensor-parallel --shards 2   (refused: 9 heads do not split in two)\n"
)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,

    #[command(flatten)]
    run: ModelArgs,

    /// Tensor-parallel shards (must divide the query and the KV heads: 1 or 3 for this model).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..1025))]
    shards: u64,

    /// Prompt of the default run.
    #[arg(long, default_value = "Photosynthesis is the process by which plants")]
    prompt: String,

    /// Greedy tokens of the default run (--verify decodes the parity suite's 128).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..1025))]
    max_tokens: u64,

    /// Parity-suite prompts --verify decodes [default: all 50; fewer skip the greedy-tokens bar].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    prompts: Option<u64>,

    /// Tokens decoded per configuration and round by --benchmark.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..4096))]
    decode_tokens: u64,

    /// Rounds of --benchmark's speed measurement (the median is reported).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..101))]
    rounds: u64,

    /// Sequences in flight in --benchmark's pipeline measurement.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(1..257))]
    sequences: u64,
}

fn main() -> std::process::ExitCode {
    chapters_code::demo::exit::run(demo)
}

/// Tokens of the speed measurement's prompt.
const PROMPT_TOKENS: usize = 128;

fn demo() -> Result<()> {
    let cli = Cli::parse();
    let model_path = cli.run.model_path();
    let gguf = assets::open_model(&model_path)?;
    let model = Llama::load(&gguf).with_context(|| format!("loading {}", model_path.display()))?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let shards = cli.shards as usize;
    let c = &model.config;
    let context = c.context_length.min(4096);
    let mut tp = TensorParallel::new(&model, shards, context, 1)?;
    let pool = ThreadPool::new(1);

    let prompt = tokenizer.encode(&cli.prompt, false);
    if prompt.is_empty() {
        bail!("--prompt is empty");
    }
    let max_tokens = (cli.max_tokens as usize).min(context - prompt.len().min(context));
    if max_tokens == 0 {
        bail!("--prompt fills the context of {context} tokens");
    }
    let stops = default_stop_tokens(&tokenizer);
    let engine = greedy_engine(&model, &pool, &prompt, max_tokens, &stops)?;
    let split = greedy_tp(&mut tp, &prompt, max_tokens, &stops)?;
    let text = |t: &[TokenId]| tokenizer.decode(t, true);
    let one = compare(&engine, &split);

    let mut tables = vec![
        shards_table(&model, &[1, shards], &prompt)?,
        traffic_table(&model, &mut tp, &prompt)?,
    ];
    let mut verified = None;
    if cli.demo.verify {
        let limit = cli.prompts.map(|p| p as usize);
        let agreement = agreement_table(&model, &tokenizer, &pool, &[shards], limit)?;
        verified = Some(
            agreement
                .rows
                .iter()
                .all(|r| r["within_bars"] == json!(true))
                && tables[1].rows.iter().all(|r| r["equal"] == json!(true)),
        );
        tables.push(agreement);
    }
    if cli.demo.benchmark {
        let decode = cli.decode_tokens as usize;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let collectives = collectives_table(c.dim, c.vocab_size, cores, shards);
        let speed = speed_table(
            &model,
            &tokenizer,
            shards,
            decode,
            cli.rounds as usize,
            cores,
            &collectives,
        )?;
        let pipeline = pipeline_table(&model, &tokenizer, cli.sequences as usize, 32)?;
        let ours = Shape::of("SmolLM2-135M", c, model.tied_output);
        let (projection, verdict) = projection_tables(
            &[ours, LLAMA2_7B, LLAMA2_70B],
            &H100_SXM,
            &[PCIE4, PCIE5, NVLINK4],
        );
        tables.extend([collectives, speed, pipeline, projection, verdict]);
        if !cli.demo.verify {
            // The agreement table is part of every benchmark run, on the whole suite.
            tables.push(agreement_table(&model, &tokenizer, &pool, &[shards], None)?);
        }
    }
    let report = Report {
        demo: "tensor-parallel".into(),
        provenance: Provenance::current(),
        result: json!({
            "shards": shards,
            "valid_shards": valid_sizes(c, 32),
            "prompt": cli.prompt,
            "engine_text": text(&engine.tokens),
            "shards_text": text(&split.tokens),
            "same_tokens": one.same,
            "max_dlogp": one.worst,
        }),
        tables,
        verified,
    };
    report.emit(cli.demo.output, |out| {
        writeln!(out, "SmolLM2-135M split over {shards} tensor-parallel shards (one thread each); it splits over {}", valid_sizes(c, 32))?;
        writeln!(out, "prompt: {:?}", cli.prompt)?;
        writeln!(out, "one process: {:?}", text(&engine.tokens))?;
        writeln!(out, "{shards} shards:    {:?}", text(&split.tokens))?;
        writeln!(
            out,
            "same greedy tokens: {} ({} of {} identical); largest |Δ log p| over the top 5 while the tokens agree: {:.4}",
            one.same, one.agreeing, engine.tokens.len(), one.worst
        )
    })?;
    if verified == Some(false) {
        std::process::exit(1);
    }
    Ok(())
}

/// A greedy run: the tokens, and the logits that chose each one.
struct Greedy {
    tokens: Vec<TokenId>,
    logits: Vec<Vec<f32>>,
}

fn greedy_engine(
    model: &Llama,
    pool: &ThreadPool,
    prompt: &[TokenId],
    n: usize,
    stops: &[TokenId],
) -> Result<Greedy> {
    let mut cache = KvCache::with_limit(&model.config, prompt.len() + n);
    let mut step = |t: &[TokenId]| model.forward(pool, &mut cache, t, Logits::Last);
    greedy(&mut step, prompt, n, stops)
}

fn greedy_tp(
    tp: &mut TensorParallel,
    prompt: &[TokenId],
    n: usize,
    stops: &[TokenId],
) -> Result<Greedy> {
    tp.clear();
    let mut step = |t: &[TokenId]| tp.forward(t, Logits::Last);
    greedy(&mut step, prompt, n, stops)
}

/// One forward step: the next tokens in, the last position's logits out.
type Step<'s, E> = dyn FnMut(&[TokenId]) -> Result<Vec<f32>, E> + 's;

/// Greedy tokens after `prompt` until `n` or a stop token (included).
fn greedy<E: std::error::Error + Send + Sync + 'static>(
    step: &mut Step<'_, E>,
    prompt: &[TokenId],
    n: usize,
    stops: &[TokenId],
) -> Result<Greedy> {
    let mut g = Greedy {
        tokens: Vec::new(),
        logits: Vec::new(),
    };
    let mut logits = step(prompt)?;
    for i in 0..n {
        let t = argmax(&logits);
        g.tokens.push(t);
        g.logits.push(logits);
        if i + 1 == n || stops.contains(&t) {
            break;
        }
        logits = step(&[t])?;
    }
    Ok(g)
}

struct Comparison {
    same: bool,
    /// Tokens identical before the first difference.
    agreeing: usize,
    /// Largest |Δ log p| over the first run's top 5 at the steps both runs share.
    worst: f64,
}

fn compare(a: &Greedy, b: &Greedy) -> Comparison {
    let agreeing = a
        .tokens
        .iter()
        .zip(&b.tokens)
        .take_while(|(x, y)| x == y)
        .count();
    let shared = (agreeing + 1).min(a.logits.len()).min(b.logits.len());
    let worst = a.logits[..shared]
        .iter()
        .zip(&b.logits[..shared])
        .map(|(x, y)| top5_dlogp(x, y))
        .fold(0.0, f64::max);
    Comparison {
        same: a.tokens == b.tokens,
        agreeing,
        worst,
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// What each shard owns and holds, for each split in `sizes`, after a prompt's prefill.
fn shards_table(model: &Llama, sizes: &[usize], prompt: &[TokenId]) -> Result<Table> {
    let mut table = Table::new(
        "tp-shards",
        "What each tensor-parallel shard owns and holds",
        vec![
            Column::new("shards", "Shards"),
            Column::new("rank", "Rank"),
            Column::new("heads", "Query heads"),
            Column::new("kv_heads", "KV heads"),
            Column::new("ffn", "FFN columns"),
            Column::new("vocab", "Vocabulary rows"),
            Column::new("weights_mib", "Weights")
                .unit("MiB")
                .decimals(1),
            Column::new("kv_bytes_per_token", "KV cache per token").unit("bytes"),
        ],
    );
    let mut sizes = sizes.to_vec();
    sizes.dedup();
    for &n in &sizes {
        let mut tp = TensorParallel::new(model, n, prompt.len(), 1)?;
        tp.forward(prompt, Logits::Last)?;
        for (rank, (r, m)) in tp.ranges().iter().zip(tp.memory()).enumerate() {
            table.push(vec![
                json!(n),
                json!(rank),
                json!(format!("{}–{}", r.heads.start, r.heads.end - 1)),
                json!(format!("{}–{}", r.kv_heads.start, r.kv_heads.end - 1)),
                json!(r.ffn.len()),
                json!(r.vocab.len()),
                json!(m.weights as f64 / MIB),
                json!(m.kv / prompt.len()),
            ]);
        }
    }
    table.notes.push(format!(
        "Measured from the shards' own buffers after a {}-token prefill. Each shard keeps a whole copy of the RMSNorm weights (a few hundred KiB); everything else is split. The KV cache is f16.",
        prompt.len()
    ));
    Ok(table)
}

/// Collectives and bytes per decoded token, counted by the shards, against the formulas.
fn traffic_table(model: &Llama, tp: &mut TensorParallel, prompt: &[TokenId]) -> Result<Table> {
    let c = &model.config;
    tp.clear();
    tp.forward(prompt, Logits::Last)?;
    tp.reset_stats();
    let steps = 16;
    let mut t = argmax(&tp.forward(&[prompt[0]], Logits::Last)?);
    for _ in 1..steps {
        t = argmax(&tp.forward(&[t], Logits::Last)?);
    }
    let traffic = tp.stats().traffic;
    let n = tp.shards() as u64;
    let mut table = Table::new(
        "tp-traffic",
        &format!("What {n} shards exchange per decoded token"),
        vec![
            Column::new("collective", "Collective"),
            Column::new("calls", "Calls per token").decimals(0),
            Column::new("bytes", "Bytes per token, counted").decimals(0),
            Column::new("formula", "Formula"),
            Column::new("formula_bytes", "Bytes per token, formula"),
            Column::new("equal", "Equal"),
        ],
    );
    let (blocks, dim, vocab) = (c.n_layers as u64, c.dim as u64, c.vocab_size as u64);
    for (kind, name, formula, expected) in [
        (
            Kind::Block,
            "all-reduce, blocks",
            "2 × blocks × dim × 4",
            2 * blocks * dim * 4,
        ),
        (Kind::Embedding, "all-reduce, embedding", "dim × 4", dim * 4),
        (Kind::Logits, "gather, logits", "vocab × 4", vocab * 4),
    ] {
        let per_token = traffic.bytes(kind) as f64 / steps as f64;
        table.push(vec![
            json!(name),
            json!(traffic.calls(kind) as f64 / steps as f64),
            json!(per_token),
            json!(formula),
            json!(expected),
            json!(per_token == expected as f64),
        ]);
    }
    table.notes.push(format!(
        "Counted over {steps} decode steps (one token each) by rank 0; payload is the message size as nccl-tests reports it (one rank's contribution to an all-reduce, the whole result of a gather). With blocks = {blocks}, dim = {dim}, vocab = {vocab}, activations in f32."
    ));
    Ok(table)
}

/// The parity chapter's two bars, computed from the suite's llama.cpp runs: the largest
/// top-5 |Δ log p| between two builds, and the fewest greedy tokens two builds share.
fn builds_floor(suite: &Suite) -> (f64, usize) {
    let nobody = OursOnSuite {
        same_prompt_ids: Vec::new(),
        greedy: Vec::new(),
        forced: Vec::new(),
    };
    let report = parity::Report::new(suite, &nobody);
    let fewest = report
        .between_builds
        .iter()
        .map(|p| p.agreement.total())
        .min()
        .unwrap_or(0);
    (report.floor(), fewest)
}

/// The engine and `sizes` shards on the parity suite, judged by the parity chapter's bars:
/// the shards' log-probabilities teacher-forced on the engine's greedy tokens, and the
/// greedy tokens the two free-running runs share.
fn agreement_table(
    model: &Llama,
    tokenizer: &Tokenizer,
    pool: &ThreadPool,
    sizes: &[usize],
    limit: Option<usize>,
) -> Result<Table> {
    let suite = Suite::load_default()?;
    let (floor, fewest) = builds_floor(&suite);
    let stops = default_stop_tokens(tokenizer);
    let runs = &suite.references[0].prompts;
    let count = limit.unwrap_or(runs.len()).min(runs.len());
    let fewest = if count == runs.len() {
        Some(fewest)
    } else {
        None
    };
    let mut table = Table::new(
        "tp-agreement",
        "Tensor-parallel shards against the one-process engine on the parity suite, by the parity chapter's bars",
        vec![
            Column::new("shards", "Shards"),
            Column::new("prompts", "Prompts"),
            Column::new("max_dlogit", "Largest |Δ logit|").decimals(4),
            Column::new("max_dlogp", "Largest |Δ log p|, top 5").decimals(4),
            Column::new("floor", "Largest between two llama.cpp builds").decimals(4),
            Column::new("shared", "Greedy tokens shared"),
            Column::new("fewest", "Fewest two llama.cpp builds share"),
            Column::new("identical", "Identical greedy runs"),
            Column::new("margin", "Widest top-2 margin where runs part").decimals(4),
            Column::new("within_bars", "Within the bars"),
        ],
    );
    for &n in sizes {
        let longest = runs[..count]
            .iter()
            .map(|r| r.prompt_ids.len())
            .max()
            .unwrap_or(0)
            + MAX_TOKENS;
        let mut tp = TensorParallel::new(model, n, longest, 1)?;
        let bar = progress::steps(
            count as u64,
            format!("parity suite, {n} shards against one"),
        );
        let (mut worst, mut shared, mut identical, mut margin) = (0.0f64, 0, 0, 0.0f64);
        let mut worst_logit = 0.0f32;
        for run in &runs[..count] {
            let prompt = &run.prompt_ids;
            let a = greedy_engine(model, pool, prompt, MAX_TOKENS, &stops)?;
            // Teacher-forced: the shards read the engine's tokens in one pass (both are
            // batch-invariant, so this is what decoding them one by one gives).
            tp.clear();
            let mut fed = prompt.clone();
            fed.extend(&a.tokens[..a.tokens.len() - 1]);
            let forced = tp.forward(&fed, Logits::From(prompt.len() - 1))?;
            let vocab = model.config.vocab_size;
            for (x, y) in a.logits.iter().zip(forced.chunks_exact(vocab)) {
                worst = worst.max(top5_dlogp(x, y));
                let d = x
                    .iter()
                    .zip(y)
                    .map(|(p, q)| (p - q).abs())
                    .fold(0.0, f32::max);
                worst_logit = worst_logit.max(d);
            }
            let b = greedy_tp(&mut tp, prompt, MAX_TOKENS, &stops)?;
            let common = a
                .tokens
                .iter()
                .zip(&b.tokens)
                .take_while(|(x, y)| x == y)
                .count();
            shared += common;
            identical += usize::from(a.tokens == b.tokens);
            if common < a.tokens.len().min(b.tokens.len()) {
                // How close the engine's own choice was where the runs part.
                let lp = LogProbs::new(&a.logits[common]);
                let (_, top) = lp.top();
                margin = margin.max(top[0] - top[1]);
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let holds = worst <= floor && margin <= floor && fewest.is_none_or(|f| shared >= f);
        table.push(vec![
            json!(n),
            json!(count),
            json!(worst_logit),
            json!(worst),
            json!(floor),
            json!(shared),
            json!(fewest),
            json!(format!("{identical} of {count}")),
            json!(margin),
            json!(holds),
        ]);
    }
    table.notes.push(format!(
        "Each prompt as llama.cpp tokenized it; greedy runs of up to {MAX_TOKENS} tokens (or an end-of-generation token), one thread per shard and one for the engine. |Δ logit|: over the whole vocabulary at every step of the engine's run, the shards fed the same tokens (logits of this model reach tens). |Δ log p|: at every step of the engine's run, over its five most likely tokens, the shards fed the same tokens. Greedy tokens shared: per prompt, the tokens the two free-running runs have in common before the first that differs, summed. Margin: where the runs part, the engine's log p of its choice less that of its second choice (a near-tie is a small margin). The bars are the parity chapter's, computed from the suite's llama.cpp runs: the shards may differ from the engine as much as two llama.cpp builds differ from each other — |Δ log p| and the margin at most the largest |Δ log p| between two builds, the tokens shared at least the fewest two builds share (that bar needs the whole suite)."
    ));
    Ok(table)
}

/// Largest |Δ log p| over the first distribution's five most likely tokens.
fn top5_dlogp(a: &[f32], b: &[f32]) -> f64 {
    let (la, lb) = (LogProbs::new(a), LogProbs::new(b));
    la.top()
        .0
        .iter()
        .map(|&t| (la.at(t) - lb.at(t)).abs())
        .fold(0.0, f64::max)
}

/// What one all-reduce of a residual row and one gather of the logits cost here, with the
/// shard count of the benchmark.
fn collectives_table(dim: usize, vocab: usize, cores: usize, shards: usize) -> Table {
    let mut table = Table::new(
        "tp-collectives",
        "What one collective costs on this machine (threads, shared memory)",
        vec![
            Column::new("ranks", "Ranks"),
            Column::new("all_reduce_us", "All-reduce of one row")
                .unit("µs")
                .decimals(1),
            Column::new("gather_us", "Gather of the logits")
                .unit("µs")
                .decimals(1),
        ],
    );
    let mut sizes = vec![2, 3, shards];
    sizes.sort_unstable();
    sizes.dedup();
    for n in sizes.into_iter().filter(|&n| n > 1) {
        let (reduce, gather) = time_collectives(n, dim, vocab, 2000);
        table.push(vec![json!(n), json!(reduce * 1e6), json!(gather * 1e6)]);
    }
    table.notes.push(format!(
        "Mean of 2,000 calls with nothing else running: {dim} floats per all-reduce, {vocab} floats gathered to rank 0. One thread per rank on {cores} cores: more ranks than cores are oversubscribed, so a barrier can wait for a thread the scheduler has not run yet."
    ));
    table
}

/// The decoders the speed table compares.
enum Runner<'g> {
    Engine { pool: ThreadPool, cache: KvCache },
    Shards(Box<TensorParallel<'g>>),
}

impl Runner<'_> {
    fn step(&mut self, model: &Llama, t: &[TokenId]) -> Result<Vec<f32>> {
        Ok(match self {
            Runner::Engine { pool, cache } => model.forward(pool, cache, t, Logits::Last)?,
            Runner::Shards(tp) => tp.forward(t, Logits::Last)?,
        })
    }

    fn clear(&mut self) {
        match self {
            Runner::Engine { cache, .. } => cache.clear(),
            Runner::Shards(tp) => tp.clear(),
        }
    }
}

/// One configuration's measurements: per round (prefill s, decode s per token, rank time
/// split per token).
#[derive(Default)]
struct Timings {
    prefill: Vec<f64>,
    decode: Vec<f64>,
    compute: Vec<f64>,
    communication: Vec<f64>,
    waiting: Vec<f64>,
}

/// Decode and prefill speed of the engine and the shards, taken in turns, and the cost
/// model's prediction for the shards from the one-shard compute time and the measured
/// collectives.
fn speed_table(
    model: &Llama,
    tokenizer: &Tokenizer,
    shards: usize,
    decode: usize,
    rounds: usize,
    cores: usize,
    collectives: &Table,
) -> Result<Table> {
    let c = &model.config;
    let text = tokenizer.encode(&assets::read_text(&assets::perplexity_text_path())?, false);
    if text.len() < PROMPT_TOKENS {
        bail!("the reference text has fewer than {PROMPT_TOKENS} tokens");
    }
    let prompt = &text[..PROMPT_TOKENS];
    let context = PROMPT_TOKENS + decode;
    let mut configs: Vec<(String, usize, Runner)> = vec![
        (
            "engine".into(),
            1,
            Runner::Engine {
                pool: ThreadPool::new(1),
                cache: KvCache::with_limit(c, context),
            },
        ),
        (
            "engine".into(),
            2,
            Runner::Engine {
                pool: ThreadPool::new(2),
                cache: KvCache::with_limit(c, context),
            },
        ),
        (
            "tensor parallel, 1 shard".into(),
            1,
            Runner::Shards(Box::new(TensorParallel::new(model, 1, context, 1)?)),
        ),
    ];
    if shards > 1 {
        configs.push((
            format!("tensor parallel, {shards} shards"),
            shards,
            Runner::Shards(Box::new(TensorParallel::new(model, shards, context, 1)?)),
        ));
    }
    let mut timings: Vec<Timings> = configs.iter().map(|_| Timings::default()).collect();
    let bar = progress::steps(
        (rounds * configs.len()) as u64,
        "decode and prefill, in turns",
    );
    for _ in 0..rounds {
        for ((_, _, runner), t) in configs.iter_mut().zip(&mut timings) {
            runner.clear();
            let start = Instant::now();
            let mut next = argmax(&runner.step(model, prompt)?);
            t.prefill.push(start.elapsed().as_secs_f64());
            if let Runner::Shards(tp) = runner {
                tp.reset_stats();
            }
            let start = Instant::now();
            for _ in 0..decode {
                next = argmax(&runner.step(model, &[next])?);
            }
            t.decode.push(start.elapsed().as_secs_f64() / decode as f64);
            if let Runner::Shards(tp) = runner {
                let ranks = &tp.stats().ranks;
                let mean = |f: &dyn Fn(&chapters_code::parallel::RankTimes) -> Duration| {
                    ranks.iter().map(|r| f(r).as_secs_f64()).sum::<f64>()
                        / ranks.len() as f64
                        / decode as f64
                };
                t.compute.push(mean(&|r| r.compute()));
                t.communication.push(mean(&|r| r.communication));
                t.waiting.push(mean(&|r| r.waiting));
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    let mut table = Table::new(
        "tp-speed",
        "Decode and prefill on this machine: the engine against tensor-parallel shards",
        vec![
            Column::new("config", "Configuration"),
            Column::new("threads", "Threads"),
            Column::new("decode_tok_s", "Decode")
                .unit("tok/s")
                .decimals(1),
            Column::new("prefill_tok_s", "Prefill")
                .unit("tok/s")
                .decimals(0),
            Column::new("compute_ms", "Compute per token")
                .unit("ms")
                .decimals(2),
            Column::new("communication_ms", "Communication per token")
                .unit("ms")
                .decimals(3),
            Column::new("waiting_ms", "Waiting per token")
                .unit("ms")
                .decimals(2),
            Column::new("predicted_tok_s", "Cost model")
                .unit("tok/s")
                .decimals(1),
        ],
    );
    let collective = |n: usize, key: &str| {
        collectives
            .rows
            .iter()
            .find(|r| r["ranks"].as_u64() == Some(n as u64))
            .and_then(|r| r[key].as_f64())
            .map(|us| us * 1e-6)
    };
    let one_shard = median(&timings[2].compute);
    for ((name, threads, runner), t) in configs.iter().zip(&timings) {
        let shards_here = match runner {
            Runner::Shards(tp) => Some(tp.shards()),
            Runner::Engine { .. } => None,
        };
        let predicted = shards_here.and_then(|n| {
            let (reduce, gather) = if n == 1 {
                (Some(0.0), Some(0.0))
            } else {
                (collective(n, "all_reduce_us"), collective(n, "gather_us"))
            };
            Some(1.0 / cost::cpu_step_s(one_shard, n, cores, c.n_layers, reduce?, gather?))
        });
        let ms = |v: &[f64]| {
            if v.is_empty() {
                json!(null)
            } else {
                json!(median(v) * 1e3)
            }
        };
        table.push(vec![
            json!(name),
            json!(threads),
            json!(1.0 / median(&t.decode)),
            json!(PROMPT_TOKENS as f64 / median(&t.prefill)),
            ms(&t.compute),
            ms(&t.communication),
            ms(&t.waiting),
            json!(predicted),
        ]);
    }
    table.notes.push(format!(
        "Median of {rounds} rounds taken in turns; each round prefills {PROMPT_TOKENS} tokens of the reference text and decodes {decode} greedy tokens. Shards run one thread each on {cores} cores, so {shards} shards are oversubscribed. Compute, communication and waiting are the shards' mean per decoded token (thread start and join are in neither). The cost model predicts the shards' decode speed from the one-shard compute time, ⌈shards / cores⌉ rounds of a 1/shards share between barriers, and the measured cost of one collective (tp-collectives) times {} all-reduces and one gather per token.",
        2 * c.n_layers + 1
    ));
    Ok(table)
}

/// Pipelined greedy decoding of `sequences` sequences over 1 to 3 stages.
fn pipeline_table(
    model: &Llama,
    tokenizer: &Tokenizer,
    sequences: usize,
    new_tokens: usize,
) -> Result<Table> {
    let text = tokenizer.encode(&assets::read_text(&assets::perplexity_text_path())?, false);
    let prompts: Vec<Vec<TokenId>> = (0..sequences)
        .map(|s| {
            let at = (s * 7919) % (text.len() - 64);
            text[at..at + 32].to_vec()
        })
        .collect();
    let pool = ThreadPool::new(1);
    let expected: Vec<Vec<TokenId>> = prompts
        .iter()
        .map(|p| {
            let mut cache = KvCache::with_limit(&model.config, p.len() + new_tokens);
            let mut out = vec![argmax(&model.forward(
                &pool,
                &mut cache,
                p,
                Logits::Last,
            )?)];
            while out.len() < new_tokens {
                out.push(argmax(&model.forward(
                    &pool,
                    &mut cache,
                    &out[out.len() - 1..],
                    Logits::Last,
                )?));
            }
            Ok(out)
        })
        .collect::<Result<_>>()?;
    let mut table = Table::new(
        "tp-pipeline",
        &format!("Pipeline parallelism: {sequences} sequences in flight, one thread per stage"),
        vec![
            Column::new("stages", "Stages"),
            Column::new("blocks", "Blocks per stage"),
            Column::new("tok_s", "Decode, all sequences")
                .unit("tok/s")
                .decimals(1),
            Column::new("bubble", "Bubble").unit("%").decimals(1),
            Column::new("bytes_per_token", "Bytes between stages per token").decimals(0),
            Column::new("same_tokens", "Engine's tokens"),
        ],
    );
    let bar = progress::steps(3, "pipeline stages");
    for stages in 1..=3 {
        let run = pipeline_greedy(model, stages, &prompts, new_tokens)?;
        let generated = (sequences * new_tokens) as f64;
        let positions: usize = prompts.iter().map(|p| p.len() + new_tokens - 1).sum();
        let sizes: Vec<String> = run.stages.iter().map(|r| r.len().to_string()).collect();
        table.push(vec![
            json!(stages),
            json!(sizes.join(" + ")),
            json!(generated / run.wall.as_secs_f64()),
            json!(run.bubble() * 100.0),
            json!(run.bytes_between_stages as f64 / positions as f64),
            json!(run.tokens == expected),
        ]);
        bar.inc(1);
    }
    bar.finish_and_clear();
    table.notes.push(format!(
        "Each sequence: 32 tokens of the reference text, then {new_tokens} greedy tokens; a stage works on one sequence's step at a time and passes its activations on. Bubble: the share of the stages' time spent waiting for work. Engine's tokens: the same tokens as the one-process engine, sequence by sequence (nothing is summed across stages, so the bits are the same)."
    ));
    Ok(table)
}

/// The cost model on larger shapes: per (shape, batch, shards) the compute and the
/// communication over each link, and per (shape, batch, link) where splitting stops paying.
fn projection_tables(shapes: &[Shape], device: &Device, links: &[Link]) -> (Table, Table) {
    let mut columns = vec![
        Column::new("model", "Model"),
        Column::new("batch", "Batch"),
        Column::new("shards", "Shards"),
        Column::new("weights_gb", "Weights per GPU")
            .unit("GB")
            .decimals(2),
        Column::new("compute_ms", "Compute per step")
            .unit("ms")
            .decimals(3),
    ];
    for (i, l) in links.iter().enumerate() {
        columns.push(
            Column::new(&format!("tok_s_{i}"), l.name)
                .unit("tok/s")
                .decimals(0),
        );
        columns.push(
            Column::new(&format!("share_{i}"), &format!("Communication, {}", l.name))
                .unit("%")
                .decimals(0),
        );
    }
    let mut projection = Table::new(
        "tp-projection",
        &format!(
            "Tensor-parallel decoding projected onto {} GPUs (16-bit weights and activations)",
            device.name
        ),
        columns,
    );
    let mut verdict = Table::new(
        "tp-verdict",
        "When tensor parallelism pays, by the cost model",
        vec![
            Column::new("model", "Model"),
            Column::new("batch", "Batch"),
            Column::new("link", "Link"),
            Column::new("best", "Fastest split (shards)"),
            Column::new("speedup", "Its speed-up over one GPU")
                .unit("×")
                .decimals(2),
            Column::new("dominates_at", "Communication dominates from (shards)"),
        ],
    );
    for shape in shapes {
        let sizes = shape.valid_sizes(8);
        for batch in [1, 64] {
            let mut row = vec![json!(shape.name), json!(batch)];
            let mut per_link: Vec<Vec<cost::Projection>> = vec![Vec::new(); links.len()];
            for &n in &sizes {
                let p0 = cost::project(shape, device, &links[0], n, batch, 2.0, 2.0);
                let mut r = row.clone();
                r.extend([
                    json!(n),
                    json!(p0.weights_per_shard / 1e9),
                    json!(p0.compute_s * 1e3),
                ]);
                for (i, l) in links.iter().enumerate() {
                    let p = cost::project(shape, device, l, n, batch, 2.0, 2.0);
                    r.extend([
                        json!(p.tokens_per_s()),
                        json!(p.communication_share() * 100.0),
                    ]);
                    per_link[i].push(p);
                }
                projection.push(r);
            }
            for (l, ps) in links.iter().zip(&per_link) {
                let best = ps
                    .iter()
                    .max_by(|a, b| a.tokens_per_s().total_cmp(&b.tokens_per_s()))
                    .expect("N = 1 is always valid");
                let dominates = ps
                    .iter()
                    .find(|p| p.communication_s > p.compute_s)
                    .map_or(json!("never, up to 8"), |p| json!(p.n));
                verdict.push(vec![
                    json!(shape.name),
                    json!(batch),
                    json!(l.name),
                    json!(best.n),
                    json!(best.tokens_per_s() / ps[0].tokens_per_s()),
                    dominates,
                ]);
            }
            row.clear();
        }
    }
    let mut notes = vec![
        "Per decode step: each GPU reads its share of the weights at the memory bandwidth (or computes its share of the multiply-adds, whichever is slower); then 2 all-reduces per block plus one for the embedding, each of batch × dim activations, and one gather of batch × vocab logits, priced by NCCL's ring model: base + 2(N−1)·hop + 2(N−1)/N · bytes / bandwidth. Compute and communication are added: in decoding each all-reduce stands between two products that need it. A split whose weights do not fit in one GPU's memory (70B on one or two 80 GB GPUs) is still priced, to show the trend.".to_string(),
        format!("{}.", device.describe()),
    ];
    notes.extend(links.iter().map(|l| format!("{}.", l.describe())));
    notes.extend(shapes.iter().map(|s| {
        format!(
            "{}: {} (dim {}, {} blocks, {} heads, {} KV heads, FFN {}, vocabulary {}).",
            s.name, s.source, s.dim, s.n_layers, s.n_heads, s.n_kv_heads, s.ffn_dim, s.vocab
        )
    }));
    projection.notes = notes;
    verdict.notes.push("From tp-projection: the split with the most tokens per second on each link, and the first split whose communication takes longer than its compute.".into());
    (projection, verdict)
}
