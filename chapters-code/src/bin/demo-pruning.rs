//! Pruning: remove weights from the course model and measure what it loses — unstructured
//! (magnitude, Wanda, SparseGPT) at several sparsities and 2:4, structured (whole blocks,
//! feed-forward channels), and GPTQ, the same solver as SparseGPT used to round to 4 bits.

use anyhow::{Context, Result, bail};
use chapters_code::assets;
use chapters_code::demo::{Column, DemoArgs, ModelArgs, Provenance, Report, Table, progress};
use chapters_code::eval::{Eval, ModelBench, agreement};
use chapters_code::formats::{Gguf, GgufWriter};
use chapters_code::kernels::pool::ThreadPool;
use chapters_code::model::Llama;
use chapters_code::obs::{self, DAMP};
use chapters_code::prune::structured::{
    block_influence, channel_importance, drop_blocks, least_influential, shrink_ffn,
};
use chapters_code::prune::{Evidence, Method, Pattern, prune_model};
use chapters_code::quant::awq;
use chapters_code::quant::gptq::{gptq_model, gptq_model_rescaled};
use chapters_code::quant::requantize::{Target, requantize, requantize_rescaled};
use chapters_code::tokenizer::Tokenizer;
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

    /// Calibration text [default: models/lee.cor, news articles the reference text does not
    /// hold].
    #[arg(long)]
    calibration_text: Option<std::path::PathBuf>,

    /// Dampening of SparseGPT's and GPTQ's Hessians: this share of their mean diagonal is
    /// added to the diagonal.
    #[arg(long, default_value_t = DAMP, value_parser = parse_damp)]
    damp: f64,

    /// Also compare Q4_0 by rounding and by GPTQ (always with --benchmark).
    #[arg(long)]
    gptq: bool,

    /// Chunks of 512 tokens of the calibration text.
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

fn parse_damp(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..=10.0).contains(&x) => Ok(x),
        _ => Err(format!(
            "`{s}`: a share of the mean diagonal, from 0 to 10 (0.01 = 1%)"
        )),
    }
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

/// The file's bytes parsed back (and written to `dir` as `name` when asked).
fn materialize(writer: &GgufWriter, dir: Option<&std::path::Path>, name: &str) -> Result<Gguf> {
    let bytes = writer.to_bytes();
    if let Some(dir) = dir {
        std::fs::write(dir.join(format!("model.{name}.gguf")), &bytes)
            .with_context(|| format!("writing into {}", dir.display()))?;
    }
    Ok(Gguf::from_bytes(bytes)?)
}

