//! Batch invariance, our own exactness guarantee: a sequence's logits are the same bits
//! whether it runs alone or in a batch with other sequences of other lengths, whether its
//! prompt goes in one pass, in pieces or token by token, whether its prefix comes from the
//! prefix cache, and whatever the thread count. llama.cpp does not promise this (its prompt
//! processing sums in another order than its decode); speculative decoding needs it (a k-token
//! verification pass must give what k decode steps give).
//!
//! It holds by construction: every reduction of the forward pass runs within one row (one
//! token's dot product with one weight row, one query's attention over its own positions), in
//! one canonical order, and the rows are what the batch and the threads split.

use crate::kernels::pool::ThreadPool;
use crate::kv::{BlockPool, PagedKv};
use crate::model::{KvCache, Llama, Logits, ModelError, SeqStep};
use crate::tokenizer::TokenId;

/// One sequence of the check: its prompt, then tokens decoded one at a time.
#[derive(Debug, Clone)]
pub struct Seq {
    pub prompt: Vec<TokenId>,
    pub decode: Vec<TokenId>,
}

/// A sequence's logits: entry 0 at the last prompt position, entry k after `decode[k - 1]`.
pub type Steps = Vec<Vec<f32>>;

/// Alone in a contiguous cache: the prompt in pieces of `chunk` tokens (`usize::MAX`: one
/// pass), then one token at a time.
pub fn alone(model: &Llama, pool: &ThreadPool, s: &Seq, chunk: usize) -> Result<Steps, ModelError> {
    let mut cache = KvCache::new(&model.config);
    let mut last = Vec::new();
    for piece in s.prompt.chunks(chunk.max(1)) {
        last = model.forward(pool, &mut cache, piece, Logits::Last)?;
    }
    let mut out = vec![last];
    for &t in &s.decode {
        out.push(model.forward(pool, &mut cache, &[t], Logits::Last)?);
    }
    Ok(out)
}

/// The prompt and the decoded tokens in one pass, every position's logits (what speculative
/// decoding's verification pass computes).
pub fn one_pass(model: &Llama, pool: &ThreadPool, s: &Seq) -> Result<Steps, ModelError> {
    let mut cache = KvCache::new(&model.config);
    let tokens: Vec<TokenId> = s.prompt.iter().chain(&s.decode).copied().collect();
    let n = s.decode.len() + 1;
    let all = model.forward(pool, &mut cache, &tokens, Logits::From(tokens.len() - n))?;
    Ok(all
        .chunks_exact(model.config.vocab_size)
        .map(<[f32]>::to_vec)
        .collect())
}

/// Why a run of the check could not be made (a model or KV-cache error).
pub type CheckError = Box<dyn std::error::Error + Send + Sync>;

/// What [`batched`] computed.
pub struct Batched {
    /// Each sequence's steps, all sequences in one paged cache.
    pub batched: Vec<Steps>,
    /// Each sequence again, its prompt's full blocks from the prefix cache.
    pub cached: Vec<Steps>,
    /// Prompt tokens served from the prefix cache.
    pub prefix_hits: usize,
}

/// Positions per block of the paged cache in [`batched`].
pub const BLOCK_TOKENS: usize = 16;

/// Every sequence in one paged cache, batched as a continuous-batching engine runs them:
/// sequence `s` joins at step `s % 3`, its prompt in two pieces for odd `s` (chunked prefill),
/// then one token per step; all sequences' pieces of a step go through one forward pass. Full
/// blocks go to the prefix cache, and at the end a copy of each sequence runs again through it
/// (its prompt's full blocks shared, the rest computed).
pub fn batched(model: &Llama, pool: &ThreadPool, seqs: &[Seq]) -> Result<Batched, CheckError> {
    let blocks = seqs
        .iter()
        .map(|q| (q.prompt.len() + q.decode.len()).div_ceil(BLOCK_TOKENS) * 2)
        .sum::<usize>();
    let mut kv = PagedKv::new(BlockPool::new(&model.config, BLOCK_TOKENS, blocks + 8));
    // Each sequence's pieces; `true` marks a piece whose logits are kept (the prompt's last
    // piece, and every decoded token).
    let pieces: Vec<Vec<(Vec<TokenId>, bool)>> = seqs
        .iter()
        .enumerate()
        .map(|(s, q)| {
            let mut p = Vec::new();
            if s % 2 == 1 && q.prompt.len() > 1 {
                let half = q.prompt.len() / 2;
                p.push((q.prompt[..half].to_vec(), false));
                p.push((q.prompt[half..].to_vec(), true));
            } else {
                p.push((q.prompt.clone(), true));
            }
            p.extend(q.decode.iter().map(|&t| (vec![t], true)));
            p
        })
        .collect();
    let mut out = vec![Vec::new(); seqs.len()];
    for (s, q) in seqs.iter().enumerate() {
        kv.add_sequence(s as u64, &q.prompt)?;
    }
    for step in 0.. {
        let active: Vec<usize> = (0..seqs.len())
            .filter(|&s| step >= s % 3 && step - s % 3 < pieces[s].len())
            .collect();
        if active.is_empty() {
            break;
        }
        let ids: Vec<u64> = active.iter().map(|&s| s as u64).collect();
        let feeds: Vec<&(Vec<TokenId>, bool)> =
            active.iter().map(|&s| &pieces[s][step - s % 3]).collect();
        for (&id, f) in ids.iter().zip(&feeds) {
            kv.reserve(id, f.0.len())?;
        }
        let steps: Vec<SeqStep> = feeds
            .iter()
            .map(|f| SeqStep {
                tokens: &f.0,
                logits: Logits::Last,
            })
            .collect();
        let logits = model.forward_batch(pool, &mut kv.step(&ids)?, &steps)?;
        for ((&s, f), l) in active.iter().zip(&feeds).zip(logits) {
            kv.record_tokens(s as u64, &f.0);
            if f.1 {
                out[s].push(l);
            }
        }
    }
    let mut cached = Vec::new();
    let mut hits = 0;
    for (s, q) in seqs.iter().enumerate() {
        let id = 1000 + s as u64;
        let reused = kv.add_sequence(id, &q.prompt)?;
        hits += reused;
        let mut got = Vec::new();
        let mut feed = q.prompt[reused..].to_vec();
        for k in 0..=q.decode.len() {
            kv.reserve(id, feed.len())?;
            let step = [SeqStep {
                tokens: &feed,
                logits: Logits::Last,
            }];
            let mut l = model.forward_batch(pool, &mut kv.step(&[id])?, &step)?;
            got.push(l.pop().unwrap_or_default());
            if let Some(&t) = q.decode.get(k) {
                feed = vec![t];
            }
        }
        cached.push(got);
        kv.free_sequence(id);
    }
    Ok(Batched {
        batched: out,
        cached,
        prefix_hits: hits,
    })
}

