//! The teacher's predictions, computed once and cached: for every training position, its
//! top-k tokens and their logits. At k = 32 that is 256 bytes a position instead of the full
//! vocabulary's 196 KB; the tail past the top k is not kept (the loss renormalizes over it).

use super::loss::Target;
use crate::formats::Gguf;
use crate::kernels::pool::ThreadPool;
use crate::model::{KvCache, Llama, Logits, ModelError};
use crate::tokenizer::TokenId;
use std::io::{Read, Write};
use std::path::Path;

/// Training sequences with the teacher's top-k logits at every position.
#[derive(Debug, Clone, PartialEq)]
pub struct TeacherCache {
    /// Positions per sequence (each sequence holds `seq_len + 1` tokens: inputs and the
    /// last target).
    pub seq_len: usize,
    pub k: usize,
    /// `n_seq × (seq_len + 1)` tokens.
    pub tokens: Vec<TokenId>,
    /// `n_seq × seq_len × k` token ids, most likely first.
    pub ids: Vec<u32>,
    /// Their logits, same layout.
    pub logits: Vec<f32>,
    /// Fingerprint of the teacher and the inputs (see [`fingerprint`]).
    pub key: u64,
}

/// Why a cache file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("reading or writing the teacher cache: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0} is not a teacher cache of this version")]
    NotACache(String),
}

const MAGIC: &[u8; 8] = b"PRODMLKD";
const VERSION: u32 = 1;

/// FNV-1a over the teacher's tensors and the token ids, `seq_len` and `k`: a cache built
/// for other inputs is never reused.
pub fn fingerprint(teacher: &Gguf, tokens: &[TokenId], seq_len: usize, k: usize) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for info in &teacher.tensors {
        eat(info.name.as_bytes());
        if let Ok(view) = teacher.tensor(&info.name) {
            eat(view.data);
        }
    }
    for &t in tokens {
        eat(&t.to_le_bytes());
    }
    eat(&(seq_len as u64).to_le_bytes());
    eat(&(k as u64).to_le_bytes());
    h
}

impl TeacherCache {
    pub fn n_seq(&self) -> usize {
        self.tokens.len() / (self.seq_len + 1)
    }

