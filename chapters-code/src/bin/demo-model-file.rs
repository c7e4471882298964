//! Anatomy of a model file: what a GGUF file holds (header, metadata, tensors), and what
//! memory-mapping it costs compared with reading it into memory.

use anyhow::Result;
use chapters_code::assets;
use chapters_code::demo::{Column, DemoArgs, Provenance, Report, Table};
use chapters_code::formats::{GgmlType, Gguf, Value};
use chapters_code::hw::memory::ProcessMemory;
use clap::Parser;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// Open a GGUF model file (memory-mapped and validated) and show what is inside: the header,
/// the metadata, the tensors by type and size. With --benchmark, also time opening by mmap
/// against reading the whole file into memory.
#[derive(Parser, Debug)]
#[command(
    name = "demo-model-file",
    version,
    after_help = "Examples:\n  demo-model-file\n  demo-model-file --all-metadata\n  demo-model-file --model other.gguf\n"
)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,

    /// Model file [default: $PRODML_MODEL or models/SmolLM2-135M-Instruct.Q4_1.gguf].
    #[arg(long)]
    model: Option<PathBuf>,

    /// Print every metadata key (long arrays are shortened).
    #[arg(long)]
    all_metadata: bool,
}

/// A short, readable rendering of a metadata value.
fn preview(v: &Value) -> String {
    match v {
        Value::String(s) if s.chars().count() > 60 => format!(
            "{:?}… ({} characters)",
            s.chars().take(40).collect::<String>(),
            s.chars().count()
        ),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => {
            let first: Vec<String> = items.iter().take(3).map(preview).collect();
            format!(
                "[{}{}] ({} items)",
                first.join(", "),
                if items.len() > 3 { ", …" } else { "" },
                items.len()
            )
        }
        Value::F32(x) => format!("{x}"),
        Value::F64(x) => format!("{x}"),
        Value::Bool(b) => b.to_string(),
        other => other
            .as_u64()
            .map_or_else(|| format!("{other:?}"), |n| n.to_string()),
    }
}

fn main() -> std::process::ExitCode {
    chapters_code::demo::exit::run(demo)
}

