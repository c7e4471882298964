//! The machine's roofline, measured: memory bandwidth (a STREAM-like triad) and peak f32
//! FLOP/s (independent chains of fused multiply-adds), on one thread and on all of them.
//!
//! Decoding one token of an LLM reads every weight once, so memory bandwidth bounds decode
//! speed: tokens/s ≤ bandwidth ÷ bytes read per token ([`decode_bound_tokens_per_s`]). Later
//! chapters put their measured speed next to this bound.

use super::cpu::SimdLevel;
use serde::Serialize;
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Result of a bandwidth or compute probe: the best of several timed repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// Threads that worked at once.
    pub threads: usize,
    /// Work done in one repetition: bytes (triad) or floating-point operations (FMA).
    pub work_per_rep: u64,
    /// Fastest repetition, in seconds.
    pub best_seconds: f64,
    /// `work_per_rep / best_seconds`: bytes/s or FLOP/s.
    pub rate: f64,
    /// Whether the kernel's output was checked and correct.
    pub verified: bool,
}

// ANCHOR: triad
/// STREAM's triad on f64 arrays: `a[i] = b[i] + s * c[i]`.
///
/// STREAM counts 3 × 8 bytes per element (two reads, one write); the write-allocate read of
/// `a` that most CPUs also do is not counted, so real traffic is about a third higher.
pub fn triad_kernel(a: &mut [f64], b: &[f64], c: &[f64], s: f64) {
    for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
        *a = b + s * c;
    }
}
// ANCHOR_END: triad

/// Bytes STREAM counts per triad element: read b, read c, write a.
pub const TRIAD_BYTES_PER_ELEMENT: u64 = 3 * std::mem::size_of::<f64>() as u64;

/// Runs the triad on three arrays of `elems` f64 each, split evenly over `threads` threads,
/// `reps` times; returns the best repetition.
///
/// Pick `elems` so that the three arrays are several times the last-level cache
/// ([`triad_elems_for_cache`]), or the probe measures the cache instead of memory.
pub fn triad_bandwidth(elems: usize, threads: usize, reps: usize) -> Probe {
    let threads = threads.clamp(1, elems.max(1));
    let reps = reps.max(1);
    // Zeroed allocations are mapped lazily; each thread touches its own chunk first, so on
    // multi-socket machines the pages land next to the core that streams them.
    let mut a = vec![0.0f64; elems];
    let mut b = vec![0.0f64; elems];
    let mut c = vec![0.0f64; elems];
    let chunk = elems.div_ceil(threads).max(1);
    let barrier = Barrier::new(threads);
    let scalar = 3.0;
    let mut best = f64::INFINITY;

    std::thread::scope(|scope| {
        let mut parts = a
            .chunks_mut(chunk)
            .zip(b.chunks_mut(chunk))
            .zip(c.chunks_mut(chunk))
            .map(|((a, b), c)| (a, b, c));
        let Some(own) = parts.next() else { return };
        for (a, b, c) in parts {
            let barrier = &barrier;
            scope.spawn(move || {
                b.fill(1.0);
                c.fill(2.0);
                a.fill(0.0);
                for _ in 0..reps {
                    barrier.wait();
                    triad_kernel(a, b, c, black_box(scalar));
                    barrier.wait();
                }
            });
        }
        // The calling thread works too, and keeps the clock.
        let (a, b, c) = own;
        b.fill(1.0);
        c.fill(2.0);
        a.fill(0.0);
        for _ in 0..reps {
            barrier.wait();
            let start = Instant::now();
            triad_kernel(a, b, c, black_box(scalar));
            barrier.wait();
            best = best.min(start.elapsed().as_secs_f64());
        }
    });

    let verified = a.iter().all(|&x| x == 1.0 + scalar * 2.0);
    let work = elems as u64 * TRIAD_BYTES_PER_ELEMENT;
    Probe {
        threads,
        work_per_rep: work,
        best_seconds: best,
        rate: work as f64 / best,
        verified,
    }
}

/// Elements per array so the triad's three arrays span at least 4× the last-level cache
/// (STREAM's rule) and at least 64 MiB in all, but no more than `max_bytes` in all.
pub fn triad_elems_for_cache(last_level_cache_bytes: Option<u64>, max_bytes: u64) -> usize {
    let floor = 64u64 << 20;
    let wanted = last_level_cache_bytes.map_or(floor, |llc| (4 * llc).max(floor));
    let total = wanted.min(max_bytes.max(3 * 8));
    (total / TRIAD_BYTES_PER_ELEMENT) as usize
}

