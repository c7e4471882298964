//! A signed model registry on a real OCI registry: push the GGUF as an OCI artifact, sign it,
//! pull it into a Hugging Face-style cache with every check, and serve a request from the
//! pulled file. Subcommands do the same against your own registry.

use anyhow::{Context, Result, bail};
use chapters_code::demo::{Column, DemoArgs, ModelArgs, Provenance, Report, Table, progress};
use chapters_code::registry::cache::{self, Cache, Options, Pulled, Pushed};
use chapters_code::registry::local::{LocalRegistry, find_binary};
use chapters_code::registry::oci::Client;
use chapters_code::registry::signing::{PublicKey, SecretKey};
use chapters_code::registry::{Digest, Reference, RegistryError, attacks};
use chapters_code::serverless::Function;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Push the model to an OCI registry as a signed artifact and pull it back verified. Without a
/// subcommand: start Docker's registry server (`apt install docker-registry`) on loopback for
/// this run, make a key, push, pull into a fresh cache, and answer a prompt from the pulled
/// file. --verify: also try every tamper case (unsigned, another key, an old version under a
/// new tag, a swapped manifest, a changed blob) and the resumed transfers; exit 1 unless each
/// is refused or works as it should. --benchmark: push and pull speeds, resumed transfers,
/// verification cost.
#[derive(Parser, Debug)]
#[command(
    name = "demo-model-registry",
    version,
    after_help = "Examples:\n  demo-model-registry --verify\n  demo-model-registry keygen --out publisher\n  demo-model-registry --registry http://127.0.0.1:5000 push --key publisher models/smollm2-135m.Q4_1.gguf\n  demo-model-registry --registry http://127.0.0.1:5000 pull --trust publisher.pub\n"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    demo: DemoArgs,

    #[command(flatten)]
    run: ModelArgs,

    /// Registry URL (`http://host:port`) [default: start Docker's registry server on loopback
    /// for this run; the subcommands need one].
    #[arg(long, global = true)]
    registry: Option<String>,

    /// Repository and tag.
    #[arg(long, global = true, default_value = "prodml/smollm2-135m:v1")]
    reference: String,

    /// Cache directory (Hugging Face layout) [default: $PRODML_REGISTRY_CACHE, else
    /// ~/.cache/prodml/registry; the tour without a subcommand uses a temporary one].
    #[arg(long, global = true)]
    cache: Option<PathBuf>,

    /// Prompt answered from the pulled file.
    #[arg(long, default_value = "The capital of France is")]
    prompt: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make a signing key: OUT (secret, mode 0600) and OUT.pub (give this one to pullers).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Push FILE (a GGUF) as --reference, signed with --key.
    Push {
        file: PathBuf,
        /// Secret key file (from `keygen`).
        #[arg(long, required_unless_present = "unsigned")]
        key: Option<PathBuf>,
        /// Push without a signature (pulls will refuse it).
        #[arg(long)]
        unsigned: bool,
    },
    /// Pull --reference into the cache, verified against the trusted public keys; prints the
    /// path of the verified file.
    Pull {
        /// Public key files to trust (the key in the artifact is never trusted by itself).
        #[arg(long, required = true)]
        trust: Vec<PathBuf>,
        /// Also make a symbolic link here to the verified file (a fixed path for a server's
        /// --model, e.g. in a Kubernetes init container).
        #[arg(long)]
        link: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    chapters_code::demo::exit::run(demo)
}

fn default_cache(cli: &Cli) -> PathBuf {
    cli.cache
        .clone()
        .or_else(|| std::env::var_os("PRODML_REGISTRY_CACHE").map(PathBuf::from))
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/prodml/registry"))
        })
        .unwrap_or_else(|| PathBuf::from(".prodml-registry-cache"))
}

