//! Quantization: the course model requantized to every block format, measured.

use anyhow::{Result, bail};
use chapters_code::demo::{Column, DemoArgs, ModelArgs, Provenance, Report, Table, progress};
use chapters_code::eval::{agreement, perplexity_with_cache};
use chapters_code::formats::Gguf;
use chapters_code::generate::{Request, generate_with_cache};
use chapters_code::kernels::pool::ThreadPool;
use chapters_code::model::{KvPrecision, Llama};
use chapters_code::quant::awq;
use chapters_code::quant::requantize::{Requantized, Target, requantize, requantize_rescaled};
use chapters_code::sampling::SamplingParams;
use chapters_code::tokenizer::TokenId;
use chapters_code::tokenizer::Tokenizer;
use chapters_code::{assets, formats::GgmlType};
use clap::Parser;
use serde_json::{Value, json};

/// Requantize every weight matrix of the model (dequantized from its Q4_1 file) to F16, Q8_0,
/// Q6_K, Q5_K, Q5_0, Q4_K, Q4_1, Q4_0 and NF4, and measure each: bits per weight, file size,
/// compression, reconstruction error, and perplexity on the first chunks of the reference
/// text (every format GGUF can hold). --verify writes each GGUF to memory,
/// parses it back and checks every tensor.
#[derive(Parser, Debug)]
#[command(
    name = "demo-quantization",
    version,
    after_help = "Examples:\n  demo-quantization --formats q8_0,q4_0 --chunks 8\n  demo-quantization --formats q4_0 --quantize-output\n  demo-quantization --formats q4_k --write /tmp/quant\n"
)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,

    #[command(flatten)]
    run: ModelArgs,

    /// Formats to evaluate, comma-separated [default: all].
    #[arg(long, value_delimiter = ',')]
    formats: Vec<String>,

    /// Chunks of 512 tokens of the reference text for perplexity (0 skips it).
    #[arg(long, default_value_t = 8)]
    chunks: u64,

    /// Perplexity text [default: the reference text, models/lee_background.cor].
    #[arg(long)]
    text: Option<std::path::PathBuf>,

    /// Quantize the output head (here the tied token embedding) to the target too, instead of
    /// keeping it at 8 bits as llama-quantize does.
    #[arg(long)]
    quantize_output: bool,

    /// Tokens to decode (greedy, after a prompt of the text's first 32 tokens) to measure each
    /// format's decode speed (0 skips it).
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,

    /// Decode runs per model; the median speed is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..100))]
    decode_runs: u64,

    /// Formats to quantize a second time with activation-aware scaling (AWQ), calibrated on
    /// the end of the text (never on the chunks scored for perplexity); `none` skips it
    /// [default: those of q4_0 and q4_k that --formats selects].
    #[arg(long, value_delimiter = ',')]
    awq: Option<Vec<String>>,

    /// Chunks of 512 tokens, from the end of the text, that calibrate AWQ.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..1000))]
    calibration_chunks: u64,

    /// KV cache precisions to compare on the source model (f16, q8_0), comma-separated;
    /// `none` skips that table [default: f16,q8_0 when --formats is not given, else none].
    #[arg(long, value_delimiter = ',')]
    kv_caches: Option<Vec<String>>,

    /// Write each requantized GGUF into this directory.
    #[arg(long)]
    write: Option<std::path::PathBuf>,
}

/// One requantized model: what it is, the quantizer's report, what it measured, how long
/// quantizing took, and AWQ's choices (empty for plain rounding).
struct Row {
    label: String,
    report: Requantized,
    eval: Option<Eval>,
    seconds: f64,
    awq: Vec<awq::GroupChoice>,
}

/// What one model measured: perplexity, its top-1 predictions on the scored positions, and
/// greedy decode speed.
struct Eval {
    ppl: Option<f64>,
    predictions: Vec<TokenId>,
    decode_tok_s: Option<f64>,
}

impl Eval {
    /// ΔPPL (%) and greedy agreement (%) against `reference`: null where either side did not
    /// measure it.
    fn versus(&self, reference: &Eval) -> (Value, Value) {
        let dppl = match (self.ppl, reference.ppl) {
            (Some(p), Some(b)) => json!(100.0 * (p / b - 1.0)),
            _ => Value::Null,
        };
        let agrees = if self.predictions.is_empty() || reference.predictions.is_empty() {
            Value::Null
        } else {
            json!(100.0 * agreement(&self.predictions, &reference.predictions))
        };
        (dppl, agrees)
    }
}

