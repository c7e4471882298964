//! The APR format: the course model exported to aprender's APR, loaded back memory-mapped,
//! signed, encrypted, attacked, and timed against GGUF and safetensors.

use anyhow::{Context, Result, bail};
use chapters_code::assets;
use chapters_code::demo::{Column, DemoArgs, ModelArgs, Provenance, Report, Table, progress};
use chapters_code::formats::apr_sealed::{self, SealError, key_from_seed};
use chapters_code::formats::{Gguf, apr, safetensors_export};
use chapters_code::generate::{Request, generate};
use chapters_code::kernels::pool::ThreadPool;
use chapters_code::model::Llama;
use chapters_code::tokenizer::Tokenizer;
use clap::Parser;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Export the model to APR (and safetensors), load it back memory-mapped and check every
/// tensor and the greedy output; sign it (Ed25519) and encrypt it (AES-256-GCM) with
/// aprender and show which tampered, re-signed or wrongly-keyed files are rejected; with
/// --benchmark, time loading each format.
#[derive(Parser, Debug)]
#[command(
    name = "demo-apr-format",
    version,
    after_help = "Examples:\n  demo-apr-format --verify\n  demo-apr-format --dir /tmp/apr --force\n  demo-apr-format --benchmark --runs 30\n"
)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,

    #[command(flatten)]
    run: ModelArgs,

    /// Directory for the files written [default: a temporary directory, removed at the end].
    #[arg(long)]
    dir: Option<PathBuf>,

    /// Overwrite the demo's files when --dir already holds some (otherwise it refuses).
    #[arg(long)]
    force: bool,

    /// Loads of each format timed with --benchmark (the median is reported).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..10_000))]
    runs: u64,

    /// Tokens generated greedily from the GGUF and from the APR file, which must agree.
    #[arg(long, default_value_t = 24)]
    tokens: usize,
}

/// The demo's files; a temporary directory is removed on drop.
struct Files {
    dir: PathBuf,
    temporary: bool,
}

/// Every file the demo writes into its directory.
const FILE_NAMES: [&str; 5] = [
    "model.apr",
    "model.safetensors",
    "model.signed.apr",
    "model.encrypted.apr",
    "attack.apr",
];

impl Files {
    fn path(&self, name: &str) -> PathBuf {
        debug_assert!(FILE_NAMES.contains(&name), "{name} is not in FILE_NAMES");
        self.dir.join(name)
    }

