//! Matrix multiplication of quantized weights by a batch of activation rows, split over the
//! thread pool by blocks of weight rows. Each weight row is read once per call, however many
//! activation rows (tokens) there are: that is what makes prefill and batching cheap.

use super::pool::ThreadPool;
use super::*;
use crate::formats::gguf::cast_slice;
use crate::formats::{GgmlType, TensorView};
use crate::quant::blocks::as_blocks;
use crate::quant::kquants::{BlockQ8K, QK_K, quantize_acts_q8_k};
use crate::quant::quantize::{quantize_acts_q8_0, quantize_acts_q8_1};
use crate::quant::{BlockQ8_0, BlockQ8_1, QK};

/// Why a tensor cannot be used as a weight matrix.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MatrixError {
    #[error(
        "tensor `{name}` has type {ty}, which the kernels do not support (F32, F16, Q8_0, Q5_0, Q4_0, Q4_1, Q6_K, Q5_K, Q4_K)"
    )]
    UnsupportedType { name: String, ty: GgmlType },
    #[error("tensor `{name}` has {dims} dimensions, expected a matrix (2) or vector (1)")]
    NotAMatrix { name: String, dims: usize },
    #[error("tensor `{name}` data is misaligned for its block type")]
    Misaligned { name: String },
    #[error(
        "tensor `{name}`: {bytes} bytes cannot hold {rows} rows of {cols} {ty} values \
         (rows must be whole blocks of {block})"
    )]
    BadSize {
        name: String,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        bytes: usize,
        block: u64,
    },
}

// ANCHOR: qmatrix
/// A weight matrix of `rows` × `cols` in one of the supported formats, borrowed zero-copy
/// from the model file. Row r is `row_bytes` bytes at `r * row_bytes`.
#[derive(Clone, Copy)]
pub struct QMatrix<'a> {
    pub name: &'a str,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub row_bytes: usize,
    data: &'a [u8],
}
// ANCHOR_END: qmatrix

impl<'a> QMatrix<'a> {
    /// Whether the kernels multiply weights of type `ty`.
    pub fn supports(ty: GgmlType) -> bool {
        matches!(
            ty,
            GgmlType::F32
                | GgmlType::F16
                | GgmlType::Q8_0
                | GgmlType::Q5_0
                | GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q6_K
                | GgmlType::Q5_K
                | GgmlType::Q4_K
        )
    }

    /// Wraps a tensor of the model file.
    pub fn from_view(view: TensorView<'a>) -> Result<QMatrix<'a>, MatrixError> {
        let name = view.info.name.as_str();
        let ty = view.info.ggml_type;
        if !Self::supports(ty) {
            return Err(MatrixError::UnsupportedType {
                name: name.into(),
                ty,
            });
        }
        let dims = view.info.dims.len();
        if dims > 2 {
            return Err(MatrixError::NotAMatrix {
                name: name.into(),
                dims,
            });
        }
        QMatrix {
            name,
            ty,
            rows: view.n_rows(),
            cols: view.row_len(),
            row_bytes: view.row_bytes(),
            data: view.data,
        }
        .checked()
    }

    /// A matrix over `data`, laid out as in a model file: `rows` rows of `cols` values of
    /// type `ty`, each row whole blocks (a shard's copy of a slice of a file's matrix).
    pub fn from_parts(
        name: &'a str,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: &'a [u8],
    ) -> Result<QMatrix<'a>, MatrixError> {
        if !Self::supports(ty) {
            return Err(MatrixError::UnsupportedType {
                name: name.into(),
                ty,
            });
        }
        let block = ty.block_size();
        let row_bytes = (cols as u64 / block * ty.type_size()) as usize;
        if !(cols as u64).is_multiple_of(block) || rows.checked_mul(row_bytes) != Some(data.len()) {
            return Err(MatrixError::BadSize {
                name: name.into(),
                ty,
                rows,
                cols,
                bytes: data.len(),
                block,
            });
        }
        QMatrix {
            name,
            ty,
            rows,
            cols,
            row_bytes,
            data,
        }
        .checked()
    }

