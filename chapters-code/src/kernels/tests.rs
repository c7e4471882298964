//! Every SIMD path against the scalar reference, and the matmul against row-by-row dots.

use super::matmul::{Acts, Matmul, QMatrix, matmul, matmul_many};
use super::pool::ThreadPool;
use super::*;
use crate::formats::{GgmlType, Gguf, GgufWriter};
use crate::quant::blocks::block_bytes;
use crate::quant::kquants::BlockQ8K;
use crate::quant::quantize::*;
use crate::quant::{f16_to_f32, f32_to_f16};
use crate::testutil::wave;

/// The SIMD tier of this machine, or `None` when it only has the scalar path — with a line
/// on stderr either way, so that a run shows which paths were tested and which skipped.
fn simd_level() -> Option<SimdLevel> {
    use std::io::Write;
    let level = SimdLevel::detect();
    let path = super::path(level);
    let mut err = std::io::stderr();
    if level == SimdLevel::Scalar || !level.is_supported() {
        let _ = writeln!(
            err,
            "SKIPPED SIMD path: this CPU runs only the scalar kernels"
        );
        return None;
    }
    if path != level {
        let _ = writeln!(
            err,
            "{level} has no one-row kernels (only tiles, in tile_tests): testing the {path} path instead"
        );
    }
    let _ = writeln!(err, "testing the {path} path against the scalar reference");
    Some(level)
}

/// Every SIMD path the book ships, and whether this run tests it: printed as one summary with
/// the count of skipped paths, so a green run on a CPU without a path says so instead of
/// passing silently. Each test that skips prints its own SKIPPED line too (above).
#[test]
fn which_simd_paths_this_run_tests() {
    let here = SimdLevel::detect();
    let ran = super::path(here);
    let paths = [
        (SimdLevel::Avx2, cfg!(target_arch = "x86_64")),
        (SimdLevel::Neon, cfg!(target_arch = "aarch64")),
    ];
    let mut skipped = 0;
    for (level, arch) in paths {
        if level == ran && here.is_supported() {
            eprintln!("SIMD path {level}: TESTED against the scalar reference");
        } else {
            skipped += 1;
            let why = if !arch {
                "not this architecture".to_string()
            } else {
                format!("this CPU (or PRODML_SIMD) gives {here}")
            };
            eprintln!("SIMD path {level}: SKIPPED ({why})");
        }
    }
    // AVX-512 has kernels of its own only for the tiles (VNNI, `tile_tests`); otherwise those
    // CPUs run (and test) the AVX2 path.
    if tile_path(here) == TilePath::Vnni {
        eprintln!(
            "SIMD path AVX-512 VNNI (Q4_1 and Q8_0 tiles): TESTED against the scalar reference"
        );
    } else {
        skipped += 1;
        eprintln!(
            "SIMD path AVX-512 VNNI (Q4_1 and Q8_0 tiles): SKIPPED (this CPU or PRODML_SIMD lacks it)"
        );
    }
    eprintln!(
        "SIMD paths: {} tested, {skipped} skipped",
        paths.len() + 1 - skipped
    );
    assert_eq!(simd_level().is_some(), skipped < paths.len() + 1);
}

/// A SIMD result that must carry the scalar reference's bits (the canonical order).
fn same_bits(what: &str, simd: f32, reference: f32) {
    assert_eq!(
        simd.to_bits(),
        reference.to_bits(),
        "{what}: simd {simd} vs scalar {reference}"
    );
}

/// For the kernels off the model's path (benchmarked alternatives), which sum in their own
/// order: agreement to rounding.
fn close(simd: f32, reference: f32, magnitude: f32) {
    let tol = 1e-5 * magnitude.max(1.0);
    assert!(
        (simd - reference).abs() <= tol,
        "simd {simd} vs scalar {reference} (tolerance {tol})"
    );
}

/// Σ|w|·|a|: the scale of the rounding error of a dot product.
fn magnitude(w: &[f32], a: &[f32]) -> f32 {
    w.iter().zip(a).map(|(x, y)| (x * y).abs()).sum()
}

const LENGTHS: [usize; 5] = [32, 64, 96, 576, 1536];

