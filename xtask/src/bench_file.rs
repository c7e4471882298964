//! `benchmarks/<name>.json`: one measured table plus its provenance, and its rendering into a
//! chapter.

use anyhow::{Context, Result};
use chapters_code::demo::{Provenance, Table};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What `cargo xtask bench` writes and `cargo xtask book` reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BenchFile {
    #[serde(flatten)]
    pub table: Table,
    pub provenance: Provenance,
}

/// `benchmarks/` under the workspace root.
pub fn dir(root: &Path) -> PathBuf {
    root.join("benchmarks")
}

/// Path of the results file of table `name`.
pub fn path(root: &Path, name: &str) -> PathBuf {
    dir(root).join(format!("{name}.json"))
}

impl BenchFile {
    /// Reads `benchmarks/<name>.json`; `Ok(None)` when it does not exist yet.
    pub fn load(root: &Path, name: &str) -> Result<Option<BenchFile>> {
        let path = path(root, name);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let file = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid results file", path.display()))?;
        Ok(Some(file))
    }

    /// Writes `benchmarks/<name>.json` (pretty, trailing newline).
    pub fn save(&self, root: &Path) -> Result<PathBuf> {
        let path = path(root, &self.table.name);
        std::fs::create_dir_all(dir(root))?;
        let text = serde_json::to_string_pretty(self)? + "\n";
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// The Markdown a chapter shows between its markers.
    pub fn to_markdown(&self) -> String {
        let t = &self.table;
        let p = &self.provenance;
        let mut out = format!("**{}**\n\n{}", t.title, t.to_markdown());
        for note in &t.notes {
            out.push_str(&format!("\n{note}\n"));
        }
        out.push_str(&format!(
            "\n<sub>Measured by `{}` on {}; {} cores; SIMD {}; {}, {} build; git {}; {}. Data: `benchmarks/{}.json`.</sub>\n",
            p.command,
            p.cpu_model,
            p.cores,
            p.simd,
            p.rustc,
            p.profile,
            p.git_sha,
            p.date_utc,
            t.name
        ));
        out
    }
}

/// What a chapter shows for `name`: its table, or a visible "not measured yet".
pub fn render(root: &Path, name: &str) -> Result<String> {
    Ok(match BenchFile::load(root, name)? {
        Some(file) => file.to_markdown(),
        None => format!(
            "> **Not measured yet.** Run `cargo xtask bench` to measure `{name}` on your machine; \
             the table appears here."
        ),
    })
}
