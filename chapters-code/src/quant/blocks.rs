//! llama.cpp's block layouts, bit-compatible: a block is a few scale bytes plus packed
//! integers for 32 elements. Scales are f16 bits (`u16`), converted with [`super::f16`].

use crate::formats::gguf::{Pod, cast_slice};

/// Elements per block of every format here.
pub const QK: usize = 32;

// ANCHOR: blocks
/// 8-bit: x = d · q. 34 bytes per 32 weights (8.5 bits each).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_0 {
    pub d: u16,
    pub qs: [i8; QK],
}

/// 4-bit, symmetric: x = d · (q − 8). Element j in the low nibble of `qs[j]`, element j + 16
/// in its high nibble. 18 bytes per 32 weights (4.5 bits each).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4_0 {
    pub d: u16,
    pub qs: [u8; QK / 2],
}

/// 4-bit with a minimum: x = d · q + m. Same nibble order as Q4_0. 20 bytes per 32 weights
/// (5 bits each). The course model's projections are all Q4_1.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4_1 {
    pub d: u16,
    pub m: u16,
    pub qs: [u8; QK / 2],
}

/// 8-bit activations for Q4_1 dot products: like Q8_0 plus `s` = d · Σq, which carries the
/// Q4_1 minimum through the dot product in one multiply.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_1 {
    pub d: u16,
    pub s: u16,
    pub qs: [i8; QK],
}
// ANCHOR_END: blocks

// SAFETY: u16 and i8/u8 arrays, laid out without padding (sizes checked below); every bit
// pattern is a valid value.
unsafe impl Pod for BlockQ8_0 {}
// SAFETY: as above.
unsafe impl Pod for BlockQ4_0 {}
// SAFETY: as above.
unsafe impl Pod for BlockQ4_1 {}
// SAFETY: as above.
unsafe impl Pod for BlockQ8_1 {}

const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

/// Views raw tensor bytes as blocks, zero-copy; `None` if misaligned or not whole blocks.
pub fn as_blocks<T: Pod>(bytes: &[u8]) -> Option<&[T]> {
    cast_slice(bytes)
}

/// The bytes of a slice of blocks (for writing files).
pub fn block_bytes<T: Pod>(blocks: &[T]) -> &[u8] {
    // SAFETY: T is Pod: no padding, so every byte is initialized.
    unsafe {
        std::slice::from_raw_parts(blocks.as_ptr().cast::<u8>(), std::mem::size_of_val(blocks))
    }
}