/// One token's pass over every block matrix, one thread: the pruned model's dense Q8_0
/// matrices row by row and with the engine's kernel, the same matrices packed 2:4, and the
/// source's Q4_1 matrices with the engine's kernel. The median of 15 passes each, side by side.
fn sparse_kernel_table(source: &Gguf, pruned: &Gguf) -> Result<Table> {
    use chapters_code::formats::gguf::cast_slice;
    use chapters_code::kernels::matmul::{Acts, QMatrix, matmul};
    use chapters_code::kernels::sparse24::Matrix24;
    use chapters_code::quant::{BlockQ8_0, quantize::quantize_acts_q8_0};
    let level = chapters_code::kernels::simd();
    let one = ThreadPool::new(1);
    let names: Vec<&str> = pruned
        .tensors
        .iter()
        .filter(|t| t.name.starts_with("blk.") && t.dims.len() == 2)
        .map(|t| t.name.as_str())
        .collect();
    let mut dense = Vec::new();
    let mut packed = Vec::new();
    let mut original = Vec::new();
    for name in &names {
        let view = pruned.tensor(name)?;
        if view.info.ggml_type != chapters_code::formats::GgmlType::Q8_0 {
            bail!(
                "{name} is {}, not Q8_0: the 2:4 kernel packs Q8_0 rows (rows of whole 32-weight blocks)",
                view.info.ggml_type
            );
        }
        let blocks: &[BlockQ8_0] =
            cast_slice(view.data).context("the pruned model's matrices are Q8_0")?;
        let m = QMatrix::from_view(view)?;
        packed.push(Matrix24::pack(m.rows, m.cols, blocks)?);
        dense.push(m);
        original.push(QMatrix::from_view(source.tensor(name)?)?);
    }
    let mut rng = chapters_code::sampling::Rng::new(7);
    let xs: Vec<Vec<f32>> = dense
        .iter()
        .map(|m| (0..m.cols).map(|_| rng.next_f32() - 0.5).collect())
        .collect();
    let q8: Vec<Vec<BlockQ8_0>> = xs.iter().map(|x| quantize_acts_q8_0(x)).collect();
    let mut out = vec![0.0f32; dense.iter().map(|m| m.rows).max().unwrap_or(0)];
    let mut time = |pass: &mut dyn FnMut(&mut [f32])| -> f64 {
        let mut runs: Vec<f64> = (0..15)
            .map(|_| {
                let started = std::time::Instant::now();
                pass(&mut out);
                started.elapsed().as_secs_f64()
            })
            .collect();
        runs.sort_by(f64::total_cmp);
        runs[runs.len() / 2]
    };
    let rows_dense = time(&mut |out: &mut [f32]| {
        for (m, a) in dense.iter().zip(&q8) {
            for (r, o) in out[..m.rows].iter_mut().enumerate() {
                let row: &[BlockQ8_0] = cast_slice(m.row(r)).unwrap_or_default();
                *o = chapters_code::kernels::dot_q8_0_q8_0(level, row, a);
            }
        }
    });
    let rows_24 = time(&mut |out: &mut [f32]| {
        for (m, a) in packed.iter().zip(&q8) {
            m.matvec(level, a, &mut out[..m.rows]);
        }
    });
    let acts_for = |ms: &[QMatrix]| -> Vec<Acts> {
        ms.iter()
            .zip(&xs)
            .map(|(m, x)| Acts::new(m.act_format(), x, m.cols))
            .collect()
    };
    let (dense_acts, source_acts) = (acts_for(&dense), acts_for(&original));
    let engine_dense = time(&mut |out: &mut [f32]| {
        for (m, a) in dense.iter().zip(&dense_acts) {
            matmul(&one, m, a, &mut out[..m.rows]);
        }
    });
    let engine_source = time(&mut |out: &mut [f32]| {
        for (m, a) in original.iter().zip(&source_acts) {
            matmul(&one, m, a, &mut out[..m.rows]);
        }
    });
    let bytes = |ms: &[QMatrix]| ms.iter().map(|m| m.rows * m.row_bytes).sum::<usize>();
    let bytes_24: usize = packed.iter().map(Matrix24::bytes).sum();
    let mut table = Table::new(
        "prune-sparse-kernel",
        "What 2:4 sparsity buys a CPU: one token through every block matrix, one thread",
        vec![
            Column::new("kernel", "Weights and kernel"),
            Column::new("mb", "Bytes read").unit("MB").decimals(1),
            Column::new("ms", "Time per token").unit("ms").decimals(2),
            Column::new("gbs", "Effective bandwidth")
                .unit("GB/s")
                .decimals(1),
            Column::new("vs_dense", "vs dense Q8_0, same loop")
                .unit("×")
                .decimals(2),
        ],
    );
    let rows = [
        ("dense Q8_0, row by row", bytes(&dense), rows_dense),
        ("2:4 Q8_0, row by row", bytes_24, rows_24),
        ("dense Q8_0, engine kernel", bytes(&dense), engine_dense),
        (
            "source Q4_1, engine kernel",
            bytes(&original),
            engine_source,
        ),
    ];
    for (name, b, t) in rows {
        table.push(vec![
            json!(name),
            json!(b as f64 / 1e6),
            json!(1e3 * t),
            json!(b as f64 / t / 1e9),
            json!(rows_dense / t),
        ]);
    }
    table.notes.push(format!(
        "The 2:4 model of the sparsity table (its last method), {} block matrices; the median of 15 passes each, measured one after the other in this run on the {} path. \"Row by row\": one dot product per row, the loop the 2:4 kernel has; \"engine kernel\": the matrix product the model runs (four rows at a time, prefetching), which the 2:4 format has not been given. The 2:4 dot product gives the dense one's bits (tested).",
        names.len(),
        // The path the kernels really take (an AVX-512 CPU runs the AVX2 ones).
        chapters_code::kernels::simd_path().name()
    ));
    Ok(table)
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

    // The source is read into memory like every pruned model, so that all read their weights
    // the same way (a memory-mapped file decoded slower than the same bytes on the heap here).
    let path = cli.run.model_path();
    drop(assets::open_model(&path)?); // a missing or broken file gets its usual message
    let source = Gguf::from_bytes(
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let model = Llama::load(&source)?;
    if let Some(&d) = drops.iter().find(|&&d| d >= model.layers.len()) {
        bail!(
            "--drop-blocks {d}: the model has {} blocks; drop fewer",
            model.layers.len()
        );
    }
    let tokenizer = Tokenizer::from_gguf(&source)?;
    let scored = tokenizer.encode(&assets::read_text(&assets::perplexity_text_path())?, true);
    let calibration_path = cli
        .calibration_text
        .clone()
        .unwrap_or_else(assets::calibration_text_path);
    let calibration = tokenizer.encode(&assets::read_text(&calibration_path)?, true);
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
    let b = ModelBench {
        pool: ThreadPool::new(cli.run.threads()),
        tokenizer,
        scored,
        chunks,
        decode_tokens: cli.decode_tokens,
    };
    let steps =
        2 + methods.len() * patterns.len() + drops.len() + keeps.len() + if bench { 5 } else { 0 };
    let bar = progress::steps(steps as u64, "the source model");
    let base = b.evaluate(&source, !drops.is_empty() || !keeps.is_empty())?;
    bar.inc(1);

    bar.set_message("calibrating on models/lee.cor");
    let cal_tokens = &calibration[..cal_need];
    let started = std::time::Instant::now();
    let stats = awq::calibrate(&model, &b.pool, cal_tokens, 512)?;
    let gptq_wanted = bench || cli.gptq;
    let hessians = if methods.contains(&Method::SparseGpt) || gptq_wanted {
        Some(obs::collect_hessians(&model, &b.pool, cal_tokens, 512)?)
    } else {
        None
    };
    let calibrate_s = started.elapsed().as_secs_f64();
    bar.inc(1);
    let evidence = Evidence {
        stats: Some(&stats),
        hessians: hessians.as_ref(),
        damp: cli.damp,
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
    let mut two_four: Option<Gguf> = None;
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
            let last_24 = bench && pattern == (Pattern::NOfM { n: 2, m: 4 });
            sparsity.push(vec![
                json!(method.name()),
                json!(pattern.label()),
                json!(100.0 * report.sparsity()),
                json!(e.ppl),
                json!(100.0 * (e.ppl / base.ppl - 1.0)),
                json!(100.0 * agreement(&e.predictions, &base.predictions)),
                json!(seconds),
            ]);
            if last_24 {
                two_four = Some(gguf);
            }
            bar.inc(1);
        }
    }
    sparsity.notes.push(format!(
        "Perplexity on the first {chunks} chunks of 512 tokens of the reference text; the source (the Q4_1 file as downloaded) scores {:.2}. Calibration: {} chunks of 512 tokens of {} ({calibrate_s:.0} s for statistics and Hessians). Every block matrix (Q, K, V, output, gate, up, down) is pruned per output row; embeddings, head and norms are kept. SparseGPT: damping {} of the mean Hessian diagonal, masks per row in blocks of {} columns. Stored at Q8_0, so the zeros stay exact zeros: the file is no smaller and a dense kernel no faster.",
        base.ppl,
        cli.calibration_chunks,
        calibration_path.display(),
        cli.damp,
        chapters_code::prune::sparsegpt::MASK_BLOCK
    ));
    let mut tables = vec![sparsity];
    if let Some(pruned) = &two_four {
        bar.set_message("the 2:4 kernel");
        tables.push(sparse_kernel_table(&source, pruned)?);
    }

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
            let e = b.evaluate(&gguf, false)?;
            let (tok_s, speedup) = b.paired_speed(&model, &Llama::load(&gguf)?, 5)?;
            structured.push(vec![
                json!(kind),
                json!(what),
                json!(bytes as f64 / 1e6),
                json!(e.ppl),
                json!(100.0 * (e.ppl / base.ppl - 1.0)),
                json!(100.0 * agreement(&e.predictions, &base.predictions)),
                json!(tok_s),
                json!(speedup),
            ]);
            bar.inc(1);
        }
        structured.notes.push(format!(
            "Depth: the blocks of least influence (1 − cos between a block's input and output residual stream, mean over the calibration tokens), copied byte for byte and renumbered. Width: every block keeps its most important feed-forward channels (√E[h²] · ‖W_down[:, c]‖); gate and up rows copied, down requantized to Q4_1. Decode: greedy runs of {} tokens, {} thread(s), taking turns with the source model (5 rounds); the speed and the ratio to the source are medians over rounds, the source's row is one run before them. All models, the source too, are read from memory. Block influence, block 0 to {}: {}.",
            cli.decode_tokens,
            b.pool.n_threads(),
            influence.len() - 1,
            influence.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(", ")
        ));
        tables.push(structured);
    }

    // GPTQ against rounding, everything at 4 bits.
    if let (true, Some(h)) = (gptq_wanted, hessians.as_ref()) {
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
        let (report, writer) = gptq_model(&b.pool, &source, h, cli.damp, true)?;
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
        // AWQ first (its factors chosen for Q4_0 on the same calibration text), then each
        // way of rounding.
        bar.set_message("Q4_0 by AWQ and rounding");
        let started = std::time::Instant::now();
        let plan = awq::plan(&source, Target::Q4_0, &stats)?;
        let plan_seconds = started.elapsed().as_secs_f64();
        let (awq_report, awq_writer) =
            requantize_rescaled(&source, Target::Q4_0, true, &|n| plan.rescale(n))?;
        let awq_writer = awq_writer.context("Q4_0 is a GGUF format")?;
        let seconds = started.elapsed().as_secs_f64();
        let awq_rtn = b.evaluate(
            &materialize(&awq_writer, cli.write.as_deref(), "Q4_0-awq-rtn")?,
            false,
        )?;
        row(
            "Q4_0, AWQ + round to nearest",
            awq_report.bits_per_weight,
            awq_writer.to_bytes().len(),
            &awq_rtn,
            Some(seconds),
        );
        bar.inc(1);
        bar.set_message("Q4_0 by AWQ and GPTQ");
        let started = std::time::Instant::now();
        let (awq_gptq, writer) =
            gptq_model_rescaled(&b.pool, &source, h, cli.damp, true, &|n| plan.rescale(n))?;
        let seconds = started.elapsed().as_secs_f64() + plan_seconds;
        let e = b.evaluate(
            &materialize(&writer, cli.write.as_deref(), "Q4_0-awq-gptq")?,
            false,
        )?;
        row(
            "Q4_0, AWQ + GPTQ",
            awq_gptq.bits_per_weight,
            writer.to_bytes().len(),
            &e,
            Some(seconds),
        );
        bar.inc(1);
        gptq.notes.push(format!(
            "Every matrix at Q4_0 (4.5 bits per weight), the tied embedding and output head too: that is what a 3.5× compression against F16 takes. GPTQ rounds the {} block matrices with their input Hessians (damping {}, scales per block of 32 taken as the sweep reaches them, columns in file order); the embedding is rounded to nearest in both rows (GPTQ would tune it for the head and spoil it as an embedding). AWQ rows: the quantization chapter's activation-aware factors searched for Q4_0 on the same calibration text, folded into the norms and the value projection, then rounded to nearest or by GPTQ with the Hessians of the rescaled inputs. Perplexity as in the sparsity table; F16 is the source's weights dequantized.",
            report.by_gptq,
            cli.damp
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
