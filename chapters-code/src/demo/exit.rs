//! How a demo ends when something went wrong: one line that says what and how to fix it.
//!
//! `fn main() -> anyhow::Result<()>` prints the error's `Debug` form, which under
//! `RUST_BACKTRACE=1` (common among Rust users) adds a backtrace of the demo's own frames to a
//! message like "no file at x.gguf". A user's mistake is not a bug: [`run`] prints the error
//! chain on one line and exits with status 1, whatever `RUST_BACKTRACE` says.

use std::process::ExitCode;

/// Runs a demo's body; an error becomes `error: <what>: <cause>…` on stderr and status 1.
pub fn run(body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", message(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, outermost first, joined by ": " (a cause that merely repeats
/// the one before is left out).
pub fn message(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !parts.last().is_some_and(|last| last.ends_with(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_the_chain_on_one_line_without_repeats() {
        let e = anyhow::anyhow!("no file at x.gguf").context("opening the model");
        assert_eq!(message(&e), "opening the model: no file at x.gguf");
        let io = std::io::Error::other("disk full");
        let e = anyhow::Error::new(io).context("writing out.json: disk full");
        assert_eq!(message(&e), "writing out.json: disk full");
    }
}
