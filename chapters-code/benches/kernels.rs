//! The matrix-vector product of the decode step, from the plain loop to the fast kernel (Q4_1,
//! and the K-quants), and next to trueno's f32 matvec — one thread, one run, side by side.
//!
//! `cargo xtask bench` turns criterion's estimates into the tables of the chapter
//! "From prompt to tokens".

use chapters_code::kernels::{self, simd_path};
use chapters_code::quant::kquants::{
    BlockQ8K, QK_K, quantize_acts_q8_k, quantize_q4_k, quantize_q5_k, quantize_q6_k,
};
use chapters_code::quant::nf4::{QK_NF4, quantize_nf4};
use chapters_code::quant::quantize::{quantize_acts_q8_1, quantize_q4_1};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;

/// A feed-forward matrix of the course model: 1536 rows of 576 weights.
const ROWS: usize = 1536;
const COLS: usize = 576;

fn wave(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 2_654_435_761 + seed * 97) >> 7) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

fn q4_1_matvec(c: &mut Criterion) {
    // The path the kernels really take (an AVX-512 CPU runs the AVX2 kernels), for the labels.
    let level = simd_path();
    let w = quantize_q4_1(&wave(ROWS * COLS, 1));
    let a = quantize_acts_q8_1(&wave(COLS, 2));
    let per = COLS / 32;
    let rows: Vec<&[_]> = w.chunks_exact(per).collect();
    let mut out = vec![0.0f32; ROWS];
    let mut group = c.benchmark_group("q4_1_matvec");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Bytes((w.len() * 20) as u64));
    group.bench_function("scalar reference, 8-bit activations", |b| {
        b.iter(|| {
            for (o, row) in out.iter_mut().zip(&rows) {
                *o = kernels::scalar::dot_q4_1_q8_1(row, &a);
            }
            black_box(&out);
        })
    });
    let x = wave(COLS, 2);
    let with_f32 = kernels::q4_1_f32_kernel(level);
    group.bench_function(
        format!("{level}, f32 activations (weights dequantized in registers)"),
        |b| {
            b.iter(|| {
                for (o, row) in out.iter_mut().zip(&rows) {
                    *o = with_f32(row, &x);
                }
                black_box(&out);
            })
        },
    );
    let one = kernels::q4_1_q8_1_kernel(level);
    group.bench_function(
        format!("{level}, 8-bit activations, one row at a time"),
        |b| {
            b.iter(|| {
                for (o, row) in out.iter_mut().zip(&rows) {
                    *o = one(row, &a);
                }
                black_box(&out);
            })
        },
    );
    // The four-row kernel before its scales were converted together (x86_64 with AVX2 only).
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
    {
        group.bench_function(
            format!("{level}, 8-bit activations, four rows at a time + prefetch"),
            |b| {
                b.iter(|| {
                    for (o, r) in out.chunks_exact_mut(4).zip(rows.chunks_exact(4)) {
                        // SAFETY: AVX2, FMA and F16C were detected above.
                        let four = unsafe {
                            kernels::avx2::dot_q4_1_q8_1_x4([r[0], r[1], r[2], r[3]], &a)
                        };
                        o.copy_from_slice(&four);
                    }
                    black_box(&out);
                })
            },
        );
    }
    let four = kernels::q4_1_q8_1_kernel4(level);
    group.bench_function(
        format!("{level}, 8-bit activations, four rows + prefetch + scales converted together"),
        |b| {
            b.iter(|| {
                for (o, r) in out.chunks_exact_mut(4).zip(rows.chunks_exact(4)) {
                    o.copy_from_slice(&four([r[0], r[1], r[2], r[3]], &a));
                }
                black_box(&out);
            })
        },
    );
    // The engine's path: the tile this CPU has, over panels of 32 rows (one call each).
    if let Some(tile) = kernels::q4_1_q8_1_tile(kernels::simd()) {
        let path = kernels::tile_path(kernels::simd()).name();
        group.bench_function(
            format!("{path} tile, 32-row panels (the engine's path)"),
            |b| {
                b.iter(|| {
                    for (o, panel) in out.chunks_exact_mut(32).zip(w.chunks_exact(32 * per)) {
                        (tile.panel)(panel, per, &a, o, true);
                    }
                    black_box(&out);
                })
            },
        );
    }
    group.finish();
}

