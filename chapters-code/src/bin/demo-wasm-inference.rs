//! WASM inference: the book's engine compiled to WebAssembly (`wasm/`), run by Node and by a
//! headless Chromium beside the native engine — the same tokens, and what the browser costs in
//! speed, size and load time.

use anyhow::{Context, Result, bail};
use chapters_code::demo::{Column, DemoArgs, ModelArgs, Provenance, Report, Table, progress};
use chapters_code::eval::bench::median;
use chapters_code::session::{Session, Step};
use chapters_code::tokenizer::TokenId;
use clap::Parser;
use serde_json::{Value, json};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Run the WebAssembly build of the engine under Node on a prompt and compare it with the
/// native engine (one thread each). Builds the two modules first with cargo — simd128, and
/// simd128 with relaxed-SIMD — unless --module and --relaxed-module are given (needs `rustup
/// target add wasm32-unknown-unknown`). --verify checks the tokens on several prompts, under
/// Node (simd128) and in Chromium (the page takes the relaxed-SIMD module). --benchmark
/// measures decode and prefill speed against native (in turns), the modules' sizes raw and
/// compressed, and the load times under Node and in Chromium (first visit and from the Cache
/// API).
#[derive(Parser, Debug)]
#[command(
    name = "demo-wasm-inference",
    version,
    after_help = "Examples:\n  demo-wasm-inference\n  demo-wasm-inference --prompt 'Why is the sky blue?' --chat\n  demo-wasm-inference --verify\n  demo-wasm-inference --benchmark --output json\n"
)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,

    #[command(flatten)]
    run: ModelArgs,

    /// The simd128 module [default: build it: target/wasm32-unknown-unknown/wasm/prodml_wasm.wasm].
    #[arg(long)]
    module: Option<PathBuf>,

    /// The relaxed-SIMD module [default: build it: target/wasm-relaxed/wasm32-unknown-unknown/wasm/prodml_wasm.wasm].
    #[arg(long)]
    relaxed_module: Option<PathBuf>,

    /// Chromium for the browser runs (--verify, --benchmark).
    #[arg(long, default_value = "/usr/bin/chromium")]
    chromium: PathBuf,

    /// Prompt of the default run.
    #[arg(long, default_value = "The capital of France is")]
    prompt: String,

    /// Send the prompt through the model's chat template.
    #[arg(long)]
    chat: bool,

    /// Greedy tokens per prompt.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(2..2048))]
    max_tokens: u64,

    /// Where --benchmark saves Chromium's screenshot of the page [default: not kept].
    #[arg(long)]
    screenshot: Option<PathBuf>,

    /// Rounds of --benchmark's speed measurement (the median is reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..51))]
    rounds: u64,
}

fn main() -> std::process::ExitCode {
    chapters_code::demo::exit::run(demo)
}

/// `wasm/` in this repository.
fn wasm_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../wasm")
}

/// The two modules, simd128 and relaxed-SIMD.
struct Modules {
    simd128: PathBuf,
    relaxed: PathBuf,
}

/// The modules: given, or built now with cargo.
fn modules(cli: &Cli) -> Result<Modules> {
    let given = |m: &Option<PathBuf>, flag: &str| match m {
        Some(m) if !m.exists() => bail!("{flag} {}: no such file", m.display()),
        other => Ok(other.clone()),
    };
    let simd128 = match given(&cli.module, "--module")? {
        Some(m) => m,
        None => build_module("target", None)?,
    };
    let relaxed = match given(&cli.relaxed_module, "--relaxed-module")? {
        Some(m) => m,
        None => build_module(
            "target/wasm-relaxed",
            Some("-C target-feature=+simd128,+relaxed-simd"),
        )?,
    };
    Ok(Modules { simd128, relaxed })
}