#[test]
fn q5_0_simd_gives_the_scalar_bits() {
    let Some(level) = simd_level() else { return };
    for (i, &n) in LENGTHS.iter().enumerate() {
        let (w, a) = (wave(n, i as u32), wave(n, 100 + i as u32));
        let (wq, aq) = (
            crate::quant::q5_0::quantize_q5_0(&w),
            quantize_acts_q8_0(&a),
        );
        same_bits(
            "Q5_0",
            q5_0_q8_0_kernel(level)(&wq, &aq),
            scalar::dot_q5_0_q8_0(&wq, &aq),
        );
    }
}

#[test]
fn q4_1_simd_gives_the_scalar_bits() {
    let Some(level) = simd_level() else { return };
    for (i, &n) in LENGTHS.iter().enumerate() {
        let (w, a) = (wave(n, i as u32), wave(n, 100 + i as u32));
        let (wq, aq) = (quantize_q4_1(&w), quantize_acts_q8_1(&a));
        same_bits(
            "Q4_1",
            dot_q4_1_q8_1(level, &wq, &aq),
            scalar::dot_q4_1_q8_1(&wq, &aq),
        );
    }
}

#[test]
fn q4_1_with_f32_activations_simd_matches_scalar_and_the_dequantized_dot() {
    let levels: Vec<SimdLevel> = [SimdLevel::Scalar]
        .into_iter()
        .chain(simd_level())
        .collect();
    for (i, &n) in LENGTHS.iter().enumerate() {
        let (w, x) = (wave(n, 20 + i as u32), wave(n, 30 + i as u32));
        let wq = quantize_q4_1(&w);
        let mut wd = vec![0.0; n];
        dequantize_q4_1(&wq, &mut wd);
        let reference = scalar::dot_f32(&wd, &x);
        for &level in &levels {
            close(
                q4_1_f32_kernel(level)(&wq, &x),
                reference,
                magnitude(&w, &x),
            );
        }
    }
}

#[test]
fn nf4_simd_matches_scalar() {
    use crate::quant::nf4::quantize_nf4;
    let Some(level) = simd_level() else { return };
    for (i, n) in [64usize, 128, 576, 1536].into_iter().enumerate() {
        let (w, x) = (wave(n, 70 + i as u32), wave(n, 80 + i as u32));
        let wq = quantize_nf4(&w);
        close(
            nf4_f32_kernel(level)(&wq, &x),
            scalar::dot_nf4_f32(&wq, &x),
            magnitude(&w, &x),
        );
    }
    // Every code in every position: bytes 0..=255 across the block.
    let block = crate::quant::nf4::BlockNf4 {
        absmax: f32_to_f16(1.5),
        qs: std::array::from_fn(|i| (i * 8 + 3) as u8),
    };
    let all: Vec<_> = (0..8)
        .map(|k| crate::quant::nf4::BlockNf4 {
            qs: block.qs.map(|q| q.wrapping_add(k)),
            ..block
        })
        .collect();
    let x = wave(64 * all.len(), 90);
    close(
        nf4_f32_kernel(level)(&all, &x),
        scalar::dot_nf4_f32(&all, &x),
        1.5 * x.iter().map(|v| v.abs()).sum::<f32>(),
    );
}

#[test]
fn q4_0_simd_gives_the_scalar_bits() {
    let Some(level) = simd_level() else { return };
    for (i, &n) in LENGTHS.iter().enumerate() {
        let (w, a) = (wave(n, 7 + i as u32), wave(n, 200 + i as u32));
        let (wq, aq) = (quantize_q4_0(&w), quantize_acts_q8_0(&a));
        same_bits(
            "Q4_0",
            dot_q4_0_q8_0(level, &wq, &aq),
            scalar::dot_q4_0_q8_0(&wq, &aq),
        );
    }
}

#[test]
fn q8_0_simd_gives_the_scalar_bits_including_extreme_bytes() {
    let Some(level) = simd_level() else { return };
    for (i, &n) in LENGTHS.iter().enumerate() {
        let (w, a) = (wave(n, 9 + i as u32), wave(n, 300 + i as u32));
        let (mut wq, aq) = (quantize_q8_0(&w), quantize_acts_q8_0(&a));
        // A file may hold -128, which our quantizer never writes: the kernels must agree on it.
        wq[0].qs[0] = -128;
        wq[0].qs[31] = 127;
        same_bits(
            "Q8_0",
            dot_q8_0_q8_0(level, &wq, &aq),
            scalar::dot_q8_0_q8_0(&wq, &aq),
        );
    }
}

