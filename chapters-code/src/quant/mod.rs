//! Quantized number formats: llama.cpp's block layouts, f16, NF4, and quantize/dequantize.

#[cfg(feature = "native")]
pub mod awq;
pub mod blocks;
pub mod f16;
#[cfg(feature = "native")]
pub mod gptq;
pub mod kquants;
pub mod nf4;
pub mod q5_0;
pub mod quantize;
pub mod requantize;

#[cfg(test)]
mod format_tests;

pub use blocks::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK};
pub use f16::{f16_to_f32, f32_to_f16};
