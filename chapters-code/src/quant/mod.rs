//! Quantized number formats: llama.cpp's block layouts, f16, and quantize/dequantize.

pub mod blocks;
pub mod f16;
pub mod quantize;

pub use blocks::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK};
pub use f16::{f16_to_f32, f32_to_f16};
