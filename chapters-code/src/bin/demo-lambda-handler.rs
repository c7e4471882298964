//! A serverless handler on AWS's own Rust runtime (`lambda_runtime`): the model is mapped once
//! per execution environment, each invocation runs an OpenAI-style request. With
//! `AWS_LAMBDA_RUNTIME_API` set this binary *is* the function (Lambda's `bootstrap`); without,
//! it is the demo that drives it through cargo-lambda's emulator of the Runtime API.

use anyhow::{Context, Result, bail};
use chapters_code::demo::{Column, DemoArgs, ModelArgs, Provenance, Report, Table, progress};
use chapters_code::serverless::{Function, ms};
use clap::Parser;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Run the Lambda function locally, through cargo-lambda's emulator of the Lambda Runtime API
/// (`pip install cargo-lambda`; never AWS). Default: one invocation of --prompt. --verify: a
/// good completion, a good chat and bad events through the emulator, and `cargo lambda invoke`
/// itself. --benchmark: cold starts (process start → runtime init → first answer) with their
/// stages, and warm invocations.
#[derive(Parser, Debug)]
#[command(
    name = "demo-lambda-handler",
    version,
    after_help = "Examples:\n  demo-lambda-handler --prompt 'The capital of France is'\n  demo-lambda-handler --verify\n  demo-lambda-handler --benchmark --cold-starts 30 --output json\n\nAs the function itself (what Lambda runs): set AWS_LAMBDA_RUNTIME_API (and PRODML_MODEL or put model.gguf beside the binary)."
)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,

    #[command(flatten)]
    run: ModelArgs,

    /// Prompt of the default invocation.
    #[arg(long, default_value = "The capital of France is")]
    prompt: String,

    /// Tokens per invocation.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..1025))]
    max_tokens: u64,

    /// cargo-lambda's binary [default: `cargo-lambda` on PATH, or $PRODML_CARGO_LAMBDA].
    #[arg(long)]
    cargo_lambda: Option<PathBuf>,

    /// Cold starts to measure (--benchmark).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..1001))]
    cold_starts: u64,

    /// Warm invocations after each cold start (--benchmark).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..101))]
    warm: u64,
}

fn main() -> std::process::ExitCode {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        return function_main();
    }
    chapters_code::demo::exit::run(demo)
}

/// Nanoseconds since the Unix epoch: a clock that the parent and this process share.
fn epoch_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