// ANCHOR: fma_constants
/// Every lane runs `x ← x · M + A` from `X0`: it converges to 1 without ever overflowing or
/// going subnormal, so the speed we time is the FMA units' and not a slow path's.
pub const FMA_M: f32 = 0.999_9;
pub const FMA_A: f32 = 0.000_1;
pub const FMA_X0: f32 = 0.5;
// ANCHOR_END: fma_constants

/// Which compute kernel to time; the book shows the three side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FmaKernel {
    /// The loop anyone writes first: one scalar multiply and add per step, each waiting for
    /// the previous result (bound by latency).
    ScalarOneChain,
    /// One SIMD fused multiply-add per step on a single register: all lanes, but still waiting
    /// on the previous result.
    SimdOneChain,
    /// [`FMA_CHAINS`] independent registers: enough work in flight to keep every FMA unit busy.
    SimdManyChains,
}

/// Independent accumulators of [`FmaKernel::SimdManyChains`]: FMA latency (4–5 cycles) ×
/// FMA units per core (2) rounded up, and fewer than the 16 vector registers of AVX2.
pub const FMA_CHAINS: usize = 12;

impl FmaKernel {
    pub fn name(self) -> &'static str {
        match self {
            FmaKernel::ScalarOneChain => "scalar, 1 chain",
            FmaKernel::SimdOneChain => "SIMD, 1 chain",
            FmaKernel::SimdManyChains => "SIMD, 12 chains",
        }
    }

    /// Floating-point operations one step of the kernel does at `level` (an FMA counts as 2).
    pub fn flops_per_step(self, level: SimdLevel) -> u64 {
        match self {
            FmaKernel::ScalarOneChain => 2,
            FmaKernel::SimdOneChain => 2 * level.f32_lanes() as u64,
            FmaKernel::SimdManyChains => 2 * (level.f32_lanes() * FMA_CHAINS) as u64,
        }
    }
}

/// The value of every lane after `steps` fused multiply-adds: the reference the SIMD kernels
/// must reproduce bit for bit (`mul_add` rounds once, like the FMA instruction).
pub fn fma_reference(steps: u64) -> f32 {
    let mut x = FMA_X0;
    for _ in 0..steps {
        x = x.mul_add(FMA_M, FMA_A);
    }
    x
}

