//! Tiled attention against naive attention and against exact (f64) attention, on many shapes;
//! tiled's bits against themselves across layouts, batches, splits and SIMD paths.

use super::tile_kernels::{self, TileInputs};
use super::tiled::{self, BK, BQ, SEGMENT};
use super::*;
use crate::hw::SimdLevel;
use crate::kv::{BlockPool, PagedKv};
use crate::model::{KvCache, KvPrecision, LlamaConfig};
use crate::quant::f16_to_f32;
use crate::testutil::wave;

/// Tolerances, relative to the largest |value| of the case (attention outputs are convex
/// combinations of the value rows, so that is their scale).
///
/// Tiled against exact f64 attention over the same cached keys and values:
const TILED_VS_EXACT: f32 = 3e-5;
/// Naive against tiled with an f16 cache: naive rounds the query and the softmax weights to
/// f16 (relative error 2⁻¹¹ each), as llama.cpp does.
const NAIVE_VS_TILED_F16: f32 = 2e-3;
/// Naive against tiled with a Q8_0 cache: naive also quantizes the query to Q8_0.
const NAIVE_VS_TILED_Q8_0: f32 = 2e-2;

fn config(heads: Heads, context: usize) -> LlamaConfig {
    LlamaConfig {
        n_layers: 1,
        dim: heads.q_dim(),
        ffn_dim: 4,
        n_heads: heads.n_heads,
        n_kv_heads: heads.n_kv_heads,
        head_dim: heads.head_dim,
        rope_dims: heads.head_dim,
        rope_theta: 10_000.0,
        rms_eps: 1e-5,
        context_length: context,
        vocab_size: 4,
    }
}

/// One test case: `start` cached positions, `new` new tokens, queries scaled by `q_scale`
/// (larger: peakier softmax), keys growing with position by `drift` (the running maximum keeps
/// rising from tile to tile, so the rescaling is exercised).
#[derive(Debug, Clone, Copy)]
struct Case {
    heads: Heads,
    start: usize,
    new: usize,
    q_scale: f32,
    drift: f32,
}

impl Case {
    fn total(&self) -> usize {
        self.start + self.new
    }

    fn keys_values(&self, seed: u32) -> (Vec<f32>, Vec<f32>) {
        let kvd = self.heads.kv_dim();
        let mut k = wave(self.total() * kvd, seed);
        for (i, x) in k.iter_mut().enumerate() {
            *x *= 1.0 + self.drift * (i / kvd) as f32 / self.total() as f32;
        }
        (k, wave(self.total() * kvd, seed + 1))
    }

    fn queries(&self, seed: u32) -> Vec<f32> {
        wave(self.new * self.heads.q_dim(), seed + 2)
            .into_iter()
            .map(|x| x * self.q_scale)
            .collect()
    }

    /// A contiguous cache of `total` positions at layer 0, the last `new` appended but not
    /// committed (as in the middle of a forward step).
    fn contiguous(&self, precision: KvPrecision, seed: u32) -> KvCache {
        let (k, v) = self.keys_values(seed);
        let mut cache =
            KvCache::with_precision(&config(self.heads, self.total()), self.total(), precision)
                .unwrap();
        cache.append(0, &k, &v);
        cache.commit(self.start);
        cache
    }

    fn paged(&self, seed: u32, block_tokens: usize) -> PagedKv {
        let (k, v) = self.keys_values(seed);
        let cfg = config(self.heads, self.total());
        let blocks = self.total().div_ceil(block_tokens);
        let mut kv = PagedKv::new(BlockPool::new(&cfg, block_tokens, blocks));
        kv.add_sequence(1, &[]).unwrap();
        kv.reserve(1, self.total()).unwrap();
        let mut step = kv.step(&[1]).unwrap();
        step.append(0, 0, &k, &v);
        step.commit(0, self.start);
        kv
    }
}

fn run(
    kind: AttentionKind,
    pool: &ThreadPool,
    heads: Heads,
    q: &[f32],
    kv: &dyn KvBatch,
    new: &[usize],
) -> Vec<f32> {
    let firsts: Vec<usize> = new
        .iter()
        .scan(0, |at, &n| Some(std::mem::replace(at, *at + n)))
        .collect();
    let mut out = vec![f32::NAN; q.len()];
    let step = Step {
        heads,
        q,
        kv,
        layer: 0,
        new,
        firsts: &firsts,
    };
    attend(kind, pool, &step, &mut out);
    out
}

