//! Distillation: cut the course model to a few of its blocks, heal the student on the
//! teacher's output distribution — trained here, in Rust — and measure what it gets back.

use anyhow::{Context, Result, bail};
use chapters_code::assets;
use chapters_code::demo::{Column, DemoArgs, ModelArgs, Provenance, Report, Table, progress};
use chapters_code::distill::{
    Divergence, Objective, StepLog, Student, TrainConfig, cached_teacher, choose_blocks, evaluate,
    train, training_tokens,
};
use chapters_code::eval::{Eval, ModelBench, agreement};
use chapters_code::formats::gguf::Value;
use chapters_code::formats::{Gguf, GgufWriter};
use chapters_code::generate::{Request, generate};
use chapters_code::kernels::pool::ThreadPool;
use chapters_code::model::Llama;
use chapters_code::prune::structured::drop_blocks;
use chapters_code::quant::requantize::Target;
use chapters_code::sampling::SamplingParams;
use chapters_code::speculative::{ModelDrafter, generate_speculative, self_draft};
use chapters_code::tokenizer::Tokenizer;
use clap::Parser;
use serde_json::json;
use std::path::{Path, PathBuf};

/// Distill the course model into a student that keeps --keep of its blocks (those whose
/// output changes the residual stream most on models/lee.cor), with the embedding and output
/// head frozen and shared. The teacher's top-k logits on Wikipedia articles
/// (models/enwiki-shortened.xml) are computed once and cached; the student trains on them
/// (forward KL at temperature T plus the text's cross-entropy) with a backward pass written
/// for this model. Reports the student's perplexity before and after healing against the
/// teacher's, its decode speed, and its acceptance as a speculative draft. The default is a
/// short run; --benchmark trains the full recipe, forward and reverse KL, and measures
/// everything. --verify checks that the loss went down and the written file loads.
#[derive(Parser, Debug)]
#[command(
    name = "demo-distillation",
    version,
    after_help = "Examples:\n  demo-distillation --steps 20\n  demo-distillation --keep 15 --steps 400 --write models/distill\n  demo-distillation --divergence reverse --temperature 1\n  demo-distillation --benchmark --output json\n"
)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,

    #[command(flatten)]
    run: ModelArgs,

    /// Blocks the student keeps of the teacher's.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u64).range(1..1000))]
    keep: u64,

    /// Optimizer steps [default: 20; with --benchmark 150].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..100_000))]
    steps: Option<u64>,

    /// Sequences per step.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..1024))]
    batch: u64,

    /// Tokens per training sequence.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(2..4097))]
    seq_len: u64,

    /// Peak learning rate (AdamW; linear warm-up over a tenth of the steps, cosine decay).
    #[arg(long, default_value_t = 1e-3, value_parser = parse_positive)]
    lr: f32,

    /// Weight of the KL term; 1 − alpha weighs the text's cross-entropy (0: no teacher).
    #[arg(long, default_value_t = 0.5, value_parser = parse_alpha)]
    alpha: f32,

    /// Softmax temperature of the KL term.
    #[arg(long, default_value_t = 2.0, value_parser = parse_positive)]
    temperature: f32,

    /// Direction of the KL term: forward (mass-covering, DistilBERT's) or reverse
    /// (mode-seeking, MiniLLM's) [default: forward; --benchmark trains both].
    #[arg(long, value_parser = parse_divergence)]
    divergence: Option<Divergence>,

    /// Teacher logits kept per position.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..4097))]
    top_k: u64,

    /// Sequences held out of training to measure the loss on.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..10_000))]
    held_out: u64,

    /// Chunks of 512 tokens of the reference text scored for perplexity
    /// [default: 2; with --benchmark 8].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..1000))]
    chunks: Option<u64>,

    /// Tokens decoded (greedy) to measure decode speed and draft acceptance; 0 skips both.
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,

    /// Format of the student's block matrices: q4_1 (the teacher's) or q8_0.
    #[arg(long, default_value = "q4_1", value_parser = parse_format)]
    format: Target,

    /// Training text (a MediaWiki XML dump) [default: models/enwiki-shortened.xml].
    #[arg(long)]
    training_text: Option<PathBuf>,

    /// Text that ranks the blocks [default: models/lee.cor].
    #[arg(long)]
    calibration_text: Option<PathBuf>,

    /// Where the teacher's logits are cached [default: models/distill].
    #[arg(long)]
    cache_dir: Option<PathBuf>,

    /// Write the student (and, with --benchmark, the reverse-KL student) into this directory,
    /// with its training log as JSON.
    #[arg(long)]
    write: Option<PathBuf>,
}

