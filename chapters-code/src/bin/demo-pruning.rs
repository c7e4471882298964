//! Pruning: remove weights from the course model and measure what it loses — unstructured
//! (magnitude, Wanda, SparseGPT) at several sparsities and 2:4, structured (whole blocks,
//! feed-forward channels), and GPTQ, the same solver as SparseGPT used to round to 4 bits.

use anyhow::{Context, Result, bail};
use chapters_code::assets;
use chapters_code::demo::{Column, DemoArgs, ModelArgs, Provenance, Report, Table, progress};
use chapters_code::eval::{agreement, perplexity};
use chapters_code::formats::{Gguf, GgufWriter};
use chapters_code::generate::{Request, generate};
use chapters_code::kernels::pool::ThreadPool;
use chapters_code::model::Llama;
use chapters_code::obs::{self, DAMP};
use chapters_code::prune::structured::{
    block_influence, channel_importance, drop_blocks, least_influential, shrink_ffn,
};
use chapters_code::prune::{Evidence, Method, Pattern, prune_model};
use chapters_code::quant::awq;
use chapters_code::quant::gptq::gptq_model;
use chapters_code::quant::requantize::{Target, requantize};
use chapters_code::sampling::SamplingParams;
use chapters_code::tokenizer::{TokenId, Tokenizer};
use clap::Parser;
use serde_json::{Value, json};

/// Prune the model (dequantized from its Q4_1 file, stored back at 8 bits) by magnitude, Wanda
/// and SparseGPT, calibrated on a text that is not scored (models/lee.cor), and measure
/// perplexity on the reference text. By default one sparsity (50%) on 2 chunks; --benchmark
/// adds every sparsity and 2:4, depth and width pruning with decode speed, and GPTQ against
/// rounding at 4 bits. --verify checks every file it writes.
#[derive(Parser, Debug)]
#[command(
    name = "demo-pruning",
    version,
    after_help = "Examples:\n  demo-pruning --patterns 0.5,2:4 --chunks 4\n  demo-pruning --methods wanda --patterns 0.3 --write /tmp/pruned\n  demo-pruning --benchmark --output json\n"
)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,

    #[command(flatten)]
    run: ModelArgs,

    /// Methods, comma-separated: magnitude, wanda, sparsegpt [default: all].
    #[arg(long, value_delimiter = ',', value_parser = parse_method)]
    methods: Vec<Method>,

    /// Sparsities, comma-separated: a fraction (0.5) or n:m kept of every m (2:4)
    /// [default: 0.5; with --benchmark 0.1,0.3,0.5,0.7,2:4].
    #[arg(long, value_delimiter = ',', value_parser = parse_pattern)]
    patterns: Vec<Pattern>,

    /// Chunks of 512 tokens of the reference text scored for perplexity
    /// [default: 2; with --benchmark 8].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..1000))]
    chunks: Option<u64>,

    /// Chunks of 512 tokens of the calibration text (models/lee.cor holds 9).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..1000))]
    calibration_chunks: u64,

    /// Depth pruning: numbers of blocks to drop, comma-separated [default: with --benchmark
    /// 2,4,8].
    #[arg(long, value_delimiter = ',')]
    drop_blocks: Vec<usize>,

    /// Width pruning: feed-forward channels to keep per block, multiples of 32, comma-separated
    /// [default: with --benchmark 1280,1024,768].
    #[arg(long, value_delimiter = ',')]
    ffn_keep: Vec<usize>,

    /// Tokens decoded (greedy) to measure the speed of structured pruning.
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,

    /// Write each pruned GGUF into this directory.
    #[arg(long)]
    write: Option<std::path::PathBuf>,
}

fn parse_method(s: &str) -> Result<Method, String> {
    Method::parse(s)
        .ok_or_else(|| format!("unknown method `{s}`: use magnitude, wanda or sparsegpt"))
}