    /// `self`, if every row can be viewed as blocks.
    fn checked(self) -> Result<QMatrix<'a>, MatrixError> {
        let (m, name) = (self, self.name);
        // Check once that every row can be viewed as blocks, so `row` never fails later.
        let aligned = match m.ty {
            GgmlType::F32 => cast_slice::<f32>(m.data).is_some(),
            GgmlType::F16 => cast_slice::<u16>(m.data).is_some(),
            _ => cast_slice::<u16>(m.data).is_some() && m.row_bytes.is_multiple_of(2),
        };
        if !aligned {
            return Err(MatrixError::Misaligned { name: name.into() });
        }
        Ok(m)
    }

    /// The bytes of row `r`.
    pub fn row(&self, r: usize) -> &'a [u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Row `r` as f32 (dequantized): the embedding lookup.
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        use crate::quant::quantize::*;
        let bytes = self.row(r);
        match self.ty {
            GgmlType::F32 => out.copy_from_slice(cast_slice(bytes).unwrap_or(&[])),
            GgmlType::F16 => dequantize_f16(cast_slice(bytes).unwrap_or(&[]), out),
            GgmlType::Q8_0 => dequantize_q8_0(blocks(bytes), out),
            GgmlType::Q4_0 => dequantize_q4_0(blocks(bytes), out),
            GgmlType::Q4_1 => dequantize_q4_1(blocks(bytes), out),
            GgmlType::Q5_0 => crate::quant::q5_0::dequantize_q5_0(blocks(bytes), out),
            GgmlType::Q6_K => crate::quant::kquants::dequantize_q6_k(blocks(bytes), out),
            GgmlType::Q5_K => crate::quant::kquants::dequantize_q5_k(blocks(bytes), out),
            GgmlType::Q4_K => crate::quant::kquants::dequantize_q4_k(blocks(bytes), out),
            _ => unreachable!("checked in from_view"),
        }
    }

    /// The activation format this matrix's dot product wants.
    pub fn act_format(&self) -> ActFormat {
        match self.ty {
            GgmlType::Q8_0 | GgmlType::Q5_0 | GgmlType::Q4_0 => ActFormat::Q8_0,
            GgmlType::Q4_1 => ActFormat::Q8_1,
            GgmlType::Q6_K | GgmlType::Q5_K | GgmlType::Q4_K => ActFormat::Q8K,
            _ => ActFormat::F32,
        }
    }
}

/// Blocks of a row whose alignment `from_view` checked.
fn blocks<T: crate::formats::gguf::Pod>(bytes: &[u8]) -> &[T] {
    as_blocks(bytes).unwrap_or(&[])
}

/// How activations are stored for a dot product (as llama.cpp pairs them: 8-bit activations
/// for quantized weights make the inner loop an integer dot product).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActFormat {
    F32,
    Q8_0,
    Q8_1,
    /// 256 per block, for the K-quants.
    Q8K,
}

// ANCHOR: acts
/// `n` rows of activations, each `cols` long, in the format a weight type wants.
pub enum Acts {
    F32 { x: Vec<f32>, cols: usize },
    Q8_0 { blocks: Vec<BlockQ8_0>, cols: usize },
    Q8_1 { blocks: Vec<BlockQ8_1>, cols: usize },
    Q8K { blocks: Vec<BlockQ8K>, cols: usize },
}

impl Acts {
    /// Quantizes `x` (rows of `cols` floats) to `format`. `cols` must be a multiple of 32 for
    /// the 8-bit formats (every quantized weight row is).
    pub fn new(format: ActFormat, x: &[f32], cols: usize) -> Acts {
        match format {
            ActFormat::F32 => Acts::F32 {
                x: x.to_vec(),
                cols,
            },
            ActFormat::Q8_0 => Acts::Q8_0 {
                blocks: quantize_acts_q8_0(x),
                cols,
            },
            ActFormat::Q8_1 => Acts::Q8_1 {
                blocks: quantize_acts_q8_1(x),
                cols,
            },
            ActFormat::Q8K => Acts::Q8K {
                blocks: quantize_acts_q8_k(x),
                cols,
            },
        }
    }
}
// ANCHOR_END: acts

/// One matrix product of a batch: `out[t * w.rows + r] = w[r] · acts[t]` for `n` rows of acts.
pub struct Matmul<'a, 'w> {
    pub w: &'a QMatrix<'w>,
    pub acts: &'a Acts,
    pub out: &'a mut [f32],
}