    /// An error naming the first of the demo's files that already exists in a kept directory.
    fn refuse_to_overwrite(&self) -> Result<()> {
        if self.temporary {
            return Ok(());
        }
        match FILE_NAMES
            .iter()
            .map(|n| self.dir.join(n))
            .find(|p| p.exists())
        {
            Some(existing) => bail!(
                "{} already exists; pass --force to overwrite the demo's files in {}, or choose another --dir",
                existing.display(),
                self.dir.display()
            ),
            None => Ok(()),
        }
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn main() -> std::process::ExitCode {
    chapters_code::demo::exit::run(demo)
}

fn demo() -> Result<()> {
    let cli = Cli::parse();
    let files = match &cli.dir {
        Some(dir) => Files {
            dir: dir.clone(),
            temporary: false,
        },
        None => Files {
            dir: std::env::temp_dir().join(format!("prodml-apr-{}", std::process::id())),
            temporary: true,
        },
    };
    if !cli.force {
        files.refuse_to_overwrite()?;
    }
    std::fs::create_dir_all(&files.dir)
        .with_context(|| format!("creating {}", files.dir.display()))?;
    let model_path = cli.run.model_path();
    let gguf = assets::open_model(&model_path)?;
    let bar = progress::steps(4, "exporting");

    // Export: APR and safetensors, same tensor bytes.
    let apr_bytes = apr::export(&gguf)?;
    let apr_path = files.path("model.apr");
    write(&apr_path, &apr_bytes)?;
    let st_path = files.path("model.safetensors");
    write(&st_path, &safetensors_export::export(&gguf)?)?;
    bar.inc(1);

    // Load back mapped; every tensor and the greedy output must match.
    bar.set_message("checking the APR copy");
    let from_apr = apr::open(&apr_path)?;
    let identical = same_tensors(&gguf, &from_apr)?;
    let pool = ThreadPool::new(cli.run.threads());
    let tokens_gguf = greedy(&gguf, &pool, cli.tokens)?;
    let tokens_apr = greedy(&from_apr, &pool, cli.tokens)?;
    bar.inc(1);

    // Sign, encrypt, and attack.
    bar.set_message("signing and encrypting");
    let publisher = key_from_seed(*b"publisher key seed, demo only!!!");
    let attacker = key_from_seed(*b"attacker key seed, demo only!!!!");
    let password = "correct horse battery staple";
    let signed_path = files.path("model.signed.apr");
    apr_sealed::sign(&apr_bytes, &signed_path, &publisher)?;
    let encrypted_path = files.path("model.encrypted.apr");
    apr_sealed::encrypt(&apr_bytes, &encrypted_path, password)?;
    let attacks = attacks(&files, &apr_bytes, &publisher, &attacker, password)?;
    bar.inc(1);

    // Load times.
    bar.set_message("timing loads");
    let loads = if cli.demo.benchmark {
        load_times(
            &model_path,
            &apr_path,
            &st_path,
            &signed_path,
            &encrypted_path,
            &publisher,
            password,
            cli.runs,
        )?
    } else {
        vec![]
    };
    bar.inc(1);
    bar.finish_and_clear();

    let mut roundtrip = Table::new(
        "apr-roundtrip",
        "The model exported to APR and loaded back (memory-mapped)",
        vec![
            Column::new("check", "Check"),
            Column::new("result", "Result"),
        ],
    );
    let n_tensors = gguf.tensors.len();
    roundtrip.push(vec![
        json!("tensors bit-identical to the GGUF"),
        json!(format!("{identical} of {n_tensors}")),
    ]);
    roundtrip.push(vec![
        json!("metadata entries identical"),
        json!(format!(
            "{} of {}",
            gguf.metadata
                .iter()
                .zip(&from_apr.metadata)
                .filter(|(a, b)| a == b)
                .count(),
            gguf.metadata.len()
        )),
    ]);
    roundtrip.push(vec![
        json!(format!("greedy tokens identical (of {})", cli.tokens)),
        json!(
            tokens_gguf
                .iter()
                .zip(&tokens_apr)
                .take_while(|(a, b)| a == b)
                .count()
        ),
    ]);
    roundtrip.push(vec![
        json!("tensor data mapped from the file, not copied"),
        json!(if from_apr.is_mapped() { "yes" } else { "no" }),
    ]);

    let mut security = Table::new(
        "apr-security",
        "Signed and encrypted APR files against tampering (aprender's checks)",
        vec![
            Column::new("file", "File"),
            Column::new("opened_with", "Opened with"),
            Column::new("outcome", "Outcome"),
            Column::new("safe", "Safe"),
            Column::new("message", "Error"),
        ],
    );
    for a in &attacks {
        security.push(vec![
            json!(a.file),
            json!(a.opened_with),
            json!(if a.accepted { "accepted" } else { "rejected" }),
            json!(if a.accepted == a.genuine { "yes" } else { "NO" }),
            json!(a.message),
        ]);
    }
    security.notes.push(
        "A changed byte is caught first by the file's CRC32; an attacker fixes the CRC, then \
         the Ed25519 signature (or AES-GCM's tag) catches it. aprender's `load_verified(path, \
         type, None)` checks the signature with the public key stored in the file itself, so \
         a model re-signed by anyone passes it: pass the publisher's key."
            .into(),
    );

    let mut tables = vec![roundtrip, security];
    if !loads.is_empty() {
        let mut t = Table::new(
            "apr-load",
            "Loading the same tensors from each format (warm page cache)",
            vec![
                Column::new("format", "Format"),
                Column::new("size", "File size").unit("MB").decimals(1),
                Column::new("how", "How"),
                Column::new("index_ms", "Open + index every tensor")
                    .unit("ms")
                    .decimals(2),
                Column::new("ready_ms", "Engine ready")
                    .unit("ms")
                    .decimals(2),
                Column::new("copied", "Weights copied")
                    .unit("MB")
                    .decimals(1),
            ],
        );
        for l in &loads {
            t.push(vec![
                json!(l.format),
                json!(l.file_bytes as f64 / 1e6),
                json!(l.how),
                json!(l.index_ms),
                l.ready_ms.map_or(Value::Null, |v| json!(v)),
                json!(l.copied_bytes as f64 / 1e6),
            ]);
        }
        t.notes.push(format!(
            "Median of {} loads each, after one unmeasured load (the files are in the page \
             cache, as on a server that loaded them before). \"Open + index\" parses the \
             header and takes a view of every tensor; \"engine ready\" also builds the model \
             (checks every shape) on that view. Signed and encrypted files are read whole: \
             the signature or the tag covers every byte.",
            cli.runs
        ));
        tables.push(t);
    }

    let greedy_same = tokens_gguf == tokens_apr;
    // Every outcome is the one the chapter describes (including the unsafe default).
    let attacks_ok = attacks.iter().all(|a| a.accepted == a.documented);
    let verified = identical == n_tensors && greedy_same && attacks_ok && from_apr.is_mapped();
    let report = Report {
        demo: "apr-format".into(),
        provenance: Provenance::current(),
        result: json!({
            "apr_bytes": apr_bytes.len(),
            "gguf_bytes": gguf.file_len(),
            "tensors": n_tensors,
            "identical_tensors": identical,
            "greedy_gguf": tokens_gguf,
            "greedy_apr": tokens_apr,
            "attacks": attacks.iter().map(|a| json!({
                "file": a.file, "opened_with": a.opened_with,
                "accepted": a.accepted, "genuine": a.genuine, "documented": a.documented,
            })).collect::<Vec<_>>(),
            "loads": loads.iter().map(|l| json!({
                "format": l.format, "index_ms": l.index_ms, "ready_ms": l.ready_ms,
                "copied_bytes": l.copied_bytes, "file_bytes": l.file_bytes,
            })).collect::<Vec<_>>(),
        }),
        tables,
        verified: cli.demo.verify.then_some(verified),
    };
    report.emit(cli.demo.output, |out| {
        writeln!(
            out,
            "exported {} to APR ({:.1} MB) in {}",
            model_path.display(),
            apr_bytes.len() as f64 / 1e6,
            if files.temporary {
                "a temporary directory".to_string()
            } else {
                files.dir.display().to_string()
            }
        )
    })?;
    if cli.demo.verify && !verified {
        bail!(
            "APR check failed: {identical} of {n_tensors} tensors identical, greedy output {}, \
             attacks {}",
            if greedy_same { "same" } else { "different" },
            if attacks_ok {
                "handled as expected"
            } else {
                "NOT handled as expected"
            }
        );
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Tensors with the same name, type, dims and bytes in both.
fn same_tensors(a: &Gguf, b: &Gguf) -> Result<usize> {
    let mut same = 0;
    for t in &a.tensors {
        let (Some(u), Ok(v)) = (b.tensor_info(&t.name), b.tensor(&t.name)) else {
            continue;
        };
        same += usize::from(
            u.ggml_type == t.ggml_type && u.dims == t.dims && v.data == a.tensor(&t.name)?.data,
        );
    }
    Ok(same)
}

/// Greedy tokens after a fixed prompt.
fn greedy(g: &Gguf, pool: &ThreadPool, n: usize) -> Result<Vec<u32>> {
    let model = Llama::load(g)?;
    let tokenizer = Tokenizer::from_gguf(g)?;
    let request = Request {
        prompt_ids: tokenizer.encode("The three most important file formats for models are", true),
        max_tokens: n,
        sampling: Default::default(),
        stop_tokens: vec![],
        stop_strings: vec![],
    };
    Ok(generate(&model, &tokenizer, pool, &request, |_| {})?.generated_ids)
}

/// One attempt to open a sealed file.
struct Attack {
    file: &'static str,
    opened_with: &'static str,
    accepted: bool,
    /// The publisher's untouched file opened with the right key or password: the only
    /// attempts a safe loader accepts.
    genuine: bool,
    /// What the chapter says happens (differs from `genuine` for aprender's default check).
    documented: bool,
    message: String,
}

/// What an attempt is: genuine (and accepted), an attack that is rejected, or an attack
/// that gets through (the pitfall the chapter documents).
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Genuine,
    Rejected,
    Pitfall,
}

fn attempt(
    file: &'static str,
    opened_with: &'static str,
    kind: Kind,
    result: Result<Vec<u8>, SealError>,
    expected_bytes: &[u8],
) -> Attack {
    let (accepted, message) = match result {
        Ok(bytes) => (
            true,
            if bytes == expected_bytes {
                String::new()
            } else {
                "opened, but the model is not the publisher's".into()
            },
        ),
        Err(e) => (false, first_line(&e.to_string())),
    };
    Attack {
        file,
        opened_with,
        accepted,
        genuine: kind == Kind::Genuine,
        documented: kind != Kind::Rejected,
        message,
    }
}

/// The error without the file path (the path is the demo's temporary directory).
fn first_line(message: &str) -> String {
    let m = message.lines().next().unwrap_or("");
    m.split_once(": ").map_or(m, |(_, rest)| rest).to_string()
}

/// The same file with byte `at` flipped; with `fix_crc`, the CRC32 footer recomputed.
fn tampered(src: &Path, dst: &Path, at: usize, fix_crc: bool) -> Result<()> {
    let mut b = std::fs::read(src)?;
    apr_sealed::flip_byte(&mut b, at, fix_crc)
        .with_context(|| format!("{} has no byte {at} to change", src.display()))?;
    write(dst, &b)
}

fn attacks(
    files: &Files,
    apr: &[u8],
    publisher: &apr_sealed::SigningKey,
    attacker: &apr_sealed::SigningKey,
    password: &str,
) -> Result<Vec<Attack>> {
    let trusted = publisher.verifying_key();
    let signed = files.path("model.signed.apr");
    let encrypted = files.path("model.encrypted.apr");
    let scratch = files.path("attack.apr");
    let middle = apr.len() / 2;
    let mut out = vec![attempt(
        "signed",
        "publisher's key",
        Kind::Genuine,
        apr_sealed::open_signed(&signed, &trusted),
        apr,
    )];
    out.push(attempt(
        "signed",
        "another key",
        Kind::Rejected,
        apr_sealed::open_signed(&signed, &attacker.verifying_key()),
        apr,
    ));
    tampered(&signed, &scratch, middle, false)?;
    out.push(attempt(
        "signed, one weight byte changed",
        "publisher's key",
        Kind::Rejected,
        apr_sealed::open_signed(&scratch, &trusted),
        apr,
    ));
    tampered(&signed, &scratch, middle, true)?;
    out.push(attempt(
        "signed, one weight byte changed, CRC fixed",
        "publisher's key",
        Kind::Rejected,
        apr_sealed::open_signed(&scratch, &trusted),
        apr,
    ));
    // The attacker changes a weight and signs with their own key.
    let mut evil = apr.to_vec();
    evil[middle] ^= 1;
    apr_sealed::sign(&evil, &scratch, attacker)?;
    out.push(attempt(
        "changed and re-signed by an attacker",
        "aprender's default (key in the file)",
        Kind::Pitfall,
        apr_sealed::open_signed_trusting_the_file(&scratch),
        apr,
    ));
    out.push(attempt(
        "changed and re-signed by an attacker",
        "publisher's key",
        Kind::Rejected,
        apr_sealed::open_signed(&scratch, &trusted),
        apr,
    ));
    out.push(attempt(
        "encrypted",
        "the password",
        Kind::Genuine,
        apr_sealed::open_encrypted(&encrypted, password),
        apr,
    ));
    out.push(attempt(
        "encrypted",
        "a wrong password",
        Kind::Rejected,
        apr_sealed::open_encrypted(&encrypted, "Tr0ub4dor&3"),
        apr,
    ));
    tampered(&encrypted, &scratch, middle, true)?;
    out.push(attempt(
        "encrypted, one ciphertext byte changed, CRC fixed",
        "the password",
        Kind::Rejected,
        apr_sealed::open_encrypted(&scratch, password),
        apr,
    ));
    let _ = std::fs::remove_file(&scratch);
    Ok(out)
}

/// How long one format takes to load.
struct Load {
    format: &'static str,
    how: &'static str,
    file_bytes: u64,
    index_ms: f64,
    ready_ms: Option<f64>,
    copied_bytes: u64,
}

/// Median wall time of `runs` calls of `f` (after one unmeasured call), in milliseconds.
fn median_ms<T>(runs: u64, mut f: impl FnMut() -> Result<T>) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(runs as usize);
    for _ in 0..runs {
        let t = Instant::now();
        std::hint::black_box(f()?);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Views of every tensor (what the index is for), summed so the work is not optimized away.
fn touch_index(g: &Gguf) -> Result<usize> {
    let mut n = 0;
    for t in &g.tensors {
        n += g.tensor(&t.name)?.data.len();
    }
    Ok(n)
}

#[allow(clippy::too_many_arguments)]
fn load_times(
    gguf_path: &Path,
    apr_path: &Path,
    st_path: &Path,
    signed_path: &Path,
    encrypted_path: &Path,
    publisher: &apr_sealed::SigningKey,
    password: &str,
    runs: u64,
) -> Result<Vec<Load>> {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len());
    let trusted = publisher.verifying_key();
    let weights: u64 = apr::open(apr_path)?.tensors.iter().map(|t| t.n_bytes).sum();
    let ready = |g: Gguf| -> Result<usize> { Ok(Llama::load(&g)?.layers.len()) };
    let mut out = vec![Load {
        format: "GGUF",
        how: "mmap, our reader",
        file_bytes: size(gguf_path)?,
        index_ms: median_ms(runs, || touch_index(&Gguf::open(gguf_path)?))?,
        ready_ms: Some(median_ms(runs, || ready(Gguf::open(gguf_path)?))?),
        copied_bytes: 0,
    }];
    out.push(Load {
        format: "APR v2",
        how: "mmap, aprender's reader",
        file_bytes: size(apr_path)?,
        index_ms: median_ms(runs, || touch_index(&apr::open(apr_path)?))?,
        ready_ms: Some(median_ms(runs, || ready(apr::open(apr_path)?))?),
        copied_bytes: 0,
    });
    out.push(Load {
        format: "safetensors",
        how: "mmap, the safetensors crate",
        file_bytes: size(st_path)?,
        index_ms: median_ms(runs, || {
            let file = std::fs::File::open(st_path)?;
            // SAFETY: read-only mapping of a file this demo wrote and does not change.
            let map = unsafe { memmap2::Mmap::map(&file)? };
            let tensors = safetensors_export::tensors(&map)?;
            Ok(tensors.iter().map(|(_, d)| d.len()).sum::<usize>())
        })?,
        ready_ms: None,
        copied_bytes: 0,
    });
    out.push(Load {
        format: "APR, signed",
        how: "read + Ed25519 verify",
        file_bytes: size(signed_path)?,
        index_ms: median_ms(runs, || {
            touch_index(&apr::from_bytes(apr_sealed::open_signed(
                signed_path,
                &trusted,
            )?)?)
        })?,
        ready_ms: Some(median_ms(runs, || {
            ready(apr::from_bytes(apr_sealed::open_signed(
                signed_path,
                &trusted,
            )?)?)
        })?),
        copied_bytes: weights,
    });
    out.push(Load {
        format: "APR, encrypted",
        how: "read + Argon2id + AES-256-GCM",
        file_bytes: size(encrypted_path)?,
        index_ms: median_ms(runs, || {
            touch_index(&apr::from_bytes(apr_sealed::open_encrypted(
                encrypted_path,
                password,
            )?)?)
        })?,
        ready_ms: None,
        copied_bytes: weights,
    });
    Ok(out)
}
