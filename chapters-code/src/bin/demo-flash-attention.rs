//! Flash attention: naive attention (the whole score matrix) against tiled attention
//! (FlashAttention's online softmax) in the real model — how close their logits are, how much
//! memory attention holds, and how fast each one is from 128 tokens of context to 8K.

use anyhow::{Context, Result, bail};
use chapters_code::assets;
use chapters_code::attention::{self, AttentionKind, ContextFull, Heads, KvBatch, KvChunk};
use chapters_code::demo::alloc_meter::AllocMeter;
use chapters_code::demo::{Column, DemoArgs, ModelArgs, Provenance, Report, Table, progress};
use chapters_code::kernels::pool::ThreadPool;
use chapters_code::model::{KvCache, Llama, Logits};
use chapters_code::tokenizer::{TokenId, Tokenizer};
use clap::Parser;
use serde_json::json;
use std::time::Instant;

#[global_allocator]
static METER: AllocMeter = AllocMeter;

/// Compare naive and tiled attention in the model. By default: one prompt of the reference text
/// through both, their logits side by side and the memory attention held. --verify checks tiled
/// against naive on prompts of 1 to 2,000 tokens, and that tiled gives the same bits however a
/// prompt is cut into steps. --benchmark fills the KV cache with a real 8K-token prefill, then
/// measures attention's peak memory and both paths' prefill and decode speed at every context
/// length, side by side in the same run.
#[derive(Parser, Debug)]
#[command(
    name = "demo-flash-attention",
    version,
    after_help = "Examples:\n  demo-flash-attention\n  demo-flash-attention --verify\n  demo-flash-attention --benchmark --output json\n  demo-flash-attention --benchmark --contexts 128,1024,4096\n"
)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,

    #[command(flatten)]
    run: ModelArgs,

    /// Tokens of the prompt of the default run.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..8192))]
    prompt_tokens: u64,

    /// Context lengths of --benchmark [default: 128, 256, … 4096, and the model's context less
    /// --decode-tokens].
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..))]
    contexts: Option<Vec<u64>>,

    /// Tokens decoded at each context length by --benchmark (per path and round).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..257))]
    decode_tokens: u64,
}

fn main() -> std::process::ExitCode {
    chapters_code::demo::exit::run(demo)
}

/// The model, its text and its threads.
struct Setup<'g> {
    model: Llama<'g>,
    text: Vec<TokenId>,
    pool: ThreadPool,
    threads: usize,
}

fn demo() -> Result<()> {
    let cli = Cli::parse();
    let model_path = cli.run.model_path();
    let gguf = assets::open_model(&model_path)?;
    let model = Llama::load(&gguf).with_context(|| format!("loading {}", model_path.display()))?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let text = tokenizer.encode(&assets::read_text(&assets::perplexity_text_path())?, false);
    let threads = cli.run.threads();
    let mut setup = Setup {
        model,
        text,
        pool: ThreadPool::new(threads),
        threads,
    };
    let context = setup.model.config.context_length;
    if setup.text.len() < context {
        bail!(
            "the reference text has {} tokens, fewer than the context of {context}",
            setup.text.len()
        );
    }

    let mut tables = vec![agreement_table(&mut setup, &[cli.prompt_tokens as usize])?];
    let mut verified = None;
    if cli.demo.verify {
        let lengths = [1, 7, 100, 600, 2000];
        let agreement = agreement_table(&mut setup, &lengths)?;
        let close = agreement
            .rows
            .iter()
            .all(|r| r["same_top1"] == json!(true) && r["max_dlogp"].as_f64() <= Some(TOLERANCE));
        let invariance = invariance_table(&mut setup)?;
        let same = invariance
            .rows
            .iter()
            .all(|r| r["same_bits"] == json!(true));
        tables = vec![agreement, invariance];
        verified = Some(close && same);
    }
    if cli.demo.benchmark {
        let decode = cli.decode_tokens as usize;
        let longest = context - decode;
        let contexts: Vec<usize> = match &cli.contexts {
            Some(c) => c.iter().map(|&n| n as usize).collect(),
            None => [128, 256, 512, 1024, 2048, 4096]
                .into_iter()
                .chain([longest])
                .collect(),
        };
        if let Some(&n) = contexts.iter().find(|&&n| n > longest) {
            bail!(
                "--contexts {n} leaves no room for --decode-tokens {decode} in the context of {context}"
            );
        }
        let (speed, memory) = benchmark(&mut setup, &contexts, decode)?;
        tables.extend([memory, speed]);
    }
    let report = Report {
        demo: "flash-attention".into(),
        provenance: Provenance::current(),
        result: json!({
            "threads": setup.threads,
            "tiles": { "query_positions": attention::tiled::BQ, "key_positions": attention::tiled::BK, "segment": attention::tiled::SEGMENT },
            "simd": chapters_code::attention::tile_kernels::path(chapters_code::kernels::simd()).name(),
        }),
        tables,
        verified,
    };
    report.emit(cli.demo.output, |out| {
        writeln!(
            out,
            "naive and tiled attention in SmolLM2-135M ({} threads; tiles of {} queries × {} keys)",
            setup.threads,
            attention::tiled::BQ,
            attention::tiled::BK
        )
    })?;
    if verified == Some(false) {
        std::process::exit(1);
    }
    Ok(())
}

