//! Where a number came from: every result the book shows carries this record.

use crate::hw::CpuInfo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::process::Command;

// ANCHOR: provenance
/// The facts that let a reader reproduce (or distrust) a measurement.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Provenance {
    /// Commit of the code that ran; `-dirty` when its sources had uncommitted changes.
    pub git_sha: String,
    /// When the measurement ran, UTC, RFC 3339 (`2026-11-29T20:15:00Z`).
    pub date_utc: String,
    pub cpu_model: String,
    /// Logical cores this process could use.
    pub cores: usize,
    /// SIMD tier the kernels ran (see `hw::SimdLevel`), then the batched tiles' instructions
    /// where they differ: `avx2`, `avx2 + avx512-vnni tiles`.
    pub simd: String,
    /// `rustc --version` of the build.
    pub rustc: String,
    /// `release` or `debug`: debug builds are many times slower.
    pub profile: String,
    /// Our crate and the measured dependencies, `name → version`.
    pub crate_versions: BTreeMap<String, String>,
    /// The exact command line that produced the result.
    pub command: String,
}
// ANCHOR_END: provenance

impl Provenance {
    /// Provenance of the running process (command = this process's own arguments).
    pub fn current() -> Provenance {
        let cpu = CpuInfo::detect();
        let mut crate_versions: BTreeMap<String, String> = dependency_versions()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        crate_versions.insert(
            env!("CARGO_PKG_NAME").to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        );
        Provenance {
            git_sha: git_sha(),
            date_utc: utc_now_rfc3339(),
            cpu_model: cpu.model,
            cores: cpu.logical_cores,
            simd: crate::kernels::path_summary(),
            rustc: env!("PRODML_RUSTC_VERSION").to_string(),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .to_string(),
            crate_versions,
            command: command_line(std::env::args()),
        }
    }

    /// One line for the foot of a table.
    pub fn summary(&self) -> String {
        format!(
            "{}, {} cores, {}, {} ({}), git {}, {}",
            self.cpu_model,
            self.cores,
            self.simd,
            self.rustc,
            self.profile,
            self.git_sha,
            self.date_utc
        )
    }
}

/// `name → version` of the dependencies recorded by the build script.
fn dependency_versions() -> impl Iterator<Item = (&'static str, &'static str)> {
    env!("PRODML_DEP_VERSIONS")
        .split(';')
        .filter_map(|pair| pair.split_once('='))
}

/// Version of a tracked dependency, or "unknown".
pub fn dependency_version(name: &str) -> &'static str {
    dependency_versions()
        .find(|(n, _)| *n == name)
        .map_or("unknown", |(_, v)| v)
}

/// Short commit of the source tree this crate was built from, `-dirty` if its code changed.
/// Changes under `benchmarks/`, `book/` and `images/` do not count: they are results and what is
/// drawn from them, and writing results must not taint the next measurement.
fn git_sha() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let run = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
    };
    let Some(sha) = run(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    let dirty = run(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ".",
        ":!benchmarks",
        ":!book",
        ":!images",
    ])
    .is_some_and(|s| !s.trim().is_empty());
    format!("{}{}", sha.trim(), if dirty { "-dirty" } else { "" })
}

/// Joins arguments into one shell-readable line, quoting those that need it.
pub fn command_line(args: impl IntoIterator<Item = String>) -> String {
    args.into_iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c));
            if plain {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Now, as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339_from_unix(secs)
}

/// Unix seconds → `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, Howard Hinnant's algorithm).
pub fn rfc3339_from_unix(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_match_known_instants() {
        assert_eq!(rfc3339_from_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_from_unix(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_from_unix(1_795_992_645), "2026-11-29T22:50:45Z");
    }

    #[test]
    fn commands_are_quoted_only_where_needed() {
        let args = ["demo", "--prompt", "The capital of France", "it's"].map(String::from);
        assert_eq!(
            command_line(args),
            r"demo --prompt 'The capital of France' 'it'\''s'"
        );
    }

    #[test]
    fn provenance_names_the_build() {
        let p = Provenance::current();
        assert!(p.rustc.starts_with("rustc "), "{}", p.rustc);
        assert_eq!(dependency_version("trueno"), p.crate_versions["trueno"]);
        assert!(!p.git_sha.is_empty());
    }
}