fn parse_pattern(s: &str) -> Result<Pattern, String> {
    if let Some((keep, m)) = s.split_once(':') {
        let (keep, m): (usize, usize) = match (keep.parse(), m.parse()) {
            (Ok(k), Ok(m)) if k <= m && m > 0 => (k, m),
            _ => return Err(format!("`{s}`: n:m keeps n of every m weights, e.g. 2:4")),
        };
        return Ok(Pattern::NOfM { n: m - keep, m });
    }
    match s.parse::<f32>() {
        Ok(x) if (0.0..1.0).contains(&x) => Ok(Pattern::Unstructured(x)),
        _ => Err(format!(
            "`{s}`: a sparsity is a fraction from 0 to below 1 (0.5), or n:m"
        )),
    }
}

/// What one model measured.
struct Eval {
    ppl: f64,
    predictions: Vec<TokenId>,
    decode_tok_s: Option<f64>,
}

/// The texts and the machinery every evaluation shares.
struct Bench {
    pool: ThreadPool,
    tokenizer: Tokenizer,
    scored: Vec<TokenId>,
    chunks: usize,
    decode_tokens: usize,
}

impl Bench {
    fn evaluate(&self, gguf: &Gguf, decode: bool) -> Result<Eval> {
        let model = Llama::load(gguf)?;
        let r = perplexity(
            &model,
            &self.pool,
            &self.scored,
            512,
            Some(self.chunks),
            |_, _, _| {},
        )?;
        let decode_tok_s = if decode && self.decode_tokens > 0 {
            let request = Request {
                prompt_ids: self.scored.iter().copied().take(32).collect(),
                max_tokens: self.decode_tokens,
                sampling: SamplingParams::default(),
                stop_tokens: vec![],
                stop_strings: vec![],
            };
            let mut speeds = (0..3)
                .map(|_| {
                    Ok(
                        generate(&model, &self.tokenizer, &self.pool, &request, |_| {})?
                            .decode_tokens_per_s(),
                    )
                })
                .collect::<Result<Vec<f64>>>()?;
            speeds.sort_by(f64::total_cmp);
            Some(speeds[1])
        } else {
            None
        };
        Ok(Eval {
            ppl: r.ppl,
            predictions: r.predictions,
            decode_tok_s,
        })
    }
}

/// The file's bytes parsed back (and written to `dir` as `name` when asked).
fn materialize(writer: &GgufWriter, dir: Option<&std::path::Path>, name: &str) -> Result<Gguf> {
    let bytes = writer.to_bytes();
    if let Some(dir) = dir {
        std::fs::write(dir.join(format!("model.{name}.gguf")), &bytes)
            .with_context(|| format!("writing into {}", dir.display()))?;
    }
    Ok(Gguf::from_bytes(bytes)?)
}

fn main() -> std::process::ExitCode {
    chapters_code::demo::exit::run(demo)
}