fn demo() -> Result<()> {
    let cli = Cli::parse();
    let reference = Reference::parse(&cli.reference)?;
    let runtime = chapters_code::serve::runtime()?;
    match &cli.command {
        Some(Command::Keygen { out }) => {
            // OUT.pub, appended: `--out key.pub` must not give the public key the secret's name.
            let mut public = out.clone().into_os_string();
            public.push(".pub");
            let public = PathBuf::from(public);
            if out.exists() || public.exists() {
                bail!(
                    "{} or {} exists: refusing to overwrite a key (move it away first)",
                    out.display(),
                    public.display()
                );
            }
            let key = SecretKey::generate()?;
            key.save(out)?;
            key.public().save(&public)?;
            println!(
                "key {}: secret {}, public {}",
                key.public().id(),
                out.display(),
                public.display()
            );
            return Ok(());
        }
        Some(Command::Push { file, key, .. }) => {
            let client = Client::new(
                cli.registry
                    .as_deref()
                    .context("push needs --registry URL")?,
            );
            let key = key.as_deref().map(SecretKey::load).transpose()?;
            let cache = Cache::new(default_cache(&cli));
            let pushed = runtime.block_on(push_with_spinner(
                &client,
                &cache,
                &reference,
                file,
                key.as_ref(),
            ))?;
            println!(
                "pushed {reference}: manifest {}, {} bytes sent{}",
                pushed.manifest,
                pushed.transfer.sent,
                pushed
                    .signed_by
                    .map_or(" (unsigned)".into(), |k| format!(", signed by key {k}"))
            );
            return Ok(());
        }
        Some(Command::Pull { trust, link }) => {
            let client = Client::new(
                cli.registry
                    .as_deref()
                    .context("pull needs --registry URL")?,
            );
            let trusted = trust
                .iter()
                .map(|p| PublicKey::load(p))
                .collect::<Result<Vec<_>, _>>()?;
            let cache = Cache::new(default_cache(&cli));
            let pulled = runtime.block_on(cache::pull(
                &client,
                &cache,
                &reference,
                &trusted,
                Options::default(),
            ))?;
            if let Some(link) = link {
                let _ = std::fs::remove_file(link);
                #[cfg(unix)]
                std::os::unix::fs::symlink(std::path::absolute(&pulled.path)?, link)
                    .with_context(|| format!("linking {}", link.display()))?;
                #[cfg(not(unix))]
                std::fs::copy(&pulled.path, link)
                    .with_context(|| format!("copying to {}", link.display()))?;
            }
            println!("{}", pulled.path.display());
            return Ok(());
        }
        None => {}
    }
    tour(&cli, &reference, &runtime)
}

async fn push_with_spinner(
    client: &Client,
    cache: &Cache,
    reference: &Reference,
    file: &Path,
    key: Option<&SecretKey>,
) -> Result<Pushed, RegistryError> {
    let spinner = progress::spinner(format!("pushing {reference}"));
    let pushed = cache::push(client, cache, reference, file, key, Options::default()).await;
    spinner.finish_and_clear();
    pushed
}

