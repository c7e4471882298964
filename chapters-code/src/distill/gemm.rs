//! The f32 matrix products of training. A forward pass multiplies activations by weights; the
//! backward pass needs the same weights transposed (for the input's gradient) and the
//! activations transposed (for the weights' gradient) — three layouts of one product, which
//! a BLAS-style `sgemm` takes as strides. We call the `matrixmultiply` crate's (packing and
//! register tiles in the BLIS style, AVX2/FMA chosen at run time) and split the output's rows
//! over our thread pool; [`gemm_naive`] is the reference the tests hold it to.

use crate::kernels::pool::ThreadPool;

/// How an operand is stored: as the product reads it, or transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Row-major as used: `rows × cols`.
    N,
    /// Stored row-major as `cols × rows`, used transposed.
    T,
}

/// Row and column strides of an operand that the product reads as `rows × cols`.
fn strides(op: Op, rows: usize, cols: usize) -> (isize, isize) {
    match op {
        Op::N => (cols as isize, 1),
        Op::T => (1, rows as isize),
    }
}

// ANCHOR: gemm
/// `c = a·b + beta·c`, row-major `c` of `m × n`; `a` is read as `m × k` and `b` as `k × n`,
/// each stored as its [`Op`] says. `beta` 0 overwrites `c`, 1 accumulates (gradients).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    pool: &ThreadPool,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    op_a: Op,
    b: &[f32],
    op_b: Op,
    beta: f32,
    c: &mut [f32],
) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "gemm shapes"
    );
    let (rsa, csa) = strides(op_a, m, k);
    let (rsb, csb) = strides(op_b, k, n);
    // Rows of `c` in slices of at least 16, one slice per task: every task packs `b` again,
    // which costs little next to its share of the product.
    let tasks = pool.n_threads().min(m.div_ceil(16)).max(1);
    let per = m.div_ceil(tasks);
    let c_ptr = SharedOut(c.as_mut_ptr());
    let run = |t: usize| {
        let (r0, r1) = (t * per, ((t + 1) * per).min(m));
        if r0 >= r1 {
            return;
        }
        let a_at = r0 as isize * rsa;
        // SAFETY: `a`, `b` and `c` hold the extents asserted above; the strides stay inside
        // them; each task writes only rows r0..r1 of `c`, disjoint from every other task's.
        unsafe {
            matrixmultiply::sgemm(
                r1 - r0,
                k,
                n,
                1.0,
                a.as_ptr().offset(a_at),
                rsa,
                csa,
                b.as_ptr(),
                rsb,
                csb,
                beta,
                c_ptr.at(r0 * n),
                n as isize,
                1,
            );
        }
    };
    pool.run(tasks, &run);
}
// ANCHOR_END: gemm

/// The output pointer, shared by tasks that write disjoint rows.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: tasks write disjoint ranges through it (see `gemm`).
unsafe impl Sync for SharedOut {}
unsafe impl Send for SharedOut {}
impl SharedOut {
    fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: callers stay inside the slice the pointer came from.
        unsafe { self.0.add(offset) }
    }
}

/// The same product, one multiply-add at a time in f64: the reference.
#[allow(clippy::too_many_arguments)]
pub fn gemm_naive(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    op_a: Op,
    b: &[f32],
    op_b: Op,
    beta: f32,
    c: &mut [f32],
) {
    let (rsa, csa) = strides(op_a, m, k);
    let (rsb, csb) = strides(op_b, k, n);
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                let x = a[i * rsa as usize + p * csa as usize];
                let y = b[p * rsb as usize + j * csb as usize];
                s += f64::from(x) * f64::from(y);
            }
            let old = if beta == 0.0 {
                0.0
            } else {
                beta * c[i * n + j]
            };
            c[i * n + j] = (s as f32) + old;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::wave;

    #[test]
    fn every_layout_matches_the_reference() {
        let pool = ThreadPool::new(2);
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (17, 64, 33), (130, 96, 40)] {
            for op_a in [Op::N, Op::T] {
                for op_b in [Op::N, Op::T] {
                    for beta in [0.0f32, 1.0] {
                        let a = wave(m * k, 1);
                        let b = wave(k * n, 2);
                        let mut c = wave(m * n, 3);
                        let mut expected = c.clone();
                        gemm(&pool, m, k, n, &a, op_a, &b, op_b, beta, &mut c);
                        gemm_naive(m, k, n, &a, op_a, &b, op_b, beta, &mut expected);
                        for (x, y) in c.iter().zip(&expected) {
                            assert!(
                                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                                "{m}×{k}×{n} {op_a:?}{op_b:?} beta {beta}: {x} vs {y}"
                            );
                        }
                    }
                }
            }
        }
    }
}
