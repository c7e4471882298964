//! The book's build tooling, as a library so that `cargo test` can run the same checks that
//! `cargo xtask book` runs. The binary (`cargo xtask ...`) is a thin CLI over these modules.

pub mod bench;
pub mod bench_file;
pub mod book;
pub mod charts;
pub mod checks;
pub mod commands;
pub mod compliance;
pub mod coverage;
pub mod falsify;
pub mod fetch;
pub mod inject;
pub mod markdown;
pub mod peers;
pub mod render_check;

use std::path::PathBuf;

/// The workspace root (the directory holding `book.toml`).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
