//! The book's runnable console blocks, run as a reader would type them.
//!
//! A ```` ```console ```` block right after the comment `<!-- runnable -->` is one whose
//! commands finish on their own on any machine that has the model: `cargo xtask
//! check-commands` runs each of its commands from the workspace root (`$ ` prompts dropped,
//! `\` continuations joined, one `bash -c` per command) and fails when one exits non-zero or
//! runs past its time limit. Blocks that start a server, draw on a terminal or take many
//! minutes are left unmarked, and the chapter says how to run them. With
//! `PRODML_COMMANDS_PROFILE=dev` (CI) `cargo run --release` runs in the dev profile, which
//! optimizes chapters-code as release does, so that CI reuses its test build.

use crate::checks::{BOOK_SRC, chapter_files};
use crate::markdown::code_blocks;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The marker that makes the next console block runnable.
pub const MARKER: &str = "<!-- runnable -->";

/// Longest a single command may run.
pub const TIME_LIMIT: Duration = Duration::from_secs(600);

/// One command of a runnable block.
#[derive(Debug, Clone, PartialEq)]
pub struct BookCommand {
    /// Chapter, relative to the workspace root.
    pub file: PathBuf,
    /// 1-based line of the command in the chapter.
    pub line: usize,
    pub text: String,
}

/// The commands of every block marked runnable in `text` (chapter `file`).
pub fn commands_in(file: &Path, text: &str) -> Vec<BookCommand> {
    let mut out = Vec::new();
    for block in code_blocks(text) {
        if block
            .info
            .as_deref()
            .map(|i| i.split(',').next().unwrap_or("").trim())
            != Some("console")
        {
            continue;
        }
        let before = text[..block.span.start].trim_end();
        if !before.ends_with(MARKER) {
            continue;
        }
        let mut pending: Option<(usize, String)> = None;
        for (i, raw) in block.body.lines().enumerate() {
            // The body starts on the line after the fence.
            let line = block.line + 1 + i;
            let raw = raw.trim_end();
            let (start, mut acc) = match pending.take() {
                Some((start, acc)) => (start, acc + " "),
                None => {
                    let trimmed = raw.trim_start();
                    if trimmed.is_empty() || trimmed.starts_with('#') {
                        continue;
                    }
                    (line, String::new())
                }
            };
            let piece = if acc.is_empty() {
                raw.trim_start()
                    .strip_prefix("$ ")
                    .unwrap_or(raw.trim_start())
            } else {
                raw.trim_start()
            };
            match piece.strip_suffix('\\') {
                Some(rest) => {
                    acc.push_str(rest.trim_end());
                    pending = Some((start, acc));
                }
                None => {
                    acc.push_str(piece);
                    out.push(BookCommand {
                        file: file.to_path_buf(),
                        line: start,
                        text: acc,
                    });
                }
            }
        }
        if let Some((start, acc)) = pending {
            out.push(BookCommand {
                file: file.to_path_buf(),
                line: start,
                text: acc,
            });
        }
    }
    out
}

/// Every runnable command of the book under `root`, in chapter order.
pub fn all(root: &Path) -> Result<Vec<BookCommand>> {
    let mut out = Vec::new();
    for chapter in chapter_files(root).context("listing the chapters")? {
        let file = Path::new(BOOK_SRC).join(&chapter);
        let text = std::fs::read_to_string(root.join(&file))
            .with_context(|| format!("reading {}", file.display()))?;
        out.extend(commands_in(&file, &text));
    }
    Ok(out)
}

/// How one command ended.
#[derive(Debug)]
pub struct Outcome {
    pub command: BookCommand,
    pub seconds: f64,
}

/// Runs every runnable command whose text contains `filter`, one after another, from `root`.
/// Fails at the first that exits non-zero or runs past [`TIME_LIMIT`], with its output's end.
pub fn run_all(root: &Path, filter: Option<&str>) -> Result<Vec<Outcome>> {
    let commands: Vec<BookCommand> = all(root)?
        .into_iter()
        .filter(|c| filter.is_none_or(|f| c.text.contains(f)))
        .collect();
    if commands.is_empty() {
        bail!("no runnable console block matched: mark one with `{MARKER}` on the line before it");
    }
    // CI reuses the test build: the dev profile optimizes chapters-code as release does.
    let dev = std::env::var("PRODML_COMMANDS_PROFILE").is_ok_and(|p| p == "dev");
    let mut outcomes = Vec::new();
    for command in commands {
        let at = format!("{}:{}", command.file.display(), command.line);
        eprintln!("== {at}: {}", command.text);
        let text = if dev {
            as_dev(&command.text)
        } else {
            command.text.clone()
        };
        let started = Instant::now();
        let mut child = Command::new("bash")
            .args(["-o", "pipefail", "-c", &text])
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("{at}: starting bash"))?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let (out_thread, err_thread) = (drain(stdout), drain(stderr));
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if started.elapsed() > TIME_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let (out, err) = (
            out_thread.join().unwrap_or_default(),
            err_thread.join().unwrap_or_default(),
        );
        let tail = |s: &str| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        match status {
            Some(s) if s.success() => {}
            Some(s) => bail!(
                "{at}: `{}` failed ({s}):\n{}\n{}",
                command.text,
                tail(&out),
                tail(&err)
            ),
            None => bail!(
                "{at}: `{}` ran past {} s",
                command.text,
                TIME_LIMIT.as_secs()
            ),
        }
        let seconds = started.elapsed().as_secs_f64();
        eprintln!("   ok in {seconds:.1} s");
        outcomes.push(Outcome { command, seconds });
    }
    Ok(outcomes)
}

/// `cargo run --release …` as `cargo run …` (the dev profile), other commands unchanged.
fn as_dev(command: &str) -> String {
    match command.strip_prefix("cargo run ") {
        Some(rest) => format!("cargo run {}", rest.replacen("--release ", "", 1)),
        None => command.to_string(),
    }
}

/// Reads a child's pipe to its end on a thread (a full pipe would stall the child).
fn drain<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_marked_console_blocks_count_and_lines_are_read_as_typed() {
        let text = "Intro\n\n<!-- runnable -->\n```console\n$ cargo run --bin a   # note\n\
                    cargo run --bin b -- \\\n    --flag x\n\n# a comment\n```\n\n\
                    ```console\ncargo run --bin not-marked\n```\n\n<!-- runnable -->\n```text\nnot console\n```\n";
        let got = commands_in(Path::new("ch.md"), text);
        let texts: Vec<&str> = got.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "cargo run --bin a   # note",
                "cargo run --bin b -- --flag x"
            ]
        );
        assert_eq!(got[0].line, 5);
        assert_eq!(got[1].line, 6);
    }

    #[test]
    fn ci_runs_cargo_commands_in_the_dev_profile() {
        assert_eq!(
            as_dev("cargo run --release -p chapters-code --bin demo-kv-cache -- --release-notes"),
            "cargo run -p chapters-code --bin demo-kv-cache -- --release-notes"
        );
        assert_eq!(as_dev("curl -s x"), "curl -s x");
    }

    #[test]
    fn the_book_has_runnable_blocks() {
        let root = crate::workspace_root();
        let commands = all(&root).unwrap();
        assert!(
            commands.len() >= 10,
            "only {} runnable commands in the book",
            commands.len()
        );
    }
}