/// Builds the module into `target_dir` (relative to the workspace), with `rustflags` in place
/// of .cargo/config.toml's where given.
fn build_module(target_dir: &str, rustflags: Option<&str>) -> Result<PathBuf> {
    let root = wasm_dir().join("..");
    let what = if rustflags.is_some() {
        "the relaxed-SIMD WebAssembly module"
    } else {
        "the WebAssembly module"
    };
    let spinner = progress::spinner(format!("building {what} (cargo, --profile wasm)"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(&root).args([
        "build",
        "-q",
        "-p",
        "prodml-wasm",
        "--profile",
        "wasm",
        "--target",
        "wasm32-unknown-unknown",
        "--target-dir",
        target_dir,
    ]);
    if let Some(flags) = rustflags {
        command.env("RUSTFLAGS", flags);
    }
    let out = command
        .output()
        .with_context(|| format!("running cargo to build {what}"))?;
    spinner.finish_and_clear();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("target may not be installed") {
            bail!(
                "the wasm32-unknown-unknown target is not installed: run `rustup target add wasm32-unknown-unknown`, or pass --module and --relaxed-module"
            );
        }
        bail!("building {what} failed:\n{err}");
    }
    Ok(root
        .join(target_dir)
        .join("wasm32-unknown-unknown/wasm/prodml_wasm.wasm"))
}

/// Runs a Node script of `wasm/` with `args`; its JSON output.
fn node(script: &Path, args: &[&Path]) -> Result<Value> {
    let out = Command::new("node")
        .arg(script)
        .args(args)
        .output()
        .context("running `node` (install Node.js: apt-get install nodejs)")?;
    if !out.status.success() {
        bail!(
            "node {} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("reading the script's JSON")
}

/// One prompt's run, wasm or native: the tokens, and milliseconds to the first token and in all.
#[derive(Debug, Clone)]
struct Run {
    prompt_tokens: usize,
    ids: Vec<TokenId>,
    text: String,
    first_ms: f64,
    total_ms: f64,
}

impl Run {
    fn decode_tok_s(&self) -> f64 {
        (self.ids.len().saturating_sub(1)) as f64 / ((self.total_ms - self.first_ms) / 1e3)
    }

    /// Prompt tokens per second up to the first token (prefill and one step).
    fn prefill_tok_s(&self) -> f64 {
        self.prompt_tokens as f64 / (self.first_ms / 1e3)
    }
}

/// The prompts: (text, chat, max tokens).
type Prompts = Vec<(String, bool, usize)>;

/// `prompts` written to a temporary file for a script (`(file) → its report`), then removed.
fn with_prompts_file(prompts: &Prompts, run: impl FnOnce(&Path) -> Result<Value>) -> Result<Value> {
    let list: Vec<Value> = prompts
        .iter()
        .map(|(p, chat, n)| json!({"prompt": p, "chat": chat, "max_tokens": n}))
        .collect();
    let file = std::env::temp_dir().join(format!("prodml-wasm-demo-{}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_vec(&list)?)?;
    let report = run(&file);
    let _ = std::fs::remove_file(&file);
    report
}

/// A run's token ids from a script's JSON.
fn token_ids(v: &Value) -> Vec<TokenId> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| Some(v.as_u64()? as TokenId))
        .collect()
}

/// The WebAssembly engine under Node on `prompts`: instantiate and load times, and each run.
fn wasm_runs(module: &Path, model: &Path, prompts: &Prompts) -> Result<(Value, Vec<Run>)> {
    let report = with_prompts_file(prompts, |file| {
        node(
            &wasm_dir().join("js/node-greedy.mjs"),
            &[module, model, file],
        )
    })?;
    let runs = report["results"]
        .as_array()
        .context("no results")?
        .iter()
        .map(|r| Run {
            prompt_tokens: r["prompt_tokens"].as_u64().unwrap_or(0) as usize,
            ids: token_ids(&r["ids"]),
            text: r["text"].as_str().unwrap_or_default().to_string(),
            first_ms: r["first_token_ms"].as_f64().unwrap_or(f64::NAN),
            total_ms: r["total_ms"].as_f64().unwrap_or(f64::NAN),
        })
        .collect();
    Ok((report, runs))
}

/// The native engine (one thread) on `prompts`, timed as the Node script times the module.
fn native_runs(session: &mut Session, prompts: &Prompts) -> Result<Vec<Run>> {
    prompts
        .iter()
        .map(|(prompt, chat, max)| {
            let t0 = Instant::now();
            let ids = session
                .prompt_ids(prompt, *chat)
                .map_err(anyhow::Error::msg)?;
            session.start(&ids, *max).map_err(anyhow::Error::msg)?;
            let (mut out, mut text, mut first_ms) = (Vec::new(), String::new(), f64::NAN);
            loop {
                match session.step().map_err(anyhow::Error::msg)? {
                    Step::Token(t, piece) => {
                        if out.is_empty() {
                            first_ms = t0.elapsed().as_secs_f64() * 1e3;
                        }
                        out.push(t);
                        text.push_str(&piece);
                    }
                    Step::Done(rest) => {
                        text.push_str(&rest);
                        break;
                    }
                }
            }
            Ok(Run {
                prompt_tokens: ids.len(),
                ids: out,
                text,
                first_ms,
                total_ms: t0.elapsed().as_secs_f64() * 1e3,
            })
        })
        .collect()
}

/// One Chromium session of `wasm/web/test-browser.mjs` on `prompts`: the page offered the
/// relaxed-SIMD module first; its report (load times, the module it took) and each run. None
/// where Chromium or playwright-core is missing (said on stderr).
fn browser_runs(
    chromium: &Path,
    modules: &Modules,
    model: &Path,
    prompts: &Prompts,
    screenshot: &Path,
) -> Result<Option<(Value, Vec<Run>)>> {
    let playwright = wasm_dir().join("web/node_modules/playwright-core");
    if !chromium.exists() || !playwright.exists() {
        eprintln!(
            "no Chromium runs: {} or wasm/web/node_modules (npm ci --prefix wasm/web) is missing",
            chromium.display()
        );
        return Ok(None);
    }
    let report = with_prompts_file(prompts, |file| {
        node(
            &wasm_dir().join("web/test-browser.mjs"),
            &[
                chromium,
                &modules.simd128,
                model,
                file,
                screenshot,
                &modules.relaxed,
            ],
        )
    })?;
    let runs = report["results"]
        .as_array()
        .context("no results")?
        .iter()
        .map(|r| {
            let ids = token_ids(&r["ids"]);
            let first_ms = r["firstTokenMs"].as_f64().unwrap_or(f64::NAN);
            let tok_s = r["tokPerS"].as_f64().unwrap_or(f64::NAN);
            Run {
                prompt_tokens: r["promptTokens"].as_u64().unwrap_or(0) as usize,
                total_ms: first_ms + ids.len().saturating_sub(1) as f64 / tok_s * 1e3,
                ids,
                text: r["text"].as_str().unwrap_or_default().to_string(),
                first_ms,
            }
        })
        .collect();
    Ok(Some((report, runs)))
}

/// Varied prompts for --verify and --benchmark (short enough that RoPE's last-bit differences
/// between the C library and WebAssembly cannot flip a token; see the chapter).
fn suite(max: usize) -> Prompts {
    [
        ("The capital of France is", false),
        ("fn fibonacci(n: u64) -> u64 {", false),
        ("1, 1, 2, 3, 5, 8, 13,", false),
        ("What is the boiling point of water in Fahrenheit?", true),
        ("Write a haiku about the sea.", true),
    ]
    .into_iter()
    .map(|(p, chat)| (p.to_string(), chat, max))
    .collect()
}

fn demo() -> Result<()> {
    let cli = Cli::parse();
    let model = cli.run.model_path();
    if !model.exists() {
        // The same message the other demos give.
        chapters_code::assets::open_model(&model)?;
    }
    let modules = modules(&cli)?;
    let mut session = Session::load(
        std::fs::read(&model).with_context(|| format!("reading {}", model.display()))?,
    )
    .map_err(anyhow::Error::msg)?;
    let max = cli.max_tokens as usize;
    let one: Prompts = vec![(cli.prompt.clone(), cli.chat, max)];
    let (node_report, wasm) = wasm_runs(&modules.simd128, &model, &one)?;
    let native = native_runs(&mut session, &one)?;
    let (w, n) = (&wasm[0], &native[0]);
    let shot = std::env::temp_dir().join(format!("prodml-wasm-browser-{}.png", std::process::id()));

    let mut tables = Vec::new();
    let mut verified = None;
    if cli.demo.verify {
        let prompts = suite(32);
        let (_, wasm) = wasm_runs(&modules.simd128, &model, &prompts)?;
        let browser = browser_runs(&cli.chromium, &modules, &model, &prompts, &shot)?;
        let native = native_runs(&mut session, &prompts)?;
        let mut table = Table::new(
            "wasm-agreement",
            "The WebAssembly engine against the native engine: greedy tokens",
            vec![
                Column::new("prompt", "Prompt"),
                Column::new("chat", "Chat template"),
                Column::new("tokens", "Tokens"),
                Column::new("same_node", "Same tokens and text (Node, simd128)"),
                Column::new("same_chromium", "Same (Chromium, relaxed-SIMD)"),
            ],
        );
        for (i, ((p, a), b)) in prompts.iter().zip(&wasm).zip(&native).enumerate() {
            let in_browser = browser
                .as_ref()
                .map(|(_, runs)| json!(runs[i].ids == b.ids && runs[i].text == b.text))
                .unwrap_or(Value::Null);
            table.push(vec![
                json!(p.0),
                json!(p.1),
                json!(b.ids.len()),
                json!(a.ids == b.ids && a.text == b.text),
                in_browser,
            ]);
        }
        if let Some((report, _)) = &browser {
            table.notes.push(format!(
                "Chromium took the {} module and ran its {} kernels.",
                report["load_first"]["module"].as_str().unwrap_or("?"),
                report["load_first"]["kernels"].as_str().unwrap_or("?")
            ));
        }
        verified = Some(
            table
                .rows
                .iter()
                .all(|r| r["same_node"] == json!(true) && r["same_chromium"] != json!(false)),
        );
        tables.push(table);
    }
    if cli.demo.benchmark {
        tables.push(size_table(&modules)?);
        let (speed, browser_report) = speed_table(
            &cli.chromium,
            &modules,
            &model,
            &mut session,
            cli.rounds as usize,
            max,
            &shot,
        )?;
        tables.push(speed);
        tables.push(load_table(&node_report, browser_report.as_ref()));
        if let (Some(keep), Some(_)) = (cli.screenshot.as_deref(), &browser_report) {
            std::fs::copy(&shot, keep)
                .with_context(|| format!("saving the screenshot to {}", keep.display()))?;
        }
    }
    let _ = std::fs::remove_file(&shot);
    let report = Report {
        demo: "wasm-inference".into(),
        provenance: Provenance::current(),
        result: json!({
            "module": modules.simd128.display().to_string(),
            "relaxed_module": modules.relaxed.display().to_string(),
            "simd128": node_report["simd128"],
            "prompt": cli.prompt,
            "wasm_text": w.text,
            "native_text": n.text,
            "same_tokens": w.ids == n.ids,
            "wasm_decode_tok_s": w.decode_tok_s(),
            "native_decode_tok_s": n.decode_tok_s(),
        }),
        tables,
        verified,
    };
    report.emit(cli.demo.output, |out| {
        writeln!(
            out,
            "WebAssembly (Node, simd128 {}): {:?}",
            node_report["simd128"], w.text
        )?;
        writeln!(out, "native (one thread):           {:?}", n.text)?;
        writeln!(
            out,
            "same tokens: {}; decode {:.1} tokens/s in WebAssembly against {:.1} natively ({:.0}%)",
            w.ids == n.ids,
            w.decode_tok_s(),
            n.decode_tok_s(),
            100.0 * w.decode_tok_s() / n.decode_tok_s()
        )
    })?;
    if verified == Some(false) {
        std::process::exit(1);
    }
    Ok(())
}

/// The modules' sizes as a browser downloads them: raw and gzip-compressed.
fn size_table(modules: &Modules) -> Result<Table> {
    let mut table = Table::new(
        "wasm-size",
        "The WebAssembly modules' sizes",
        vec![
            Column::new("form", "Form"),
            Column::new("bytes", "Bytes"),
            Column::new("mb", "Size").unit("MB").decimals(2),
        ],
    );
    for (name, path) in [
        ("simd128", &modules.simd128),
        ("relaxed-SIMD", &modules.relaxed),
    ] {
        let bytes = std::fs::read(path)?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&bytes)?;
        let gzipped = gz.finish()?.len();
        for (form, n) in [("raw (.wasm)", bytes.len()), ("gzip -9", gzipped)] {
            table.push(vec![
                json!(format!("{name}, {form}")),
                json!(n),
                json!(n as f64 / 1e6),
            ]);
        }
    }
    table.notes.push("Built by `cargo build -p prodml-wasm --profile wasm --target wasm32-unknown-unknown` (LTO, one codegen unit, no debug info; dependencies at opt-level z, the book's kernels at 3), the second with `RUSTFLAGS=\"-C target-feature=+simd128,+relaxed-simd\"`. A page downloads one of them. The model file is separate.".into());
    Ok(table)
}

/// Decode and prefill speed, WebAssembly (Node with the simd128 module; Chromium, which takes
/// the relaxed-SIMD one) against native, one thread each, in turns. Also the first Chromium
/// report (its load times).
fn speed_table(
    chromium: &Path,
    modules: &Modules,
    model: &Path,
    session: &mut Session,
    rounds: usize,
    max: usize,
    screenshot: &Path,
) -> Result<(Table, Option<Value>)> {
    let prompts = suite(max);
    // Per phase (decode, prefill) and engine (Node, Chromium, native): each round's median.
    let mut medians = [
        [Vec::new(), Vec::new(), Vec::new()],
        [Vec::new(), Vec::new(), Vec::new()],
    ];
    let mut first_browser_report = None;
    let bar = progress::steps(
        rounds as u64,
        "WebAssembly (Node, Chromium) and native, in turns",
    );
    for _ in 0..rounds {
        let (_, node_runs) = wasm_runs(&modules.simd128, model, &prompts)?;
        let browser = browser_runs(chromium, modules, model, &prompts, screenshot)?;
        let native = native_runs(session, &prompts)?;
        let empty = Vec::new();
        let browser_runs = browser.as_ref().map(|(_, r)| r).unwrap_or(&empty);
        for (e, runs) in [&node_runs, browser_runs, &native].into_iter().enumerate() {
            if !runs.is_empty() {
                medians[0][e].push(median(
                    &runs.iter().map(Run::decode_tok_s).collect::<Vec<_>>(),
                ));
                medians[1][e].push(median(
                    &runs.iter().map(Run::prefill_tok_s).collect::<Vec<_>>(),
                ));
            }
        }
        if first_browser_report.is_none() {
            first_browser_report = browser.map(|(report, _)| report);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut table = Table::new(
        "wasm-speed",
        "WebAssembly against native, one thread each",
        vec![
            Column::new("phase", "Phase"),
            Column::new("node_tok_s", "simd128 (Node)")
                .unit("tok/s")
                .decimals(1),
            Column::new("chromium_tok_s", "relaxed-SIMD (Chromium)")
                .unit("tok/s")
                .decimals(1),
            Column::new("native_tok_s", "Native")
                .unit("tok/s")
                .decimals(1),
            Column::new("node_ratio", "simd128 / native")
                .unit("%")
                .decimals(0),
            Column::new("chromium_ratio", "relaxed-SIMD / native")
                .unit("%")
                .decimals(0),
        ],
    );
    for (phase, m) in ["decode", "prefill (to the first token)"]
        .into_iter()
        .zip(medians)
    {
        let [node, chromium, native] = m.map(|v| median(&v));
        let cell = |x: f64| if x.is_finite() { json!(x) } else { Value::Null };
        table.push(vec![
            json!(phase),
            cell(node),
            cell(chromium),
            cell(native),
            cell(100.0 * node / native),
            cell(100.0 * chromium / native),
        ]);
    }
    table.notes.push(format!(
        "Median over {} prompts (prose, code, digits, two chat turns) of the per-prompt speed, then the median of {rounds} rounds taken in turns; up to {max} greedy tokens each. Node runs the simd128 module in its main thread; Chromium runs the page's Web Worker, which took the relaxed-SIMD module, and posts each token to the page. Native: the same session code, compiled for this CPU, one thread. Decode: tokens after the first over the time after the first. Prefill: prompt tokens over the time to the first token.",
        prompts.len()
    ));
    Ok((table, first_browser_report))
}

/// Where a page's time goes before the first token: instantiating the module and loading the
/// model, under Node and in Chromium (first visit, then from the Cache API).
fn load_table(node_report: &Value, browser: Option<&Value>) -> Table {
    let mut table = Table::new(
        "wasm-load",
        "Loading: the module and the model",
        vec![
            Column::new("where", "Where"),
            Column::new("instantiate_ms", "Compile + instantiate the module")
                .unit("ms")
                .decimals(1),
            Column::new("self_test_ms", "Kernel self-test")
                .unit("ms")
                .decimals(1),
            Column::new("load_ms", "Model into wasm memory, parsed")
                .unit("ms")
                .decimals(0),
            Column::new("first_token_ms", "First token")
                .unit("ms")
                .decimals(0),
        ],
    );
    table.push(vec![
        json!("Node, simd128 (file read in 1 MiB chunks)"),
        node_report["instantiate_ms"].clone(),
        Value::Null,
        node_report["load_ms"].clone(),
        node_report["results"][0]["first_token_ms"].clone(),
    ]);
    match browser {
        Some(report) => {
            for (label, key) in [
                ("Chromium, first visit (download from loopback)", "load_first"),
                ("Chromium, second visit (Cache API)", "load_cached"),
            ] {
                table.push(vec![
                    json!(format!(
                        "{label}, {}",
                        report[key]["module"].as_str().unwrap_or("?")
                    )),
                    report[key]["instantiateMs"].clone(),
                    report[key]["selfTestMs"].clone(),
                    report[key]["loadMs"].clone(),
                    if key == "load_first" {
                        report["results"][0]["firstTokenMs"].clone()
                    } else {
                        Value::Null
                    },
                ]);
            }
        }
        None => table.notes.push(
            "No Chromium rows: Chromium or wasm/web/node_modules (npm ci --prefix wasm/web) is missing."
                .into(),
        ),
    }
    table.notes.push(
        "Compile + instantiate: what a page pays once per visit (the model's download is the network's and the disk's). The page checks the module's kernels against the scalar reference before it uses them (256 rows). First token: from the start of the request, prefill included, for the benchmark's first prompt.".into(),
    );
    table
}