// ANCHOR: function_main
/// The function: init once (timed), then the runtime's loop of invocations.
fn function_main() -> std::process::ExitCode {
    let entered = epoch_ns();
    let model = std::env::var_os("PRODML_MODEL")
        .map(PathBuf::from)
        .or_else(|| {
            let root = PathBuf::from(std::env::var_os("LAMBDA_TASK_ROOT")?);
            Some(root.join("model.gguf")).filter(|p| p.exists())
        })
        .unwrap_or_else(chapters_code::assets::model_path);
    let threads = std::env::var("PRODML_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let function = match Function::init(&model, threads) {
        Ok(f) => f,
        Err(e) => {
            // Lambda reports a failed init (Runtime.ExitError) with this line in the log.
            eprintln!("init failed: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // When the parent wrote down the moment it started this process, the time to reach main.
    let spawned: Option<u128> = std::env::var("PRODML_SPAWNED_AT_NS")
        .ok()
        .and_then(|s| s.parse().ok());
    let since_spawn = |t: u128| spawned.map(|s| t.saturating_sub(s) as f64 / 1e6);
    eprintln!(
        "{}",
        json!({ "prodml_init": {
            "exec_ms": since_spawn(entered),
            "map_ms": function.init.map_ms,
            "validate_ms": function.init.validate_ms,
            "tokenizer_ms": function.init.tokenizer_ms,
            "ready_ms": since_spawn(epoch_ns()),
        }})
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let function = &function;
    let handler = lambda_runtime::service_fn(move |event: lambda_runtime::LambdaEvent<Value>| {
        let started = Instant::now();
        let answer = function.invoke(&event.payload);
        eprintln!(
            "{}",
            json!({ "prodml_invoke": { "request_id": event.context.request_id, "ms": ms(started.elapsed()), "ok": answer.is_ok() }})
        );
        std::future::ready(answer.map_err(|e| lambda_runtime::Diagnostic {
            error_type: e.kind.to_string(),
            error_message: e.message,
        }))
    });
    match runtime.block_on(lambda_runtime::run(handler)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("the Lambda runtime stopped: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
// ANCHOR_END: function_main

/// cargo-lambda's emulator of the Runtime API, on a free loopback port; killed when dropped.
struct Emulator {
    child: Child,
    port: u16,
    binary: PathBuf,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds cargo-lambda: the flag, $PRODML_CARGO_LAMBDA, or PATH.
fn cargo_lambda(cli: &Cli) -> Result<PathBuf> {
    let candidate = cli
        .cargo_lambda
        .clone()
        .or_else(|| std::env::var_os("PRODML_CARGO_LAMBDA").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("cargo-lambda"));
    match Command::new(&candidate)
        .args(["lambda", "--version"])
        .output()
    {
        Ok(out) if out.status.success() => Ok(candidate),
        _ => bail!(
            "cargo-lambda not found ({}): install it with `pip install cargo-lambda` (it ships the binary), or pass --cargo-lambda PATH",
            candidate.display()
        ),
    }
}

impl Emulator {
    fn start(binary: &Path) -> Result<Emulator> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        // cargo-lambda reads the workspace's metadata even when it starts no function.
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let child = Command::new(binary)
            .current_dir(&workspace)
            .args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "-A",
                "127.0.0.1",
                "-P",
            ])
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut emulator = Emulator {
            child,
            port,
            binary: binary.to_path_buf(),
        };
        chapters_code::child::wait_ready(
            &mut emulator.child,
            &format!("cargo-lambda's emulator (port {port})"),
            Duration::from_secs(30),
            || chapters_code::child::listening(port),
        )
        .map_err(anyhow::Error::msg)?;
        Ok(emulator)
    }

    fn invoke_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/2015-03-31/functions/_/invocations",
            self.port
        )
    }
}

/// A function process started against `emulator`; its log lines (`prodml_init`,
/// `prodml_invoke`) arrive on `log` with the moment they were read.
struct FunctionProcess {
    child: Child,
    spawned: Instant,
    log: std::sync::mpsc::Receiver<(Value, Instant)>,
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_function(emulator: &Emulator, model: &Path) -> Result<FunctionProcess> {
    let exe = std::env::current_exe()?;
    let spawned = Instant::now();
    let mut child = Command::new(exe)
        .env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("http://127.0.0.1:{}/.rt", emulator.port),
        )
        .env("AWS_LAMBDA_FUNCTION_NAME", "_")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        .env("PRODML_MODEL", model)
        .env("PRODML_SPAWNED_AT_NS", epoch_ns().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the function")?;
    let stderr = child.stderr.take().context("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send((v, Instant::now()));
            }
        }
    });
    Ok(FunctionProcess {
        child,
        spawned,
        log: rx,
    })
}

/// One synchronous invocation through the emulator: (HTTP status, body).
async fn invoke(
    http: &reqwest::Client,
    emulator: &Emulator,
    event: &Value,
) -> Result<(u16, Value)> {
    let response = http
        .post(emulator.invoke_url())
        .json(event)
        .send()
        .await
        .context("invoking through the emulator")?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.context("the answer is not JSON")?;
    Ok((status, body))
}

/// The text of a completion or chat completion response.
fn answer_text(body: &Value) -> Option<&str> {
    let choice = body.get("choices")?.get(0)?;
    choice
        .get("text")
        .or_else(|| choice.get("message")?.get("content"))
        .and_then(Value::as_str)
}

fn demo() -> Result<()> {
    let cli = Cli::parse();
    let model = cli.run.model_path();
    chapters_code::assets::open_model(&model)?;
    let event = json!({
        "prompt": cli.prompt, "max_tokens": cli.max_tokens, "temperature": 0,
    });
    // In this process: what the function will answer.
    let local = Function::init(&model, 1).map_err(anyhow::Error::msg)?;
    let expected = local.invoke(&event).map_err(anyhow::Error::msg)?;
    let mut tables = Vec::new();
    let mut verified = None;
    if cli.demo.verify || cli.demo.benchmark {
        let binary = cargo_lambda(&cli)?;
        let runtime = chapters_code::serve::runtime()?;
        let http = reqwest::Client::new();
        if cli.demo.verify {
            let table = runtime.block_on(verify(&http, &binary, &model, &local, &event))?;
            verified = Some(table.rows.iter().all(|r| r["pass"] == json!(true)));
            tables.push(table);
        }
        if cli.demo.benchmark {
            tables.extend(runtime.block_on(benchmark(&cli, &http, &binary, &model, &event))?);
        }
    }
    let report = Report {
        demo: "lambda-handler".into(),
        provenance: Provenance::current(),
        result: json!({
            "event": event,
            "answer": expected,
            "init": local.init,
        }),
        tables,
        verified,
    };
    report.emit(cli.demo.output, |out| {
        writeln!(
            out,
            "init: map {:.1} ms, validate {:.1} ms, tokenizer {:.1} ms",
            local.init.map_ms, local.init.validate_ms, local.init.tokenizer_ms
        )?;
        writeln!(out, "{}", serde_json::to_string_pretty(&expected)?)
    })?;
    if verified == Some(false) {
        std::process::exit(1);
    }
    Ok(())
}

// ANCHOR: verify
/// Good and bad events through the emulator, against what the function answers in-process.
async fn verify(
    http: &reqwest::Client,
    binary: &Path,
    model: &Path,
    local: &Function,
    completion: &Value,
) -> Result<Table> {
    let emulator = Emulator::start(binary)?;
    let mut function = start_function(&emulator, model)?;
    let mut table = Table::new(
        "lambda-verify",
        "The handler through cargo-lambda's emulator of the Lambda Runtime API",
        vec![
            Column::new("case", "Event"),
            Column::new("expected", "Expected"),
            Column::new("got", "Got"),
            Column::new("pass", "Pass"),
        ],
    );
    let chat = json!({
        "messages": [{"role": "user", "content": "Name one primary colour."}],
        "max_tokens": 12, "temperature": 0,
    });
    for (case, event) in [("completion", completion), ("chat completion", &chat)] {
        let want = local.invoke(event).map_err(anyhow::Error::msg)?;
        let (status, body) = invoke(http, &emulator, event).await?;
        let (want, got) = (answer_text(&want), answer_text(&body));
        table.push(vec![
            json!(case),
            json!(format!(
                "the in-process answer {:?}",
                want.unwrap_or_default()
            )),
            json!(format!("HTTP {status}, {:?}", got.unwrap_or("(no text)"))),
            json!(status == 200 && got.is_some() && got == want),
        ]);
    }
    let bad = [
        ("no prompt", json!({"max_tokens": 4}), "prompt"),
        ("not an object", json!("hello"), "object"),
        (
            "temperature out of range",
            json!({"prompt": "Hi", "temperature": 9}),
            "temperature",
        ),
        (
            "streaming asked",
            json!({"prompt": "Hi", "stream": true}),
            "stream",
        ),
        (
            "another model",
            json!({"prompt": "Hi", "model": "gpt-4"}),
            "gpt-4",
        ),
    ];
    for (case, event, mentions) in bad {
        let (status, body) = invoke(http, &emulator, &event).await?;
        let kind = body["errorType"].as_str().unwrap_or_default();
        let message = body["errorMessage"].as_str().unwrap_or_default();
        table.push(vec![
            json!(format!("bad: {case}")),
            json!(format!(
                "errorType InvalidRequest, a message naming `{mentions}`"
            )),
            json!(format!("HTTP {status}, {kind}: {message}")),
            json!(kind == "InvalidRequest" && message.contains(mentions)),
        ]);
    }
    // The bad events did not take the environment down: the same process answers again.
    let alive = function.child.try_wait()?.is_none();
    let (status, body) = invoke(http, &emulator, completion).await?;
    table.push(vec![
        json!("a good event after the bad ones"),
        json!("the same process answers"),
        json!(format!("process alive: {alive}; HTTP {status}")),
        json!(alive && status == 200 && answer_text(&body).is_some()),
    ]);
    // cargo-lambda's own client, as a reader would invoke it.
    let out = tokio::process::Command::new(&emulator.binary)
        .args(["lambda", "invoke", "_", "-A", "127.0.0.1", "-P"])
        .arg(emulator.port.to_string())
        .arg("--data-ascii")
        .arg(completion.to_string())
        .output()
        .await?;
    let printed = String::from_utf8_lossy(&out.stdout);
    let parsed: Option<Value> = serde_json::from_str(printed.trim()).ok();
    table.push(vec![
        json!("`cargo lambda invoke`"),
        json!("the same completion"),
        json!(format!(
            "exit {}, {:?}",
            out.status.code().unwrap_or(-1),
            parsed.as_ref().and_then(answer_text).unwrap_or("(no text)")
        )),
        json!(
            out.status.success()
                && parsed.as_ref().and_then(answer_text)
                    == answer_text(&local.invoke(completion).map_err(anyhow::Error::msg)?)
        ),
    ]);
    drop(function);
    Ok(table)
}
// ANCHOR_END: verify

/// Percentile `q` of `values` (nearest rank).
fn percentile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    chapters_code::engine::replay::percentile(&mut v, q)
}