/// Whether two runs of the same sequences gave the same bits: `None`, or the first place they
/// differ as (sequence, step).
pub fn first_difference(a: &[Steps], b: &[Steps]) -> Option<(usize, usize)> {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (s, (x, y)) in a.iter().zip(b).enumerate() {
        if x.len() != y.len() {
            return Some((s, x.len().min(y.len())));
        }
        for (k, (p, q)) in x.iter().zip(y).enumerate() {
            if bits(p) != bits(q) {
                return Some((s, k));
            }
        }
    }
    (a.len() != b.len()).then_some((a.len().min(b.len()), 0))
}

/// One way of running the sequences, and whether it gave the reference's bits.
#[derive(Debug, Clone)]
pub struct Variant {
    pub name: String,
    /// `None` when identical; else the first (sequence, step) that differs.
    pub difference: Option<(usize, usize)>,
}

/// Runs `seqs` every way at each thread count and compares each with the sequences alone, one
/// pass for the prompt, at one thread. Token-by-token prefill runs at one thread only (it is
/// the slow one).
pub fn check(model: &Llama, seqs: &[Seq], threads: &[usize]) -> Result<Vec<Variant>, CheckError> {
    let one = ThreadPool::new(1);
    let reference = seqs
        .iter()
        .map(|s| alone(model, &one, s, usize::MAX))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::new();
    let mut add = |name: String, got: &[Steps]| {
        out.push(Variant {
            name,
            difference: first_difference(&reference, got),
        })
    };
    for &n in threads {
        let pool = ThreadPool::new(n);
        let all = |chunk| {
            seqs.iter()
                .map(|s| alone(model, &pool, s, chunk))
                .collect::<Result<Vec<_>, _>>()
        };
        add(
            format!("alone, prompt in one pass, {n} threads"),
            &all(usize::MAX)?,
        );
        add(
            format!("alone, prompt in pieces of 7, {n} threads"),
            &all(7)?,
        );
        if n == 1 {
            add("alone, prompt token by token, 1 thread".into(), &all(1)?);
        }
        let passes = seqs
            .iter()
            .map(|s| one_pass(model, &pool, s))
            .collect::<Result<Vec<_>, _>>()?;
        add(
            format!("prompt and decoded tokens in one pass, {n} threads"),
            &passes,
        );
        let b = batched(model, &pool, seqs)?;
        add(
            format!(
                "batch of {} in a paged cache, staggered and chunked, {n} threads",
                seqs.len()
            ),
            &b.batched,
        );
        add(
            format!(
                "through the prefix cache ({} prompt tokens shared), {n} threads",
                b.prefix_hits
            ),
            &b.cached,
        );
    }
    Ok(out)
}

/// The check's sequences from a suite: `n` prompts of spread lengths (at most `max_prompt`
/// tokens), each with the first `decode` tokens of the first build's greedy run.
pub fn sequences_from(
    suite: &super::suite::Suite,
    n: usize,
    max_prompt: usize,
    decode: usize,
) -> Vec<Seq> {
    let mut runs: Vec<_> = suite.references[0]
        .prompts
        .iter()
        .filter(|r| r.prompt_ids.len() <= max_prompt)
        .collect();
    runs.sort_by_key(|r| r.prompt_ids.len());
    if runs.is_empty() || n == 0 {
        return Vec::new();
    }
    // Evenly spread over the sorted lengths, the shortest and the longest included.
    (0..n.min(runs.len()))
        .map(|i| runs[i * (runs.len() - 1) / (n.min(runs.len()) - 1).max(1)])
        .map(|r| Seq {
            prompt: r.prompt_ids.clone(),
            decode: r.tokens.iter().take(decode).copied().collect(),
        })
        .collect()
}
