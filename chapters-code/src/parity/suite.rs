//! The parity suite on disk: the prompts (`tests/parity/prompts.json`) and, per llama.cpp
//! build, its reference outputs (`tests/parity/llama-<build>.json.gz`, gzipped JSON), both
//! written by scripts committed beside them (`make_prompts.py`,
//! `xtask/src/peers/parity_reference.py`).

use crate::tokenizer::{ChatMessage, TokenId};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How many log-probabilities per position the references keep.
pub const TOP: usize = 5;

/// Why the suite could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid parity file: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "no llama.cpp reference files (llama-*.json.gz) in {0}: run `cargo xtask parity-reference`"
    )]
    NoReferences(PathBuf),
    #[error("{0}")]
    Inconsistent(String),
}

/// One prompt of the suite: raw text, or a conversation for the chat template.
#[derive(Debug, Clone, Deserialize)]
pub struct Prompt {
    pub id: String,
    /// What the prompt exercises (prose, code, cjk, chat, long, ...).
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub messages: Option<Vec<ChatMessage>>,
}

#[derive(Debug, Deserialize)]
struct PromptsFile {
    prompts: Vec<Prompt>,
}

/// One build's greedy run of one prompt.
#[derive(Debug, Clone, Deserialize)]
pub struct RefRun {
    pub id: String,
    /// The prompt as llama.cpp tokenized it (specials parsed, no BOS).
    pub prompt_ids: Vec<TokenId>,
    /// The greedy tokens, up to 128 or an end-of-generation token (included).
    pub tokens: Vec<TokenId>,
    /// At step k (the distribution that chose `tokens[k]`): the top-5 ids, best first...
    pub top_ids: Vec<[TokenId; TOP]>,
    /// ...and their log-probabilities.
    pub top_lps: Vec<[f64; TOP]>,
}

/// Per prompt, per step: one build's log-probabilities of another run's top-5 ids.
pub type Forced = Vec<Vec<[f64; TOP]>>;

/// One llama.cpp build's reference file (`llama-<build>.json.gz`).
#[derive(Debug, Clone, Deserialize)]
pub struct Reference {
    /// The build's name: `avx2`, `avx`, `avx2-nosgemm`, `avx512`, ...
    pub build: String,
    pub cmake_flags: String,
    pub llama_cpp_python: String,
    pub llama_cpp_commit: String,
    pub system_info: String,
    pub prompts: Vec<RefRun>,
    /// Teacher-forced on another build's runs (key: that build): this build's log-probabilities
    /// of the other build's top-5 ids, the prompt in one batch and then one token at a time.
    #[serde(default)]
    pub cross: BTreeMap<String, Forced>,
    /// This build's log-probabilities of its own top-5 ids with the prompt and its generated
    /// tokens in one batch (its prefill against its own decode).
    #[serde(default)]
    pub prefill: Forced,
}

/// The prompts and every build's reference.
#[derive(Debug, Clone)]
pub struct Suite {
    pub prompts: Vec<Prompt>,
    pub references: Vec<Reference>,
}

/// `chapters-code/tests/parity`.
pub fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity")
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, SuiteError> {
    let read = || -> std::io::Result<String> {
        let bytes = std::fs::read(path)?;
        if path.extension().is_some_and(|e| e == "gz") {
            let mut text = String::new();
            std::io::Read::read_to_string(
                &mut flate2::read::GzDecoder::new(&bytes[..]),
                &mut text,
            )?;
            Ok(text)
        } else {
            String::from_utf8(bytes).map_err(std::io::Error::other)
        }
    };
    let text = read().map_err(|source| SuiteError::Read {
        path: path.into(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| SuiteError::Parse {
        path: path.into(),
        source,
    })
}

impl Suite {
    /// Reads the suite from `dir` and checks that every reference covers every prompt, in order,
    /// with the same prompt tokens.
    pub fn load(dir: &Path) -> Result<Suite, SuiteError> {
        let prompts = read_json::<PromptsFile>(&dir.join("prompts.json"))?.prompts;
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| SuiteError::Read {
                path: dir.into(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("llama-") && n.ends_with(".json.gz"))
            })
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(SuiteError::NoReferences(dir.into()));
        }
        let references = paths
            .iter()
            .map(|p| read_json::<Reference>(p))
            .collect::<Result<Vec<_>, _>>()?;
        let suite = Suite {
            prompts,
            references,
        };
        suite.check()?;
        Ok(suite)
    }

    /// The suite in this crate's `tests/parity`.
    pub fn load_default() -> Result<Suite, SuiteError> {
        Self::load(&suite_dir())
    }

    fn check(&self) -> Result<(), SuiteError> {
        let bad = |m: String| Err(SuiteError::Inconsistent(m));
        let first = &self.references[0];
        for r in &self.references {
            if r.prompts.len() != self.prompts.len() {
                return bad(format!(
                    "llama-{}.json has {} prompts, prompts.json {}: regenerate the references",
                    r.build,
                    r.prompts.len(),
                    self.prompts.len()
                ));
            }
            for ((run, p), f) in r.prompts.iter().zip(&self.prompts).zip(&first.prompts) {
                if run.id != p.id || run.prompt_ids != f.prompt_ids {
                    return bad(format!(
                        "llama-{}.json's prompt {} differs from prompts.json or llama-{}.json",
                        r.build, run.id, first.build
                    ));
                }
                let n = run.tokens.len();
                if n == 0 || run.top_ids.len() != n || run.top_lps.len() != n {
                    return bad(format!(
                        "llama-{}.json: prompt {} is malformed",
                        r.build, run.id
                    ));
                }
            }
            for (other, forced) in r.cross.iter().chain([(&r.build, &r.prefill)]) {
                if forced.is_empty() {
                    continue;
                }
                let Some(o) = self.reference(other) else {
                    return bad(format!(
                        "llama-{}.json is forced on a missing build {other}",
                        r.build
                    ));
                };
                let lens = forced.iter().map(Vec::len);
                if !lens.eq(o.prompts.iter().map(|p| p.tokens.len())) {
                    return bad(format!(
                        "llama-{}.json's run on {other}'s tokens has the wrong lengths",
                        r.build
                    ));
                }
            }
        }
        Ok(())
    }

    /// The reference of build `name`.
    pub fn reference(&self, name: &str) -> Option<&Reference> {
        self.references.iter().find(|r| r.build == name)
    }
}
