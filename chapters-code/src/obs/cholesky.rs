//! From a damped Hessian `H` (`n × n`, symmetric positive definite) to `U`, the upper Cholesky
//! factor of `H⁻¹` (`H⁻¹ = UᵀU`), in f64 for the factorizations and f32 for the sweep:
//!
//! 1. `H = L Lᵀ` (Cholesky, lower `L`);
//! 2. `L⁻¹`, by forward substitution, one column per task;
//! 3. `H⁻¹ = L⁻ᵀ L⁻¹`;
//! 4. `H⁻¹ = L₂ L₂ᵀ` (Cholesky again), and `U = L₂ᵀ`.
//!
//! About `n³` multiply-adds in all.

use super::ObsError;
use crate::kernels::pool::ThreadPool;
use std::sync::Mutex;

/// `U` of `H⁻¹ = UᵀU`, row-major f32, and the channels no calibration token used (their
/// weights carry no information about the output: the sweep zeroes them, as GPTQ does).
pub struct InverseFactor {
    pub n: usize,
    pub u: Vec<f32>,
    pub dead: Vec<bool>,
}

impl InverseFactor {
    pub fn new(
        pool: &ThreadPool,
        h: Vec<f64>,
        n: usize,
        dead: Vec<bool>,
    ) -> Result<InverseFactor, ObsError> {
        let l = cholesky(pool, h, n)?;
        let inv_t = lower_inverse_transposed(pool, &l, n);
        let h_inv = inverse_from_factor(pool, &inv_t, n);
        let l2 = cholesky(pool, h_inv, n)?;
        let mut u = vec![0.0f32; n * n];
        for i in 0..n {
            for j in 0..=i {
                u[j * n + i] = l2[i * n + j] as f32;
            }
        }
        Ok(InverseFactor { n, u, dead })
    }

    /// `U[j, j]`: how freely column `j` can move once the columns before it are fixed.
    pub fn diag(&self, j: usize) -> f32 {
        self.u[j * self.n + j]
    }

    /// `U[j, j..]`.
    pub fn row(&self, j: usize) -> &[f32] {
        &self.u[j * self.n + j..(j + 1) * self.n]
    }
}

crate::multiversion! {
/// `Σ a·b` in f64, summed in 4 lanes (a vector register of f64) and then across them.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let whole = n / 4 * 4;
    let mut acc = [0.0f64; 4];
    for (x, y) in a[..whole].chunks_exact(4).zip(b[..whole].chunks_exact(4)) {
        for l in 0..4 {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for i in whole..n {
        s = a[i].mul_add(b[i], s);
    }
    s
}
}

/// Rows `from..` of an `n`-wide matrix as one task-sized `Mutex` each (disjoint writes).
fn row_tasks(m: &mut [f64], n: usize, from: usize, per_task: usize) -> Vec<Mutex<&mut [f64]>> {
    m[from * n..]
        .chunks_mut(per_task * n)
        .map(Mutex::new)
        .collect()
}

/// Lower `L` with `a = L Lᵀ` (row-major; the upper triangle is zeroed), column by column:
/// `L[j][j] = √(a[j][j] − Σ_k L[j][k]²)`, then every row below, in parallel,
/// `L[i][j] = (a[i][j] − Σ_{k<j} L[i][k] L[j][k]) / L[j][j]`.
pub fn cholesky(pool: &ThreadPool, mut a: Vec<f64>, n: usize) -> Result<Vec<f64>, ObsError> {
    for j in 0..n {
        let pivot = a[j * n + j] - dot(&a[j * n..j * n + j], &a[j * n..j * n + j]);
        // A NaN pivot fails too.
        if pivot.is_nan() || pivot <= 0.0 {
            return Err(ObsError::NotPositiveDefinite(j));
        }
        let d = pivot.sqrt();
        a[j * n + j] = d;
        for k in j + 1..n {
            a[j * n + k] = 0.0;
        }
        if j + 1 == n {
            break;
        }
        let row_j: Vec<f64> = a[j * n..j * n + j].to_vec();
        let per_task = (n - j - 1).div_ceil(4 * pool.n_threads()).max(16);
        let tasks = row_tasks(&mut a, n, j + 1, per_task);
        pool.run(tasks.len(), &|t| {
            let mut rows = tasks[t].lock().unwrap_or_else(|e| e.into_inner());
            for row in rows.chunks_exact_mut(n) {
                row[j] = (row[j] - dot(&row[..j], &row_j)) / d;
            }
        });
    }
    Ok(a)
}

/// `(L⁻¹)ᵀ` for lower `L`: column `j` of `L⁻¹` solves `L x = e_j` by forward substitution
/// (`x_i = 0` for `i < j`); it is stored as row `j` of the result, so that the result is upper
/// triangular and every task writes its own rows.
fn lower_inverse_transposed(pool: &ThreadPool, l: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; n * n];
    let per_task = n.div_ceil(8 * pool.n_threads()).max(1);
    let tasks = row_tasks(&mut out, n, 0, per_task);
    pool.run(tasks.len(), &|t| {
        let mut rows = tasks[t].lock().unwrap_or_else(|e| e.into_inner());
        for (r, x) in rows.chunks_exact_mut(n).enumerate() {
            let j = t * per_task + r;
            x[j] = 1.0 / l[j * n + j];
            for i in j + 1..n {
                x[i] = -dot(&l[i * n + j..i * n + i], &x[j..i]) / l[i * n + i];
            }
        }
    });
    out
}