/// A registry for the tour: the one given, or Docker's registry server started for this run.
struct Scratch {
    dir: PathBuf,
    server: Option<LocalRegistry>,
    client: Client,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.server.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn scratch(cli: &Cli) -> Result<Scratch> {
    let dir = std::env::temp_dir().join(format!("prodml-model-registry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (server, base) = match &cli.registry {
        Some(url) => (None, url.clone()),
        None => {
            let binary = find_binary().context(
                "no registry server: install Docker's (`apt install docker-registry`), set \
                 PRODML_REGISTRY_BIN, or pass --registry URL",
            )?;
            let server = LocalRegistry::start(&binary, &dir.join("server"))?;
            let base = server.base.clone();
            (Some(server), base)
        }
    };
    let client = Client::new(&base);
    Ok(Scratch {
        dir,
        server,
        client,
    })
}

fn tour(cli: &Cli, reference: &Reference, runtime: &tokio::runtime::Runtime) -> Result<()> {
    let model = cli.run.model_path();
    chapters_code::assets::open_model(&model)?;
    let s = scratch(cli)?;
    runtime.block_on(s.client.ping())?;
    let key = SecretKey::generate()?;
    let publisher = Cache::new(s.dir.join("publisher"));
    let pushed = runtime.block_on(push_with_spinner(
        &s.client,
        &publisher,
        reference,
        &model,
        Some(&key),
    ))?;
    let cache = Cache::new(cli.cache.clone().unwrap_or_else(|| s.dir.join("cache")));
    let started = Instant::now();
    let pulled = runtime.block_on(cache::pull(
        &s.client,
        &cache,
        reference,
        &[key.public()],
        Options::default(),
    ))?;
    let pull_s = started.elapsed().as_secs_f64();
    // The pulled file serves a request; its answer equals the original file's.
    let event = json!({ "prompt": cli.prompt, "max_tokens": 12, "temperature": 0 });
    let answer = |path: &Path| -> Result<Value> {
        let f = Function::init(path, cli.run.threads()).map_err(anyhow::Error::msg)?;
        f.invoke(&event).map_err(anyhow::Error::msg)
    };
    let from_pull = answer(&pulled.path)?;
    // The choices (text, finish reason) and usage; the envelope's id and timestamp differ.
    let original = answer(&model)?;
    let same_answer = ["choices", "usage"]
        .iter()
        .all(|k| from_pull[k] == original[k]);

    let mut tables = vec![artifact_table(&pushed)];
    let mut verified = None;
    if cli.demo.verify {
        let table = runtime.block_on(verify(&s, &model, &key))?;
        verified = Some(same_answer && table.rows.iter().all(|r| r["pass"] == json!(true)));
        tables.push(table);
    }
    if cli.demo.benchmark {
        tables.push(runtime.block_on(benchmark(&s, &model, &key))?);
    }
    let report = Report {
        demo: "model-registry".into(),
        provenance: Provenance::current(),
        result: json!({
            "registry": s.client.base(),
            "reference": reference.to_string(),
            "manifest": pushed.manifest.to_string(),
            "signed_by": pushed.signed_by,
            "pulled": pulled.path,
            "pull_s": pull_s,
            "config": pulled.config,
            "answer_from_pulled_file": from_pull["choices"][0]["text"],
            "same_answer_as_original": same_answer,
        }),
        tables,
        verified,
    };
    report.emit(cli.demo.output, |out| {
        writeln!(
            out,
            "Pushed {reference} to {} (manifest {}), signed by key {}.",
            s.client.base(),
            pushed.manifest,
            key.public().id()
        )?;
        writeln!(
            out,
            "Pulled and verified in {pull_s:.2} s → {}",
            pulled.path.display()
        )?;
        writeln!(
            out,
            "Answer from the pulled file: {:?} (same as the original: {same_answer})",
            from_pull["choices"][0]["text"].as_str().unwrap_or("")
        )
    })
}

/// The artifact as the registry holds it.
fn artifact_table(pushed: &Pushed) -> Table {
    let mut t = Table::new(
        "registry-artifact",
        "The model as an OCI artifact",
        vec![
            Column::new("part", "Part"),
            Column::new("media_type", "Media type"),
            Column::new("bytes", "Size").unit("bytes"),
        ],
    );
    use chapters_code::registry::{artifact, signing};
    let config_bytes = serde_json::to_vec(&pushed.config).map_or(0, |v| v.len());
    for (part, media_type, bytes) in [
        ("GGUF layer", artifact::GGUF_LAYER, Some(pushed.layer_bytes)),
        ("config", artifact::MODEL_CONFIG, Some(config_bytes as u64)),
        ("manifest", artifact::MANIFEST, Some(pushed.manifest_bytes)),
        (
            "signature envelope",
            signing::ENVELOPE,
            pushed.envelope_bytes,
        ),
    ] {
        t.push(vec![json!(part), json!(media_type), json!(bytes)]);
    }
    t.notes.push(format!(
        "Config as pushed: {}. Signature: a DSSE envelope (Ed25519) under the tag `sha256-<manifest hex>.sig`.",
        serde_json::to_string(&pushed.config.config).unwrap_or_default()
    ));
    t
}

/// What happened to a pull: `verified`, or the refusal in a few words.
fn outcome(result: Result<Pulled, RegistryError>) -> String {
    result.map_or_else(|e| e.refusal(), |_| "verified".into())
}

/// A pull of `name:tag` into a new, empty cache; what happened, as [`outcome`] words it.
async fn fresh_pull(
    c: &Client,
    dir: &Path,
    n: &mut usize,
    name: &str,
    tag: &str,
    trusted: &[PublicKey],
) -> String {
    *n += 1;
    let cache = Cache::new(dir.join(format!("verify-cache-{n}")));
    match Reference::parse(&format!("{name}:{tag}")) {
        Ok(r) => outcome(cache::pull(c, &cache, &r, trusted, Options::default()).await),
        Err(e) => format!("error: {e}"),
    }
}

// ANCHOR: verify
/// Every tamper case against the registry server, with the real model.
async fn verify(s: &Scratch, model: &Path, key: &SecretKey) -> Result<Table> {
    let mut t = Table::new(
        "registry-verify",
        "Pulls against a real registry: what is verified, what is refused",
        vec![
            Column::new("case", "Case"),
            Column::new("expected", "Expected"),
            Column::new("got", "Got"),
            Column::new("pass", "Pass"),
        ],
    );
    let c = &s.client;
    let name = "verify/smollm2";
    let stranger = SecretKey::generate()?;
    let trusted = [key.public()];
    let publisher = Cache::new(s.dir.join("verify-publisher"));
    let mut n = 0;
    let push = |tag: &str| Reference::parse(&format!("{name}:{tag}")).expect("a valid tag");
    let opts = Options::default;
    let case = |t: &mut Table, what: &str, expected: &str, got: String| {
        let pass = got == expected;
        t.push(vec![json!(what), json!(expected), json!(got), json!(pass)]);
    };
    // Three files with the same bytes under other names: three different manifests (the
    // layer's file name is in the manifest), so each tag below has its own.
    let copy = |file: &str| -> Result<PathBuf> {
        let path = s.dir.join(file);
        if std::fs::hard_link(model, &path).is_err() {
            std::fs::copy(model, &path)?;
        }
        Ok(path)
    };
    let (model_v2, model_v3, unsigned) =
        (copy("v2.gguf")?, copy("v3.gguf")?, copy("unsigned.gguf")?);
    let v1 = cache::push(c, &publisher, &push("v1"), model, Some(key), opts()).await?;
    cache::push(c, &publisher, &push("latest"), model, Some(key), opts()).await?;
    case(
        &mut t,
        "signed by the trusted key, tag latest (same manifest as v1)",
        "verified",
        fresh_pull(c, &s.dir, &mut n, name, "latest", &trusted).await,
    );
    case(
        &mut t,
        "signed by the trusted key",
        "verified",
        fresh_pull(c, &s.dir, &mut n, name, "v1", &trusted).await,
    );
    cache::push(c, &publisher, &push("v2"), &model_v2, Some(key), opts()).await?;
    cache::push(
        c,
        &publisher,
        &push("v3"),
        &model_v3,
        Some(&stranger),
        opts(),
    )
    .await?;
    case(
        &mut t,
        "signed by another key",
        "refused: untrusted key",
        fresh_pull(c, &s.dir, &mut n, name, "v3", &trusted).await,
    );
    case(
        &mut t,
        "puller trusts no key",
        "refused: untrusted key",
        fresh_pull(c, &s.dir, &mut n, name, "v1", &[]).await,
    );
    cache::push(c, &publisher, &push("unsigned"), &unsigned, None, opts()).await?;
    case(
        &mut t,
        "unsigned artifact",
        "refused: unsigned",
        fresh_pull(c, &s.dir, &mut n, name, "unsigned", &trusted).await,
    );
    attacks::replay(c, name, "v1", "v2").await?;
    case(
        &mut t,
        "v1 replayed under the tag v2",
        "refused: signed for another tag",
        fresh_pull(c, &s.dir, &mut n, name, "v2", &trusted).await,
    );
    let (swapped, len) = attacks::swap_manifest(c, name, "v1").await?;
    case(
        &mut t,
        "swapped manifest",
        "refused: unsigned",
        fresh_pull(c, &s.dir, &mut n, name, "v1", &trusted).await,
    );
    attacks::copy_signature(c, name, &v1.manifest, &swapped).await?;
    case(
        &mut t,
        "swapped manifest + copied signature",
        "refused: signed for another manifest",
        fresh_pull(c, &s.dir, &mut n, name, "v1", &trusted).await,
    );
    attacks::reattach_signature(c, name, &v1.manifest, (&swapped, len)).await?;
    case(
        &mut t,
        "swapped manifest + re-attached envelope",
        "refused: signed for another manifest",
        fresh_pull(c, &s.dir, &mut n, name, "v1", &trusted).await,
    );
    if let Some(server) = &s.server {
        // Restore v1, then change one byte of its GGUF in the registry's storage.
        cache::push(c, &publisher, &push("v1"), model, Some(key), opts()).await?;
        attacks::flip_stored_byte(server, &v1.layer)?;
        let got = fresh_pull(c, &s.dir, &mut n, name, "v1", &trusted).await;
        // Flip it back: the registry's blob store is shared by every repository.
        attacks::flip_stored_byte(server, &v1.layer)?;
        case(
            &mut t,
            "GGUF blob changed in storage",
            "refused: digest mismatch",
            got,
        );
    }
    // A pull cut at half, then run again: it must continue from the partial file and verify.
    let cache = Cache::new(s.dir.join("verify-resume"));
    let v2 = Reference::parse(&format!("{name}:v2-resume"))?;
    let size = cache::push(c, &publisher, &v2, &model_v2, Some(key), opts())
        .await?
        .layer_bytes;
    let cut = Options {
        budget: Some(size / 2),
        ..Options::default()
    };
    let first = cache::pull(c, &cache, &v2, &trusted, cut).await;
    let again = cache::pull(c, &cache, &v2, &trusted, opts()).await;
    let got = match (first, again) {
        (Err(RegistryError::Interrupted { .. }), Ok(p))
            if p.transfer.resumed_from > 0 && p.transfer.resumed_from + p.transfer.sent == size =>
        {
            "verified, resumed".to_string()
        }
        (Err(RegistryError::Interrupted { .. }), other) => outcome(other),
        (first, _) => format!("not interrupted: {}", outcome(first)),
    };
    case(
        &mut t,
        "pull cut at half, run again",
        "verified, resumed",
        got,
    );
    t.notes.push(
        "Each pull starts from an empty cache (but the resumed one, which starts from its own half-filled one); after every refusal the cache holds no ref and no snapshot (the tests check it).".into(),
    );
    Ok(t)
}
// ANCHOR_END: verify

/// Push and pull speeds on loopback, resumed transfers, and what verification costs.
async fn benchmark(s: &Scratch, model: &Path, key: &SecretKey) -> Result<Table> {
    let mut t = Table::new(
        "registry-transfer",
        "Push and pull of the model on loopback",
        vec![
            Column::new("operation", "Operation"),
            Column::new("mb_sent", "Sent").unit("MB").decimals(1),
            Column::new("ms", "Median time").unit("ms").decimals(0),
            Column::new("mb_s", "Rate").unit("MB/s").decimals(0),
        ],
    );
    let c = &s.client;
    let size = std::fs::metadata(model)?.len();
    let rounds = 5;
    let bar = progress::steps(rounds * 4, "registry benchmark");
    let mut rows: Vec<(&str, Vec<(u64, f64)>)> = vec![
        ("push (new repository)", vec![]),
        ("push again (blob exists: skipped)", vec![]),
        ("pull (empty cache)", vec![]),
        ("pull again (cached blob re-hashed)", vec![]),
        ("resume a pull cut at half", vec![]),
    ];
    for i in 0..rounds {
        let r = Reference::parse(&format!("bench/r{i}:v1"))?;
        let publisher = Cache::new(s.dir.join(format!("bench-pub-{i}")));
        let timed = Instant::now();
        let p = cache::push(c, &publisher, &r, model, Some(key), Options::default()).await?;
        rows[0]
            .1
            .push((p.transfer.sent, timed.elapsed().as_secs_f64()));
        let timed = Instant::now();
        let p = cache::push(c, &publisher, &r, model, Some(key), Options::default()).await?;
        rows[1]
            .1
            .push((p.transfer.sent, timed.elapsed().as_secs_f64()));
        bar.inc(1);
        let cache = Cache::new(s.dir.join(format!("bench-cache-{i}")));
        let timed = Instant::now();
        let p = cache::pull(c, &cache, &r, &[key.public()], Options::default()).await?;
        rows[2]
            .1
            .push((p.transfer.sent, timed.elapsed().as_secs_f64()));
        bar.inc(1);
        let timed = Instant::now();
        let p = cache::pull(c, &cache, &r, &[key.public()], Options::default()).await?;
        rows[3]
            .1
            .push((p.transfer.sent, timed.elapsed().as_secs_f64()));
        bar.inc(1);
        let cache = Cache::new(s.dir.join(format!("bench-cut-{i}")));
        let cut = Options {
            budget: Some(size / 2),
            ..Options::default()
        };
        match cache::pull(c, &cache, &r, &[key.public()], cut).await {
            Err(RegistryError::Interrupted { .. }) => {}
            other => bail!(
                "the cut pull should have stopped half-way: {:?}",
                other.map(|p| p.path)
            ),
        }
        let timed = Instant::now();
        let p = cache::pull(c, &cache, &r, &[key.public()], Options::default()).await?;
        rows[4]
            .1
            .push((p.transfer.sent, timed.elapsed().as_secs_f64()));
        bar.inc(1);
        let _ = std::fs::remove_dir_all(s.dir.join(format!("bench-cache-{i}")));
        let _ = std::fs::remove_dir_all(s.dir.join(format!("bench-cut-{i}")));
    }
    bar.finish_and_clear();
    // Hashing alone: the floor under every verified pull.
    let mut hash_s = Vec::new();
    for _ in 0..rounds {
        let timed = Instant::now();
        Digest::of_file(model)?;
        hash_s.push(timed.elapsed().as_secs_f64());
    }
    rows.push((
        "SHA-256 of the GGUF (no network)",
        hash_s.into_iter().map(|s| (0, s)).collect(),
    ));
    for (what, runs) in rows {
        let secs: Vec<f64> = runs.iter().map(|r| r.1).collect();
        let median = chapters_code::eval::bench::median(&secs);
        let sent = runs.first().map_or(0, |r| r.0);
        t.push(vec![
            json!(what),
            json!(sent as f64 / 1e6),
            json!(median * 1e3),
            json!(if median > 0.0 {
                size as f64 / 1e6 / median
            } else {
                0.0
            }),
        ]);
    }
    t.notes.push(format!(
        "Median of {rounds} rounds; the rate is the model's size over the time (also where less was sent). Registry: Docker's distribution 2.8 on loopback, filesystem storage."
    ));
    Ok(t)
}
