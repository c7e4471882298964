//! The hardware chapter's two progressions, measured side by side in one run:
//! - `fma_kernels`: the naive scalar loop → one SIMD chain → many SIMD chains (FLOP/s);
//! - `triad_sizes`: the same triad on working sets that fit L1, L2, L3 and only DRAM (bytes/s).
//!
//! `cargo xtask bench` runs this and turns criterion's estimates into the chapter's tables.

use chapters_code::hw::SimdLevel;
use chapters_code::hw::roofline::{self, FmaKernel, TRIAD_BYTES_PER_ELEMENT};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;

fn fma_kernels(c: &mut Criterion) {
    let level = SimdLevel::detect();
    let steps = 200_000u64;
    let mut group = c.benchmark_group("fma_kernels");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for kernel in [
        FmaKernel::ScalarOneChain,
        FmaKernel::SimdOneChain,
        FmaKernel::SimdManyChains,
    ] {
        group.throughput(Throughput::Elements(steps * kernel.flops_per_step(level)));
        group.bench_function(kernel.name(), |b| {
            b.iter(|| roofline::run_fma_kernel(kernel, level, black_box(steps)))
        });
    }
    group.finish();
}

fn triad_sizes(c: &mut Criterion) {
    let mut group = c.benchmark_group("triad_sizes");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    // Total bytes of the three arrays: inside L1, L2, L3, and far beyond any cache.
    for (label, total_bytes) in [
        ("24 KiB (L1)", 24u64 << 10),
        ("384 KiB (L2)", 384 << 10),
        ("12 MiB (L3)", 12 << 20),
        ("384 MiB (DRAM)", 384 << 20),
    ] {
        let n = (total_bytes / TRIAD_BYTES_PER_ELEMENT) as usize;
        let mut a = vec![0.0f64; n];
        let b = vec![1.0f64; n];
        let cc = vec![2.0f64; n];
        group.throughput(Throughput::Bytes(n as u64 * TRIAD_BYTES_PER_ELEMENT));
        group.bench_function(label, |bench| {
            bench.iter(|| roofline::triad_kernel(&mut a, &b, &cc, black_box(3.0)))
        });
    }
    group.finish();
}

criterion_group!(benches, fma_kernels, triad_sizes);
criterion_main!(benches);