// ANCHOR: q8_0_stream
/// Rows of the streamed matrix: four times the course model's output head (49152 × 576, Q8_0),
/// 120 MB, so that no cache holds it and every pass reads it from memory.
const STREAM_ROWS: usize = 4 * 49152;

/// A Q8_0 matrix × one token, streamed from memory, one thread: a tile call per four rows and
/// 32-row panels, each prefetching into L1 (the engine before) and into L2 (the engine now: the
/// panels). Same bits on every row (tested in `kernels::tile`).
#[cfg(target_arch = "x86_64")]
fn q8_0_stream(c: &mut Criterion) {
    use chapters_code::hw::SimdLevel;
    use chapters_code::quant::{BlockQ8_0, f32_to_f16};
    use kernels::avx2::{Prefetch, ToL1, ToL2};
    use kernels::{TilePath, tile, tile_path};
    let path = tile_path(kernels::simd());
    if path == TilePath::None || !SimdLevel::Avx2.is_supported() {
        eprintln!("q8_0_stream: SKIPPED (no tile path on this CPU)");
        return;
    }
    let per = COLS / 32;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut byte = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as i8
    };
    let w: Vec<BlockQ8_0> = (0..STREAM_ROWS * per)
        .map(|i| BlockQ8_0 {
            d: f32_to_f16(0.001 * (1 + i % 13) as f32),
            qs: std::array::from_fn(|_| byte()),
        })
        .collect();
    let a: Vec<BlockQ8_0> = (0..per)
        .map(|i| BlockQ8_0 {
            d: f32_to_f16(0.01 * (1 + i % 5) as f32),
            qs: std::array::from_fn(|_| byte().max(-127)),
        })
        .collect();
    let mut out = vec![0.0f32; STREAM_ROWS];
    let mut group = c.benchmark_group("q8_0_stream");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes((w.len() * 34) as u64));
    let vnni = path == TilePath::Vnni;
    // SAFETY (every call below): `path` says which of the AVX2 and VNNI tiles this CPU runs.
    macro_rules! tiles {
        ($prefetch:ty, $cache:literal) => {
            let what = format!(
                "prefetch into {} {} KiB ahead",
                $cache,
                <$prefetch>::DISTANCE / 1024
            );
            group.bench_function(
                format!("{} tile, a call per 4 rows, {what}", path.name()),
                |b| {
                    b.iter(|| {
                        for (o, r) in out.chunks_exact_mut(4).zip(w.chunks_exact(4 * per)) {
                            let four = [0, 1, 2, 3].map(|i| &r[i * per..(i + 1) * per]);
                            let [v] = unsafe {
                                if vnni {
                                    tile::q8_0_q8_0_vnni::<1, $prefetch>(four, &a)
                                } else {
                                    tile::q8_0_q8_0_avx2::<1, $prefetch>(four, &a)
                                }
                            };
                            o.copy_from_slice(&v);
                        }
                        black_box(&out);
                    })
                },
            );
        };
    }
    tiles!(ToL1, "L1");
    tiles!(ToL2, "L2");
    macro_rules! panels {
        ($prefetch:ty, $cache:literal) => {
            let what = format!(
                "prefetch into {} {} KiB ahead",
                $cache,
                <$prefetch>::DISTANCE / 1024
            );
            // The engine's kernel: panels and `prefetch_ahead`'s choice.
            let engine = if $cache == "L2" {
                " (the engine's)"
            } else {
                ""
            };
            group.bench_function(
                format!("{} tile, 32-row panels, {what}{engine}", path.name()),
                |b| {
                    b.iter(|| {
                        for (o, panel) in out.chunks_exact_mut(32).zip(w.chunks_exact(32 * per)) {
                            unsafe {
                                if vnni {
                                    tile::q8_0_q8_0_vnni_panel::<1, $prefetch>(panel, per, &a, o)
                                } else {
                                    tile::q8_0_q8_0_avx2_panel::<1, $prefetch>(panel, per, &a, o)
                                }
                            }
                        }
                        black_box(&out);
                    })
                },
            );
        };
    }
    panels!(ToL1, "L1");
    panels!(ToL2, "L2");
    group.finish();
}
// ANCHOR_END: q8_0_stream