#[test]
fn quantized_kernels_give_the_scalar_bits_on_random_blocks() {
    let Some(level) = simd_level() else { return };
    for (seed, n) in [(1u64, 1usize), (2, 7), (3, 18), (4, 48)] {
        // Any bytes make valid codes; scales fixed to finite values of varied size.
        let scales = |i: usize| {
            f32_to_f16(0.001 * (1 + i % 17) as f32 * if i.is_multiple_of(3) { -1.0 } else { 1.0 })
        };
        let mut i = 0;
        let mut next = || {
            i += 1;
            scales(i)
        };
        let q41: Vec<crate::quant::BlockQ4_1> =
            random_blocks(n, seed, |b: &mut crate::quant::BlockQ4_1| {
                (b.d, b.m) = (next(), next())
            });
        let a1: Vec<crate::quant::BlockQ8_1> =
            random_blocks(n, seed + 50, |b: &mut crate::quant::BlockQ8_1| {
                (b.d, b.s) = (next(), next());
                b.qs.iter_mut().for_each(|q| *q = (*q).max(-127));
            });
        let q40: Vec<crate::quant::BlockQ4_0> =
            random_blocks(n, seed + 10, |b: &mut crate::quant::BlockQ4_0| b.d = next());
        let q80: Vec<crate::quant::BlockQ8_0> =
            random_blocks(n, seed + 20, |b: &mut crate::quant::BlockQ8_0| b.d = next());
        // Activations are never −128 (they are quantized to ±127); the byte trick of the SIMD
        // kernels, like llama.cpp's, relies on it.
        let a0: Vec<crate::quant::BlockQ8_0> =
            random_blocks(n, seed + 30, |b: &mut crate::quant::BlockQ8_0| {
                b.d = next();
                b.qs.iter_mut().for_each(|q| *q = (*q).max(-127));
            });
        let q50: Vec<crate::quant::q5_0::BlockQ5_0> =
            random_blocks(n, seed + 40, |b: &mut crate::quant::q5_0::BlockQ5_0| {
                b.d = next()
            });
        same_bits(
            "Q4_1",
            dot_q4_1_q8_1(level, &q41, &a1),
            scalar::dot_q4_1_q8_1(&q41, &a1),
        );
        same_bits(
            "Q4_0",
            dot_q4_0_q8_0(level, &q40, &a0),
            scalar::dot_q4_0_q8_0(&q40, &a0),
        );
        same_bits(
            "Q8_0",
            dot_q8_0_q8_0(level, &q80, &a0),
            scalar::dot_q8_0_q8_0(&q80, &a0),
        );
        same_bits(
            "Q5_0",
            q5_0_q8_0_kernel(level)(&q50, &a0),
            scalar::dot_q5_0_q8_0(&q50, &a0),
        );
    }
}

#[test]
fn float_simd_gives_the_scalar_bits_at_every_length() {
    let Some(level) = simd_level() else { return };
    for n in [0, 1, 7, 16, 17, 31, 32, 33, 63, 64, 65, 100, 576, 1536] {
        let (w, a) = (wave(n, 1), wave(n, 2));
        let halves: Vec<u16> = w.iter().map(|&x| f32_to_f16(x)).collect();
        same_bits("f32", dot_f32(level, &w, &a), scalar::dot_f32(&w, &a));
        same_bits(
            "f16",
            dot_f16_f32(level, &halves, &a),
            scalar::dot_f16_f32(&halves, &a),
        );
    }
}

#[test]
fn the_canonical_float_order_is_close_to_the_exact_sum() {
    for n in [5, 32, 100, 1536] {
        let (w, a) = (wave(n, 3), wave(n, 4));
        let exact: f64 = w
            .iter()
            .zip(&a)
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum();
        let got = scalar::dot_f32(&w, &a);
        assert!(
            (f64::from(got) - exact).abs() <= 1e-6 * f64::from(magnitude(&w, &a)),
            "{got} vs {exact}"
        );
    }
}