/// Weight rows per task: small enough to balance two threads on a 576-row matrix, large
/// enough that claiming a task costs nothing next to computing it.
const ROWS_PER_TASK: usize = 32;

/// The most rows one panel call takes (a multiple of 4).
const PANEL_ROWS: usize = 32;

/// A pointer that threads may share because each task writes disjoint elements.
#[derive(Clone, Copy)]
struct SharedOut {
    ptr: *mut f32,
    len: usize,
}
// SAFETY: tasks write disjoint indices (distinct weight rows), and `run` returns only after
// every task has finished, while the `&mut` borrow of the output is still alive.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Writes `value` at `index`.
    ///
    /// # Safety
    /// `index < len`, and no other thread writes the same index during the job.
    unsafe fn write(self, index: usize, value: f32) {
        debug_assert!(index < self.len);
        // SAFETY: guaranteed by the caller.
        unsafe { *self.ptr.add(index) = value };
    }
}

// ANCHOR: matmul
/// Runs several products (e.g. Q, K and V, which share their input) as one pool job.
pub fn matmul_many(pool: &ThreadPool, products: &mut [Matmul<'_, '_>]) {
    let tasks_of = |m: &Matmul| m.w.rows.div_ceil(ROWS_PER_TASK);
    let starts: Vec<usize> = products
        .iter()
        .scan(0, |acc, m| {
            let start = *acc;
            *acc += tasks_of(m);
            Some(start)
        })
        .collect();
    let total: usize = products.iter().map(tasks_of).sum();
    let outs: Vec<SharedOut> = products
        .iter_mut()
        .map(|m| SharedOut {
            ptr: m.out.as_mut_ptr(),
            len: m.out.len(),
        })
        .collect();
    let products: &[Matmul] = products;
    pool.run(total, &|task| {
        let which = starts.partition_point(|&s| s <= task) - 1;
        let m = &products[which];
        let first = (task - starts[which]) * ROWS_PER_TASK;
        let rows = first..(first + ROWS_PER_TASK).min(m.w.rows);
        product_rows(m.w, m.acts, rows, outs[which]);
    });
}
// ANCHOR_END: matmul

/// `out[t][r] = w[r] · acts[t]` for the rows `rows`, every token `t`: picks the kernel once,
/// then runs it row by row.
fn product_rows(w: &QMatrix, acts: &Acts, rows: std::ops::Range<usize>, out: SharedOut) {
    let level = simd();
    match (w.ty, acts) {
        (GgmlType::Q4_1, Acts::Q8_1 { blocks: a, cols }) => rows_by(
            blocks(w.data),
            a,
            cols / QK,
            w.rows,
            rows,
            out,
            q4_1_q8_1_kernel(level),
            q4_1_q8_1_kernel4(level),
            q4_1_q8_1_tile(level),
        ),
        (GgmlType::Q4_0, Acts::Q8_0 { blocks: a, cols }) => rows_by(
            blocks(w.data),
            a,
            cols / QK,
            w.rows,
            rows,
            out,
            q4_0_q8_0_kernel(level),
            q4_0_q8_0_kernel4(level),
            None,
        ),
        (GgmlType::Q8_0, Acts::Q8_0 { blocks: a, cols }) => rows_by(
            blocks(w.data),
            a,
            cols / QK,
            w.rows,
            rows,
            out,
            q8_0_q8_0_kernel(level),
            q8_0_q8_0_kernel4(level),
            q8_0_q8_0_tile(level),
        ),
        (GgmlType::F16, Acts::F32 { x, cols }) => rows_by(
            cast_slice(w.data).unwrap_or(&[]),
            x,
            *cols,
            w.rows,
            rows,
            out,
            f16_f32_kernel(level),
            f16_f32_kernel4(level),
            None,
        ),
        (GgmlType::F32, Acts::F32 { x, cols }) => rows_by(
            cast_slice(w.data).unwrap_or(&[]),
            x,
            *cols,
            w.rows,
            rows,
            out,
            f32_kernel(level),
            f32_kernel4(level),
            None,
        ),
        (GgmlType::Q5_0, Acts::Q8_0 { blocks: a, cols }) => rows_by(
            blocks(w.data),
            a,
            cols / QK,
            w.rows,
            rows,
            out,
            q5_0_q8_0_kernel(level),
            q5_0_q8_0_kernel4(level),
            None,
        ),
        (GgmlType::Q6_K, Acts::Q8K { blocks: a, cols }) => rows_by(
            blocks(w.data),
            a,
            cols / QK_K,
            w.rows,
            rows,
            out,
            q6_k_q8_k_kernel(level),
            q6_k_q8_k_kernel4(level),
            None,
        ),
        (GgmlType::Q5_K, Acts::Q8K { blocks: a, cols }) => rows_by(
            blocks(w.data),
            a,
            cols / QK_K,
            w.rows,
            rows,
            out,
            q5_k_q8_k_kernel(level),
            q5_k_q8_k_kernel4(level),
            None,
        ),
        (GgmlType::Q4_K, Acts::Q8K { blocks: a, cols }) => rows_by(
            blocks(w.data),
            a,
            cols / QK_K,
            w.rows,
            rows,
            out,
            q4_k_q8_k_kernel(level),
            q4_k_q8_k_kernel4(level),
            None,
        ),
        (ty, _) => {
            panic!("activations of the wrong format for a {ty} matrix: use QMatrix::act_format")
        }
    }
}