#[cfg(not(target_arch = "x86_64"))]
fn q8_0_stream(_: &mut Criterion) {
    eprintln!("q8_0_stream: SKIPPED (x86_64 only)");
}

/// The feed-forward down projection: 576 rows of 1536 weights, the one matrix of the course
/// model whose rows are whole K-quant super-blocks.
const DOWN_ROWS: usize = 576;
const DOWN_COLS: usize = 1536;

/// One K-quant format's matrix × vector: the scalar reference, the AVX2 kernel one row at a
/// time, and four rows at a time with prefetch.
fn k_quant_group<B>(
    c: &mut Criterion,
    group_name: &str,
    quantize: fn(&[f32]) -> Vec<B>,
    (one, four): (kernels::Dot<B, BlockQ8K>, kernels::Dot4<B, BlockQ8K>),
    reference: kernels::Dot<B, BlockQ8K>,
) {
    // The path the kernels really take (an AVX-512 CPU runs the AVX2 kernels), for the labels.
    let level = simd_path();
    let w = quantize(&wave(DOWN_ROWS * DOWN_COLS, 5));
    let a = quantize_acts_q8_k(&wave(DOWN_COLS, 6));
    let rows: Vec<&[B]> = w.chunks_exact(DOWN_COLS / QK_K).collect();
    let mut out = vec![0.0f32; DOWN_ROWS];
    let mut group = c.benchmark_group(group_name);
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Bytes(std::mem::size_of_val(w.as_slice()) as u64));
    group.bench_function("scalar reference", |b| {
        b.iter(|| {
            for (o, row) in out.iter_mut().zip(&rows) {
                *o = reference(row, &a);
            }
            black_box(&out);
        })
    });
    group.bench_function(format!("{level}, one row at a time"), |b| {
        b.iter(|| {
            for (o, row) in out.iter_mut().zip(&rows) {
                *o = one(row, &a);
            }
            black_box(&out);
        })
    });
    group.bench_function(format!("{level}, four rows at a time + prefetch"), |b| {
        b.iter(|| {
            for (o, r) in out.chunks_exact_mut(4).zip(rows.chunks_exact(4)) {
                o.copy_from_slice(&four([r[0], r[1], r[2], r[3]], &a));
            }
            black_box(&out);
        })
    });
    group.finish();
}

fn k_quant_matvec(c: &mut Criterion) {
    use kernels::*;
    // The path the kernels really take (an AVX-512 CPU runs the AVX2 kernels), for the labels.
    let level = simd_path();
    let q4 = (q4_k_q8_k_kernel(level), q4_k_q8_k_kernel4(level));
    k_quant_group(c, "q4_k_matvec", quantize_q4_k, q4, scalar::dot_q4_k_q8_k);
    let q5 = (q5_k_q8_k_kernel(level), q5_k_q8_k_kernel4(level));
    k_quant_group(c, "q5_k_matvec", quantize_q5_k, q5, scalar::dot_q5_k_q8_k);
    let q6 = (q6_k_q8_k_kernel(level), q6_k_q8_k_kernel4(level));
    k_quant_group(c, "q6_k_matvec", quantize_q6_k, q6, scalar::dot_q6_k_q8_k);
}

/// NF4 × f32: the scalar reference and the AVX2 table-lookup kernel, on the Q4_1 group's shape.
fn nf4_matvec(c: &mut Criterion) {
    // The path the kernels really take (an AVX-512 CPU runs the AVX2 kernels), for the labels.
    let level = simd_path();
    let w = quantize_nf4(&wave(ROWS * COLS, 7));
    let x = wave(COLS, 8);
    let rows: Vec<&[_]> = w.chunks_exact(COLS / QK_NF4).collect();
    let mut out = vec![0.0f32; ROWS];
    let mut group = c.benchmark_group("nf4_matvec");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Bytes(std::mem::size_of_val(w.as_slice()) as u64));
    for (name, dot) in [
        (
            "scalar reference".to_string(),
            kernels::scalar::dot_nf4_f32 as kernels::Dot<_, f32>,
        ),
        (
            format!("{level}, table lookup in registers"),
            kernels::nf4_f32_kernel(level),
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                for (o, row) in out.iter_mut().zip(&rows) {
                    *o = dot(row, &x);
                }
                black_box(&out);
            })
        });
    }
    group.finish();
}

