//! The steps around training, in the order a run takes them: choose the blocks the student
//! keeps, read the training text, and get the teacher's top-k logits (from the cache, or by
//! running the teacher once).

use super::teacher::{CacheError, TeacherCache, fingerprint};
use super::wikitext::plain_text;
use crate::formats::Gguf;
use crate::kernels::pool::ThreadPool;
use crate::model::{Llama, ModelError};
use crate::prune::structured::{block_influence, least_influential};
use crate::tokenizer::{TokenId, Tokenizer};
use std::path::{Path, PathBuf};

/// Why a distillation run cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum DistillError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("creating the cache directory {path}: {source}")]
    CacheDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the training text holds {have} sequences of {seq_len} tokens; the run needs {need} — \
         train fewer steps or smaller batches, or give a longer text"
    )]
    TextTooShort {
        have: usize,
        need: usize,
        seq_len: usize,
    },
}

// ANCHOR: choose_blocks
/// The `keep` blocks of `teacher` with the largest influence (ShortGPT's `1 − cos` between a
/// block's input and output, on `calibration` cut into chunks of 512), in their order, and
/// every block's influence.
pub fn choose_blocks(
    teacher: &Llama,
    pool: &ThreadPool,
    calibration: &[TokenId],
    keep: usize,
) -> Result<(Vec<usize>, Vec<f64>), ModelError> {
    let n = teacher.layers.len();
    if keep == 0 || keep > n {
        return Err(ModelError::BadConfig(format!(
            "the student keeps 1 to {n} of the teacher's blocks; asked for {keep}"
        )));
    }
    let influence = block_influence(teacher, pool, calibration, 512)?;
    let dropped = least_influential(&influence, n - keep);
    let kept = (0..n).filter(|b| !dropped.contains(b)).collect();
    Ok((kept, influence))
}
// ANCHOR_END: choose_blocks

/// The articles of a MediaWiki dump as tokens (markup stripped, no BOS).
pub fn training_tokens(tokenizer: &Tokenizer, xml: &str) -> Vec<TokenId> {
    tokenizer.encode(&plain_text(xml), false)
}

/// The teacher's top-k logits over the first `n_seq` sequences of `seq_len` positions of
/// `tokens`: read from `dir` when a cache for exactly these inputs is there, else computed
/// and saved. Returns the cache and, when it was computed, the seconds it took.
#[allow(clippy::too_many_arguments)]
pub fn cached_teacher(
    teacher_file: &Gguf,
    teacher: &Llama,
    pool: &ThreadPool,
    tokens: &[TokenId],
    seq_len: usize,
    k: usize,
    n_seq: usize,
    dir: &Path,
    progress: impl FnMut(usize, usize),
) -> Result<(TeacherCache, Option<f64>), DistillError> {
    let have = tokens.len().saturating_sub(1) / seq_len.max(1);
    if have < n_seq {
        return Err(DistillError::TextTooShort {
            have,
            need: n_seq,
            seq_len,
        });
    }
    let tokens = &tokens[..n_seq * seq_len + 1];
    let key = fingerprint(teacher_file, tokens, seq_len, k);
    let path = dir.join(format!("teacher-top{k}-{key:016x}.bin"));
    if path.is_file()
        && let Some(cache) = TeacherCache::load(&path, key)?
    {
        return Ok((cache, None));
    }
    std::fs::create_dir_all(dir).map_err(|source| DistillError::CacheDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let started = std::time::Instant::now();
    let cache = TeacherCache::build(teacher, pool, tokens, seq_len, k, key, progress)?;
    let seconds = started.elapsed().as_secs_f64();
    cache.save(&path)?;
    Ok((cache, Some(seconds)))
}