/// Largest |Δ log p| over the naive path's top-5 tokens that --verify accepts between the two
/// paths: the parity chapter's bar for the engine against llama.cpp — at most the largest
/// difference between two llama.cpp builds, the smallest such largest difference of its
/// builds on the parity suite being 0.85 (AVX against AVX2). Naive rounds the query and the
/// weights to f16 as llama.cpp does, tiled keeps f32: differences that small, amplified by 30
/// layers, reach the same order as two builds of llama.cpp.
const TOLERANCE: f64 = 0.85;

/// Last-position log-probabilities of `prompt` on a fresh cache, attention computed by `kind`.
fn last_logp(s: &mut Setup<'_>, kind: AttentionKind, prompt: &[TokenId]) -> Result<Vec<f64>> {
    s.model.attention = kind;
    let mut cache = KvCache::new(&s.model.config);
    let logits = s.model.forward(&s.pool, &mut cache, prompt, Logits::Last)?;
    Ok(log_softmax(&logits))
}

fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let z: f64 = logits.iter().map(|&x| f64::from(x - m).exp()).sum();
    logits.iter().map(|&x| f64::from(x - m) - z.ln()).collect()
}

fn argmax(v: &[f64]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

/// Naive against tiled on prompts of the reference text, one row per prompt length.
fn agreement_table(s: &mut Setup<'_>, lengths: &[usize]) -> Result<Table> {
    let mut table = Table::new(
        "flash-agreement",
        "Tiled against naive attention in the model: the last position's log-probabilities",
        vec![
            Column::new("tokens", "Prompt tokens"),
            Column::new("max_dlogp", "Largest |Δ log p|, naive's top 5").decimals(5),
            Column::new("same_top1", "Same next token"),
        ],
    );
    let bar = progress::steps(lengths.len() as u64, "naive and tiled prompts");
    for (i, &n) in lengths.iter().enumerate() {
        let at = (i * 7919) % (s.text.len() - n); // a different stretch of text each time
        let prompt = s.text[at..at + n].to_vec();
        let naive = last_logp(s, AttentionKind::Naive, &prompt)?;
        let tiled = last_logp(s, AttentionKind::Tiled, &prompt)?;
        let mut top: Vec<usize> = (0..naive.len()).collect();
        top.sort_by(|&a, &b| naive[b].total_cmp(&naive[a]));
        let max = top[..5]
            .iter()
            .map(|&t| (naive[t] - tiled[t]).abs())
            .fold(0.0, f64::max);
        table.push(vec![
            json!(n),
            json!(max),
            json!(argmax(&naive) == argmax(&tiled)),
        ]);
        bar.inc(1);
    }
    bar.finish_and_clear();
    table.notes.push(format!(
        "Each prompt is a different stretch of the reference text. --verify accepts at most {TOLERANCE} (the largest difference between two llama.cpp builds on the parity suite) and the same next token."
    ));
    Ok(table)
}

/// Tiled attention's logits for one prompt, cut into steps four ways: the same bits or not.
fn invariance_table(s: &mut Setup<'_>) -> Result<Table> {
    s.model.attention = AttentionKind::Tiled;
    let prompt = s.text[100..100 + 1500].to_vec();
    let run = |s: &Setup<'_>, cuts: &[usize]| -> Result<Vec<f32>> {
        let mut cache = KvCache::new(&s.model.config);
        let mut logits = Vec::new();
        let mut at = 0;
        for &n in cuts.iter().chain(std::iter::repeat(&1)) {
            if at >= prompt.len() {
                break;
            }
            let n = n.min(prompt.len() - at);
            logits = s
                .model
                .forward(&s.pool, &mut cache, &prompt[at..at + n], Logits::Last)?;
            at += n;
        }
        Ok(logits)
    };
    let whole = run(s, &[prompt.len()])?;
    let mut table = Table::new(
        "flash-invariance",
        "Tiled attention: the same logits, bit for bit, however the prompt is cut into steps",
        vec![
            Column::new("way", "The 1,500-token prompt run as"),
            Column::new("same_bits", "Same bits as one step"),
        ],
    );
    let ways: [(&str, Vec<usize>); 3] = [
        ("chunks of 256 tokens (chunked prefill)", vec![256; 6]),
        (
            "1,480 tokens, then 20 decode steps (split over segments)",
            vec![1480],
        ),
        (
            "chunks of 17, 300 and 1,000 tokens, then decode steps",
            vec![17, 300, 1000],
        ),
    ];
    for (name, cuts) in ways {
        let logits = run(s, &cuts)?;
        table.push(vec![json!(name), json!(logits == whole)]);
    }
    Ok(table)
}