/// The row loop: `per_row` weight elements (or blocks) per row, as many per activation row.
/// Rows go through `tile` where the format has one: panels of up to [`PANEL_ROWS`] rows (four
/// at a time inside), several tokens per call; else four at a time through `dot4`, token by
/// token; the rest one at a time through `dot`. All give the same bits for a (row, token).
#[allow(clippy::too_many_arguments)]
fn rows_by<W, A>(
    weights: &[W],
    acts: &[A],
    per_row: usize,
    n_rows: usize,
    rows: std::ops::Range<usize>,
    out: SharedOut,
    dot: Dot<W, A>,
    dot4: Dot4<W, A>,
    tile: Option<Tile<W, A>>,
) {
    let n_tok = out.len / n_rows;
    let row = |r: usize| &weights[r * per_row..(r + 1) * per_row];
    let act = |t: usize| &acts[t * per_row..(t + 1) * per_row];
    let mut r = rows.start;
    if let Some(tile) = tile {
        // Panels of up to PANEL_ROWS rows (a multiple of 4), T tokens at a time.
        let mut values = [0.0f32; PANEL_ROWS * TILE_MAX_TOKENS];
        while r + 4 <= rows.end {
            let g = (rows.end - r).min(PANEL_ROWS) / 4 * 4;
            let panel = &weights[r * per_row..(r + g) * per_row];
            let mut t = 0;
            while t < n_tok {
                let c = (n_tok - t).min(tile.tokens);
                let out_tc = &mut values[..c * g];
                let a = &acts[t * per_row..(t + c) * per_row];
                (tile.panel)(panel, per_row, a, out_tc, t == 0);
                for j in 0..c {
                    for i in 0..g {
                        // SAFETY: t + j < n_tok and r + i < n_rows, so the index is inside
                        // the output, and only the task that owns these rows writes them.
                        unsafe { out.write((t + j) * n_rows + r + i, out_tc[j * g + i]) };
                    }
                }
                t += c;
            }
            r += g;
        }
    }
    while r + 4 <= rows.end {
        let group = [row(r), row(r + 1), row(r + 2), row(r + 3)];
        for t in 0..n_tok {
            let four = dot4(group, act(t));
            for (i, &value) in four.iter().enumerate() {
                // SAFETY: as above.
                unsafe { out.write(t * n_rows + r + i, value) };
            }
        }
        r += 4;
    }
    for r in r..rows.end {
        for t in 0..n_tok {
            // SAFETY: as above.
            unsafe { out.write(t * n_rows + r, dot(row(r), act(t))) };
        }
    }
}

/// One product; see [`matmul_many`].
pub fn matmul(pool: &ThreadPool, w: &QMatrix<'_>, acts: &Acts, out: &mut [f32]) {
    matmul_many(pool, &mut [Matmul { w, acts, out }]);
}
