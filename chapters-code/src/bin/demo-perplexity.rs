//! Perplexity of the model on a text, computed the way llama.cpp's `llama-perplexity` does, so
//! that the two can be put side by side.

use anyhow::{Context, Result};
use chapters_code::assets;
use chapters_code::demo::{Column, DemoArgs, ModelArgs, Provenance, Report, Table, progress};
use chapters_code::eval::perplexity;
use chapters_code::kernels::pool::ThreadPool;
use chapters_code::model::Llama;
use chapters_code::reference;
use chapters_code::tokenizer::Tokenizer;
use clap::Parser;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// Perplexity of the model on a text, as llama-perplexity computes it: the text is tokenized
/// (no BOS), cut into non-overlapping chunks of --ctx tokens, each chunk is evaluated in one
/// pass on a fresh KV cache, and the second half of each chunk is scored.
#[derive(Parser, Debug)]
#[command(
    name = "demo-perplexity",
    version,
    after_help = "Examples:\n  demo-perplexity --chunks 4\n  demo-perplexity --verify\n  demo-perplexity --file my-text.txt --ctx 256\n"
)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,

    #[command(flatten)]
    run: ModelArgs,

    /// Text file [default: models/lee_background.cor, the course's reference text].
    #[arg(long)]
    file: Option<PathBuf>,

    /// Context length of each chunk.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(4..))]
    ctx: u64,

    /// Evaluate only the first N chunks [default: all].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    chunks: Option<u64>,
}

fn main() -> std::process::ExitCode {
    chapters_code::demo::exit::run(demo)
}

fn demo() -> Result<()> {
    let cli = Cli::parse();
    let threads = cli.run.threads();
    let model_path = cli.run.model_path();
    let text_path = cli
        .file
        .clone()
        .unwrap_or_else(assets::perplexity_text_path);
    let gguf = assets::open_model(&model_path)?;
    let model = Llama::load(&gguf).with_context(|| format!("loading {}", model_path.display()))?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let text = assets::read_text(&text_path)?;
    let tokens = tokenizer.encode(&text, true);
    let pool = ThreadPool::new(threads);

    let ctx = cli.ctx as usize;
    let total = cli
        .chunks
        .map_or(tokens.len() / ctx, |c| (c as usize).min(tokens.len() / ctx));
    let bar = progress::steps(total as u64, "perplexity");
    let start = Instant::now();
    let result = perplexity(
        &model,
        &pool,
        &tokens,
        ctx,
        cli.chunks.map(|c| c as usize),
        |done, _, ppl| {
            bar.set_position(done as u64);
            bar.set_message(format!("perplexity {ppl:.4}"));
        },
    )?;
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();

    // llama.cpp's number applies to the course text, the course model, the whole text at 512.
    let reference = &reference::get().perplexity;
    let is_reference_run = cli.file.is_none()
        && cli.run.model.is_none()
        && ctx == 512
        && result.chunks == tokens.len() / 512;
    let mut table = Table::new(
        "perplexity",
        "Perplexity of the course model on the reference text, context 512",
        vec![
            Column::new("engine", "Engine"),
            Column::new("ppl", "Perplexity").decimals(4),
            Column::new("stderr", "± (std. error)").decimals(4),
            Column::new("tokens", "Tokens in the text"),
            Column::new("chunks", "Chunks"),
        ],
    );
    table.push(vec![
        json!("chapters-code"),
        json!(result.ppl),
        json!(result.stderr),
        json!(result.tokens),
        json!(result.chunks),
    ]);
    if is_reference_run {
        table.push(vec![
            json!("llama.cpp (llama-perplexity, reference file)"),
            json!(reference.ppl),
            json!(reference.stderr),
            json!(reference.tokens_no_bos),
            json!(reference.tokens_no_bos / ctx),
        ]);
        table.notes.push(format!(
            "Relative difference: {:+.3}%.",
            100.0 * (result.ppl / reference.ppl - 1.0)
        ));
    }
    let verified = if cli.demo.verify {
        // Whole text: within 1% of llama.cpp; fewer chunks: the running values llama.cpp printed.
        let ok = if is_reference_run {
            (result.ppl / reference.ppl - 1.0).abs() < 0.01
        } else {
            result
                .running_ppl
                .iter()
                .zip(&reference.first_chunks_running_ppl)
                .all(|(a, b)| (a / b - 1.0).abs() < 0.01)
        };
        Some(ok)
    } else {
        None
    };
    let report = Report {
        demo: "perplexity".into(),
        provenance: Provenance::current(),
        result: json!({
            "ppl": result.ppl,
            "stderr": result.stderr,
            "tokens": result.tokens,
            "scored": result.scored,
            "chunks": result.chunks,
            "ctx": ctx,
            "running_ppl": result.running_ppl,
            "seconds": seconds,
            "threads": threads,
            "file": text_path.display().to_string(),
        }),
        tables: if is_reference_run {
            vec![table.clone()]
        } else {
            vec![]
        },
        verified,
    };
    report.emit(cli.demo.output, |out| {
        writeln!(out, "perplexity {:.4} ± {:.4} over {} chunks of {ctx} tokens: {} tokens scored (the text has {}) in {seconds:.1} s", result.ppl, result.stderr, result.chunks, result.scored, result.tokens)?;
        if !is_reference_run {
            writeln!(out, "{}", table.to_text())?;
        }
        Ok(())
    })?;
    if verified == Some(false) {
        std::process::exit(1);
    }
    Ok(())
}