/// `H⁻¹ = L⁻ᵀ L⁻¹` from `m = (L⁻¹)ᵀ` (upper): `H⁻¹[i][k] = Σ_r L⁻¹[r][i] L⁻¹[r][k]
/// = Σ_{r ≥ max(i,k)} m[i][r] m[k][r]`, a dot product of two rows of `m`.
fn inverse_from_factor(pool: &ThreadPool, m: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; n * n];
    let per_task = n.div_ceil(8 * pool.n_threads()).max(1);
    let tasks = row_tasks(&mut out, n, 0, per_task);
    pool.run(tasks.len(), &|t| {
        let mut rows = tasks[t].lock().unwrap_or_else(|e| e.into_inner());
        for (r, row) in rows.chunks_exact_mut(n).enumerate() {
            let i = t * per_task + r;
            for (k, v) in row.iter_mut().enumerate() {
                let from = i.max(k);
                *v = dot(&m[i * n + from..(i + 1) * n], &m[k * n + from..(k + 1) * n]);
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::Rng;

    /// A random symmetric positive definite matrix: `A Aᵀ + n·I`.
    fn spd(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = Rng::new(seed);
        let a: Vec<f64> = (0..n * n)
            .map(|_| f64::from(rng.next_f32()) - 0.5)
            .collect();
        let mut h = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                h[i * n + j] = (0..n).map(|k| a[i * n + k] * a[j * n + k]).sum::<f64>();
            }
            h[i * n + i] += n as f64 * 0.1;
        }
        h
    }

    fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
        let mut c = vec![0.0; n * n];
        for i in 0..n {
            for k in 0..n {
                for j in 0..n {
                    c[i * n + j] += a[i * n + k] * b[k * n + j];
                }
            }
        }
        c
    }

    fn transpose(a: &[f64], n: usize) -> Vec<f64> {
        (0..n * n).map(|x| a[(x % n) * n + x / n]).collect()
    }

    #[test]
    fn the_factor_times_its_transpose_inverts_the_hessian() {
        let pool = ThreadPool::new(2);
        for n in [1, 2, 5, 17, 64] {
            let h = spd(n, n as u64);
            let l = cholesky(&pool, h.clone(), n).unwrap();
            let llt = matmul(&l, &transpose(&l, n), n);
            for (a, b) in llt.iter().zip(&h) {
                assert!((a - b).abs() < 1e-9 * (1.0 + b.abs()), "L Lᵀ = H ({n})");
            }
            let f = InverseFactor::new(&pool, h.clone(), n, vec![false; n]).unwrap();
            let u: Vec<f64> = f.u.iter().map(|&x| f64::from(x)).collect();
            for i in 0..n {
                for j in 0..i {
                    assert_eq!(u[i * n + j], 0.0, "U is upper triangular");
                }
            }
            // (UᵀU) H = I.
            let prod = matmul(&matmul(&transpose(&u, n), &u, n), &h, n);
            for i in 0..n {
                for j in 0..n {
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!(
                        (prod[i * n + j] - want).abs() < 1e-4,
                        "n = {n} [{i},{j}]: {}",
                        prod[i * n + j]
                    );
                }
            }
        }
    }

    #[test]
    fn an_indefinite_matrix_is_refused_with_its_column() {
        let pool = ThreadPool::new(1);
        let h = vec![1.0, 2.0, 2.0, 1.0]; // eigenvalues 3 and −1
        assert_eq!(
            cholesky(&pool, h, 2).err(),
            Some(ObsError::NotPositiveDefinite(1))
        );
    }
}
