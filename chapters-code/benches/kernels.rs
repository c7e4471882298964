//! The matrix-vector product of the decode step, from the plain loop to the fast kernel, and
//! next to trueno's f32 matvec — one thread, one run, side by side.
//!
//! `cargo xtask bench` turns criterion's estimates into the tables of the chapter
//! "From prompt to tokens".

use chapters_code::kernels::{self, simd};
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
    let level = simd();
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
    let four = kernels::q4_1_q8_1_kernel4(level);
    group.bench_function(
        format!("{level}, 8-bit activations, four rows at a time + prefetch"),
        |b| {
            b.iter(|| {
                for (o, r) in out.chunks_exact_mut(4).zip(rows.chunks_exact(4)) {
                    o.copy_from_slice(&four([r[0], r[1], r[2], r[3]], &a));
                }
                black_box(&out);
            })
        },
    );
    group.finish();
}

fn f32_matvec_vs_trueno(c: &mut Criterion) {
    let level = simd();
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

criterion_group!(benches, q4_1_matvec, f32_matvec_vs_trueno);
criterion_main!(benches);