/// Exact attention in f64 over what the cache holds (its f16 or Q8_0 values, read back).
fn exact(case: &Case, q: &[f32], kv: &dyn KvBatch) -> Vec<f32> {
    let Heads {
        n_heads,
        head_dim: hd,
        ..
    } = case.heads;
    let (kvd, group) = (case.heads.kv_dim(), case.heads.group());
    let chunks = kv.chunks(0, 0, case.total());
    let mut keys = vec![0.0f32; case.total() * kvd];
    let mut values = vec![0.0f32; case.total() * kvd];
    let mut at = 0;
    for c in &chunks {
        for p in 0..c.len {
            read_row(
                c.keys.slice(p, kvd, 0..kvd),
                &mut keys[(at + p) * kvd..][..kvd],
            );
            read_row(
                c.values.slice(p, kvd, 0..kvd),
                &mut values[(at + p) * kvd..][..kvd],
            );
        }
        at += c.len;
    }
    let mut out = vec![0.0f32; q.len()];
    for t in 0..case.new {
        for h in 0..n_heads {
            let g = h / group;
            let qh = &q[t * n_heads * hd + h * hd..][..hd];
            let visible = case.start + t + 1;
            let scores: Vec<f64> = (0..visible)
                .map(|p| {
                    let k = &keys[p * kvd + g * hd..][..hd];
                    qh.iter()
                        .zip(k)
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let l: f64 = w.iter().sum();
            for d in 0..hd {
                let o: f64 = (0..visible)
                    .map(|p| w[p] * f64::from(values[p * kvd + g * hd + d]))
                    .sum();
                out[t * n_heads * hd + h * hd + d] = (o / l) as f32;
            }
        }
    }
    out
}

fn read_row(row: KvRows<'_>, out: &mut [f32]) {
    match row {
        KvRows::F16(h) => out.iter_mut().zip(h).for_each(|(o, &h)| *o = f16_to_f32(h)),
        KvRows::Q8_0(b) => {
            for (b, out) in b.iter().zip(out.chunks_exact_mut(32)) {
                for (o, &q) in out.iter_mut().zip(&b.qs) {
                    *o = f16_to_f32(b.d) * f32::from(q);
                }
            }
        }
    }
}

/// max |a − b| / max |b|… scaled by `scale`.
fn worst(a: &[f32], b: &[f32], scale: f32) -> f32 {
    assert_eq!(a.len(), b.len());
    assert!(
        a.iter().chain(b).all(|x| x.is_finite()),
        "a non-finite output"
    );
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
        / scale
}

fn cases() -> Vec<Case> {
    let h = |n_heads, n_kv_heads, head_dim| Heads {
        n_heads,
        n_kv_heads,
        head_dim,
    };
    let smollm = h(9, 3, 64);
    let c = |heads, start, new, q_scale, drift| Case {
        heads,
        start,
        new,
        q_scale,
        drift,
    };
    vec![
        c(smollm, 0, 1, 1.0, 0.0),                // one key
        c(h(1, 1, 32), 0, 1, 1.0, 0.0),           // one key, one head
        c(smollm, 0, 7, 4.0, 0.0),                // a short prompt
        c(smollm, 37, 5, 4.0, 3.0),               // ragged: a chunk after a prefix
        c(h(4, 4, 64), 0, 100, 4.0, 3.0),         // multi-head, ragged last blocks
        c(h(8, 1, 64), 50, 20, 8.0, 0.0),         // multi-query
        c(h(4, 2, 128), 130, 3, 2.0, 5.0),        // wide heads, decode-sized
        c(smollm, BK - 1, BQ + 1, 4.0, 0.0),      // one past a block, one short of a tile
        c(smollm, SEGMENT - 3, 40, 4.0, 3.0),     // prefill across a segment boundary
        c(smollm, 3 * SEGMENT + 11, 1, 6.0, 3.0), // decode split over four segments
        c(smollm, 8191, 1, 4.0, 3.0),             // decode at the model's full 8,192 keys
    ]
}

#[test]
fn tiled_matches_exact_and_naive_on_every_shape_and_cache() {
    let pool = ThreadPool::new(2);
    for (i, case) in cases().into_iter().enumerate() {
        let seed = 11 * i as u32;
        let q = case.queries(seed);
        for precision in KvPrecision::ALL {
            if precision == KvPrecision::Q8_0 && case.heads.head_dim % 32 != 0 {
                continue;
            }
            let cache = case.contiguous(precision, seed);
            let new = [case.new];
            let vmax = case
                .keys_values(seed)
                .1
                .iter()
                .fold(0.0f32, |m, v| m.max(v.abs()));
            let tiled = run(AttentionKind::Tiled, &pool, case.heads, &q, &cache, &new);
            let naive = run(AttentionKind::Naive, &pool, case.heads, &q, &cache, &new);
            let exact = exact(&case, &q, &cache);
            let (te, nt) = (worst(&tiled, &exact, vmax), worst(&naive, &tiled, vmax));
            eprintln!("{case:?} {precision}: tiled vs exact {te:.1e}, naive vs tiled {nt:.1e}");
            assert!(
                te <= TILED_VS_EXACT,
                "{case:?} {precision}: tiled vs exact {te}"
            );
            let bound = match precision {
                KvPrecision::F16 => NAIVE_VS_TILED_F16,
                KvPrecision::Q8_0 => NAIVE_VS_TILED_Q8_0,
            };
            assert!(nt <= bound, "{case:?} {precision}: naive vs tiled {nt}");
        }
    }
}

#[test]
fn tiled_gives_the_same_bits_paged_or_contiguous_alone_or_batched() {
    let pool = ThreadPool::new(2);
    let case = cases()[8]; // across a segment boundary
    let q = case.queries(5);
    let contiguous = run(
        AttentionKind::Tiled,
        &pool,
        case.heads,
        &q,
        &case.contiguous(KvPrecision::F16, 5),
        &[case.new],
    );
    for block_tokens in [16, 5] {
        let mut paged = case.paged(5, block_tokens);
        let step = paged.step(&[1]).unwrap();
        let out = run(
            AttentionKind::Tiled,
            &pool,
            case.heads,
            &q,
            &step,
            &[case.new],
        );
        assert_eq!(out, contiguous, "paged with blocks of {block_tokens}");
    }
    // Two sequences in one step give each its own bits.
    let other = cases()[3];
    let mut kv = PagedKv::new(BlockPool::new(&config(case.heads, 4096), 16, 256));
    let mut q_both = q.clone();
    q_both.extend(other.queries(9));
    for (id, c, seed) in [(1, case, 5), (2, other, 9)] {
        let (k, v) = c.keys_values(seed);
        kv.add_sequence(id, &[]).unwrap();
        kv.reserve(id, c.total()).unwrap();
        let ids = [id];
        let mut step = kv.step(&ids).unwrap();
        step.append(0, 0, &k, &v);
        step.commit(0, c.start);
    }
    let step = kv.step(&[1, 2]).unwrap();
    let both = run(
        AttentionKind::Tiled,
        &pool,
        case.heads,
        &q_both,
        &step,
        &[case.new, other.new],
    );
    assert_eq!(both[..contiguous.len()], contiguous[..]);
    let alone = run(
        AttentionKind::Tiled,
        &pool,
        other.heads,
        &other.queries(9),
        &other.contiguous(KvPrecision::F16, 9),
        &[other.new],
    );
    assert_eq!(both[contiguous.len()..], alone[..]);
}

#[test]
fn decode_split_over_segments_equals_one_query_in_a_prefill_block() {
    // Drift-free keys, so that a shorter prefix of the case has the same data.
    let pool = ThreadPool::new(3);
    let case = Case {
        drift: 0.0,
        ..cases()[9]
    };
    let prefill = Case {
        start: case.start - BQ,
        new: BQ + 1,
        ..case
    };
    let q = prefill.queries(3);
    let block = run(
        AttentionKind::Tiled,
        &pool,
        case.heads,
        &q,
        &prefill.contiguous(KvPrecision::F16, 3),
        &[prefill.new],
    );
    let qd = case.heads.q_dim();
    let last = &q[BQ * qd..];
    let decoded = run(
        AttentionKind::Tiled,
        &pool,
        case.heads,
        last,
        &case.contiguous(KvPrecision::F16, 3),
        &[1],
    );
    assert_eq!(decoded[..], block[BQ * qd..]);
}

#[test]
fn tile_kernels_on_every_simd_path_give_the_scalar_bits() {
    let case = cases()[8];
    let q = case.queries(1);
    for precision in KvPrecision::ALL {
        let cache = case.contiguous(precision, 1);
        let step = Step {
            heads: case.heads,
            q: &q,
            kv: &cache,
            layer: 0,
            new: &[case.new],
            firsts: &[0],
        };
        let inp = TileInputs::new(&step, 0, 1, 0..case.new);
        let keys = 0..case.total();
        let scalar = tile_kernels::segment(SimdLevel::Scalar, &inp, keys.clone());
        for level in [SimdLevel::Avx2, SimdLevel::Avx512, SimdLevel::Neon] {
            if !level.is_supported() {
                eprintln!(
                    "tile loop, {precision} cache: SKIPPED the {} path (not this CPU)",
                    level.name()
                );
                continue;
            }
            eprintln!(
                "tile loop, {precision} cache: testing the {} path",
                level.name()
            );
            assert_eq!(
                tile_kernels::segment(level, &inp, keys.clone()),
                scalar,
                "{}",
                level.name()
            );
        }
    }
}

#[test]
fn merging_two_halves_is_the_softmax_of_the_whole() {
    let case = cases()[8];
    let q = case.queries(2);
    let cache = case.contiguous(KvPrecision::F16, 2);
    let step = Step {
        heads: case.heads,
        q: &q,
        kv: &cache,
        layer: 0,
        new: &[case.new],
        firsts: &[0],
    };
    let inp = TileInputs::new(&step, 0, 0, 0..case.new);
    let path = tile_kernels::path(crate::kernels::simd());
    let whole = tile_kernels::segment(path, &inp, 0..case.total());
    let mut a = tile_kernels::segment(path, &inp, 0..SEGMENT);
    let b = tile_kernels::segment(path, &inp, SEGMENT..case.total());
    tiled::merge(&mut a, &b, case.heads.head_dim);
    for r in 0..whole.m.len() {
        assert_eq!(a.m[r], whole.m[r]);
        let (x, y) = (a.l[r], whole.l[r]);
        assert!((x - y).abs() <= 1e-5 * y, "row {r}: {x} vs {y}");
    }
}
