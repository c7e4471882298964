//! The paged cache: block accounting, prefix sharing, copy-on-write, and attention through
//! block tables equal to the contiguous cache's.

use super::paged::KvError;
use super::*;
use crate::formats::Gguf;
use crate::kernels::pool::ThreadPool;
use crate::model::{KvCache, Llama, LlamaConfig, Logits, SeqStep};

/// A small configuration for accounting tests: 2 layers, 1 KV head of 4 dims.
fn tiny() -> LlamaConfig {
    LlamaConfig {
        n_layers: 2,
        dim: 8,
        ffn_dim: 16,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 4,
        rope_dims: 4,
        rope_theta: 10_000.0,
        rms_eps: 1e-5,
        context_length: 1024,
        vocab_size: 32,
    }
}

#[test]
fn blocks_are_counted_allocated_and_returned() {
    let mut pool = BlockPool::new(&tiny(), 4, 3);
    assert_eq!(BlockPool::bytes_per_block(&tiny(), 4), 2 * 2 * 4 * 4 * 2);
    let (a, b, c) = (
        pool.allocate().unwrap(),
        pool.allocate().unwrap(),
        pool.allocate().unwrap(),
    );
    assert_eq!(pool.allocate(), None);
    pool.retain(b);
    pool.release(b);
    assert_eq!(pool.free_blocks(), 0);
    for blk in [a, b, c] {
        pool.release(blk);
    }
    assert_eq!(pool.free_blocks(), 3);
    let budget =
        BlockPool::with_budget(&tiny(), 4, 10 * BlockPool::bytes_per_block(&tiny(), 4) + 1);
    assert_eq!(budget.total_blocks(), 10);
}

#[test]
fn sequences_reserve_block_by_block_and_free_everything() {
    let mut kv = PagedKv::new(BlockPool::new(&tiny(), 4, 8));
    assert_eq!(kv.add_sequence(1, &[1, 2, 3, 4, 5, 6]), Ok(0));
    assert_eq!(kv.blocks_needed(1, 6), 2);
    kv.reserve(1, 6).unwrap();
    assert_eq!(kv.pool().used_blocks(), 2);
    // Two more positions fit in the second block; a third needs a new one.
    assert_eq!(kv.blocks_needed(1, 2), 0);
    kv.step(&[1]).unwrap().commit(0, 6);
    assert_eq!(kv.blocks_needed(1, 3), 1);
    assert_eq!(kv.reserve(7, 1), Err(KvError::UnknownSequence(7)));
    kv.free_sequence(1);
    assert_eq!(kv.pool().used_blocks(), 0, "no leak");
}

#[test]
fn running_out_of_blocks_is_an_error_that_changes_nothing() {
    let mut kv = PagedKv::new(BlockPool::new(&tiny(), 4, 2));
    kv.add_sequence(1, &[]).unwrap();
    let err = kv.reserve(1, 9).unwrap_err();
    assert_eq!(err, KvError::OutOfBlocks { needed: 3, free: 2 });
    assert_eq!(kv.pool().used_blocks(), 0);
    kv.reserve(1, 8).unwrap();
    assert_eq!(kv.pool().free_blocks(), 0);
}

#[test]
fn prefix_blocks_are_shared_and_evicted_when_memory_is_needed() {
    let mut kv = PagedKv::new(BlockPool::new(&tiny(), 4, 4));
    let prompt: Vec<u32> = (10..20).collect(); // 2 full blocks + 2 tokens
    kv.add_sequence(1, &prompt).unwrap();
    kv.reserve(1, prompt.len()).unwrap();
    kv.step(&[1]).unwrap().commit(0, prompt.len());
    kv.record_tokens(1, &prompt);
    // The same prompt again: both full blocks are reused.
    assert_eq!(kv.add_sequence(2, &prompt), Ok(8));
    assert_eq!(
        kv.pool().used_blocks(),
        3,
        "two shared blocks + sequence 1's partial block"
    );
    kv.free_sequence(1);
    kv.free_sequence(2);
    assert_eq!(
        kv.pool().used_blocks(),
        2,
        "the prefix cache keeps the full blocks"
    );
    assert_eq!(kv.cached_blocks(), 2);
    // A prompt exactly as long as the cached blocks: the last block is computed, not shared.
    assert_eq!(kv.add_sequence(3, &prompt[..8]), Ok(4));
    kv.free_sequence(3);
    // A sequence that needs the whole pool evicts the cache instead of failing.
    kv.add_sequence(4, &[1]).unwrap();
    kv.reserve(4, 16).unwrap();
    assert_eq!(kv.cached_blocks(), 0);
    kv.free_sequence(4);
    kv.clear_prefix_cache();
    assert_eq!(kv.pool().used_blocks(), 0, "no leak");
}