fn demo() -> Result<()> {
    let cli = Cli::parse();
    let bench = cli.demo.benchmark;
    let methods = if cli.methods.is_empty() {
        Method::ALL.to_vec()
    } else {
        cli.methods.clone()
    };
    let patterns = match (cli.patterns.is_empty(), bench) {
        (false, _) => cli.patterns.clone(),
        (true, false) => vec![Pattern::Unstructured(0.5)],
        (true, true) => [0.1, 0.3, 0.5, 0.7]
            .map(Pattern::Unstructured)
            .into_iter()
            .chain([Pattern::NOfM { n: 2, m: 4 }])
            .collect(),
    };
    let pick = |given: &[usize], default: &[usize]| -> Vec<usize> {
        match (given.is_empty(), bench) {
            (false, _) => given.to_vec(),
            (true, true) => default.to_vec(),
            (true, false) => vec![],
        }
    };
    let drops = pick(&cli.drop_blocks, &[2, 4, 8]);
    let keeps = pick(&cli.ffn_keep, &[1280, 1024, 768]);
    if let Some(dir) = &cli.write {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }

    let source = assets::open_model(&cli.run.model_path())?;
    let model = Llama::load(&source)?;
    if let Some(&d) = drops.iter().find(|&&d| d >= model.layers.len()) {
        bail!(
            "--drop-blocks {d}: the model has {} blocks; drop fewer",
            model.layers.len()
        );
    }
    let tokenizer = Tokenizer::from_gguf(&source)?;
    let scored = tokenizer.encode(&assets::read_text(&assets::perplexity_text_path())?, true);
    let calibration = tokenizer.encode(&assets::read_text(&assets::calibration_text_path())?, true);
    let cal_need = cli.calibration_chunks as usize * 512;
    if calibration.len() < cal_need {
        bail!(
            "--calibration-chunks {}: the calibration text has {} tokens, {} whole chunks of 512",
            cli.calibration_chunks,
            calibration.len(),
            calibration.len() / 512
        );
    }
    let chunks = cli.chunks.unwrap_or(if bench { 8 } else { 2 }) as usize;
    if scored.len() < chunks * 512 {
        bail!(
            "--chunks {chunks}: the reference text has {} tokens",
            scored.len()
        );
    }
    let b = Bench {
        pool: ThreadPool::new(cli.run.threads()),
        tokenizer,
        scored,
        chunks,
        decode_tokens: cli.decode_tokens,
    };
    let steps =
        2 + methods.len() * patterns.len() + drops.len() + keeps.len() + if bench { 3 } else { 0 };
    let bar = progress::steps(steps as u64, "the source model");
    let base = b.evaluate(&source, !drops.is_empty() || !keeps.is_empty())?;
    bar.inc(1);

    bar.set_message("calibrating on models/lee.cor");
    let cal_tokens = &calibration[..cal_need];
    let started = std::time::Instant::now();
    let stats = awq::calibrate(&model, &b.pool, cal_tokens, 512)?;
    let hessians = if methods.contains(&Method::SparseGpt) || bench {
        Some(obs::collect_hessians(&model, &b.pool, cal_tokens, 512)?)
    } else {
        None
    };
    let calibrate_s = started.elapsed().as_secs_f64();
    bar.inc(1);
    let evidence = Evidence {
        stats: Some(&stats),
        hessians: hessians.as_ref(),
        damp: DAMP,
    };
    let mut verified = true;

    // Unstructured and n:m.
    let mut sparsity = Table::new(
        "prune-sparsity",
        "Perplexity against sparsity: every block matrix pruned, stored at 8 bits",
        vec![
            Column::new("method", "Method"),
            Column::new("pattern", "Sparsity"),
            Column::new("zeroed", "Zero weights in the blocks")
                .unit("%")
                .decimals(1),
            Column::new("ppl", "Perplexity").decimals(2),
            Column::new("dppl", "ΔPPL vs source").unit("%").decimals(1),
            Column::new("agreement", "Same next token as source")
                .unit("%")
                .decimals(1),
            Column::new("seconds", "Prune time").unit("s").decimals(1),
        ],
    );
    for &pattern in &patterns {
        for &method in &methods {
            bar.set_message(format!("{} {}", method.name(), pattern.label()));
            let started = std::time::Instant::now();
            let (report, writer) =
                prune_model(&b.pool, &source, method, pattern, evidence, Target::Q8_0)?;
            let seconds = started.elapsed().as_secs_f64();
            let name = format!(
                "{}-{}",
                method.name(),
                pattern.label().replace('%', "pct").replace(':', "of")
            );
            let gguf = materialize(&writer, cli.write.as_deref(), &name)?;
            if cli.demo.verify {
                verified &= (report.sparsity() - f64::from(pattern.sparsity())).abs() < 0.01;
            }
            let e = b.evaluate(&gguf, false)?;
            sparsity.push(vec![
                json!(method.name()),
                json!(pattern.label()),
                json!(100.0 * report.sparsity()),
                json!(e.ppl),
                json!(100.0 * (e.ppl / base.ppl - 1.0)),
                json!(100.0 * agreement(&e.predictions, &base.predictions)),
                json!(seconds),
            ]);
            bar.inc(1);
        }
    }
    sparsity.notes.push(format!(
        "Perplexity on the first {chunks} chunks of 512 tokens of the reference text; the source (the Q4_1 file as downloaded) scores {:.2}. Calibration: {} chunks of 512 tokens of models/lee.cor, other news articles than the scored ones ({calibrate_s:.0} s for statistics and Hessians). Every block matrix (Q, K, V, output, gate, up, down) is pruned per output row; embeddings, head and norms are kept. SparseGPT: damping {DAMP} of the mean Hessian diagonal, masks per row in blocks of {} columns. Stored at Q8_0, so the zeros stay exact zeros: the file is no smaller and a dense kernel no faster.",
        base.ppl,
        cli.calibration_chunks,
        chapters_code::prune::sparsegpt::MASK_BLOCK
    ));
    let mut tables = vec![sparsity];

    // Depth and width.
    if !drops.is_empty() || !keeps.is_empty() {
        let influence = block_influence(&model, &b.pool, cal_tokens, 512)?;
        let importance = channel_importance(&source, &stats)?;
        let mut structured = Table::new(
            "prune-structured",
            "Structured pruning: fewer blocks, narrower feed-forward layers (no healing)",
            vec![
                Column::new("kind", "Pruned"),
                Column::new("what", "Removed"),
                Column::new("size", "File size").unit("MB").decimals(1),
                Column::new("ppl", "Perplexity").decimals(1),
                Column::new("dppl", "ΔPPL vs source").unit("%").decimals(0),
                Column::new("agreement", "Same next token as source")
                    .unit("%")
                    .decimals(1),
                Column::new("tok_s", "Decode").unit("tok/s").decimals(1),
                Column::new("speedup", "Decode vs source")
                    .unit("×")
                    .decimals(2),
            ],
        );
        let source_tok_s = base.decode_tok_s.unwrap_or(f64::NAN);
        structured.push(vec![
            json!("none (source)"),
            json!("—"),
            json!(source.file_len() as f64 / 1e6),
            json!(base.ppl),
            json!(0.0),
            json!(100.0),
            json!(source_tok_s),
            json!(1.0),
        ]);
        let jobs = drops
            .iter()
            .map(|&d| (true, d))
            .chain(keeps.iter().map(|&k| (false, k)));
        for (depth, n) in jobs {
            let (kind, what, writer) = if depth {
                let drop = least_influential(&influence, n);
                let what = format!("{n} blocks: {drop:?}");
                ("depth", what, drop_blocks(&source, &drop)?)
            } else {
                let what = format!(
                    "{} of {} channels",
                    model.config.ffn_dim - n,
                    model.config.ffn_dim
                );
                ("width", what, shrink_ffn(&source, &importance, n)?)
            };
            bar.set_message(format!("{kind} {n}"));
            let bytes = writer.to_bytes().len();
            let gguf = materialize(&writer, cli.write.as_deref(), &format!("{kind}-{n}"))?;
            let e = b.evaluate(&gguf, true)?;
            let tok_s = e.decode_tok_s.unwrap_or(f64::NAN);
            structured.push(vec![
                json!(kind),
                json!(what),
                json!(bytes as f64 / 1e6),
                json!(e.ppl),
                json!(100.0 * (e.ppl / base.ppl - 1.0)),
                json!(100.0 * agreement(&e.predictions, &base.predictions)),
                json!(tok_s),
                json!(tok_s / source_tok_s),
            ]);
            bar.inc(1);
        }
        structured.notes.push(format!(
            "Depth: the blocks of least influence (1 − cos between a block's input and output residual stream, mean over the calibration tokens), copied byte for byte and renumbered. Width: every block keeps its most important feed-forward channels (√E[h²] · ‖W_down[:, c]‖); gate and up rows copied, down requantized to Q4_1. Decode: the median of 3 greedy runs of {} tokens, {} thread(s), in this run beside the source's. Block influence, block 0 to {}: {}.",
            cli.decode_tokens,
            b.pool.n_threads(),
            influence.len() - 1,
            influence.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(", ")
        ));
        tables.push(structured);
    }

    // GPTQ against rounding, everything at 4 bits.
    if let (true, Some(h)) = (bench, hessians.as_ref()) {
        let mut gptq = Table::new(
            "prune-gptq",
            "4-bit Q4_0 by rounding and by GPTQ (the SparseGPT solver rounding instead of pruning)",
            vec![
                Column::new("recipe", "Recipe"),
                Column::new("bpw", "Bits per weight").decimals(2),
                Column::new("size", "File size").unit("MB").decimals(1),
                Column::new("vs_f16", "Compression vs F16")
                    .unit("×")
                    .decimals(2),
                Column::new("ppl", "Perplexity").decimals(3),
                Column::new("dppl", "ΔPPL vs F16").unit("%").decimals(2),
                Column::new("agreement", "Same next token as F16")
                    .unit("%")
                    .decimals(1),
                Column::new("seconds", "Quantize time")
                    .unit("s")
                    .decimals(1),
            ],
        );
        bar.set_message("F16");
        let (f16_report, f16_writer) = requantize(&source, Target::F16, true)?;
        let f16_writer = f16_writer.context("F16 is a GGUF format")?;
        let f16 = b.evaluate(&materialize(&f16_writer, None, "F16")?, false)?;
        let f16_bpw = f16_report.bits_per_weight;
        bar.inc(1);
        let mut row = |recipe: &str, bpw: f64, bytes: usize, e: &Eval, seconds: Option<f64>| {
            gptq.push(vec![
                json!(recipe),
                json!(bpw),
                json!(bytes as f64 / 1e6),
                json!(f16_bpw / bpw),
                json!(e.ppl),
                json!(100.0 * (e.ppl / f16.ppl - 1.0)),
                json!(100.0 * agreement(&e.predictions, &f16.predictions)),
                seconds.map_or(Value::Null, |s| json!(s)),
            ]);
        };
        row("F16", f16_bpw, f16_writer.to_bytes().len(), &f16, None);
        bar.set_message("Q4_0 by rounding");
        let started = std::time::Instant::now();
        let (rtn_report, rtn_writer) = requantize(&source, Target::Q4_0, true)?;
        let rtn_writer = rtn_writer.context("Q4_0 is a GGUF format")?;
        let seconds = started.elapsed().as_secs_f64();
        let rtn = b.evaluate(
            &materialize(&rtn_writer, cli.write.as_deref(), "Q4_0-rtn")?,
            false,
        )?;
        row(
            "Q4_0, round to nearest",
            rtn_report.bits_per_weight,
            rtn_writer.to_bytes().len(),
            &rtn,
            Some(seconds),
        );
        bar.inc(1);
        bar.set_message("Q4_0 by GPTQ");
        let started = std::time::Instant::now();
        let (report, writer) = gptq_model(&b.pool, &source, h, DAMP, true)?;
        let seconds = started.elapsed().as_secs_f64();
        let gguf = materialize(&writer, cli.write.as_deref(), "Q4_0-gptq")?;
        if cli.demo.verify {
            verified &= gguf
                .tensors
                .iter()
                .filter(|t| t.dims.len() == 2)
                .all(|t| t.ggml_type == chapters_code::formats::GgmlType::Q4_0);
        }
        let e = b.evaluate(&gguf, false)?;
        row(
            "Q4_0, GPTQ",
            report.bits_per_weight,
            writer.to_bytes().len(),
            &e,
            Some(seconds),
        );
        bar.inc(1);
        gptq.notes.push(format!(
            "Every matrix at Q4_0 (4.5 bits per weight), the tied embedding and output head too: that is what a 3.5× compression against F16 takes. GPTQ rounds the {} block matrices with their input Hessians (damping {DAMP}, scales per block of 32 taken as the sweep reaches them, columns in file order); the embedding is rounded to nearest in both rows (GPTQ would tune it for the head and spoil it as an embedding). Perplexity as in the sparsity table; F16 is the source's weights dequantized.",
            report.by_gptq
        ));
        tables.push(gptq);
    }
    bar.finish_and_clear();

    let report = Report {
        demo: "pruning".into(),
        provenance: Provenance::current(),
        result: json!({
            "source_ppl": base.ppl,
            "chunks": chunks,
            "calibration_chunks": cli.calibration_chunks,
            "calibration_seconds": calibrate_s,
        }),
        tables,
        verified: cli.demo.verify.then_some(verified),
    };
    report.emit(cli.demo.output, |out| {
        writeln!(
            out,
            "pruned {} (source perplexity {:.2})",
            cli.run.model_path().display(),
            base.ppl
        )
    })?;
    if cli.demo.verify && !verified {
        bail!("a pruned file is not what was asked for");
    }
    Ok(())
}