// ANCHOR: cold_start
/// Cold starts: a new function process per round, invoked at once (the emulator holds the
/// event until the runtime asks for it), timed from the process's start; then warm
/// invocations of the same process.
async fn benchmark(
    cli: &Cli,
    http: &reqwest::Client,
    binary: &Path,
    model: &Path,
    event: &Value,
) -> Result<Vec<Table>> {
    let emulator = Emulator::start(binary)?;
    let n = cli.cold_starts as usize;
    // Per stage, one value per cold start (ms).
    let names = [
        ("exec_ms", "process start → main()"),
        ("map_ms", "map the GGUF file"),
        ("validate_ms", "check every tensor"),
        ("tokenizer_ms", "build the tokenizer"),
        ("ready_ms", "process start → ready (init done)"),
        ("first_invoke_ms", "first invocation, in the handler"),
        ("cold_ms", "process start → first answer received"),
    ];
    let mut values: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut warm = Vec::new();
    let bar = progress::steps(n as u64, "cold starts through the emulator");
    for _ in 0..n {
        let function = start_function(&emulator, model)?;
        let (status, body) = invoke(http, &emulator, event).await?;
        let answered = function.spawned.elapsed();
        if status != 200 || answer_text(&body).is_none() {
            bail!("a cold start's invocation failed: HTTP {status} {body}");
        }
        for _ in 0..cli.warm {
            let t = Instant::now();
            let (status, _) = invoke(http, &emulator, event).await?;
            if status != 200 {
                bail!("a warm invocation failed: HTTP {status}");
            }
            warm.push(ms(t.elapsed()));
        }
        // The log lines: init's stages, then the first invocation's handler time.
        let (mut init, mut first) = (None, None);
        let until = Instant::now() + Duration::from_secs(5);
        while (init.is_none() || first.is_none()) && Instant::now() < until {
            if let Ok((line, _)) = function.log.recv_timeout(Duration::from_millis(100)) {
                if let Some(i) = line.get("prodml_init") {
                    init = Some(i.clone());
                } else if let Some(i) = line.get("prodml_invoke") {
                    first.get_or_insert(i["ms"].as_f64().unwrap_or(f64::NAN));
                }
            }
        }
        let init = init.context("the function did not report its init")?;
        for (k, (key, _)) in names.iter().enumerate() {
            values[k].push(match *key {
                "first_invoke_ms" => first.unwrap_or(f64::NAN),
                "cold_ms" => ms(answered),
                key => init[key].as_f64().unwrap_or(f64::NAN),
            });
        }
        drop(function);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut cold = Table::new(
        "lambda-cold-start",
        "Cold start, stage by stage",
        vec![
            Column::new("stage", "Stage"),
            Column::new("p50_ms", "P50").unit("ms").decimals(1),
            Column::new("p99_ms", "P99").unit("ms").decimals(1),
        ],
    );
    for ((_, label), v) in names.iter().zip(&values) {
        cold.push(vec![
            json!(label),
            json!(percentile(v, 0.5)),
            json!(percentile(v, 0.99)),
        ]);
    }
    cold.notes.push(format!(
        "{n} cold starts: a new process each, started against cargo-lambda's emulator of the Runtime API (`cargo lambda watch --only-lambda-apis`) and invoked at once with a {}-token greedy completion. (With fewer than 100 values the P99, nearest rank, is the largest.) The model file is in the page cache after the first start (on Lambda, the first start in a new environment also reads it from the package's storage).",
        cli.max_tokens
    ));
    let mut warm_table = Table::new(
        "lambda-warm",
        "Warm invocations",
        vec![
            Column::new("invocations", "Invocations"),
            Column::new("p50_ms", "P50").unit("ms").decimals(1),
            Column::new("p99_ms", "P99").unit("ms").decimals(1),
        ],
    );
    warm_table.push(vec![
        json!(warm.len()),
        json!(percentile(&warm, 0.5)),
        json!(percentile(&warm, 0.99)),
    ]);
    warm_table.notes.push(format!(
        "The same event to a process that has answered before, timed by the client through the emulator ({} per cold start).",
        cli.warm
    ));
    Ok(vec![cold, warm_table, package_table(model)?])
}

/// The deployment package, laid out and zipped from this executable, against Lambda's limits.
fn package_table(model: &Path) -> Result<Table> {
    use chapters_code::serverless::package::{
        self, DIRECT_UPLOAD_ZIP_BYTES, RUNTIME_GLIBC, UNZIPPED_BYTES,
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/lambda/prodml");
    let p = package::build(&dir, &std::env::current_exe()?, model).map_err(anyhow::Error::msg)?;
    let mut table = Table::new(
        "lambda-package",
        "The deployment package against Lambda's limits",
        vec![
            Column::new("what", "What"),
            Column::new("mb", "Size").unit("MB").decimals(1),
            Column::new("limit", "Limit"),
            Column::new("fits", "Fits"),
        ],
    );
    let mb = |b: u64| b as f64 / 1e6;
    let bootstrap = if p.stripped {
        "bootstrap (this executable, stripped)"
    } else {
        "bootstrap (this executable; `strip` not found)"
    };
    table.push(vec![
        json!(bootstrap),
        json!(mb(p.bootstrap_bytes)),
        Value::Null,
        Value::Null,
    ]);
    table.push(vec![
        json!("model.gguf"),
        json!(mb(p.model_bytes)),
        Value::Null,
        Value::Null,
    ]);
    table.push(vec![
        json!("unzipped"),
        json!(mb(p.unzipped_bytes)),
        json!(format!(
            "{:.1} MB (250 MiB, layers included)",
            mb(UNZIPPED_BYTES)
        )),
        json!(p.fits_unzipped()),
    ]);
    table.push(vec![
        json!("zip"),
        json!(mb(p.zip_bytes)),
        json!(format!(
            "{:.1} MB for a direct upload (50 MiB); larger through S3",
            mb(DIRECT_UPLOAD_ZIP_BYTES)
        )),
        json!(p.fits_direct_upload()),
    ]);
    table.push(vec![
        json!(match p.needs_glibc {
            Some((a, b)) => format!("needs glibc {a}.{b}"),
            None => "needs no glibc (static)".into(),
        }),
        Value::Null,
        json!(format!(
            "provided.al2023 has glibc {}.{}",
            RUNTIME_GLIBC.0, RUNTIME_GLIBC.1
        )),
        json!(p.runs_on_al2023()),
    ]);
    table.notes.push("Laid out by `cargo xtask lambda-package` (and by this benchmark) in target/lambda/prodml/ and zipped to target/lambda/prodml.zip. An executable built on a newer glibc than the runtime's must be built for it: `cargo lambda build` links against an older glibc with zig, or build for x86_64-unknown-linux-musl.".into());
    Ok(table)
}
// ANCHOR_END: cold_start