    // ANCHOR: build
    /// Runs the teacher over `tokens`, cut into sequences of `seq_len + 1` (the last token of
    /// one is the first of the next; a shorter tail is dropped), each on a fresh cache, and
    /// keeps the top `k` logits of every position. `progress(done, total)` after each.
    pub fn build(
        teacher: &Llama,
        pool: &ThreadPool,
        tokens: &[TokenId],
        seq_len: usize,
        k: usize,
        key: u64,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<TeacherCache, ModelError> {
        let vocab = teacher.config.vocab_size;
        let k = k.clamp(1, vocab.max(1));
        let n_seq = tokens.len().saturating_sub(1) / seq_len.max(1);
        let mut cache = KvCache::with_limit(&teacher.config, seq_len);
        let mut out = TeacherCache {
            seq_len,
            k,
            tokens: Vec::with_capacity(n_seq * (seq_len + 1)),
            ids: Vec::with_capacity(n_seq * seq_len * k),
            logits: Vec::with_capacity(n_seq * seq_len * k),
            key,
        };
        let mut order: Vec<u32> = (0..vocab as u32).collect();
        for s in 0..n_seq {
            let seq = &tokens[s * seq_len..s * seq_len + seq_len + 1];
            cache.clear();
            let logits = teacher.forward(pool, &mut cache, &seq[..seq_len], Logits::All)?;
            for row in logits.chunks_exact(vocab) {
                let by_logit = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]);
                order.select_nth_unstable_by(k - 1, by_logit);
                let top = &mut order[..k];
                top.sort_unstable_by(by_logit);
                out.ids.extend_from_slice(top);
                out.logits.extend(top.iter().map(|&i| row[i as usize]));
            }
            out.tokens.extend_from_slice(seq);
            progress(s + 1, n_seq);
        }
        Ok(out)
    }
    // ANCHOR_END: build

    /// Sequence `s`: its inputs and the targets of its positions.
    pub fn sequence(&self, s: usize) -> (&[TokenId], Vec<Target<'_>>) {
        let (t, k) = (self.seq_len, self.k);
        let seq = &self.tokens[s * (t + 1)..(s + 1) * (t + 1)];
        let targets = (0..t)
            .map(|p| {
                let at = (s * t + p) * k;
                Target {
                    next: seq[p + 1],
                    top_ids: &self.ids[at..at + k],
                    top_logits: &self.logits[at..at + k],
                }
            })
            .collect();
        (&seq[..t], targets)
    }

    /// Writes the cache (little-endian: magic, version, seq_len, k, n_seq, key, tokens, ids,
    /// logits).
    pub fn save(&self, path: &Path) -> Result<(), CacheError> {
        let part = path.with_extension("part");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&part)?);
        f.write_all(MAGIC)?;
        for v in [
            VERSION,
            self.seq_len as u32,
            self.k as u32,
            self.n_seq() as u32,
        ] {
            f.write_all(&v.to_le_bytes())?;
        }
        f.write_all(&self.key.to_le_bytes())?;
        for &v in self.tokens.iter().chain(&self.ids) {
            f.write_all(&v.to_le_bytes())?;
        }
        for &v in &self.logits {
            f.write_all(&v.to_le_bytes())?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&part, path)?;
        Ok(())
    }

    /// Reads a cache written by [`TeacherCache::save`]; `None` when its key is not `key`.
    pub fn load(path: &Path, key: u64) -> Result<Option<TeacherCache>, CacheError> {
        let bad = || CacheError::NotACache(path.display().to_string());
        let mut bytes = Vec::new();
        std::fs::File::open(path)?.read_to_end(&mut bytes)?;
        if bytes.len() < 32 || &bytes[..8] != MAGIC {
            return Err(bad());
        }
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap_or_default());
        let (version, seq_len, k, n_seq) = (
            u32_at(8),
            u32_at(12) as usize,
            u32_at(16) as usize,
            u32_at(20) as usize,
        );
        let file_key = u64::from_le_bytes(bytes[24..32].try_into().unwrap_or_default());
        if version != VERSION {
            return Err(bad());
        }
        if file_key != key {
            return Ok(None);
        }
        // Sizes from the header are checked before any is trusted: a damaged header must give
        // an error, not an overflow.
        let sizes = n_seq
            .checked_mul(seq_len + 1)
            .zip(n_seq.checked_mul(seq_len).and_then(|n| n.checked_mul(k)));
        let Some((n_tok, n_top)) = sizes else {
            return Err(bad());
        };
        let expected = n_top
            .checked_mul(2)
            .and_then(|t| t.checked_add(n_tok))
            .and_then(|w| w.checked_mul(4))
            .and_then(|b| b.checked_add(32));
        if expected != Some(bytes.len()) {
            return Err(bad());
        }
        let words = |from: usize, n: usize| {
            bytes[from..from + 4 * n]
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<u32>>()
        };
        let tokens = words(32, n_tok);
        let ids = words(32 + 4 * n_tok, n_top);
        let logits = words(32 + 4 * (n_tok + n_top), n_top)
            .into_iter()
            .map(f32::from_bits)
            .collect();
        Ok(Some(TeacherCache {
            seq_len,
            k,
            tokens,
            ids,
            logits,
            key,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::ScratchFile;

    #[test]
    fn a_cache_reads_back_and_a_damaged_or_foreign_one_is_refused() {
        let cache = TeacherCache {
            seq_len: 3,
            k: 2,
            tokens: vec![5, 6, 7, 8, 9, 10, 11, 12],
            ids: (0..12).collect(),
            logits: (0..12).map(|i| i as f32 * 0.5 - 1.0).collect(),
            key: 77,
        };
        let file = ScratchFile::new("teacher-cache.bin");
        cache.save(&file.0).unwrap();
        assert_eq!(
            TeacherCache::load(&file.0, 77).unwrap(),
            Some(cache.clone())
        );
        assert_eq!(
            TeacherCache::load(&file.0, 78).unwrap(),
            None,
            "another key"
        );
        let (inputs, targets) = cache.sequence(1);
        assert_eq!(inputs, [9, 10, 11]);
        assert_eq!((targets[2].next, targets[2].top_ids), (12, &[10, 11][..]));
        // A header claiming sizes whose product overflows, and a truncated file.
        let mut bytes = std::fs::read(&file.0).unwrap();
        bytes[12..24].copy_from_slice(&[0xff; 12]);
        std::fs::write(&file.0, &bytes).unwrap();
        assert!(matches!(
            TeacherCache::load(&file.0, 77),
            Err(CacheError::NotACache(_))
        ));
        cache.save(&file.0).unwrap();
        let bytes = std::fs::read(&file.0).unwrap();
        std::fs::write(&file.0, &bytes[..bytes.len() - 4]).unwrap();
        assert!(matches!(
            TeacherCache::load(&file.0, 77),
            Err(CacheError::NotACache(_))
        ));
    }
}
