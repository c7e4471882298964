//! The batched micro-kernel ([`super::tile`]) against the scalar reference: every (row, token)
//! of every tile size gives the one-row scalar kernel's bits, and a matmul of n tokens gives
//! each token the bits of a matmul of that token alone (batch invariance).

use super::matmul::{Acts, QMatrix, matmul};
use super::pool::ThreadPool;
use super::tests::{matrix_file, random_blocks};
use super::*;
use crate::formats::GgmlType;
use crate::quant::f32_to_f16;
use crate::testutil::wave;

/// The tile paths this CPU can run, each with the level that selects it; one line per path on
/// stderr, TESTED or SKIPPED, so a green run says what it did not test.
fn tile_levels() -> Vec<SimdLevel> {
    let mut tested = Vec::new();
    for (level, name) in [
        (SimdLevel::Avx512, TilePath::Vnni),
        (SimdLevel::Avx2, TilePath::Avx2),
    ] {
        if tile_path(level) == name {
            eprintln!(
                "tile path {}: TESTED against the scalar reference",
                name.name()
            );
            tested.push(level);
        } else {
            eprintln!(
                "tile path {}: SKIPPED (this CPU lacks it; it runs {})",
                name.name(),
                tile_path(SimdLevel::detect()).name()
            );
        }
    }
    tested
}

/// Finite f16 scales of varied size and sign.
fn scale(i: usize) -> u16 {
    f32_to_f16(0.001 * (1 + i % 23) as f32 * if i.is_multiple_of(3) { -1.0 } else { 1.0 })
}

#[test]
fn a_batch_gives_each_token_the_bits_of_that_token_alone() {
    // Rows not a multiple of 4 (the one-row tail), token counts that fill tiles partly.
    for ty in [GgmlType::Q4_1, GgmlType::Q8_0] {
        let (rows, cols) = (102, 96);
        let file = matrix_file(ty, rows, cols);
        let w = QMatrix::from_view(file.tensor("w").unwrap()).unwrap();
        let pool = ThreadPool::new(2);
        for n_tok in [1, 2, 3, 4, 5, 9] {
            let x = wave(n_tok * cols, 7 + n_tok as u32);
            let mut batch = vec![0.0; n_tok * rows];
            matmul(&pool, &w, &Acts::new(w.act_format(), &x, cols), &mut batch);
            for t in 0..n_tok {
                let one_x = &x[t * cols..(t + 1) * cols];
                let mut alone = vec![0.0; rows];
                matmul(
                    &pool,
                    &w,
                    &Acts::new(w.act_format(), one_x, cols),
                    &mut alone,
                );
                let got: Vec<u32> = batch[t * rows..(t + 1) * rows]
                    .iter()
                    .map(|v| v.to_bits())
                    .collect();
                let want: Vec<u32> = alone.iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, want, "{ty}: token {t} of {n_tok}");
            }
        }
    }
}

#[test]
fn every_tile_and_panel_size_gives_each_row_and_token_the_scalar_bits() {
    use crate::quant::{BlockQ4_1, BlockQ8_0, BlockQ8_1};
    for level in tile_levels() {
        let (q41, q80) = (
            q4_1_q8_1_tile(level).expect("a Q4_1 tile"),
            q8_0_q8_0_tile(level).expect("a Q8_0 tile"),
        );
        let mut i = 0;
        let mut next = || {
            i += 1;
            scale(i)
        };
        // One tile (4 rows) at every length, and panels of several tiles.
        let cases = [
            (1u64, 4usize, 1usize),
            (2, 4, 2),
            (3, 4, 7),
            (4, 4, 18),
            (5, 4, 48),
            (6, 8, 18),
            (7, 32, 7),
            (8, 12, 48),
        ];
        for (seed, rows, n) in cases {
            let w41: Vec<BlockQ4_1> = random_blocks(rows * n, seed, |b: &mut BlockQ4_1| {
                (b.d, b.m) = (next(), next())
            });
            // Weight bytes take every value, −128 included; activations are never −128.
            let w80: Vec<BlockQ8_0> =
                random_blocks(rows * n, seed + 5, |b: &mut BlockQ8_0| b.d = next());
            for tokens in 1..=q41.tokens.max(q80.tokens) {
                let a1: Vec<BlockQ8_1> =
                    random_blocks(n * tokens, seed + 50, |b: &mut BlockQ8_1| {
                        (b.d, b.s) = (next(), next());
                        b.qs.iter_mut().for_each(|q| *q = (*q).max(-127));
                    });
                let a0: Vec<BlockQ8_0> =
                    random_blocks(n * tokens, seed + 70, |b: &mut BlockQ8_0| {
                        b.d = next();
                        b.qs.iter_mut().for_each(|q| *q = (*q).max(-127));
                    });
                for stream in [true, false] {
                    let what = format!("{level} rows{rows} n{n} T{tokens} stream {stream}");
                    if tokens <= q41.tokens {
                        let mut out = vec![f32::NAN; tokens * rows];
                        (q41.panel)(&w41, n, &a1, &mut out, stream);
                        check_panel(&out, rows, n, &w41, &a1, scalar::dot_q4_1_q8_1, &what);
                    }
                    if tokens <= q80.tokens {
                        let mut out = vec![f32::NAN; tokens * rows];
                        (q80.panel)(&w80, n, &a0, &mut out, stream);
                        check_panel(&out, rows, n, &w80, &a0, scalar::dot_q8_0_q8_0, &what);
                    }
                }
            }
        }
    }
}

/// `out[t · rows + r]` holds the scalar reference's bits for row r and token t.
fn check_panel<W, A>(
    out: &[f32],
    rows: usize,
    n: usize,
    w: &[W],
    a: &[A],
    reference: fn(&[W], &[A]) -> f32,
    what: &str,
) {
    for (t, token) in out.chunks_exact(rows).enumerate() {
        for (r, got) in token.iter().enumerate() {
            let want = reference(&w[r * n..(r + 1) * n], &a[t * n..(t + 1) * n]);
            assert_eq!(got.to_bits(), want.to_bits(), "{what} t{t} r{r}");
        }
    }
}
