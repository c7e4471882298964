//! Quantization: the course model requantized to every block format, measured.

use anyhow::{Result, bail};
use chapters_code::demo::{Column, DemoArgs, ModelArgs, Provenance, Report, Table, progress};
use chapters_code::eval::perplexity::perplexity;
use chapters_code::formats::Gguf;
use chapters_code::kernels::pool::ThreadPool;
use chapters_code::model::Llama;
use chapters_code::quant::requantize::{Requantized, Target, requantize};
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
#[command(name = "demo-quantization", version)]
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

    /// Write each requantized GGUF into this directory.
    #[arg(long)]
    write: Option<std::path::PathBuf>,
}

/// Weight formats the engine's matrix kernels run.
fn engine_runs(ty: GgmlType) -> bool {
    chapters_code::kernels::matmul::QMatrix::supports(ty)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    cli.demo.check_output()?;
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
    if let Some(dir) = &cli.write {
        std::fs::create_dir_all(dir)?;
    }
    let source = assets::open_model(&cli.run.model_path())?;
    let pool = ThreadPool::new(cli.run.threads());
    let tokens = if cli.chunks > 0 {
        let text_path = cli
            .text
            .clone()
            .unwrap_or_else(assets::perplexity_text_path);
        let text = assets::read_text(&text_path)?;
        Tokenizer::from_gguf(&source)?.encode(&text, true)
    } else {
        vec![]
    };
    let ppl_of = |gguf: &Gguf| -> Result<Option<f64>> {
        if cli.chunks == 0 {
            return Ok(None);
        }
        let model = Llama::load(gguf)?;
        let r = perplexity(
            &model,
            &pool,
            &tokens,
            512,
            Some(cli.chunks as usize),
            |_, _, _| {},
        )?;
        Ok(Some(r.ppl))
    };

    let bar = progress::steps(targets.len() as u64 + 1, "baseline");
    let baseline_ppl = ppl_of(&source)?;
    bar.inc(1);
    let mut rows: Vec<(Requantized, Option<f64>, f64)> = Vec::new();
    let mut verified = true;
    for &target in &targets {
        bar.set_message(format!("requantizing to {}", target.name()));
        let started = std::time::Instant::now();
        let (report, writer) = requantize(&source, target, cli.quantize_output)?;
        let seconds = started.elapsed().as_secs_f64();
        let mut ppl = None;
        if let Some(writer) = writer {
            let bytes = writer.to_bytes();
            if let Some(dir) = &cli.write {
                std::fs::write(dir.join(format!("model.{}.gguf", target.name())), &bytes)?;
            }
            let gguf = Gguf::from_bytes(bytes)?;
            if cli.demo.verify {
                verified &= check_read_back(&source, &gguf, target, cli.quantize_output)?;
            }
            let unsupported: Vec<_> = gguf
                .tensors
                .iter()
                .filter(|t| t.dims.len() == 2 && !engine_runs(t.ggml_type))
                .map(|t| (t.name.clone(), t.ggml_type))
                .collect();
            if unsupported.is_empty() {
                bar.set_message(format!("perplexity of {}", target.name()));
                ppl = ppl_of(&gguf)?;
            }
        }
        rows.push((report, ppl, seconds));
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
            Column::new("seconds", "Quantize time")
                .unit("s")
                .decimals(1),
        ],
    );
    for (r, ppl, seconds) in &rows {
        let dppl = match (ppl, baseline_ppl) {
            (Some(p), Some(b)) => json!(100.0 * (p / b - 1.0)),
            _ => Value::Null,
        };
        table.push(vec![
            json!(r.target.name()),
            json!(r.bits_per_weight),
            r.file_bytes.map_or(Value::Null, |b| json!(b as f64 / 1e6)),
            json!(16.0 / r.bits_per_weight),
            json!(32.0 / r.bits_per_weight),
            json!(format!("{} of {}", r.fallbacks, r.matrices)),
            json!(100.0 * r.relative_error),
            ppl.map_or(Value::Null, |p| json!(p)),
            dppl,
            json!(seconds),
        ]);
    }
    table.notes.push(format!(
        "Source perplexity (the Q4_1 file as downloaded): {}, on the first {} chunks of 512 tokens of the reference text. No perplexity for NF4: GGUF cannot hold it. The K-quant matrices run on scalar kernels (no SIMD yet), Q5_0 on AVX2. K-quants need rows of whole 256-weight blocks; this model's rows of 576 are not, so those matrices fall back to Q5_0 (Q4_K, Q5_K) or Q8_0 (Q6_K), as llama-quantize does. {}",
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
        result: json!({ "baseline_ppl": baseline_ppl, "chunks": cli.chunks, "formats": rows.iter().map(|(r, p, s)| json!({"report": r, "ppl": p, "seconds": s})).collect::<Vec<_>>() }),
        tables: vec![table],
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