fn f32_matvec_vs_trueno(c: &mut Criterion) {
    // The path the kernels really take (an AVX-512 CPU runs the AVX2 kernels), for the labels.
    let level = simd_path();
    let w = wave(ROWS * COLS, 3);
    let x = wave(COLS, 4);
    let matrix = trueno::Matrix::from_vec(ROWS, COLS, w.clone()).expect("a valid shape");
    let vector = trueno::Vector::from_slice(&x);
    let dot = kernels::f32_kernel(level);
    let mut out = vec![0.0f32; ROWS];
    let mut group = c.benchmark_group("f32_matvec");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Bytes((w.len() * 4) as u64));
    group.bench_function(format!("chapters-code f32 ({level})"), |b| {
        b.iter(|| {
            for (o, row) in out.iter_mut().zip(w.chunks_exact(COLS)) {
                *o = dot(row, &x);
            }
            black_box(&out);
        })
    });
    group.bench_function("trueno 0.18 Matrix::matvec", |b| {
        b.iter(|| black_box(matrix.matvec(&vector).expect("shapes match")))
    });
    group.finish();
}

/// Tokens in the batched products: a verify pass of k = 7 drafts, or a small server step.
const BATCH: usize = 8;

// ANCHOR: q4_1_batch
/// The same matrix times a batch of 8 tokens: the four-row kernel token by token (the weight
/// work redone for every token), then the tiles of 4 rows × T tokens (each weight block unpacked
/// once for T tokens), on every tile path this CPU has.
fn q4_1_batch(c: &mut Criterion) {
    use chapters_code::hw::SimdLevel;
    use kernels::{TilePath, q4_1_q8_1_kernel4, q4_1_q8_1_tile, tile_path};
    let level = simd_path();
    let w = quantize_q4_1(&wave(ROWS * COLS, 1));
    let a = quantize_acts_q8_1(&wave(BATCH * COLS, 2));
    let per = COLS / 32;
    let rows: Vec<&[_]> = w.chunks_exact(per).collect();
    let mut out = vec![[0.0f32; 4]; BATCH * ROWS / 4];
    let mut group = c.benchmark_group("q4_1_batch");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements((BATCH * ROWS * COLS) as u64));
    // The four-row kernel is AVX2 on every x86 CPU that has AVX2 (AVX-512 ones included).
    let four = q4_1_q8_1_kernel4(level);
    let four_path = match tile_path(level) {
        TilePath::None => level.to_string(),
        _ => SimdLevel::Avx2.to_string(),
    };
    group.bench_function(
        format!("{four_path}, four rows, one token at a time"),
        |b| {
            b.iter(|| {
                for (o, r) in out.chunks_exact_mut(BATCH).zip(rows.chunks_exact(4)) {
                    for (t, o) in o.iter_mut().enumerate() {
                        *o = four([r[0], r[1], r[2], r[3]], &a[t * per..(t + 1) * per]);
                    }
                }
                black_box(&out);
            })
        },
    );
    for level in [SimdLevel::Avx2, SimdLevel::Avx512] {
        let Some(tile) = q4_1_q8_1_tile(level).filter(|_| tile_path(level) != TilePath::None)
        else {
            continue;
        };
        if level == SimdLevel::Avx512 && tile_path(level) != TilePath::Vnni {
            continue;
        }
        let name = format!(
            "{} tile, 4 rows × {} tokens",
            tile_path(level).name(),
            tile.tokens
        );
        let mut results = [0.0f32; 4 * BATCH];
        group.bench_function(name, |b| {
            b.iter(|| {
                // One tile call per 4 rows and `tile.tokens` tokens: panels of 4 rows.
                for four in w.chunks_exact(4 * per) {
                    let mut t = 0;
                    while t < BATCH {
                        let n = tile.tokens.min(BATCH - t);
                        let a = &a[t * per..(t + n) * per];
                        (tile.panel)(four, per, a, &mut results[4 * t..4 * (t + n)], true);
                        t += n;
                    }
                    black_box(&results);
                }
            })
        });
    }
    group.finish();
}
// ANCHOR_END: q4_1_batch

criterion_group!(
    benches,
    q4_1_matvec,
    q4_1_batch,
    q8_0_stream,
    k_quant_matvec,
    nf4_matvec,
    f32_matvec_vs_trueno
);
criterion_main!(benches);
