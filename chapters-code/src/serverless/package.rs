//! The deployment package: `bootstrap` (the function's executable, as Lambda's custom runtimes
//! want it) and `model.gguf` side by side, zipped, and checked against Lambda's limits.

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Lambda's limits (AWS Lambda quotas): a zip uploaded directly, and unzipped with its layers.
pub const DIRECT_UPLOAD_ZIP_BYTES: u64 = 50 * 1024 * 1024;
pub const UNZIPPED_BYTES: u64 = 250 * 1024 * 1024;
/// Amazon Linux 2023 (the `provided.al2023` runtime) ships glibc 2.34.
pub const RUNTIME_GLIBC: (u32, u32) = (2, 34);

/// What the package holds and how it fits.
#[derive(Debug, Clone, Serialize)]
pub struct Package {
    pub zip: PathBuf,
    pub bootstrap_bytes: u64,
    /// Whether `strip` removed the executable's symbols.
    pub stripped: bool,
    pub model_bytes: u64,
    pub unzipped_bytes: u64,
    pub zip_bytes: u64,
    /// The newest `GLIBC_x.y` symbol version the executable needs (None: static, or none).
    pub needs_glibc: Option<(u32, u32)>,
}

impl Package {
    pub fn fits_unzipped(&self) -> bool {
        self.unzipped_bytes <= UNZIPPED_BYTES
    }

    pub fn fits_direct_upload(&self) -> bool {
        self.zip_bytes <= DIRECT_UPLOAD_ZIP_BYTES
    }

    pub fn runs_on_al2023(&self) -> bool {
        self.needs_glibc.is_none_or(|v| v <= RUNTIME_GLIBC)
    }
}

/// The newest glibc symbol version named in an executable's bytes (`GLIBC_2.34` …).
pub fn newest_glibc(binary: &[u8]) -> Option<(u32, u32)> {
    let needle = b"GLIBC_";
    let mut newest = None;
    let mut i = 0;
    while let Some(at) = binary[i..].windows(needle.len()).position(|w| w == needle) {
        let start = i + at + needle.len();
        let text: String = binary[start..]
            .iter()
            .take(12)
            .take_while(|b| b.is_ascii_digit() || **b == b'.')
            .map(|&b| b as char)
            .collect();
        let mut parts = text.split('.').filter_map(|p| p.parse::<u32>().ok());
        if let (Some(major), Some(minor)) = (parts.next(), parts.next()) {
            newest = newest.max(Some((major, minor)));
        }
        i = start;
    }
    newest
}

/// Lays out `dir` (`bootstrap`, `model.gguf`) and zips it into `dir.zip` with Python's zipfile
/// (deflate; Python 3 is on every machine this book builds on).
pub fn build(dir: &Path, bootstrap: &Path, model: &Path) -> Result<Package, String> {
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| io(&dir.display().to_string(), e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| io(&dir.display().to_string(), e))?;
    let (b, m) = (dir.join("bootstrap"), dir.join("model.gguf"));
    std::fs::copy(bootstrap, &b).map_err(|e| io(&bootstrap.display().to_string(), e))?;
    // Symbols are no use on Lambda: strip them where binutils is there (it comes with gcc).
    let stripped = Command::new("strip")
        .arg(&b)
        .status()
        .is_ok_and(|s| s.success());
    // A hard link where the file system allows it: the package need not copy 98 MB twice.
    if std::fs::hard_link(model, &m).is_err() {
        std::fs::copy(model, &m).map_err(|e| io(&model.display().to_string(), e))?;
    }
    let zip = dir.with_extension("zip");
    let _ = std::fs::remove_file(&zip);
    let out = Command::new("python3")
        .args(["-m", "zipfile", "-c"])
        .arg(&zip)
        .arg(&b)
        .arg(&m)
        .output()
        .map_err(|e| io("python3 -m zipfile", e))?;
    if !out.status.success() {
        return Err(format!(
            "zipping the package failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let binary = std::fs::read(&b).map_err(|e| io("bootstrap", e))?;
    Ok(Package {
        bootstrap_bytes: size(&b),
        stripped,
        model_bytes: size(&m),
        unzipped_bytes: size(&b) + size(&m),
        zip_bytes: size(&zip),
        needs_glibc: newest_glibc(&binary),
        zip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_glibc_version_is_read_from_the_symbol_names() {
        let bytes = b"\0GLIBC_2.2.5\0GLIBC_2.34\0xGLIBC_2.17\0GLIBC_PRIVATE\0GLIBC_2.4";
        assert_eq!(newest_glibc(bytes), Some((2, 34)));
        assert_eq!(newest_glibc(b"static binary"), None);
    }
}