fn demo() -> Result<()> {
    let cli = Cli::parse();
    let path = cli.model.clone().unwrap_or_else(assets::model_path);
    let before = ProcessMemory::read();
    let t = Instant::now();
    let gguf = assets::open_model(&path)?;
    let open_ms = t.elapsed().as_secs_f64() * 1e3;

    // Tensors by type.
    let mut by_type: BTreeMap<&str, (usize, u64, GgmlType)> = BTreeMap::new();
    for t in &gguf.tensors {
        let e = by_type
            .entry(t.ggml_type.name())
            .or_insert((0, 0, t.ggml_type));
        e.0 += 1;
        e.1 += t.n_bytes;
    }
    let data_bytes: u64 = gguf.tensors.iter().map(|t| t.n_bytes).sum();
    let mut tensors = Table::new(
        "model-file-tensors",
        "The tensors of the model file, by type",
        vec![
            Column::new("type", "Type"),
            Column::new("count", "Tensors"),
            Column::new("bits", "Bits per weight").decimals(2),
            Column::new("mb", "Size").unit("MB").decimals(1),
            Column::new("share", "Share of the data")
                .unit("%")
                .decimals(1),
        ],
    );
    for (name, (count, bytes, ty)) in &by_type {
        tensors.push(vec![
            json!(name),
            json!(count),
            json!(ty.bits_per_weight()),
            json!(*bytes as f64 / 1e6),
            json!(100.0 * *bytes as f64 / data_bytes as f64),
        ]);
    }
    tensors.notes.push(format!(
        "{} tensors, {} metadata entries; header and metadata take the first {} bytes, tensor data starts at a multiple of {} bytes.",
        gguf.tensors.len(),
        gguf.metadata.len(),
        gguf.data_offset,
        gguf.alignment
    ));

    let interesting = [
        "general.architecture",
        "general.name",
        "general.file_type",
        "llama.block_count",
        "llama.context_length",
        "llama.embedding_length",
        "llama.feed_forward_length",
        "llama.attention.head_count",
        "llama.attention.head_count_kv",
        "llama.rope.freq_base",
        "llama.attention.layer_norm_rms_epsilon",
        "llama.vocab_size",
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.add_bos_token",
        "tokenizer.chat_template",
    ];
    let mut metadata = Table::new(
        "model-file-metadata",
        "Metadata of the model file (selected keys)",
        vec![
            Column::new("key", "Key"),
            Column::new("type", "Type"),
            Column::new("value", "Value"),
        ],
    );
    for (key, value) in &gguf.metadata {
        if cli.all_metadata || interesting.contains(&key.as_str()) {
            metadata.push(vec![
                json!(key),
                json!(value.type_name()),
                json!(preview(value)),
            ]);
        }
    }

    let mut tables = vec![tensors, metadata];
    if cli.demo.benchmark {
        tables.push(load_benchmark(&path, &gguf)?);
    }
    let after = ProcessMemory::read();
    let verified = cli.demo.verify.then(|| {
        let facts = &chapters_code::reference::get().model;
        path != assets::model_path()
            || (gguf.file_len() as u64 == facts.gguf_bytes && gguf.tensors.len() == 272)
    });
    let report = Report {
        demo: "model-file".into(),
        provenance: Provenance::current(),
        result: json!({
            "path": path.display().to_string(),
            "bytes": gguf.file_len(),
            "version": gguf.version,
            "alignment": gguf.alignment,
            "data_offset": gguf.data_offset,
            "metadata_entries": gguf.metadata.len(),
            "tensors": gguf.tensors.len(),
            "open_ms": open_ms,
            "mapped": gguf.is_mapped(),
            "rss_anon_growth_bytes": after.rss_anon_bytes.zip(before.rss_anon_bytes).map(|(a, b)| a.saturating_sub(b)),
        }),
        tables,
        verified,
    };
    report.emit(cli.demo.output, |out| {
        writeln!(
            out,
            "{} — GGUF v{}, {:.1} MB, opened (mapped + validated) in {open_ms:.1} ms",
            path.display(),
            gguf.version,
            gguf.file_len() as f64 / 1e6
        )
    })?;
    if verified == Some(false) {
        std::process::exit(1);
    }
    Ok(())
}

/// Opening by mmap against reading the whole file, best of several runs each.
fn load_benchmark(path: &std::path::Path, gguf: &Gguf) -> Result<Table> {
    const RUNS: usize = 5;
    let mut mapped = f64::INFINITY;
    let mut read = f64::INFINITY;
    let mut touched = f64::INFINITY;
    for _ in 0..RUNS {
        let t = Instant::now();
        let g = Gguf::open(path)?;
        mapped = mapped.min(t.elapsed().as_secs_f64());
        // Reading every weight once through the mapping (what the first token does).
        let t = Instant::now();
        let mut sum = 0u64;
        for info in &g.tensors {
            let view = g.tensor(&info.name)?;
            sum = sum.wrapping_add(
                view.data
                    .iter()
                    .step_by(4096)
                    .map(|&b| u64::from(b))
                    .sum::<u64>(),
            );
        }
        std::hint::black_box(sum);
        touched = touched.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let bytes = std::fs::read(path)?;
        let g = Gguf::from_bytes(bytes)?;
        std::hint::black_box(g.tensors.len());
        read = read.min(t.elapsed().as_secs_f64());
    }
    let mut table = Table::new(
        "model-file-load",
        "Opening the model file: memory-mapping against reading it",
        vec![
            Column::new("how", "How"),
            Column::new("ms", "Time").unit("ms").decimals(2),
            Column::new("copy", "Bytes copied into the process")
                .unit("MB")
                .decimals(1),
        ],
    );
    table.push(vec![
        json!("mmap + parse + validate (Gguf::open)"),
        json!(mapped * 1e3),
        json!(0.0),
    ]);
    table.push(vec![
        json!("then touch one byte per page of every tensor"),
        json!(touched * 1e3),
        json!(0.0),
    ]);
    table.push(vec![
        json!("read the whole file + parse (Gguf::from_bytes)"),
        json!(read * 1e3),
        json!(gguf.file_len() as f64 / 1e6),
    ]);
    table.notes.push(format!("Best of {RUNS} runs with the file in the page cache (a cold disk adds its own read time to both ways)."));
    Ok(table)
}
