//! The flags every demo accepts. Each demo flattens [`DemoArgs`] into its own clap parser:
//!
//! ```no_run
//! use clap::Parser;
//! use chapters_code::demo::DemoArgs;
//!
//! /// One line that `--help` shows.
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     demo: DemoArgs,
//! }
//! let cli = Cli::parse();
//! ```

use clap::{Args, ValueEnum};

// ANCHOR: demo_args
/// Flags shared by every `demo-*` binary.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Where results go: `stdout` (readable text), `json` (one JSON object with provenance,
    /// for scripts and `cargo xtask bench`). Long runs show live progress bars on stderr.
    #[arg(long, value_enum, default_value_t = OutputMode::Stdout)]
    pub output: OutputMode,

    /// Short for `--output stdout` (the course's CI mode: `cargo run --bin demo-… -- --stdout`).
    #[arg(long, conflicts_with = "output")]
    pub stdout: bool,

    /// Measure: repeat the work long enough for stable numbers and report them as tables.
    #[arg(long)]
    pub benchmark: bool,

    /// Check the results against their reference and exit with status 1 on a mismatch.
    #[arg(long)]
    pub verify: bool,

    /// Seed of every random choice, so that a run can be repeated exactly.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// The output modes.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// Human-readable text (the default; never waits for input).
    Stdout,
    /// One JSON object on stdout.
    Json,
}
// ANCHOR_END: demo_args

/// Flags of the demos that run the model.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model file [default: $PRODML_MODEL or models/SmolLM2-135M-Instruct.Q4_1.gguf].
    #[arg(long)]
    pub model: Option<std::path::PathBuf>,

    /// Threads for the matrix products [default: all logical cores].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..1025))]
    pub threads: Option<u64>,
}

impl ModelArgs {
    /// `--model`, or the course model's default location.
    pub fn model_path(&self) -> std::path::PathBuf {
        self.model.clone().unwrap_or_else(crate::assets::model_path)
    }

    /// `--threads`, or every logical core.
    pub fn threads(&self) -> usize {
        self.threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            |t| t as usize,
        )
    }
}

/// The workload of the batching and KV-cache demos (seeded by `--seed`).
#[derive(Args, Debug, Clone)]
pub struct WorkloadArgs {
    /// Requests in the workload.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..10_000))]
    pub requests: u64,

    /// Shortest and longest prompt, in tokens.
    #[arg(long, num_args = 2, default_values_t = [16, 96], value_names = ["MIN", "MAX"])]
    pub prompt_tokens: Vec<usize>,

    /// Fewest and most generated tokens per request.
    #[arg(long, num_args = 2, default_values_t = [16, 96], value_names = ["MIN", "MAX"])]
    pub output_tokens: Vec<usize>,

    /// Mean engine steps between arrivals (exponential arrivals; 0 = all at once). Counted in
    /// steps, not milliseconds, so that the replay is the same on a faster machine.
    #[arg(long, default_value_t = 1.0, value_parser = non_negative_steps)]
    pub interarrival_steps: f64,

    /// Sequences in the running batch, at most.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..1025))]
    pub max_running: u64,

    /// Memory for the KV cache, in MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..65_536))]
    pub kv_mib: u64,
}

fn non_negative_steps(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("`{s}`: use a number of steps, 0 or more")),
    }
}

impl WorkloadArgs {
    /// The workload spec, with its seed.
    pub fn spec(&self, seed: u64) -> crate::engine::replay::WorkloadSpec {
        let pair = |v: &[usize]| (v[0].min(v[1]), v[0].max(v[1]));
        crate::engine::replay::WorkloadSpec {
            requests: self.requests as usize,
            prompt_tokens: pair(&self.prompt_tokens),
            output_tokens: pair(&self.output_tokens),
            mean_interarrival_steps: self.interarrival_steps,
            seed,
        }
    }
}

/// Parsers for flag values, so that a bad value gets a message that says what is allowed
/// (`--temperature -1` must not read as an unknown flag `-1`: those args also set
/// `allow_negative_numbers`).
pub mod parse {
    /// A number ≥ 0 (temperature, penalties).
    pub fn non_negative(s: &str) -> Result<f32, String> {
        let v: f32 = s
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a number"))?;
        if v.is_finite() && v >= 0.0 {
            Ok(v)
        } else {
            Err(format!("{v} is negative: use 0 or more (0 = greedy)"))
        }
    }

    /// A probability in [0, 1] (top-p, min-p).
    pub fn probability(s: &str) -> Result<f32, String> {
        let v: f32 = s
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a number"))?;
        if (0.0..=1.0).contains(&v) {
            Ok(v)
        } else {
            Err(format!(
                "{v} is not a probability: use a number from 0 to 1"
            ))
        }
    }

    /// A number > 0 (the repeat penalty: 1 = off).
    pub fn positive(s: &str) -> Result<f32, String> {
        let v: f32 = s
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a number"))?;
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(format!("{v} must be above 0 (1 = off)"))
        }
    }

    /// A stop string as a shell passes it: `\n`, `\t`, `\r` and `\\` are read as the
    /// characters they name (a shell passes `"\n"` as a backslash and an `n`), anything else
    /// as typed.
    pub fn stop_string(s: &str) -> Result<String, String> {
        let mut out = String::with_capacity(s.len());
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('\\') => out.push('\\'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        }
        if out.is_empty() {
            return Err("a stop string cannot be empty".into());
        }
        Ok(out)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn values_are_checked_and_escapes_read() {
            assert_eq!(non_negative("0.7"), Ok(0.7));
            assert!(non_negative("-1").unwrap_err().contains("0 or more"));
            assert!(non_negative("hot").unwrap_err().contains("not a number"));
            assert!(probability("1.5").is_err());
            assert_eq!(probability("0.9"), Ok(0.9));
            assert!(positive("0").is_err());
            assert_eq!(stop_string(r"\n").as_deref(), Ok("\n"));
            assert_eq!(stop_string(r"a\tb\\c\q").as_deref(), Ok("a\tb\\c\\q"));
            assert!(stop_string("").is_err());
        }
    }
}