#[test]
fn attend_values_is_one_canonical_dot_per_dimension_on_every_path() {
    let mut levels = vec![SimdLevel::Scalar];
    levels.extend(simd_level());
    for n in [1, 5, 31, 32, 33, 64, 100, 257] {
        let hd = 64;
        let weights: Vec<f32> = wave(n, 5)
            .iter()
            .map(|w| f16_to_f32(f32_to_f16(w.abs())))
            .collect();
        let values: Vec<Vec<u16>> = (0..n)
            .map(|p| {
                wave(hd, 10 + p as u32)
                    .iter()
                    .map(|&v| f32_to_f16(v))
                    .collect()
            })
            .collect();
        // The reference: for each dimension, the f16 dot product of its column with the
        // weights, both padded with zeros to a multiple of 32 positions.
        let padded = n.div_ceil(32) * 32;
        let mut w_padded = weights.clone();
        w_padded.resize(padded, 0.0);
        let expected: Vec<f32> = (0..hd)
            .map(|d| {
                let mut column: Vec<u16> = values.iter().map(|v| v[d]).collect();
                column.resize(padded, 0);
                scalar::dot_f16_f32(&column, &w_padded)
            })
            .collect();
        for &level in &levels {
            let mut out = vec![0.0f32; hd];
            let rows: Vec<&[u16]> = values.iter().map(Vec::as_slice).collect();
            attend_values(level, &weights, &rows, &mut out);
            for (d, (got, want)) in out.iter().zip(&expected).enumerate() {
                same_bits(&format!("{level} n={n} d={d}"), *got, *want);
            }
        }
    }
}

#[test]
fn four_row_kernels_give_each_row_the_bits_of_the_one_row_kernel() {
    let mut levels = vec![SimdLevel::Scalar];
    levels.extend(simd_level());
    for level in levels {
        let rows: Vec<Vec<f32>> = (0..4).map(|i| wave(576, 50 + i)).collect();
        let a = wave(576, 60);
        let q41: Vec<_> = rows.iter().map(|r| quantize_q4_1(r)).collect();
        let aq1 = quantize_acts_q8_1(&a);
        let four = q4_1_q8_1_kernel4(level)([&q41[0], &q41[1], &q41[2], &q41[3]], &aq1);
        for (row, got) in q41.iter().zip(four) {
            assert_eq!(
                got.to_bits(),
                scalar::dot_q4_1_q8_1(row, &aq1).to_bits(),
                "{level:?}"
            );
        }
        // The four-row kernel before its scales were converted together (kept for the bench).
        #[cfg(target_arch = "x86_64")]
        if level != SimdLevel::Scalar && level.is_supported() {
            // SAFETY: `is_supported` checked AVX2, FMA and F16C.
            let four =
                unsafe { avx2::dot_q4_1_q8_1_x4([&q41[0], &q41[1], &q41[2], &q41[3]], &aq1) };
            for (row, got) in q41.iter().zip(four) {
                assert_eq!(got.to_bits(), scalar::dot_q4_1_q8_1(row, &aq1).to_bits());
            }
        }
        let q80: Vec<_> = rows.iter().map(|r| quantize_q8_0(r)).collect();
        let aq0 = quantize_acts_q8_0(&a);
        let four = q8_0_q8_0_kernel4(level)([&q80[0], &q80[1], &q80[2], &q80[3]], &aq0);
        for (row, got) in q80.iter().zip(four) {
            assert_eq!(
                got.to_bits(),
                scalar::dot_q8_0_q8_0(row, &aq0).to_bits(),
                "{level:?}"
            );
        }
    }
}

/// Bytes from a fixed-seed generator: every bit pattern of codes, scales and fifth bits
/// shows up, including the extremes a quantizer rarely writes.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// `n` blocks of random bytes, then `fix` (any bytes make a valid block, but a random f16
/// scale may be NaN or huge).
pub(super) fn random_blocks<B: crate::formats::gguf::Pod>(
    n: usize,
    seed: u64,
    fix: impl FnMut(&mut B),
) -> Vec<B> {
    let bytes = noise(n * size_of::<B>(), seed);
    let mut blocks: Vec<B> = bytes
        .chunks_exact(size_of::<B>())
        // SAFETY: `B` is Pod (every bit pattern is a value) and the chunk is its size.
        .map(|c| unsafe { c.as_ptr().cast::<B>().read_unaligned() })
        .collect();
    blocks.iter_mut().for_each(fix);
    blocks
}