/// Bits per weight of the file's 2-D matrices as they are stored.
fn source_bits_per_weight(g: &Gguf) -> f64 {
    let (bytes, weights) = g
        .tensors
        .iter()
        .filter(|t| t.dims.len() == 2)
        .fold((0u64, 0u64), |(b, w), t| {
            (b + t.n_bytes, w + t.n_elements())
        });
    8.0 * bytes as f64 / weights.max(1) as f64
}

/// Weight formats the engine's matrix kernels run.
fn engine_runs(ty: GgmlType) -> bool {
    chapters_code::kernels::matmul::QMatrix::supports(ty)
}

fn main() -> std::process::ExitCode {
    chapters_code::demo::exit::run(demo)
}

fn demo() -> Result<()> {
    let cli = Cli::parse();
    let targets: Vec<Target> = if cli.formats.is_empty() {
        Target::ALL.to_vec()
    } else {
        cli.formats
            .iter()
            .map(|f| {
                Target::parse(f).ok_or_else(|| {
                    anyhow::anyhow!(
                        "unknown format `{f}`; known: {}",
                        Target::ALL.map(|t| t.name()).join(", ")
                    )
                })
            })
            .collect::<Result<_>>()?
    };
    // Defaults follow --formats: asking for two formats runs those two, not the AWQ variants
    // or the KV table of the full run.
    let awq = cli.awq.clone().unwrap_or_else(|| {
        ["q4_0", "q4_k"]
            .into_iter()
            .filter(|f| Target::parse(f).is_some_and(|t| targets.contains(&t)))
            .map(String::from)
            .collect()
    });
    let kv_caches = cli.kv_caches.clone().unwrap_or_else(|| {
        if cli.formats.is_empty() {
            vec!["f16".into(), "q8_0".into()]
        } else {
            vec![]
        }
    });
    let awq_targets: Vec<Target> = awq
        .iter()
        .filter(|f| !f.eq_ignore_ascii_case("none"))
        .map(|f| {
            Target::parse(f)
                .filter(|t| t.ggml_type().is_some())
                .ok_or_else(|| anyhow::anyhow!("--awq: `{f}` is not a GGUF format we write"))
        })
        .collect::<Result<_>>()?;
    if let Some(dir) = &cli.write {
        std::fs::create_dir_all(dir)?;
    }
    let source = assets::open_model(&cli.run.model_path())?;
    let pool = ThreadPool::new(cli.run.threads());
    let tokenizer = Tokenizer::from_gguf(&source)?;
    let text_tokens = if cli.chunks > 0 || cli.decode_tokens > 0 {
        let text_path = cli
            .text
            .clone()
            .unwrap_or_else(assets::perplexity_text_path);
        let text = assets::read_text(&text_path)?;
        tokenizer.encode(&text, true)
    } else {
        vec![]
    };
    let kv_precisions: Vec<KvPrecision> = kv_caches
        .iter()
        .filter(|f| !f.eq_ignore_ascii_case("none"))
        .map(|f| {
            KvPrecision::parse(f).ok_or_else(|| {
                anyhow::anyhow!("--kv-caches: unknown precision `{f}`; known: f16, q8_0")
            })
        })
        .collect::<Result<_>>()?;
    let evaluate_with = |gguf: &Gguf, kv: KvPrecision| -> Result<Eval> {
        let model = Llama::load(gguf)?;
        let scored = if cli.chunks > 0 {
            Some(perplexity_with_cache(
                &model,
                &pool,
                &text_tokens,
                512,
                Some(cli.chunks as usize),
                kv,
                |_, _, _| {},
            )?)
        } else {
            None
        };
        let decode_tok_s = if cli.decode_tokens > 0 {
            let request = Request {
                prompt_ids: text_tokens.iter().copied().take(32).collect(),
                max_tokens: cli.decode_tokens,
                sampling: SamplingParams::default(),
                stop_tokens: vec![],
                stop_strings: vec![],
            };
            // The median of a few runs: one short decode on a shared machine is noisy.
            let mut speeds = (0..cli.decode_runs)
                .map(|_| {
                    Ok(
                        generate_with_cache(&model, &tokenizer, &pool, &request, kv, |_| {})?
                            .decode_tokens_per_s(),
                    )
                })
                .collect::<Result<Vec<f64>>>()?;
            speeds.sort_by(f64::total_cmp);
            Some(speeds[speeds.len() / 2])
        } else {
            None
        };
        Ok(Eval {
            ppl: scored.as_ref().map(|r| r.ppl),
            predictions: scored.map(|r| r.predictions).unwrap_or_default(),
            decode_tok_s,
        })
    };
    let evaluate = |gguf: &Gguf| evaluate_with(gguf, KvPrecision::F16);

    let extra_caches: Vec<KvPrecision> = kv_precisions
        .iter()
        .copied()
        .filter(|&p| p != KvPrecision::F16)
        .collect();
    let bar = progress::steps(
        (targets.len() + awq_targets.len() + extra_caches.len()) as u64 + 1,
        "baseline",
    );
    let baseline = evaluate(&source)?;
    let baseline_ppl = baseline.ppl;
    bar.inc(1);
    let mut cache_evals: Vec<(KvPrecision, Eval)> = Vec::new();
    for &precision in &kv_precisions {
        let eval = if precision == KvPrecision::F16 {
            Eval {
                ppl: baseline.ppl,
                predictions: baseline.predictions.clone(),
                decode_tok_s: baseline.decode_tok_s,
            }
        } else {
            bar.set_message(format!("source model with a {precision} KV cache"));
            let eval = evaluate_with(&source, precision)?;
            bar.inc(1);
            eval
        };
        cache_evals.push((precision, eval));
    }

    // AWQ calibrates on the last chunks of the text; perplexity scores the first ones.
    let calibration = if awq_targets.is_empty() {
        None
    } else {
        let need = cli.calibration_chunks as usize * 512;
        let scored = cli.chunks as usize * 512;
        if text_tokens.len() < need + scored {
            bail!(
                "the text has {} tokens: AWQ needs {need} for calibration after the {scored} scored",
                text_tokens.len()
            );
        }
        bar.set_message("calibrating AWQ");
        let model = Llama::load(&source)?;
        Some(awq::calibrate(
            &model,
            &pool,
            &text_tokens[text_tokens.len() - need..],
            512,
        )?)
    };
    let jobs: Vec<(Target, bool)> = targets
        .iter()
        .map(|&t| (t, false))
        .chain(awq_targets.iter().map(|&t| (t, true)))
        .collect();
    let mut rows: Vec<Row> = Vec::new();
    let mut verified = true;
    for (target, with_awq) in jobs {
        let label = if with_awq {
            format!("{} + AWQ", target.name())
        } else {
            target.name().to_string()
        };
        bar.set_message(format!("requantizing to {label}"));
        let started = std::time::Instant::now();
        let mut choices = vec![];
        let (report, writer) = match (&calibration, with_awq) {
            (Some(cal), true) => {
                let plan = awq::plan(&source, target, cal)?;
                choices = plan.choices.clone();
                requantize_rescaled(&source, target, cli.quantize_output, &|n| plan.rescale(n))?
            }
            _ => requantize(&source, target, cli.quantize_output)?,
        };
        let seconds = started.elapsed().as_secs_f64();
        let mut eval = None;
        if let Some(writer) = writer {
            let bytes = writer.to_bytes();
            if let Some(dir) = &cli.write {
                let file = format!("model.{}.gguf", label.replace(" + ", "-"));
                std::fs::write(dir.join(file), &bytes)?;
            }
            let gguf = Gguf::from_bytes(bytes)?;
            // AWQ's matrices are rescaled before rounding: they are not the plain quantizer's
            // bytes (the AWQ tests check that rescaling keeps the model's function).
            if cli.demo.verify && !with_awq {
                verified &= check_read_back(&source, &gguf, target, cli.quantize_output)?;
            }
            let unsupported: Vec<_> = gguf
                .tensors
                .iter()
                .filter(|t| t.dims.len() == 2 && !engine_runs(t.ggml_type))
                .map(|t| (t.name.clone(), t.ggml_type))
                .collect();
            if unsupported.is_empty() {
                bar.set_message(format!("perplexity of {label}"));
                eval = Some(evaluate(&gguf)?);
            }
        }
        rows.push(Row {
            label,
            report,
            eval,
            seconds,
            awq: choices,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();

    let mut table = Table::new(
        "quantization-formats",
        "The model requantized to each format (source: its Q4_1 weights, dequantized)",
        vec![
            Column::new("format", "Format"),
            Column::new("bpw", "Bits per weight").decimals(2),
            Column::new("size", "File size").unit("MB").decimals(1),
            Column::new("vs_f16", "Compression vs F16")
                .unit("×")
                .decimals(2),
            Column::new("vs_f32", "vs F32").unit("×").decimals(2),
            Column::new("fallbacks", "Matrices in another format"),
            Column::new("error", "Weight error ‖W−Ŵ‖/‖W‖")
                .unit("%")
                .decimals(2),
            Column::new("ppl", "Perplexity").decimals(3),
            Column::new("dppl", "ΔPPL vs source").unit("%").decimals(2),
            Column::new("agreement", "Same next token as source")
                .unit("%")
                .decimals(1),
            Column::new("tok_s", "Decode").unit("tok/s").decimals(1),
            Column::new("seconds", "Quantize time")
                .unit("s")
                .decimals(1),
        ],
    );
    let source_bpw = source_bits_per_weight(&source);
    table.push(vec![
        json!("source (Q4_1 file)"),
        json!(source_bpw),
        json!(source.file_len() as f64 / 1e6),
        json!(16.0 / source_bpw),
        json!(32.0 / source_bpw),
        Value::Null,
        Value::Null,
        baseline_ppl.map_or(Value::Null, |p| json!(p)),
        Value::Null,
        Value::Null,
        baseline.decode_tok_s.map_or(Value::Null, |t| json!(t)),
        Value::Null,
    ]);
    for Row {
        label,
        report: r,
        eval,
        seconds,
        ..
    } in &rows
    {
        let ppl = eval.as_ref().and_then(|e| e.ppl);
        let (dppl, agrees) = eval
            .as_ref()
            .map_or((Value::Null, Value::Null), |e| e.versus(&baseline));
        table.push(vec![
            json!(label),
            json!(r.bits_per_weight),
            r.file_bytes.map_or(Value::Null, |b| json!(b as f64 / 1e6)),
            json!(16.0 / r.bits_per_weight),
            json!(32.0 / r.bits_per_weight),
            json!(format!("{} of {}", r.fallbacks, r.matrices)),
            json!(100.0 * r.relative_error),
            ppl.map_or(Value::Null, |p| json!(p)),
            dppl,
            agrees,
            eval.as_ref()
                .and_then(|e| e.decode_tok_s)
                .map_or(Value::Null, |t| json!(t)),
            json!(seconds),
        ]);
    }
    if calibration.is_some() {
        let chosen: Vec<f32> = rows
            .iter()
            .flat_map(|r| r.awq.iter().map(|c| c.alpha))
            .collect();
        table.notes.push(format!(
            "\"+ AWQ\": activation-aware scaling of Q, K, V, gate, up and down before rounding (α searched per layer and group among {:?}; chosen α averaged {:.2}), calibrated on the last {} chunks of 512 tokens of the text, which perplexity does not score.",
            awq::ALPHAS,
            chosen.iter().sum::<f32>() / chosen.len().max(1) as f32,
            cli.calibration_chunks
        ));
    }
    table.notes.push(format!(
        "Decode: the median of {} greedy runs of {} tokens after the text's first 32 tokens. Source perplexity (the Q4_1 file as downloaded): {}, on the first {} chunks of 512 tokens of the reference text. No perplexity for NF4: GGUF cannot hold it. Every format runs on AVX2 kernels where the CPU has them. K-quants need rows of whole 256-weight blocks; this model's rows of 576 are not, so those matrices fall back to Q5_0 (Q4_K, Q5_K) or Q8_0 (Q6_K), as llama-quantize does. {}",
        cli.decode_runs,
        cli.decode_tokens,
        baseline_ppl.map_or("not measured".to_string(), |p| format!("{p:.3}")),
        cli.chunks,
        if cli.quantize_output {
            "The output head (the tied token embedding) is quantized like the rest (--quantize-output)."
        } else {
            "The output head (the tied token embedding) stays at 8 bits (Q8_0), as llama-quantize keeps it; it counts among the other-format matrices."
        }
    ));
    let report = Report {
        demo: "quantization".into(),
        provenance: Provenance::current(),
        result: json!({
            "baseline_ppl": baseline_ppl,
            "baseline_decode_tok_s": baseline.decode_tok_s,
            "chunks": cli.chunks,
            "decode_tokens": cli.decode_tokens,
            "calibration_chunks": calibration.as_ref().map(|_| cli.calibration_chunks),
            "formats": rows.iter().map(|row| {
                let e = row.eval.as_ref();
                json!({
                    "label": row.label,
                    "report": row.report,
                    "ppl": e.and_then(|e| e.ppl),
                    "agreement": e.filter(|e| !e.predictions.is_empty()).map(|e| agreement(&e.predictions, &baseline.predictions)),
                    "decode_tok_s": e.and_then(|e| e.decode_tok_s),
                    "seconds": row.seconds,
                    "awq": row.awq,
                })
            }).collect::<Vec<_>>(),
        }),
        tables: std::iter::once(Ok(table))
            .chain((!cache_evals.is_empty()).then(|| kv_cache_table(&source, &cache_evals, &cli)))
            .collect::<Result<Vec<_>>>()?,
        verified: cli.demo.verify.then_some(verified),
    };
    report.emit(cli.demo.output, |out| {
        writeln!(
            out,
            "requantized {} to {} formats",
            cli.run.model_path().display(),
            rows.len()
        )
    })?;
    if cli.demo.verify && !verified {
        bail!("a requantized file did not read back as written");
    }
    Ok(())
}

/// The source model with its KV cache at each precision: memory, perplexity, agreement with
/// the f16 cache, decode speed.
fn kv_cache_table(source: &Gguf, evals: &[(KvPrecision, Eval)], cli: &Cli) -> Result<Table> {
    let config = chapters_code::model::LlamaConfig::from_gguf(source)?;
    // Keys and values, every layer.
    let per_token = |p: KvPrecision| 2 * config.n_layers * p.row_bytes(config.kv_dim());
    let f16 = evals.iter().find(|(p, _)| *p == KvPrecision::F16);
    let mut table = Table::new(
        "quantization-kv-cache",
        "The KV cache at 16 and 8 bits (source model)",
        vec![
            Column::new("cache", "KV cache"),
            Column::new("per_token", "Bytes per token"),
            Column::new("full", "At the full context")
                .unit("MiB")
                .decimals(1),
            Column::new("ppl", "Perplexity").decimals(3),
            Column::new("dppl", "ΔPPL vs f16").unit("%").decimals(2),
            Column::new("agreement", "Same next token as f16")
                .unit("%")
                .decimals(1),
            Column::new("tok_s", "Decode").unit("tok/s").decimals(1),
        ],
    );
    for (precision, eval) in evals {
        let (dppl, agrees) = f16
            .filter(|(p, _)| p != precision)
            .map_or((Value::Null, Value::Null), |(_, e)| eval.versus(e));
        table.push(vec![
            json!(precision.name()),
            json!(per_token(*precision)),
            json!((per_token(*precision) * config.context_length) as f64 / (1 << 20) as f64),
            eval.ppl.map_or(Value::Null, |p| json!(p)),
            dppl,
            agrees,
            eval.decode_tok_s.map_or(Value::Null, |t| json!(t)),
        ]);
    }
    table.notes.push(format!(
        "The model's context is {} tokens; {} layers keep a key and a value row of {} numbers per token. Perplexity on the first {} chunks of 512 tokens; decode as in the table above. Q8_0: an f16 scale per 32 values, each row quantized as it is stored; the query is quantized to Q8_0 for the key products, the values are dequantized as they are added.",
        config.context_length,
        config.n_layers,
        config.kv_dim(),
        cli.chunks
    ));
    Ok(table)
}

/// The file parsed; every matrix in it has the expected type and exactly the bytes the
/// quantizer makes from the source's weights (the writer and the parser agree).
fn check_read_back(
    source: &Gguf,
    gguf: &Gguf,
    target: Target,
    quantize_output: bool,
) -> Result<bool> {
    let output = if source.tensor_info("output.weight").is_some() {
        "output.weight"
    } else {
        "token_embd.weight"
    };
    use chapters_code::kernels::matmul::QMatrix;
    for info in gguf.tensors.iter().filter(|t| t.dims.len() == 2) {
        let view = gguf.tensor(&info.name)?;
        let fmt = target.for_tensor(view.row_len(), info.name == output, quantize_output);
        if fmt.ggml_type() != Some(info.ggml_type) {
            eprintln!(
                "{}: type {} instead of {}",
                info.name,
                info.ggml_type,
                fmt.name()
            );
            return Ok(false);
        }
        let m = QMatrix::from_view(source.tensor(&info.name)?)?;
        let mut w = vec![0.0f32; m.rows * m.cols];
        for (r, row) in w.chunks_exact_mut(m.cols).enumerate() {
            m.row_f32(r, row);
        }
        if fmt.quantize(&w) != view.data {
            eprintln!(
                "{}: the file's bytes differ from the quantizer's",
                info.name
            );
            return Ok(false);
        }
    }
    Ok(true)
}