/// A read-only view of positions `0..len` of a filled cache, as one sequence whose step adds
/// nothing: what attention reads when `new` queries at positions `len - new..len` attend.
struct Prefix<'c> {
    cache: &'c KvCache,
    len: usize,
}

impl KvBatch for Prefix<'_> {
    fn n_seqs(&self) -> usize {
        1
    }
    fn len(&self, _s: usize) -> usize {
        0
    }
    fn check_room(&self, _s: usize, _n: usize) -> Result<(), ContextFull> {
        Ok(())
    }
    fn append(&mut self, _s: usize, _layer: usize, _keys: &[f32], _values: &[f32]) {}
    fn commit(&mut self, _s: usize, _n: usize) {}
    fn chunks(&self, _s: usize, layer: usize, upto: usize) -> Vec<KvChunk<'_>> {
        let upto = upto.min(self.len);
        vec![KvChunk {
            keys: self.cache.keys(layer, upto),
            values: self.cache.values(layer, upto),
            len: upto,
        }]
    }
}

/// One layer's attention of a prefill of `n` queries over the first `n` positions of `cache`:
/// (seconds, peak bytes held).
fn time_prefill(s: &Setup<'_>, kind: AttentionKind, cache: &KvCache, n: usize) -> (f64, usize) {
    let c = &s.model.config;
    let heads = Heads {
        n_heads: c.n_heads,
        n_kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
    };
    // The queries: layer 0's keys of the same positions, repeated over each group's heads
    // (real vectors of the right scale; attention's cost does not depend on their values).
    let keys = cache.keys(0, n).as_f16().expect("an f16 cache");
    let (kvd, hd, group) = (heads.kv_dim(), heads.head_dim, heads.group());
    let mut q = vec![0.0f32; n * heads.q_dim()];
    for (t, row) in q.chunks_exact_mut(heads.q_dim()).enumerate() {
        for (h, x) in row.chunks_exact_mut(hd).enumerate() {
            let g = h / group;
            for (x, &k) in x.iter_mut().zip(&keys[t * kvd + g * hd..][..hd]) {
                *x = chapters_code::quant::f16_to_f32(k);
            }
        }
    }
    let view = Prefix { cache, len: n };
    let mut out = vec![0.0f32; q.len()];
    let step = attention::Step {
        heads,
        q: &q,
        kv: &view,
        layer: 0,
        new: &[n],
        firsts: &[0],
    };
    let started = Instant::now();
    let ((), peak) = AllocMeter::peak_during(|| attention::attend(kind, &s.pool, &step, &mut out));
    (started.elapsed().as_secs_f64(), peak)
}