#[test]
fn a_shared_partial_block_is_copied_before_it_is_written() {
    let config = tiny();
    let mut kv = PagedKv::new(BlockPool::new(&config, 4, 4));
    kv.add_sequence(1, &[]).unwrap();
    kv.reserve(1, 2).unwrap();
    {
        let mut step = kv.step(&[1]).unwrap();
        step.append(0, 0, &[1.0; 8], &[2.0; 8]);
        step.commit(0, 2);
    }
    kv.fork(1, 2).unwrap();
    assert_eq!(kv.pool().used_blocks(), 1, "the fork shares the block");
    kv.reserve(2, 1).unwrap();
    assert_eq!(kv.copies_on_write, 1);
    assert_eq!(kv.pool().used_blocks(), 2);
    {
        let mut step = kv.step(&[2]).unwrap();
        step.append(0, 0, &[3.0; 4], &[4.0; 4]);
        step.commit(0, 1);
    }
    let step = kv.step(&[1, 2]).unwrap();
    let parent = step.chunks(0, 0, 2);
    let child = step.chunks(1, 0, 3);
    assert_eq!(
        parent[0].keys.as_f16().unwrap(),
        &child[0].keys.as_f16().unwrap()[..8],
        "the copy starts equal"
    );
    assert_eq!(parent[0].len, 2);
    assert_eq!(child[0].len, 3);
    kv.free_sequence(1);
    kv.free_sequence(2);
    assert_eq!(kv.pool().used_blocks(), 0);
}

#[test]
fn truncating_releases_the_blocks_past_the_kept_positions_and_keeps_cached_blocks_intact() {
    let config = tiny();
    let mut kv = PagedKv::new(BlockPool::new(&config, 4, 6));
    let prompt: Vec<u32> = (10..16).collect(); // one full block + 2 tokens
    kv.add_sequence(1, &prompt).unwrap();
    kv.reserve(1, 6).unwrap();
    kv.step(&[1]).unwrap().commit(0, 6);
    kv.record_tokens(1, &prompt);
    assert_eq!(kv.cached_blocks(), 0, "the full block is cached and in use");
    // A verify pass of 5 more positions (3 blocks in all), of which 1 stands: 7 positions.
    kv.reserve(1, 5).unwrap();
    kv.step(&[1]).unwrap().commit(0, 5);
    assert_eq!(kv.pool().used_blocks(), 3);
    kv.truncate(1, 7).unwrap();
    kv.record_tokens(1, &[16]);
    assert_eq!(kv.len(1), Some(7));
    assert_eq!(kv.pool().used_blocks(), 2, "the third block went back");
    assert_eq!(kv.blocks_needed(1, 1), 0, "position 7 fits in block 2");
    // Back into the cached full block: its next write copies it first.
    kv.truncate(1, 2).unwrap();
    assert_eq!(kv.len(1), Some(2));
    kv.reserve(1, 1).unwrap();
    assert_eq!(
        kv.copies_on_write, 1,
        "the cached block is not written in place"
    );
    assert_eq!(kv.truncate(9, 0), Err(KvError::UnknownSequence(9)));
    kv.truncate(1, 100).unwrap();
    assert_eq!(kv.len(1), Some(2), "past the end: nothing changes");
    kv.free_sequence(1);
    kv.clear_prefix_cache();
    assert_eq!(kv.pool().used_blocks(), 0, "no leak");
}

#[test]
fn occupancy_counts_real_tokens_against_reserved_blocks() {
    let mut kv = PagedKv::new(BlockPool::new(&tiny(), 4, 4));
    kv.add_sequence(1, &[]).unwrap();
    kv.reserve(1, 5).unwrap();
    kv.step(&[1]).unwrap().commit(0, 5);
    let (used, reserved) = kv.occupancy_bytes();
    assert_eq!(reserved, 2 * BlockPool::bytes_per_block(&tiny(), 4));
    assert_eq!(used * 8, reserved * 5, "5 of 8 slots hold tokens");
}