/// Runs `kernel` for `steps` steps at `level`; returns (smallest, largest) lane value.
///
/// For the SIMD kernels both must equal [`fma_reference`]`(steps)`. The scalar kernel rounds
/// twice per step (separate multiply and add), so its value differs slightly.
pub fn run_fma_kernel(kernel: FmaKernel, level: SimdLevel, steps: u64) -> (f32, f32) {
    let steps = black_box(steps);
    if kernel == FmaKernel::ScalarOneChain || level == SimdLevel::Scalar {
        let x = scalar_one_chain(steps);
        return (x, x);
    }
    // Read only by the SIMD arms, which a wasm32 build has none of.
    #[cfg_attr(target_arch = "wasm32", allow(unused_variables))]
    let many = kernel == FmaKernel::SimdManyChains;
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 if level.is_supported() => {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe {
                if many {
                    x86::fma_avx2::<FMA_CHAINS>(steps)
                } else {
                    x86::fma_avx2::<1>(steps)
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 if level.is_supported() => {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            unsafe {
                if many {
                    x86::fma_avx512::<FMA_CHAINS>(steps)
                } else {
                    x86::fma_avx512::<1>(steps)
                }
            }
        }
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon => {
            // SAFETY: NEON is part of every aarch64 CPU.
            unsafe {
                if many {
                    arm::fma_neon::<FMA_CHAINS>(steps)
                } else {
                    arm::fma_neon::<1>(steps)
                }
            }
        }
        _ => {
            let x = scalar_one_chain(steps);
            (x, x)
        }
    }
}

// ANCHOR: scalar_one_chain
/// The naive kernel: each step needs the previous step's result.
fn scalar_one_chain(steps: u64) -> f32 {
    let (m, a) = (black_box(FMA_M), black_box(FMA_A));
    let mut x = FMA_X0;
    for _ in 0..steps {
        x = x * m + a;
    }
    x
}
// ANCHOR_END: scalar_one_chain

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{FMA_A, FMA_M, FMA_X0};
    use std::arch::x86_64::*;

    // ANCHOR: fma_avx2
    /// `CHAINS` independent 8-lane accumulators, each stepping `x ← x · M + A` in one
    /// `vfmadd` per step. Returns the (min, max) over all lanes.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma_avx2<const CHAINS: usize>(steps: u64) -> (f32, f32) {
        let m = _mm256_set1_ps(FMA_M);
        let a = _mm256_set1_ps(FMA_A);
        let mut acc = [_mm256_set1_ps(FMA_X0); CHAINS];
        for _ in 0..steps {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, m, a);
            }
        }
        let mut lanes = [[0f32; 8]; CHAINS];
        for (out, x) in lanes.iter_mut().zip(acc) {
            // SAFETY: `out` holds exactly 8 f32.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), x) };
        }
        super::min_max(lanes.iter().flatten().copied())
    }
    // ANCHOR_END: fma_avx2

    /// The AVX-512 twin of [`fma_avx2`]: 16 lanes per register.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma_avx512<const CHAINS: usize>(steps: u64) -> (f32, f32) {
        let m = _mm512_set1_ps(FMA_M);
        let a = _mm512_set1_ps(FMA_A);
        let mut acc = [_mm512_set1_ps(FMA_X0); CHAINS];
        for _ in 0..steps {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, m, a);
            }
        }
        let mut lanes = [[0f32; 16]; CHAINS];
        for (out, x) in lanes.iter_mut().zip(acc) {
            // SAFETY: `out` holds exactly 16 f32.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), x) };
        }
        super::min_max(lanes.iter().flatten().copied())
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::{FMA_A, FMA_M, FMA_X0};
    use std::arch::aarch64::*;

    /// The NEON twin of the AVX2 kernel: 4 lanes per register.
    #[target_feature(enable = "neon")]
    pub unsafe fn fma_neon<const CHAINS: usize>(steps: u64) -> (f32, f32) {
        let m = vdupq_n_f32(FMA_M);
        let a = vdupq_n_f32(FMA_A);
        let mut acc = [vdupq_n_f32(FMA_X0); CHAINS];
        for _ in 0..steps {
            for x in acc.iter_mut() {
                // vfmaq_f32(a, b, c) = a + b · c, rounded once.
                *x = vfmaq_f32(a, *x, m);
            }
        }
        let mut lanes = [[0f32; 4]; CHAINS];
        for (out, x) in lanes.iter_mut().zip(acc) {
            // SAFETY: `out` holds exactly 4 f32.
            unsafe { vst1q_f32(out.as_mut_ptr(), x) };
        }
        super::min_max(lanes.iter().flatten().copied())
    }
}

#[allow(dead_code)] // unused on targets without a SIMD kernel
fn min_max(values: impl Iterator<Item = f32>) -> (f32, f32) {
    values.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// Peak FLOP/s of `kernel` at `level` on `threads` threads: every thread runs the kernel for
/// about `target` of wall time, `reps` times; the best repetition counts.
pub fn flops_probe(
    kernel: FmaKernel,
    level: SimdLevel,
    threads: usize,
    target: Duration,
    reps: usize,
) -> Probe {
    let threads = threads.max(1);
    let steps = calibrate_steps(kernel, level, target);
    let flops_per_thread = steps * kernel.flops_per_step(level);
    let barrier = Barrier::new(threads);
    let mut best = f64::INFINITY;
    let mut verified = true;
    let expected = fma_reference(steps);
    let checks_exactly = kernel != FmaKernel::ScalarOneChain && level != SimdLevel::Scalar;

    std::thread::scope(|scope| {
        let workers: Vec<_> = (1..threads)
            .map(|_| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let mut ok = true;
                    for _ in 0..reps.max(1) {
                        barrier.wait();
                        let (lo, hi) = run_fma_kernel(kernel, level, steps);
                        ok &= !checks_exactly || (lo == expected && hi == expected);
                        barrier.wait();
                    }
                    ok
                })
            })
            .collect();
        for _ in 0..reps.max(1) {
            barrier.wait();
            let start = Instant::now();
            let (lo, hi) = run_fma_kernel(kernel, level, steps);
            barrier.wait();
            best = best.min(start.elapsed().as_secs_f64());
            verified &= !checks_exactly || (lo == expected && hi == expected);
        }
        for worker in workers {
            verified &= worker.join().unwrap_or(false);
        }
    });

    let work = flops_per_thread * threads as u64;
    Probe {
        threads,
        work_per_rep: work,
        best_seconds: best,
        rate: work as f64 / best,
        verified,
    }
}