fn parse_positive(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!("`{s}`: a positive number")),
    }
}

fn parse_alpha(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("`{s}`: a weight from 0 to 1")),
    }
}

fn parse_divergence(s: &str) -> Result<Divergence, String> {
    Divergence::parse(s).ok_or_else(|| format!("`{s}`: forward or reverse"))
}

fn parse_format(s: &str) -> Result<Target, String> {
    match Target::parse(s) {
        Some(t @ (Target::Q4_1 | Target::Q8_0)) => Ok(t),
        _ => Err(format!("`{s}`: q4_1 or q8_0")),
    }
}

/// One trained student.
struct Trained {
    objective: Objective,
    logs: Vec<StepLog>,
    held_out_before: f64,
    held_out_after: f64,
    kl_before: f64,
    kl_after: f64,
    file: Gguf,
    bytes: usize,
    eval: Eval,
}

fn main() -> std::process::ExitCode {
    chapters_code::demo::exit::run(demo)
}

fn demo() -> Result<()> {
    let cli = Cli::parse();
    let bench = cli.demo.benchmark;
    let steps = cli.steps.unwrap_or(if bench { 150 } else { 20 }) as usize;
    let chunks = cli.chunks.unwrap_or(if bench { 8 } else { 2 }) as usize;
    let divergences = match (cli.divergence, bench) {
        (Some(d), _) => vec![d],
        (None, false) => vec![Divergence::Forward],
        (None, true) => vec![Divergence::Forward, Divergence::Reverse],
    };
    let (keep, batch, seq_len) = (cli.keep as usize, cli.batch as usize, cli.seq_len as usize);
    if let Some(dir) = &cli.write {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }

    let path = cli.run.model_path();
    drop(assets::open_model(&path)?);
    let teacher_file = Gguf::from_bytes(
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let teacher = Llama::load(&teacher_file)?;
    let n_blocks = teacher.layers.len();
    if keep >= n_blocks {
        bail!("--keep {keep}: the model has {n_blocks} blocks; a student keeps fewer");
    }
    let tokenizer = Tokenizer::from_gguf(&teacher_file)?;
    let pool = ThreadPool::new(cli.run.threads());

    // 1. Which blocks the student keeps.
    let calibration_path = cli
        .calibration_text
        .clone()
        .unwrap_or_else(assets::calibration_text_path);
    let calibration = tokenizer.encode(&assets::read_text(&calibration_path)?, true);
    let cal = &calibration[..calibration.len().min(8 * 512) / 512 * 512];
    if cal.is_empty() {
        bail!(
            "the calibration text {} has fewer than 512 tokens",
            calibration_path.display()
        );
    }
    let spinner = progress::spinner("ranking the teacher's blocks");
    let (kept, influence) = choose_blocks(&teacher, &pool, cal, keep)?;
    spinner.finish_and_clear();

    // 2. The training text and the teacher's logits on it.
    let text_path = cli
        .training_text
        .clone()
        .unwrap_or_else(assets::training_text_path);
    let xml = assets::read_text(&text_path)?;
    let tokens = training_tokens(&tokenizer, &xml);
    let held_out = cli.held_out as usize;
    let available = tokens.len().saturating_sub(1) / seq_len;
    let n_train = (steps * batch).min(available.saturating_sub(held_out));
    let n_seq = n_train + held_out;
    if n_train == 0 {
        bail!(
            "{} holds {} tokens: not enough for {held_out} held-out sequences of {seq_len} and training",
            text_path.display(),
            tokens.len()
        );
    }
    let bar = progress::steps(n_seq as u64, "the teacher's top-k logits");
    let (cache, teacher_seconds) = cached_teacher(
        &teacher_file,
        &teacher,
        &pool,
        &tokens,
        seq_len,
        cli.top_k as usize,
        n_seq,
        &cli.cache_dir
            .clone()
            .unwrap_or_else(|| assets::models_dir().join("distill")),
        |done, _| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    let train_seqs: Vec<usize> = (0..n_train).collect();
    let held: Vec<usize> = (n_train..n_seq).collect();

    // 3. The models every student is compared with.
    let scored = tokenizer.encode(&assets::read_text(&assets::perplexity_text_path())?, true);
    let b = ModelBench {
        pool,
        tokenizer,
        scored,
        chunks,
        decode_tokens: cli.decode_tokens,
    };
    if b.scored.len() < chunks * 512 {
        bail!(
            "--chunks {chunks}: the reference text has {} tokens",
            b.scored.len()
        );
    }
    let spinner = progress::spinner("scoring the teacher and the pruned student");
    let teacher_eval = b.evaluate(&teacher_file, false)?;
    let dropped: Vec<usize> = (0..n_blocks).filter(|i| !kept.contains(i)).collect();
    let pruned_writer = drop_blocks(&teacher_file, &dropped)?;
    let pruned_bytes = pruned_writer.to_bytes();
    let pruned_size = pruned_bytes.len();
    let pruned = Gguf::from_bytes(pruned_bytes)?;
    let pruned_eval = b.evaluate(&pruned, false)?;
    spinner.finish_and_clear();

    // 4. Train one student per objective.
    let mut trained = Vec::new();
    let mut verified = true;
    for &divergence in &divergences {
        let objective = Objective {
            alpha: cli.alpha,
            temperature: cli.temperature,
            divergence,
        };
        let cfg = TrainConfig {
            steps: n_train.min(steps * batch) / batch.max(1),
            batch,
            lr: cli.lr,
            warmup: (steps / 10).max(1),
            weight_decay: 0.0,
            clip: 1.0,
            seed: cli.demo.seed,
            objective,
        };
        let (mut student, frozen) = Student::from_teacher(&teacher_file, &kept)?;
        let before = evaluate(&b.pool, &student, &frozen, &cache, &held, &objective);
        let bar = progress::steps(cfg.steps as u64, format!("{} KL", divergence.name()));
        let logs = train(
            &b.pool,
            &mut student,
            &frozen,
            &cache,
            &train_seqs,
            &cfg,
            |log| {
                bar.set_position(log.step as u64);
                bar.set_message(format!("{} KL: loss {:.3}", divergence.name(), log.loss));
            },
        );
        bar.finish_and_clear();
        let after = evaluate(&b.pool, &student, &frozen, &cache, &held, &objective);
        let provenance = gguf_provenance(&student, &cfg, &cache, &logs, &text_path);
        let writer = student.to_gguf(&teacher_file, cli.format, &provenance)?;
        let name = format!(
            "student-{keep}of{n_blocks}-{}.{}.gguf",
            divergence.name(),
            cli.format.name()
        );
        let file = materialize(&writer, cli.write.as_deref(), &name)?;
        if let Some(dir) = &cli.write {
            let log_path = dir.join(format!("{name}.training.json"));
            let log = json!({"config": cfg, "kept_blocks": kept, "steps": logs, "provenance": Provenance::current()});
            std::fs::write(&log_path, serde_json::to_vec_pretty(&log)?)
                .with_context(|| format!("writing {}", log_path.display()))?;
        }
        let spinner = progress::spinner("scoring the student");
        let eval = b.evaluate(&file, false)?;
        spinner.finish_and_clear();
        if cli.demo.verify {
            verified &= after.total < before.total && Llama::load(&file)?.layers.len() == keep;
        }
        let bytes = file.file_len();
        trained.push(Trained {
            objective,
            logs,
            held_out_before: before.ce,
            held_out_after: after.ce,
            kl_before: before.kl,
            kl_after: after.kl,
            file,
            bytes,
            eval,
        });
    }

    // 5. Tables.
    let teacher_size = teacher_file.file_len();
    let mut quality = Table::new(
        "distill-quality",
        "The student before and after healing, against its teacher",
        vec![
            Column::new("model", "Model"),
            Column::new("blocks", "Blocks"),
            Column::new("size", "File size").unit("MB").decimals(1),
            Column::new("ppl", "Perplexity").decimals(2),
            Column::new("dppl", "ΔPPL vs teacher").unit("%").decimals(1),
            Column::new("recovered", "Lost perplexity recovered")
                .unit("%")
                .decimals(1),
            Column::new("agreement", "Same next token as teacher")
                .unit("%")
                .decimals(1),
            Column::new("tok_s", "Decode").unit("tok/s").decimals(1),
            Column::new("speedup", "Decode vs teacher")
                .unit("×")
                .decimals(2),
        ],
    );
    let lost = pruned_eval.ppl - teacher_eval.ppl;
    let healed_first = trained.first().map(|t| &t.file);
    let speeds = match (healed_first, cli.decode_tokens > 0) {
        (Some(file), true) => {
            let spinner = progress::spinner("decode speed, taking turns with the teacher");
            let student = Llama::load(file)?;
            let r = b.paired_speed(&teacher, &student, 5)?;
            spinner.finish_and_clear();
            Some(r)
        }
        _ => None,
    };
    let teacher_tok_s = speeds.map(|(s, ratio)| s / ratio);
    quality.push(vec![
        json!("teacher"),
        json!(n_blocks),
        json!(teacher_size as f64 / 1e6),
        json!(teacher_eval.ppl),
        json!(0.0),
        serde_json::Value::Null,
        json!(100.0),
        json!(teacher_tok_s),
        json!(1.0),
    ]);
    quality.push(vec![
        json!(format!("pruned to {keep} blocks, not healed")),
        json!(keep),
        json!(pruned_size as f64 / 1e6),
        json!(pruned_eval.ppl),
        json!(100.0 * (pruned_eval.ppl / teacher_eval.ppl - 1.0)),
        json!(0.0),
        json!(100.0 * agreement(&pruned_eval.predictions, &teacher_eval.predictions)),
        serde_json::Value::Null,
        serde_json::Value::Null,
    ]);
    for (i, t) in trained.iter().enumerate() {
        let (tok_s, speedup) = match (i, speeds) {
            (0, Some((s, r))) => (json!(s), json!(r)),
            _ => (serde_json::Value::Null, serde_json::Value::Null),
        };
        quality.push(vec![
            json!(format!("healed, {} KL", t.objective.divergence.name())),
            json!(keep),
            json!(t.bytes as f64 / 1e6),
            json!(t.eval.ppl),
            json!(100.0 * (t.eval.ppl / teacher_eval.ppl - 1.0)),
            json!(100.0 * (pruned_eval.ppl - t.eval.ppl) / lost),
            json!(100.0 * agreement(&t.eval.predictions, &teacher_eval.predictions)),
            tok_s,
            speedup,
        ]);
    }
    quality.notes.push(format!(
        "Perplexity on {chunks} chunks of 512 tokens of the reference text (news; the student trained on Wikipedia). Kept blocks (of 0–{}): {}; block influence: {}. Healed students: block matrices trained in f32 and stored as {}; the embedding (= output head) is the teacher's, frozen. Recovered = (pruned − healed) / (pruned − teacher) perplexity. Decode: greedy runs of {} tokens, {} thread(s), taking turns with the teacher (median of 5 rounds).",
        n_blocks - 1,
        kept.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", "),
        influence.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(", "),
        cli.format.name(),
        cli.decode_tokens,
        b.pool.n_threads()
    ));

    let mut training = Table::new(
        "distill-training",
        "Training: the held-out loss before and after, and what it cost",
        vec![
            Column::new("objective", "Objective"),
            Column::new("steps", "Steps"),
            Column::new("tokens", "Positions trained"),
            Column::new("ce_before", "Held-out CE before")
                .unit("nats")
                .decimals(3),
            Column::new("ce_after", "Held-out CE after")
                .unit("nats")
                .decimals(3),
            Column::new("kl_before", "Held-out KL before").decimals(3),
            Column::new("kl_after", "Held-out KL after").decimals(3),
            Column::new("seconds", "Wall time").unit("s").decimals(0),
            Column::new("tok_s", "Training speed")
                .unit("positions/s")
                .decimals(1),
        ],
    );
    for t in &trained {
        let last = t.logs.last();
        let seconds = last.map_or(0.0, |l| l.seconds);
        let tokens = last.map_or(0, |l| l.tokens);
        training.push(vec![
            json!(format!(
                "{} KL (T = {}, α = {})",
                t.objective.divergence.name(),
                t.objective.temperature,
                t.objective.alpha
            )),
            json!(t.logs.len()),
            json!(tokens),
            json!(t.held_out_before),
            json!(t.held_out_after),
            json!(t.kl_before),
            json!(t.kl_after),
            json!(seconds),
            json!(tokens as f64 / seconds.max(1e-9)),
        ]);
    }
    training.notes.push(format!(
        "{} training sequences of {seq_len} positions from models/enwiki-shortened.xml, {held_out} more held out; {batch} sequences per step, AdamW at peak learning rate {} (warm-up, cosine decay), gradients clipped at norm 1, seed {}. KL against the teacher's top {} logits, scaled by T². Teacher logits: {}. {} thread(s).",
        n_train,
        cli.lr,
        cli.demo.seed,
        cache.k,
        match teacher_seconds {
            Some(s) => format!("computed in {s:.0} s and cached"),
            None => "read from the cache".into(),
        },
        b.pool.n_threads()
    ));

    let mut loss_curve = Table::new(
        "distill-loss",
        "Training loss by step (mean per position of each step's batch; at most about 50 steps per run shown)",
        vec![
            Column::new("objective", "Objective"),
            Column::new("step", "Step"),
            Column::new("tokens", "Positions"),
            Column::new("loss", "Loss").decimals(3),
            Column::new("ce", "Cross-entropy").unit("nats").decimals(3),
            Column::new("kl", "KL").decimals(3),
        ],
    );
    for t in &trained {
        // At most about 50 points per run: the first step, every `every`-th, the last.
        let every = t.logs.len().div_ceil(50).max(1);
        let last = t.logs.len();
        for l in t
            .logs
            .iter()
            .filter(|l| l.step == 1 || l.step % every == 0 || l.step == last)
        {
            loss_curve.push(vec![
                json!(t.objective.divergence.name()),
                json!(l.step),
                json!(l.tokens),
                json!(l.loss),
                json!(l.ce),
                json!(l.kl),
            ]);
        }
    }

    let mut tables = vec![quality, training, loss_curve];
    if cli.decode_tokens > 0
        && let Some(t) = trained.first()
    {
        let spinner = progress::spinner("the student as a speculative draft");
        tables.push(draft_table(&b, &teacher, &t.file, &pruned, keep)?);
        spinner.finish_and_clear();
    }

    let report = Report {
        demo: "distillation".into(),
        provenance: Provenance::current(),
        result: json!({
            "kept_blocks": kept,
            "influence": influence,
            "teacher_ppl": teacher_eval.ppl,
            "pruned_ppl": pruned_eval.ppl,
            "healed_ppl": trained.iter().map(|t| t.eval.ppl).collect::<Vec<_>>(),
            "teacher_cache_seconds": teacher_seconds,
        }),
        tables,
        verified: cli.demo.verify.then_some(verified),
    };
    report.emit(cli.demo.output, |out| {
        writeln!(
            out,
            "teacher perplexity {:.2}; pruned to {keep} blocks {:.2}; healed {}",
            teacher_eval.ppl,
            pruned_eval.ppl,
            trained
                .iter()
                .map(|t| format!("({} KL) {:.2}", t.objective.divergence.name(), t.eval.ppl))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    if cli.demo.verify && !verified {
        bail!("training did not lower the held-out loss, or the student file does not load");
    }
    Ok(())
}

/// The student's training record, as GGUF metadata.
fn gguf_provenance(
    student: &Student,
    cfg: &TrainConfig,
    cache: &chapters_code::distill::TeacherCache,
    logs: &[StepLog],
    text: &Path,
) -> Vec<(String, Value)> {
    let p = Provenance::current();
    let s = |v: String| Value::String(v);
    vec![
        (
            "general.name".into(),
            s(format!(
                "SmolLM2-135M-Instruct student ({} blocks, distilled)",
                student.dims.n_blocks
            )),
        ),
        (
            "distill.teacher_blocks".into(),
            Value::Array(student.kept.iter().map(|&b| Value::U32(b as u32)).collect()),
        ),
        (
            "distill.objective".into(),
            s(serde_json::to_string(&cfg.objective).unwrap_or_default()),
        ),
        ("distill.steps".into(), Value::U32(logs.len() as u32)),
        (
            "distill.positions".into(),
            Value::U64(logs.last().map_or(0, |l| l.tokens) as u64),
        ),
        ("distill.seed".into(), Value::U64(cfg.seed)),
        ("distill.learning_rate".into(), Value::F32(cfg.lr)),
        ("distill.teacher_top_k".into(), Value::U32(cache.k as u32)),
        (
            "distill.training_text".into(),
            s(text
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())),
        ),
        ("distill.git_sha".into(), s(p.git_sha)),
        ("distill.command".into(), s(p.command)),
    ]
}

/// The file's bytes parsed back (and written to `dir` as `name` when asked).
fn materialize(writer: &GgufWriter, dir: Option<&Path>, name: &str) -> Result<Gguf> {
    let bytes = writer.to_bytes();
    if let Some(dir) = dir {
        std::fs::write(dir.join(name), &bytes)
            .with_context(|| format!("writing into {}", dir.display()))?;
    }
    Ok(Gguf::from_bytes(bytes)?)
}

/// Greedy speculative decoding (4 tokens drafted per pass) of the teacher with three drafts
/// of the same size: the healed student, the pruned student before healing, and the
/// teacher's own first blocks. Prompts: 4 passages of the reference text.
fn draft_table(
    b: &ModelBench,
    teacher: &Llama,
    healed: &Gguf,
    pruned: &Gguf,
    keep: usize,
) -> Result<Table> {
    let mut table = Table::new(
        "distill-draft",
        "The student as a speculative draft for its teacher (greedy, 4 drafted tokens per pass)",
        vec![
            Column::new("draft", "Draft model"),
            Column::new("acceptance", "Drafts accepted")
                .unit("%")
                .decimals(1),
            Column::new("per_pass", "Tokens per teacher pass").decimals(2),
            Column::new("speedup", "Decode time vs plain")
                .unit("×")
                .decimals(2),
        ],
    );
    // Four passages 700 tokens apart (closer on a short text; the text holds at least 512).
    let apart = (b.scored.len().saturating_sub(48) / 4).min(700);
    let prompts: Vec<Vec<u32>> = (0..4)
        .map(|i| b.scored[i * apart..(i * apart + 48).min(b.scored.len())].to_vec())
        .collect();
    let request = |prompt: &[u32]| Request {
        prompt_ids: prompt.to_vec(),
        max_tokens: b.decode_tokens,
        sampling: SamplingParams::default(),
        stop_tokens: vec![],
        stop_strings: vec![],
    };
    let mut plain_seconds = 0.0;
    for p in &prompts {
        plain_seconds += generate(teacher, &b.tokenizer, &b.pool, &request(p), |_| {})?
            .times
            .decode
            .as_secs_f64();
    }
    let drafts: Vec<(String, Llama)> = vec![
        ("healed student".into(), Llama::load(healed)?),
        ("pruned student, not healed".into(), Llama::load(pruned)?),
        (
            format!("teacher's first {keep} blocks"),
            self_draft(teacher, keep)?,
        ),
    ];
    for (label, model) in drafts {
        let mut drafter = ModelDrafter::new(model, label.clone());
        let (mut drafted, mut accepted, mut passes, mut tokens, mut seconds) = (0, 0, 0, 0, 0.0);
        for p in &prompts {
            let (g, stats) = generate_speculative(
                teacher,
                &b.tokenizer,
                &b.pool,
                &mut drafter,
                4,
                &request(p),
                |_| {},
            )?;
            drafted += stats.drafted;
            accepted += stats.accepted;
            passes += stats.target_passes;
            tokens += g.generated_ids.len();
            seconds += g.times.decode.as_secs_f64();
        }
        table.push(vec![
            json!(label),
            json!(100.0 * accepted as f64 / drafted.max(1) as f64),
            json!(tokens as f64 / passes.max(1) as f64),
            json!(plain_seconds / seconds.max(1e-9)),
        ]);
    }
    table.notes.push(format!(
        "4 prompts of 48 tokens from the reference text, {} greedy tokens each; every speculative run gives the plain run's tokens. Decode time summed over the prompts, plain against speculative, {} thread(s).",
        b.decode_tokens,
        b.pool.n_threads()
    ));
    Ok(table)
}