/// A K-quant SIMD kernel against the scalar reference on one row of `blocks`, and its
/// four-row kernel on the row split in four: the same bits every time.
fn same_bits_as_scalar<B>(
    format: &str,
    blocks: &[B],
    acts: &[BlockQ8K],
    (one, four): (Dot<B, BlockQ8K>, Dot4<B, BlockQ8K>),
    reference: Dot<B, BlockQ8K>,
) {
    let (simd, expected) = (one(blocks, acts), reference(blocks, acts));
    assert_eq!(
        simd.to_bits(),
        expected.to_bits(),
        "{format}: {simd} vs {expected}"
    );
    let k = blocks.len() / 4;
    if k > 0 {
        let rows = [0, 1, 2, 3].map(|r| &blocks[r * k..(r + 1) * k]);
        for (got, row) in four(rows, &acts[..k]).into_iter().zip(rows) {
            assert_eq!(
                got.to_bits(),
                reference(row, &acts[..k]).to_bits(),
                "{format} x4"
            );
        }
    }
}

#[test]
fn k_quant_simd_matches_scalar_bit_for_bit() {
    use crate::quant::kquants::{BlockQ4K, BlockQ5K, BlockQ6K, quantize_acts_q8_k};
    let Some(level) = simd_level() else { return };
    let (d, dmin) = (f32_to_f16(0.0123), f32_to_f16(0.0041));
    for (i, n) in [1usize, 2, 8].into_iter().enumerate() {
        let seed = i as u64;
        let acts = quantize_acts_q8_k(&wave(256 * n, 40 + i as u32));
        let q4: Vec<BlockQ4K> =
            random_blocks(n, seed, |b: &mut BlockQ4K| (b.d, b.dmin) = (d, dmin));
        let q5: Vec<BlockQ5K> =
            random_blocks(n, seed + 10, |b: &mut BlockQ5K| (b.d, b.dmin) = (d, dmin));
        let q6: Vec<BlockQ6K> = random_blocks(n, seed + 20, |b: &mut BlockQ6K| b.d = d);
        same_bits_as_scalar(
            "Q4_K",
            &q4,
            &acts,
            (q4_k_q8_k_kernel(level), q4_k_q8_k_kernel4(level)),
            scalar::dot_q4_k_q8_k,
        );
        same_bits_as_scalar(
            "Q5_K",
            &q5,
            &acts,
            (q5_k_q8_k_kernel(level), q5_k_q8_k_kernel4(level)),
            scalar::dot_q5_k_q8_k,
        );
        same_bits_as_scalar(
            "Q6_K",
            &q6,
            &acts,
            (q6_k_q8_k_kernel(level), q6_k_q8_k_kernel4(level)),
            scalar::dot_q6_k_q8_k,
        );
    }
}

#[test]
fn quantized_dot_is_the_dot_of_the_dequantized_values() {
    let (w, a) = (wave(576, 3), wave(576, 4));
    let (wq, aq) = (quantize_q4_1(&w), quantize_acts_q8_1(&a));
    let mut wd = vec![0.0; 576];
    dequantize_q4_1(&wq, &mut wd);
    // Dequantized activations: d · q (the Q8_1 `s` field is d · Σq, so it adds nothing new).
    let ad: Vec<f64> = aq
        .iter()
        .flat_map(|b| {
            b.qs.iter()
                .map(move |&q| f64::from(q) * f64::from(f16_to_f32(b.d)))
        })
        .collect();
    let exact: f64 = wd.iter().zip(&ad).map(|(&x, &y)| f64::from(x) * y).sum();
    let got = scalar::dot_q4_1_q8_1(&wq, &aq);
    assert!(
        (f64::from(got) - exact).abs() < 2e-3 * magnitude(&w, &a) as f64,
        "{got} vs {exact}"
    );
}

/// A one-matrix GGUF in memory, to get a `QMatrix` as the model does.
pub(super) fn matrix_file(ty: GgmlType, rows: usize, cols: usize) -> Gguf {
    let w = wave(rows * cols, 11);
    let data = match ty {
        GgmlType::Q4_1 => block_bytes(&quantize_q4_1(&w)).to_vec(),
        GgmlType::Q4_0 => block_bytes(&quantize_q4_0(&w)).to_vec(),
        GgmlType::Q8_0 => block_bytes(&quantize_q8_0(&w)).to_vec(),
        GgmlType::Q4_K => block_bytes(&crate::quant::kquants::quantize_q4_k(&w)).to_vec(),
        GgmlType::Q5_K => block_bytes(&crate::quant::kquants::quantize_q5_k(&w)).to_vec(),
        GgmlType::Q6_K => block_bytes(&crate::quant::kquants::quantize_q6_k(&w)).to_vec(),
        GgmlType::F16 => w
            .iter()
            .flat_map(|&x| f32_to_f16(x).to_le_bytes())
            .collect(),
        _ => w.iter().flat_map(|x| x.to_le_bytes()).collect(),
    };
    let mut file = GgufWriter::new();
    file.tensor("w", &[cols as u64, rows as u64], ty, data);
    Gguf::from_bytes(file.to_bytes()).unwrap()
}