/// Decodes `k` tokens (teacher-forced from the text) after position `n` of `cache`: seconds.
fn time_decode(
    s: &mut Setup<'_>,
    kind: AttentionKind,
    cache: &mut KvCache,
    n: usize,
    k: usize,
) -> Result<f64> {
    s.model.attention = kind;
    cache.truncate(n);
    let started = Instant::now();
    for &token in &s.text[n..n + k] {
        s.model.forward(&s.pool, cache, &[token], Logits::Last)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    cache.truncate(n);
    Ok(seconds)
}

/// The speed and memory tables. The cache is filled once by a real prefill of the longest
/// context (tiled, in chunks of 512); each shorter context truncates it.
fn benchmark(s: &mut Setup<'_>, contexts: &[usize], decode: usize) -> Result<(Table, Table)> {
    let longest = *contexts.iter().max().expect("at least one context");
    let mut cache = KvCache::new(&s.model.config);
    s.model.attention = AttentionKind::Tiled;
    let bar = progress::steps(longest as u64, "prefill (tiled) to fill the KV cache");
    let started = Instant::now();
    for chunk in s.text[..longest].chunks(512) {
        s.model.forward(&s.pool, &mut cache, chunk, Logits::Last)?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let fill_seconds = started.elapsed().as_secs_f64();

    let mut speed = Table::new(
        "flash-speed",
        "Naive against tiled attention by context length, side by side in one run",
        vec![
            Column::new("context", "Context").unit("tokens"),
            Column::new("prefill_naive", "Prefill, naive")
                .unit("µs/token, one layer")
                .decimals(1),
            Column::new("prefill_tiled", "Prefill, tiled")
                .unit("µs/token, one layer")
                .decimals(1),
            Column::new("prefill_speedup", "Prefill speedup")
                .unit("×")
                .decimals(2),
            Column::new("decode_naive", "Decode, naive")
                .unit("tokens/s")
                .decimals(1),
            Column::new("decode_tiled", "Decode, tiled")
                .unit("tokens/s")
                .decimals(1),
            Column::new("decode_ratio", "Decode, tiled ÷ naive")
                .unit("×")
                .decimals(2),
        ],
    );
    let mut memory = Table::new(
        "flash-memory",
        "Peak memory attention holds in a prefill, one layer, all heads",
        vec![
            Column::new("context", "Prompt").unit("tokens"),
            Column::new("naive_mib", "Naive").unit("MiB").decimals(2),
            Column::new("tiled_mib", "Tiled").unit("MiB").decimals(3),
            Column::new("ratio", "Naive ÷ tiled").unit("×").decimals(0),
            Column::new("scores_mib", "n² scores of one head")
                .unit("MiB")
                .decimals(2),
        ],
    );
    let bar = progress::steps(contexts.len() as u64, "naive and tiled, context by context");
    let mut sorted = contexts.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for &n in sorted.iter().rev() {
        // Prefill: the best of a few runs (at least three, or 0.5 s of each path).
        let (mut best, mut peaks) = ([f64::INFINITY; 2], [0usize; 2]);
        let mut spent = 0.0;
        let mut round = 0;
        while round < 3 || (spent < 1.0 && round < 50) {
            for (i, kind) in AttentionKind::ALL.into_iter().enumerate() {
                let (t, peak) = time_prefill(s, kind, &cache, n);
                best[i] = best[i].min(t);
                peaks[i] = peaks[i].max(peak);
                spent += t;
            }
            round += 1;
        }
        // Decode: two rounds, alternating the paths; the faster round of each.
        let mut dec = [f64::INFINITY; 2];
        for _ in 0..2 {
            for (i, kind) in AttentionKind::ALL.into_iter().enumerate() {
                dec[i] = dec[i].min(time_decode(s, kind, &mut cache, n, decode)?);
            }
        }
        let per_token = |t: f64| 1e6 * t / n as f64;
        let rate = |t: f64| decode as f64 / t;
        speed.push(vec![
            json!(n),
            json!(per_token(best[0])),
            json!(per_token(best[1])),
            json!(best[0] / best[1]),
            json!(rate(dec[0])),
            json!(rate(dec[1])),
            json!(dec[0] / dec[1]),
        ]);
        if n >= 512 {
            let mib = |b: usize| b as f64 / (1u64 << 20) as f64;
            memory.push(vec![
                json!(n),
                json!(mib(peaks[0])),
                json!(mib(peaks[1])),
                json!(peaks[0] as f64 / peaks[1].max(1) as f64),
                json!(mib(n * n * 4)),
            ]);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    speed.rows.reverse();
    memory.rows.reverse();
    speed.notes.push(format!(
        "{} threads. Prefill: one layer's attention of n queries over the n keys of a real prompt (layer 0 of a KV cache filled by the model from the reference text), the best of at least three runs of each path, alternating. Decode: the whole model, {decode} tokens after a context of n real tokens, the faster of two rounds of each path, alternating. The cache was filled by a tiled prefill of {longest} tokens in {fill_seconds:.1} s.",
        s.threads
    ));
    memory.notes.push(format!(
        "Measured by a counting allocator around one attention call ({} threads: naive holds one head's score matrix per running task). Tiled holds a few tiles of {} keys per task, whatever the prompt's length.",
        s.threads,
        attention::tiled::BK
    ));
    Ok((speed, memory))
}
