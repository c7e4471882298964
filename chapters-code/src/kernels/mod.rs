//! Dot products and matrix multiplication over quantized weights: one scalar reference per
//! format, SIMD paths chosen at run time (AVX2 on x86_64, NEON on aarch64 for Q4_0, Q4_1,
//! Q8_0 and f32), each tested against the reference; and a matmul that splits rows over a
//! pool of parked threads.

pub mod fma;
pub mod ggml_exp;
pub mod gram;
pub mod matmul;
pub mod multiversion;
pub mod pool;
pub mod scalar;
pub mod sparse24;

// Safety contract of every function in these two modules, stated once in their module docs:
// call only on a CPU with the named extensions (the dispatchers below check).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::missing_safety_doc)]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
#[allow(clippy::missing_safety_doc)]
pub mod avx2_kquants;
#[cfg(target_arch = "x86_64")]
#[allow(clippy::missing_safety_doc)]
pub mod avx2_nf4;
#[cfg(target_arch = "aarch64")]
#[allow(clippy::missing_safety_doc)]
pub mod neon;
#[cfg(target_arch = "x86_64")]
#[allow(clippy::missing_safety_doc)]
pub mod tile;
#[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
pub mod wasm_relaxed;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub mod wasm_simd128;

#[cfg(test)]
mod tests;
#[cfg(all(test, target_arch = "x86_64"))]
mod tile_tests;

use crate::hw::SimdLevel;
use crate::quant::kquants::{BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};
use crate::quant::nf4::BlockNf4;
use crate::quant::q5_0::BlockQ5_0;
use crate::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};
use std::sync::OnceLock;

/// The SIMD tier every kernel uses in this process (detected once; `PRODML_SIMD` lowers it).
pub fn simd() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(SimdLevel::detect)
}

/// The SIMD tier the kernels really run on this CPU: [`simd`] mapped to the kernels that exist
/// (an AVX-512 CPU runs the AVX2 kernels, and VNNI tiles where it has VNNI: see
/// [`path_summary`]). Report this, not [`simd`], as the path taken.
pub fn simd_path() -> SimdLevel {
    path(simd())
}

/// The kernels this process runs, in words: the tier of [`simd_path`], then the batched tiles
/// where they use other instructions (`avx2 + avx512-vnni tiles`). Provenance records this.
pub fn path_summary() -> String {
    let level = simd();
    match tile_path(level) {
        TilePath::Vnni => format!("{} + {} tiles", path(level).name(), TilePath::Vnni.name()),
        _ => path(level).name().to_string(),
    }
}

/// The tier a kernel really runs at `level`: AVX-512 machines run the AVX2 kernels (this book
/// has no AVX-512 kernels yet: the machines it was written on could not test them).
fn path(level: SimdLevel) -> SimdLevel {
    match level {
        SimdLevel::Avx512 => SimdLevel::Avx2,
        other => other,
    }
}

macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident, $kernel:ident($wt:ty, $at:ty)) => {
        $(#[$doc])*
        /// The function for `level`, chosen once; call it for every row.
        pub fn $kernel(level: SimdLevel) -> fn($wt, $at) -> f32 {
            match path(level) {
                #[cfg(target_arch = "x86_64")]
                SimdLevel::Avx2 if level.is_supported() => {
                    fn simd(w: $wt, a: $at) -> f32 {
                        // SAFETY: this function is only handed out after checking that the CPU
                        // has AVX2, FMA and F16C (`is_supported` above).
                        unsafe { avx2::$name(w, a) }
                    }
                    simd
                }
                #[cfg(target_arch = "aarch64")]
                SimdLevel::Neon => {
                    fn simd(w: $wt, a: $at) -> f32 {
                        // SAFETY: NEON is part of every aarch64 CPU.
                        unsafe { neon::$name(w, a) }
                    }
                    simd
                }
                // A wasm32 module built with simd128 runs only where the engine has it.
                #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
                _ => wasm_simd128::$name,
                #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
                _ => scalar::$name,
            }
        }

        $(#[$doc])*
        pub fn $name(level: SimdLevel, w: $wt, a: $at) -> f32 {
            $kernel(level)(w, a)
        }
    };
}

dispatch!(
    /// Q4_1 weights · Q8_1 activations.
    dot_q4_1_q8_1, q4_1_q8_1_kernel(&[BlockQ4_1], &[BlockQ8_1])
);
/// A kernel with an AVX2 path and the scalar reference elsewhere (no NEON path: aarch64 runs
/// the scalar reference).
macro_rules! avx2_or_scalar {
    ($(#[$doc:meta])* $kernel:ident, $name:ident($wt:ty, $at:ty)) => {
        avx2_or_scalar!($(#[$doc])* $kernel, avx2::$name($wt, $at));
    };
    ($(#[$doc:meta])* $kernel:ident, $module:ident::$name:ident($wt:ty, $at:ty)) => {
        $(#[$doc])*
        /// The function for `level`, chosen once; call it for every row.
        pub fn $kernel(level: SimdLevel) -> Dot<$wt, $at> {
            match path(level) {
                #[cfg(target_arch = "x86_64")]
                SimdLevel::Avx2 if level.is_supported() => {
                    fn simd(w: &[$wt], a: &[$at]) -> f32 {
                        // SAFETY: handed out only after the AVX2/FMA/F16C check above.
                        unsafe { $module::$name(w, a) }
                    }
                    simd
                }
                _ => scalar::$name,
            }
        }
    };
}

avx2_or_scalar!(
    /// Q4_1 weights · f32 activations.
    q4_1_f32_kernel, dot_q4_1_f32(BlockQ4_1, f32)
);

dispatch!(
    /// Q4_0 weights · Q8_0 activations.
    dot_q4_0_q8_0, q4_0_q8_0_kernel(&[BlockQ4_0], &[BlockQ8_0])
);
dispatch!(
    /// Q8_0 weights · Q8_0 activations.
    dot_q8_0_q8_0, q8_0_q8_0_kernel(&[BlockQ8_0], &[BlockQ8_0])
);
dispatch!(
    /// f32 · f32.
    dot_f32, f32_kernel(&[f32], &[f32])
);

avx2_or_scalar!(
    /// Q5_0 weights · Q8_0 activations.
    q5_0_q8_0_kernel, dot_q5_0_q8_0(BlockQ5_0, BlockQ8_0)
);

/// A dot product of one weight row with one activation row.
pub type Dot<W, A> = fn(&[W], &[A]) -> f32;

/// A dot product over four weight rows at once, against one activation row.
pub type Dot4<W, A> = fn([&[W]; 4], &[A]) -> [f32; 4];

macro_rules! four_rows {
    ($(#[$doc:meta])* $kernel4:ident, $name:ident, $kernel:ident($wt:ty, $at:ty) $(, $module:ident::$simd4:ident)? $(; wasm $wasm4:ident)?) => {
        $(#[$doc])*
        /// Every row's result is exactly what the one-row kernel of `level` gives.
        #[cfg_attr(target_arch = "wasm32", allow(unreachable_code))] // the simd128 return
        pub fn $kernel4(level: SimdLevel) -> Dot4<$wt, $at> {
            $(
                // A wasm32 module built with simd128 runs only where the engine has it.
                #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
                {
                    let _ = level;
                    return wasm_simd128::$wasm4;
                }
            )?
            $(
                #[cfg(target_arch = "x86_64")]
                if path(level) == SimdLevel::Avx2 && level.is_supported() {
                    fn simd(w: [&[$wt]; 4], a: &[$at]) -> [f32; 4] {
                        // SAFETY: handed out only after the AVX2/FMA/F16C check above.
                        unsafe { $module::$simd4(w, a) }
                    }
                    return simd;
                }
            )?
            // Without a four-row kernel: the one-row kernel, four times.
            match path(level) {
                #[cfg(target_arch = "x86_64")]
                SimdLevel::Avx2 if level.is_supported() => |w, a| {
                    let one = $kernel(SimdLevel::Avx2);
                    w.map(|row| one(row, a))
                },
                #[cfg(target_arch = "aarch64")]
                SimdLevel::Neon => |w, a| {
                    let one = $kernel(SimdLevel::Neon);
                    w.map(|row| one(row, a))
                },
                // The scalar reference, or on wasm32 with simd128 its simd128 path where one
                // exists (the one-row dispatcher picks it).
                _ => |w, a| {
                    let one = $kernel(SimdLevel::Scalar);
                    w.map(|row| one(row, a))
                },
            }
        }
    };
}

four_rows!(
    /// Four Q4_1 rows · Q8_1 activations.
    q4_1_q8_1_kernel4, dot_q4_1_q8_1, q4_1_q8_1_kernel(BlockQ4_1, BlockQ8_1), avx2::dot_q4_1_q8_1_x4_scales; wasm dot_q4_1_q8_1_x4
);
four_rows!(
    /// Four Q8_0 rows · Q8_0 activations.
    q8_0_q8_0_kernel4, dot_q8_0_q8_0, q8_0_q8_0_kernel(BlockQ8_0, BlockQ8_0), avx2::dot_q8_0_q8_0_x4; wasm dot_q8_0_q8_0_x4
);
four_rows!(
    /// Four Q4_0 rows · Q8_0 activations.
    q4_0_q8_0_kernel4, dot_q4_0_q8_0, q4_0_q8_0_kernel(BlockQ4_0, BlockQ8_0)
);
four_rows!(
    /// Four Q5_0 rows · Q8_0 activations.
    q5_0_q8_0_kernel4, dot_q5_0_q8_0, q5_0_q8_0_kernel(BlockQ5_0, BlockQ8_0)
);
four_rows!(
    /// Four f32 rows · f32 activations.
    f32_kernel4, dot_f32, f32_kernel(f32, f32)
);
four_rows!(
    /// Four f16 rows · f32 activations.
    f16_f32_kernel4, dot_f16_f32, f16_f32_kernel(u16, f32)
);

avx2_or_scalar!(
    /// NF4 weights · f32 activations.
    nf4_f32_kernel, avx2_nf4::dot_nf4_f32(BlockNf4, f32)
);
avx2_or_scalar!(
    /// Q4_K weights · Q8_K activations.
    q4_k_q8_k_kernel, avx2_kquants::dot_q4_k_q8_k(BlockQ4K, BlockQ8K)
);
avx2_or_scalar!(
    /// Q5_K weights · Q8_K activations.
    q5_k_q8_k_kernel, avx2_kquants::dot_q5_k_q8_k(BlockQ5K, BlockQ8K)
);
avx2_or_scalar!(
    /// Q6_K weights · Q8_K activations.
    q6_k_q8_k_kernel, avx2_kquants::dot_q6_k_q8_k(BlockQ6K, BlockQ8K)
);
four_rows!(
    /// Four Q4_K rows · Q8_K activations.
    q4_k_q8_k_kernel4, dot_q4_k_q8_k, q4_k_q8_k_kernel(BlockQ4K, BlockQ8K),
    avx2_kquants::dot_q4_k_q8_k_x4
);
four_rows!(
    /// Four Q5_K rows · Q8_K activations.
    q5_k_q8_k_kernel4, dot_q5_k_q8_k, q5_k_q8_k_kernel(BlockQ5K, BlockQ8K),
    avx2_kquants::dot_q5_k_q8_k_x4
);
four_rows!(
    /// Four Q6_K rows · Q8_K activations.
    q6_k_q8_k_kernel4, dot_q6_k_q8_k, q6_k_q8_k_kernel(BlockQ6K, BlockQ8K),
    avx2_kquants::dot_q6_k_q8_k_x4
);

avx2_or_scalar!(
    /// f16 weights · f32 activations.
    f16_f32_kernel, dot_f16_f32(u16, f32)
);

/// f16 weights · f32 activations.
pub fn dot_f16_f32(level: SimdLevel, w: &[u16], a: &[f32]) -> f32 {
    f16_f32_kernel(level)(w, a)
}

/// The value side of attention over an f16 cache (see [`scalar::attend_values`]): out[d] =
/// Σ_p weights[p] · values[p][d], in the canonical float order over positions. No NEON path:
/// aarch64 runs the scalar reference.
pub fn attend_values(level: SimdLevel, weights: &[f32], values: &[&[u16]], out: &mut [f32]) {
    match path(level) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `dispatch!`; every head size is a multiple of 8 (checked here).
        SimdLevel::Avx2 if level.is_supported() && out.len().is_multiple_of(8) => unsafe {
            avx2::attend_values(weights, values, out)
        },
        _ => scalar::attend_values(weights, values, out),
    }
}

// ANCHOR: tile_dispatch
/// Which batched micro-kernel ([`tile`]) runs at a SIMD level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TilePath {
    /// AVX-512 VNNI on 256-bit registers (an AVX-512 level on a CPU with `avx512vnni`).
    Vnni,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// No tile: the four-row kernels, one token at a time.
    None,
}

impl TilePath {
    /// Short stable name, for test output and tables.
    pub fn name(self) -> &'static str {
        match self {
            TilePath::Vnni => "avx512-vnni",
            TilePath::Avx2 => "avx2",
            TilePath::None => "none",
        }
    }
}

/// The tile that runs at `level` on this CPU.
pub fn tile_path(level: SimdLevel) -> TilePath {
    #[cfg(target_arch = "x86_64")]
    {
        if level == SimdLevel::Avx512
            && level.is_supported()
            && std::arch::is_x86_feature_detected!("avx512vnni")
        {
            return TilePath::Vnni;
        }
        if path(level) == SimdLevel::Avx2 && level.is_supported() {
            return TilePath::Avx2;
        }
    }
    let _ = level;
    TilePath::None
}

/// A panel's function: G weight rows one after another (G a multiple of 4), `per_row` blocks
/// each; T ≤ [`Tile::tokens`] tokens' activation rows; `out[t · G + g]`; and whether the
/// weights stream from memory (prefetch ahead) or were just read (the panel's later token
/// groups: no prefetch). Same bits as the tile either way.
pub type PanelFn<W, A> = fn(&[W], usize, &[A], &mut [f32], bool);

/// The most tokens one [`Tile`] call takes on any path.
pub const TILE_MAX_TOKENS: usize = 4;

/// A register tile of 4 weight rows × up to `tokens` tokens, run over a panel of rows in one
/// call (see [`tile`]'s `panel!`; a panel of 4 rows is one tile). Every (row, token) gives the
/// one-row kernel's bits, whatever else shares the tile.
pub struct Tile<W: 'static, A: 'static> {
    pub panel: PanelFn<W, A>,
    /// The most tokens one call takes on this path (the register budget).
    pub tokens: usize,
}

impl<W, A> Clone for Tile<W, A> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<W, A> Copy for Tile<W, A> {}

/// Calls `panel::<T, P>` for T = `a.len() / per_row` (1 to 4), P = [`avx2::ToL2`] when
/// `stream` (the weights come from memory), else [`avx2::Resident`].
#[cfg_attr(target_arch = "wasm32", allow(unused_macros))]
macro_rules! panel_by_tokens {
    ($m:ident :: $panel:ident, $w:expr, $per_row:expr, $a:expr, $out:expr, $stream:expr) => {
        match ($a.len() / $per_row, $stream) {
            (1, true) => $m::$panel::<1, avx2::ToL2>($w, $per_row, $a, $out),
            (2, true) => $m::$panel::<2, avx2::ToL2>($w, $per_row, $a, $out),
            (3, true) => $m::$panel::<3, avx2::ToL2>($w, $per_row, $a, $out),
            (4, true) => $m::$panel::<4, avx2::ToL2>($w, $per_row, $a, $out),
            (1, false) => $m::$panel::<1, avx2::Resident>($w, $per_row, $a, $out),
            (2, false) => $m::$panel::<2, avx2::Resident>($w, $per_row, $a, $out),
            (3, false) => $m::$panel::<3, avx2::Resident>($w, $per_row, $a, $out),
            (4, false) => $m::$panel::<4, avx2::Resident>($w, $per_row, $a, $out),
            (n, _) => panic!("a tile holds 1 to 4 tokens, not {n}"),
        }
    };
}

macro_rules! tile_kernel {
    ($(#[$doc:meta])* $kernel:ident, $avx2_panel:ident, $vnni_panel:ident, $wt:ty, $at:ty) => {
        $(#[$doc])*
        pub fn $kernel(level: SimdLevel) -> Option<Tile<$wt, $at>> {
            match tile_path(level) {
                #[cfg(target_arch = "x86_64")]
                TilePath::Vnni => Some(Tile {
                    panel: |w, per_row, a, out, stream| {
                        // SAFETY: `tile_path` returned Vnni only after checking AVX2, FMA,
                        // F16C, AVX-512 F/BW/VL and VNNI.
                        unsafe { panel_by_tokens!(tile::$vnni_panel, w, per_row, a, out, stream) }
                    },
                    tokens: 4,
                }),
                #[cfg(target_arch = "x86_64")]
                TilePath::Avx2 => Some(Tile {
                    panel: |w, per_row, a, out, stream| {
                        // SAFETY: `tile_path` returned Avx2 only after checking AVX2/FMA/F16C.
                        unsafe { panel_by_tokens!(tile::$avx2_panel, w, per_row, a, out, stream) }
                    },
                    tokens: 3,
                }),
                _ => None,
            }
        }
    };
}

tile_kernel!(
    /// Four Q4_1 rows × up to four tokens of Q8_1 activations.
    q4_1_q8_1_tile, q4_1_q8_1_avx2_panel, q4_1_q8_1_vnni_panel, BlockQ4_1, BlockQ8_1
);
tile_kernel!(
    /// Four Q8_0 rows × up to four tokens of Q8_0 activations.
    q8_0_q8_0_tile, q8_0_q8_0_avx2_panel, q8_0_q8_0_vnni_panel, BlockQ8_0, BlockQ8_0
);
// ANCHOR_END: tile_dispatch
