//! `cargo xtask peer-llama-server`: llama.cpp's `llama-server`, built from the llama.cpp that
//! the pinned llama-cpp-python sdist vendors (PyPI; the same sources as the book's llama.cpp
//! references), for the latency chapter's side-by-side runs. Needs cmake and a C++ compiler;
//! about ten minutes on two cores, once.

use super::LLAMA_CPP_PYTHON;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the binary goes (demo-latency-profile looks there).
pub fn binary(root: &Path) -> PathBuf {
    root.join("target/peers/llama-server/bin/llama-server")
}

pub(super) fn run(command: &mut Command, what: &str) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("{what}: cannot start {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Builds llama-server unless it is there; returns its path.
pub fn llama_server(root: &Path) -> Result<PathBuf> {
    let bin = binary(root);
    if bin.exists() {
        return Ok(bin);
    }
    if Command::new("cmake").arg("--version").output().is_err() {
        bail!("cmake is needed to build llama-server (apt-get install cmake)");
    }
    let dir = root.join("target/peers/llama-server");
    let src = dir.join("src");
    std::fs::create_dir_all(&src)?;
    // The sdist as published, not built: pip only downloads it.
    run(
        Command::new("python3")
            .args(["-m", "pip", "download", "--disable-pip-version-check", "-q"])
            .args(["--no-deps", "--no-binary", ":all:", LLAMA_CPP_PYTHON, "-d"])
            .arg(&src),
        "downloading the llama-cpp-python sdist",
    )?;
    let version = LLAMA_CPP_PYTHON.rsplit("==").next().unwrap_or_default();
    let tarball = src.join(format!("llama_cpp_python-{version}.tar.gz"));
    run(
        Command::new("tar")
            .arg("xzf")
            .arg(&tarball)
            .arg("-C")
            .arg(&src),
        "unpacking the sdist",
    )?;
    let llama = src.join(format!("llama_cpp_python-{version}/vendor/llama.cpp"));
    let build = dir.join("build");
    eprintln!(
        "building llama-server from {} (about ten minutes on two cores)...",
        llama.display()
    );
    run(
        Command::new("cmake")
            .arg("-S")
            .arg(&llama)
            .arg("-B")
            .arg(&build)
            .args([
                "-DCMAKE_BUILD_TYPE=Release",
                "-DLLAMA_BUILD_SERVER=ON",
                "-DLLAMA_BUILD_TOOLS=ON",
                "-DLLAMA_BUILD_TESTS=OFF",
                "-DLLAMA_BUILD_EXAMPLES=OFF",
                "-DLLAMA_CURL=OFF",
                "-DLLAMA_OPENSSL=OFF",
                // One self-contained executable (no libllama/libggml beside it).
                "-DBUILD_SHARED_LIBS=OFF",
                // This CPU's SIMD, as the book's engine dispatches to it at run time.
                "-DGGML_NATIVE=ON",
            ]),
        "configuring llama.cpp",
    )?;
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    run(
        Command::new("cmake").arg("--build").arg(&build).args([
            "--target",
            "llama-server",
            "-j",
            &jobs.to_string(),
        ]),
        "building llama-server",
    )?;
    std::fs::create_dir_all(bin.parent().expect("a parent"))?;
    std::fs::copy(build.join("bin/llama-server"), &bin)?;
    Ok(bin)
}
