//! What the WebAssembly tests share: building the module, running Node, skipping loudly.

#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn required() -> bool {
    std::env::var_os("PRODML_REQUIRE_WASM").is_some()
}

pub fn skip(why: &str) {
    assert!(!required(), "PRODML_REQUIRE_WASM is set, but {why}");
    eprintln!("SKIPPED: the WebAssembly tests ({why})");
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds the simd128 module (its own target directory: this test runs inside another cargo)
/// and returns its path, or None where the toolchain cannot.
pub fn build_module() -> Option<PathBuf> {
    build("wasm-test", None)
}

/// Builds the relaxed-SIMD module (`+simd128,+relaxed-simd`), as [`build_module`].
pub fn build_relaxed_module() -> Option<PathBuf> {
    build(
        "wasm-test-relaxed",
        Some("-C target-feature=+simd128,+relaxed-simd"),
    )
}

fn build(dir: &str, rustflags: Option<&str>) -> Option<PathBuf> {
    let target_dir = root().join("target").join(dir);
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(root())
        .args([
            "build",
            "--locked",
            "-q",
            "-p",
            "prodml-wasm",
            "--profile",
            "wasm",
        ])
        .args(["--target", "wasm32-unknown-unknown", "--target-dir"])
        .arg(&target_dir);
    if let Some(flags) = rustflags {
        // Replaces .cargo/config.toml's flags for the wasm32 target.
        cargo.env("RUSTFLAGS", flags);
    }
    let out = cargo.output().expect("cargo runs");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("wasm32-unknown-unknown") && err.contains("target may not be installed") {
            skip(
                "the wasm32-unknown-unknown target is not installed (rustup target add wasm32-unknown-unknown)",
            );
            return None;
        }
        panic!("building the wasm module failed:\n{err}");
    }
    Some(target_dir.join("wasm32-unknown-unknown/wasm/prodml_wasm.wasm"))
}

pub fn node(args: &[&Path]) -> Option<serde_json::Value> {
    let out = match Command::new("node").args(args).output() {
        Ok(out) => out,
        Err(_) => {
            skip("`node` is not on PATH");
            return None;
        }
    };
    assert!(
        out.status.success(),
        "node {:?} failed:\n{}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("the script prints JSON"))
}

/// Debian's Chromium (or PRODML_CHROMIUM), or None after a skip message.
pub fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PRODML_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        Some(path)
    } else {
        skip(&format!(
            "no Chromium at {} (apt-get install chromium, or set PRODML_CHROMIUM)",
            path.display()
        ));
        None
    }
}

/// Whether playwright-core is installed for the browser scripts (else a skip message).
pub fn playwright() -> bool {
    let there = root()
        .join("wasm/web/node_modules/playwright-core")
        .exists();
    if !there {
        skip("wasm/web/node_modules is missing (npm ci --prefix wasm/web)");
    }
    there
}