/// Steps that make one kernel run last about `target`.
fn calibrate_steps(kernel: FmaKernel, level: SimdLevel, target: Duration) -> u64 {
    let mut steps = 1u64 << 12;
    loop {
        let start = Instant::now();
        black_box(run_fma_kernel(kernel, level, steps));
        let took = start.elapsed();
        if took >= target / 8 || steps >= 1 << 40 {
            let scale = target.as_secs_f64() / took.as_secs_f64().max(1e-9);
            return ((steps as f64 * scale) as u64).max(1);
        }
        steps *= 4;
    }
}

// ANCHOR: decode_bound
/// Upper bound of decode speed when every byte of the model is read once per token:
/// tokens/s ≤ bandwidth (bytes/s) ÷ bytes read per token.
pub fn decode_bound_tokens_per_s(bandwidth_bytes_per_s: f64, bytes_per_token: u64) -> f64 {
    if bytes_per_token == 0 {
        return f64::INFINITY;
    }
    bandwidth_bytes_per_s / bytes_per_token as f64
}
// ANCHOR_END: decode_bound

/// Arithmetic intensity (FLOP per byte) where the roofline bends: kernels below it are bound
/// by memory, above it by compute.
pub fn ridge_point(peak_flops: f64, bandwidth_bytes_per_s: f64) -> f64 {
    peak_flops / bandwidth_bytes_per_s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triad_computes_b_plus_s_c() {
        let mut a = vec![0.0; 5];
        triad_kernel(&mut a, &[1.0; 5], &[2.0; 5], 3.0);
        assert_eq!(a, vec![7.0; 5]);
    }

    #[test]
    fn triad_probe_verifies_on_every_thread_count() {
        for threads in [1, 2, 3] {
            let p = triad_bandwidth(10_001, threads, 2);
            assert!(p.verified, "{threads} threads");
            assert_eq!(p.work_per_rep, 10_001 * 24);
            assert!(p.rate.is_finite() && p.rate > 0.0);
        }
    }

    #[test]
    fn simd_fma_kernels_match_the_fused_reference_bit_for_bit() {
        let level = SimdLevel::detect();
        for kernel in [FmaKernel::SimdOneChain, FmaKernel::SimdManyChains] {
            for steps in [0, 1, 7, 1000] {
                let (lo, hi) = run_fma_kernel(kernel, level, steps);
                if level == SimdLevel::Scalar {
                    continue;
                }
                assert_eq!((lo, hi), (fma_reference(steps), fma_reference(steps)));
            }
        }
    }

    #[test]
    fn scalar_chain_stays_close_to_the_fused_reference() {
        // Two roundings per step instead of one: the values drift apart, but only slightly.
        let (x, _) = run_fma_kernel(FmaKernel::ScalarOneChain, SimdLevel::Scalar, 10_000);
        let reference = fma_reference(10_000);
        assert!(
            (x - reference).abs() < 1e-3 * reference,
            "{x} vs {reference}"
        );
    }

    #[test]
    fn flops_probe_counts_work_and_verifies() {
        let level = SimdLevel::detect();
        let p = flops_probe(
            FmaKernel::SimdManyChains,
            level,
            2,
            Duration::from_millis(2),
            1,
        );
        assert!(p.verified);
        assert_eq!(
            p.work_per_rep % (2 * FmaKernel::SimdManyChains.flops_per_step(level)),
            0
        );
        assert!(p.rate > 0.0);
    }

    #[test]
    fn decode_bound_is_bandwidth_over_bytes() {
        assert_eq!(decode_bound_tokens_per_s(100.0, 4), 25.0);
        assert!(decode_bound_tokens_per_s(1.0, 0).is_infinite());
    }

    #[test]
    fn triad_arrays_cover_four_caches_within_the_cap() {
        // Whole elements only: the arrays take the target size rounded down to 24 bytes.
        let bytes = |elems: usize| elems as u64 * TRIAD_BYTES_PER_ELEMENT;
        let near = |elems: usize, target: u64| bytes(elems) <= target && bytes(elems) + 24 > target;
        assert!(near(
            triad_elems_for_cache(Some(32 << 20), u64::MAX),
            128 << 20
        ));
        assert!(near(
            triad_elems_for_cache(Some(32 << 20), 24 << 20),
            24 << 20
        ));
        assert!(near(triad_elems_for_cache(None, u64::MAX), 64 << 20));
    }
}