#[test]
fn matmul_equals_row_dots_and_is_identical_on_any_thread_count() {
    for ty in [
        GgmlType::Q4_1,
        GgmlType::Q4_0,
        GgmlType::Q8_0,
        GgmlType::F16,
        GgmlType::F32,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ] {
        let k_quant = matches!(ty, GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K);
        let (rows, cols, n_tok) = (100, if k_quant { 512 } else { 64 }, 3);
        let file = matrix_file(ty, rows, cols);
        let w = QMatrix::from_view(file.tensor("w").unwrap()).unwrap();
        let x = wave(n_tok * cols, 5);
        let acts = Acts::new(w.act_format(), &x, cols);
        let mut one = vec![0.0; n_tok * rows];
        matmul(&ThreadPool::new(1), &w, &acts, &mut one);
        for threads in [2, 3] {
            let mut many = vec![0.0; n_tok * rows];
            matmul(&ThreadPool::new(threads), &w, &acts, &mut many);
            assert_eq!(one, many, "{ty} with {threads} threads");
        }
        // Row r of token t, through the dequantized row and the plain f32 dot.
        let mut row = vec![0.0; cols];
        for t in 0..n_tok {
            for r in [0, 31, 32, 99] {
                w.row_f32(r, &mut row);
                let reference = scalar::dot_f32(&row, &x[t * cols..(t + 1) * cols]);
                let got = one[t * rows + r];
                assert!(
                    (got - reference).abs() < 0.05 * magnitude(&row, &x[t * cols..]).max(0.1),
                    "{ty} t{t} r{r}: {got} vs {reference}"
                );
            }
        }
    }
}

#[test]
fn matmul_many_runs_products_with_different_shapes_in_one_job() {
    let a = matrix_file(GgmlType::Q4_1, 70, 64);
    let b = matrix_file(GgmlType::Q4_1, 33, 64);
    let (wa, wb) = (
        QMatrix::from_view(a.tensor("w").unwrap()).unwrap(),
        QMatrix::from_view(b.tensor("w").unwrap()).unwrap(),
    );
    let x = wave(2 * 64, 8);
    let acts = Acts::new(wa.act_format(), &x, 64);
    let pool = ThreadPool::new(2);
    let (mut oa, mut ob) = (vec![0.0; 2 * 70], vec![0.0; 2 * 33]);
    matmul_many(
        &pool,
        &mut [
            Matmul {
                w: &wa,
                acts: &acts,
                out: &mut oa,
            },
            Matmul {
                w: &wb,
                acts: &acts,
                out: &mut ob,
            },
        ],
    );
    let (mut sa, mut sb) = (vec![0.0; 2 * 70], vec![0.0; 2 * 33]);
    matmul(&pool, &wa, &acts, &mut sa);
    matmul(&pool, &wb, &acts, &mut sb);
    assert_eq!((oa, ob), (sa, sb));
}

#[test]
fn unsupported_types_are_refused_with_the_tensor_name() {
    let mut file = GgufWriter::new();
    file.tensor(
        "blk.0.ffn_up.weight",
        &[256, 1],
        GgmlType::Q3_K,
        vec![0; 110],
    );
    let g = Gguf::from_bytes(file.to_bytes()).unwrap();
    let err = QMatrix::from_view(g.tensor("blk.0.ffn_up.weight").unwrap())
        .err()
        .unwrap();
    assert!(err.to_string().contains("blk.0.ffn_up.weight") && err.to_string().contains("Q3_K"));
}

#[test]
fn axpy_q8_0_adds_the_dequantized_values() {
    let x = quantize_acts_q8_0(&wave(64, 9));
    let mut dequantized = vec![0.0; 64];
    dequantize_q8_0(&x, &mut dequantized);
    let mut y = wave(64, 10);
    let expected: Vec<f32> = y
        .iter()
        .zip(&dequantized)
        .map(|(y, x)| y + 0.3 * x)
        .collect();
    scalar::axpy_q8_0(0.3, &x, &mut y);
    for (got, want) in y.iter().zip(&expected) {
        assert!(
            (got - want).abs() <= 1e-6 * want.abs().max(1.0),
            "{got} vs {want}"
        );
    }
}