fn with_model(f: impl FnOnce(&Llama)) {
    let Some(path) = crate::assets::model_for_tests() else {
        return;
    };
    let g = Gguf::open(path).unwrap();
    f(&Llama::load(&g).unwrap());
}

#[test]
fn paged_attention_gives_the_contiguous_caches_bits() {
    with_model(|m| {
        let pool = ThreadPool::new(2);
        let prompt = crate::reference::france().prompt_ids.clone();
        let mut cache = KvCache::new(&m.config);
        let mut kv = PagedKv::new(BlockPool::new(&m.config, 4, 16));
        kv.add_sequence(7, &prompt).unwrap();
        let mut next = prompt.clone();
        for _ in 0..6 {
            let a = m.forward(&pool, &mut cache, &next, Logits::Last).unwrap();
            kv.reserve(7, next.len()).unwrap();
            let step = [SeqStep {
                tokens: &next,
                logits: Logits::Last,
            }];
            let b = m
                .forward_batch(&pool, &mut kv.step(&[7]).unwrap(), &step)
                .unwrap()
                .pop()
                .unwrap();
            assert_eq!(a, b, "block size 4 crosses block boundaries at every step");
            next = vec![crate::sampling::argmax(&a)];
        }
    });
}

#[test]
fn a_batch_gives_each_sequence_what_it_would_get_alone() {
    with_model(|m| {
        let pool = ThreadPool::new(2);
        let prompts: [&[u32]; 3] = [
            &[504, 3575, 282, 4649, 314],
            &[19556, 28, 905],
            &[216, 2899, 5600, 284, 197, 100, 7366],
        ];
        let alone: Vec<Vec<f32>> = prompts
            .iter()
            .map(|p| {
                m.forward(&pool, &mut KvCache::new(&m.config), p, Logits::Last)
                    .unwrap()
            })
            .collect();
        let mut kv = PagedKv::new(BlockPool::new(&m.config, DEFAULT_BLOCK_TOKENS, 8));
        for (i, p) in prompts.iter().enumerate() {
            kv.add_sequence(i as u64, p).unwrap();
            kv.reserve(i as u64, p.len()).unwrap();
        }
        let steps: Vec<SeqStep> = prompts
            .iter()
            .map(|p| SeqStep {
                tokens: p,
                logits: Logits::Last,
            })
            .collect();
        let together = m
            .forward_batch(&pool, &mut kv.step(&[0, 1, 2]).unwrap(), &steps)
            .unwrap();
        assert_eq!(together, alone);
    });
}

#[test]
fn a_cached_prefix_gives_the_same_logits_as_recomputing_it() {
    with_model(|m| {
        let pool = ThreadPool::new(1);
        let tokenizer = crate::tokenizer::Tokenizer::from_gguf(
            &Gguf::open(crate::assets::model_path()).unwrap(),
        )
        .unwrap();
        let prompt = tokenizer.encode(&"The history of the city begins with a small fishing village on the banks of the river. ".repeat(3), true);
        assert!(prompt.len() > 2 * DEFAULT_BLOCK_TOKENS);
        let mut kv = PagedKv::new(BlockPool::new(&m.config, DEFAULT_BLOCK_TOKENS, 8));
        let run = |kv: &mut PagedKv, id: u64| {
            let cached = kv.add_sequence(id, &prompt).unwrap();
            let rest = &prompt[cached..];
            kv.reserve(id, rest.len()).unwrap();
            let logits = m
                .forward_batch(
                    &pool,
                    &mut kv.step(&[id]).unwrap(),
                    &[SeqStep {
                        tokens: rest,
                        logits: Logits::Last,
                    }],
                )
                .unwrap();
            kv.record_tokens(id, &prompt);
            (cached, logits)
        };
        let (cached_first, first) = run(&mut kv, 1);
        let (cached_second, second) = run(&mut kv, 2);
        assert_eq!(cached_first, 0);
        assert_eq!(
            cached_second,
            prompt.len() / DEFAULT_BLOCK_TOKENS * DEFAULT_BLOCK_TOKENS
        );
        assert_eq!(first, second);
    });
}
