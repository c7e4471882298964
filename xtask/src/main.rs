//! `cargo xtask <command>`: the book's build tooling. See `cargo xtask --help`.

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use xtask::{bench, book, compliance, falsify, fetch, peers, render_check, workspace_root};

/// Build, measure and check the book *Production ML with Hugging Face, in Rust*.
#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the HTML book: inject measured tables, check the book, run every listing
    /// (cargo test --doc), render with mdBook + Mermaid, print where the HTML is.
    Book {
        /// Skip running the listings (they still compile in `cargo test`).
        #[arg(long)]
        no_test: bool,
        /// Open the book in a browser when it is built.
        #[arg(long)]
        open: bool,
    },
    /// Measure: run the criterion benches and the demos' --benchmark modes, write
    /// benchmarks/*.json with provenance, re-inject the chapters, update the scorecard.
    Bench {
        /// Only jobs whose table or binary name, or whose command (`demo-x --flag …`), contains
        /// this text.
        #[arg(long)]
        only: Option<String>,
        /// Also measure a peer on the same machine and workload (`llama-cpp`: builds
        /// llama-bench with llama-server from the vendored sources, and llama-cpp-python from
        /// source, on first use, or uses $PRODML_LLAMA_CPP_PYTHON). --only picks among the
        /// peer's jobs too (peer-llama-bench, peer-llama-cpp, -flash, -lookup).
        #[arg(long, value_parser = ["llama-cpp"])]
        peer: Option<String>,
    },
    /// Rewrite the chapters' measured tables from benchmarks/*.json (no measuring).
    Inject,
    /// Check the book: SUMMARY entries, doctest wiring, includes and anchors, fence labels,
    /// stale tables, figures typed by hand.
    Check,
    /// Load every built page holding a Mermaid diagram in headless Chromium and check that each
    /// diagram rendered as SVG, and every chart decodes as an image; screenshots go to
    /// target/book-render/.
    CheckRender,
    /// Run every command of the book's runnable console blocks (those after
    /// `<!-- runnable -->`) as a reader types them; fails when one exits non-zero.
    CheckCommands {
        /// Only the commands whose text contains this.
        #[arg(long)]
        only: Option<String>,
    },
    /// Download the course model and the perplexity text into models/ (PyPI wheels, SHA-256
    /// checked); does nothing when they are already there.
    FetchModel,
    /// Distill the course model into the distillation chapter's student (seed 42, the
    /// benchmark's recipe, forward KL) and write it with its training log into
    /// models/distill/; the teacher's logits are cached there too.
    Distill {
        /// Optimizer steps (the benchmark's number by default).
        #[arg(long)]
        steps: Option<u64>,
    },
    /// Test the book's claims and score the course's 100-point matrix against benchmarks/;
    /// print both, write benchmarks/falsification.json and benchmarks/scorecard.json. Fails
    /// when a claim is falsified or the matrix is under its pass mark.
    Falsify,
    /// The course's quality gate (after `make lint`): the book's consistency checks, no
    /// TODO/FIXME/HACK markers, and the measured coverage against its threshold.
    Compliance,
    /// Regenerate llama.cpp's reference outputs for the parity suite
    /// (chapters-code/tests/parity/llama-*.json.gz): builds llama.cpp from the pinned
    /// llama-cpp-python sdist once per SIMD level this CPU runs, then runs the suite on each
    /// build (about an hour on two cores; the builds are kept in target/peers/parity).
    ParityReference,
    /// Build llama.cpp's llama-server from the pinned llama-cpp-python sdist into
    /// target/peers/llama-server/bin/ (cmake and a C++ compiler; about ten minutes on two
    /// cores, once): demo-latency-profile then measures it beside the book's server.
    PeerLlamaServer,
    /// Build the serverless handler's deployment package: `bootstrap` (demo-lambda-handler,
    /// release) and `model.gguf` in target/lambda/prodml/, zipped, checked against Lambda's
    /// size limits and glibc.
    LambdaPackage,
}

/// `demo-distillation --benchmark`'s number of steps.
const DISTILL_STEPS: u64 = 150;

fn main() -> Result<()> {
    let root = workspace_root();
    match Cli::parse().command {
        Cmd::Book { no_test, open } => {
            fetch::fetch_all(&chapters_code::assets::models_dir())?;
            book::inject_all(&root)?;
            book::check(&root)?;
            if !no_test {
                book::run_listings(&root)?;
            }
            let index = book::render(&root)?;
            println!("The book is at {}", index.display());
            if open {
                open_in_browser(&index);
            }
        }
        Cmd::Bench { only, peer } => {
            let mut written = bench::run(&root, only.as_deref())?;
            if peer.as_deref() == Some("llama-cpp") {
                for (name, job) in peers::LLAMA_CPP_JOBS {
                    if only.as_deref().is_none_or(|f| name.contains(f)) {
                        written.push(job(&root)?);
                    }
                }
            }
            for path in &written {
                println!("wrote {}", path.display());
            }
            let summary = falsify::run(&root)?;
            for path in book::inject_all(&root)? {
                println!("updated {}", path.display());
            }
            println!(
                "scorecard: {} claim(s) hold, {} falsified; the course's matrix: {} of 100 points",
                summary.holds, summary.falsified, summary.points
            );
        }
        Cmd::Distill { steps } => {
            fetch::fetch_all(&chapters_code::assets::models_dir())?;
            let out = chapters_code::assets::models_dir().join("distill");
            let mut args: Vec<String> = ["--output", "json", "--verify", "--divergence", "forward"]
                .map(String::from)
                .to_vec();
            args.extend(["--steps".into(), steps.unwrap_or(DISTILL_STEPS).to_string()]);
            args.extend(["--write".into(), out.display().to_string()]);
            let report = bench::run_demo_with(&root, "demo-distillation", &args)?;
            println!("{}", serde_json::to_string_pretty(&report.result)?);
            println!("the student and its training log are in {}", out.display());
        }
        Cmd::Inject => {
            for path in book::inject_all(&root)? {
                println!("updated {}", path.display());
            }
        }
        Cmd::Check => {
            book::check(&root)?;
            println!("the book is consistent");
        }
        Cmd::LambdaPackage => {
            use chapters_code::serverless::package;
            let status = std::process::Command::new(env!("CARGO"))
                .current_dir(&root)
                .args([
                    "build",
                    "--release",
                    "-q",
                    "-p",
                    "chapters-code",
                    "--bin",
                    "demo-lambda-handler",
                ])
                .status()?;
            anyhow::ensure!(status.success(), "building demo-lambda-handler failed");
            let p = package::build(
                &root.join("target/lambda/prodml"),
                &root.join("target/release/demo-lambda-handler"),
                &chapters_code::assets::model_path(),
            )
            .map_err(anyhow::Error::msg)?;
            println!(
                "{}: {:.1} MB zipped, {:.1} MB unzipped (limit {:.1} MB: {}); direct upload (limit {:.1} MB): {}; glibc needed {:?}, provided.al2023 has {:?}: {}",
                p.zip.display(),
                p.zip_bytes as f64 / 1e6,
                p.unzipped_bytes as f64 / 1e6,
                package::UNZIPPED_BYTES as f64 / 1e6,
                if p.fits_unzipped() {
                    "fits"
                } else {
                    "too large"
                },
                package::DIRECT_UPLOAD_ZIP_BYTES as f64 / 1e6,
                if p.fits_direct_upload() {
                    "fits"
                } else {
                    "too large: upload through S3"
                },
                p.needs_glibc,
                package::RUNTIME_GLIBC,
                if p.runs_on_al2023() {
                    "runs"
                } else {
                    "build it for the runtime (cargo lambda build, or musl)"
                },
            );
            anyhow::ensure!(
                p.fits_unzipped(),
                "the package is over Lambda's unzipped limit"
            );
        }
        Cmd::PeerLlamaServer => {
            let bin = xtask::peers::llama_server(&root)?;
            println!("llama-server: {}", bin.display());
        }
        Cmd::CheckRender => {
            let pages = render_check::check_mermaid(
                &book::html_dir(&root),
                &root.join("target/book-render"),
            )?;
            for p in pages {
                println!(
                    "{}: {} of {} Mermaid diagram(s) rendered as SVG; screenshot {}",
                    p.page.display(),
                    p.rendered_svgs,
                    p.diagrams,
                    p.screenshot.display()
                );
            }
            let expected: Vec<&str> = xtask::charts::files().collect();
            for c in render_check::check_charts(
                &book::html_dir(&root),
                &expected,
                &root.join("target/book-render"),
            )? {
                println!(
                    "{}: rendered at {}×{}",
                    c.chart.display(),
                    c.width,
                    c.height
                );
            }
        }
        Cmd::CheckCommands { only } => {
            let outcomes = xtask::commands::run_all(&root, only.as_deref())?;
            let total: f64 = outcomes.iter().map(|o| o.seconds).sum();
            println!(
                "{} commands of the book ran and exited 0 ({total:.0} s)",
                outcomes.len()
            );
        }
        Cmd::FetchModel => {
            for path in fetch::fetch_all(&chapters_code::assets::models_dir())? {
                println!("{}", path.display());
            }
        }
        Cmd::ParityReference => {
            for path in peers::parity_reference(&root)? {
                println!("wrote {}", path.display());
            }
        }
        Cmd::Compliance => {
            let gates = compliance::run(&root)?;
            for g in &gates {
                let word = if g.passed { "PASS" } else { "FAIL" };
                println!("{word}  {}: {}", g.name, g.detail);
            }
            let failed = gates.iter().filter(|g| !g.passed).count();
            if failed > 0 {
                bail!("{failed} of {} compliance gate(s) failed", gates.len());
            }
            println!("every compliance gate passed");
        }
        Cmd::Falsify => {
            let summary = falsify::run(&root)?;
            book::inject_all(&root)?;
            falsify::print(&root)?;
            println!(
                "{} claim(s) hold, {} falsified; the course's scorecard: {} of 100 points (pass: {}); {} line(s) from stale results (benchmarks/falsification.json, benchmarks/scorecard.json)",
                summary.holds,
                summary.falsified,
                summary.points,
                falsify::thresholds::COURSE_PASS_POINTS,
                summary.stale
            );
            if summary.falsified > 0 {
                bail!(
                    "{} claim(s) of the book are falsified on this machine",
                    summary.falsified
                );
            }
            if !summary.passes_course() {
                bail!(
                    "the course's scorecard is {} of 100 points: under the {} it takes to pass",
                    summary.points,
                    falsify::thresholds::COURSE_PASS_POINTS
                );
            }
        }
    }
    Ok(())
}

fn open_in_browser(index: &std::path::Path) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    if let Err(e) = std::process::Command::new(opener).arg(index).status() {
        eprintln!(
            "could not open a browser ({opener}: {e}); open {} yourself",
            index.display()
        );
    }
}
