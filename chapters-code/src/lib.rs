//! # chapters-code
//!
//! The code of *Production ML with Hugging Face, in Rust*. Each module is one topic of the
//! book, in reading order; the chapters include their listings from here.
//!
//! | module | chapter |
//! |---|---|
//! | [`hw`] | Know your hardware |
//! | [`formats`] | Anatomy of a model file |
//! | [`quant`] | Quantization (block formats) |
//! | [`tokenizer`] | From prompt to tokens (BPE, chat template, streaming) |
//! | [`model`] | the Llama forward pass (From prompt to tokens) |
//! | [`sampling`] | choosing the next token (From prompt to tokens) |
//! | [`generate`] | one request end to end, with stage timings |
//! | [`eval`] | perplexity, as llama.cpp computes it |
//! | [`kv`] | the paged KV cache (The KV cache) |
//! | [`engine`] | continuous batching: scheduler, replay, engine thread |
//! | [`serve`] | the OpenAI-compatible server (Serving API, Streaming) |
//! | [`speculative`] | drafting and verifying tokens (Speculative decoding) |
//! | [`prune`], [`obs`] | pruning and GPTQ (Pruning) |
//! | [`distill`] | training a pruned student on its teacher (Distillation) |
//! | [`reference`] | llama.cpp's outputs we check against |
//! | [`parity`] | llama.cpp's noise floor, and our engine against it (From prompt to tokens) |
//! | [`scaleout`] | replicas behind nginx and SGLang's router, failover (Scaling out) |
//! | [`registry`] | a signed model registry on an OCI registry (A model registry) |
//! | [`kernels`] | dot products and matmul, scalar and SIMD (every chapter) |
//! | [`assets`] | where the model and texts live |
//! | [`demo`] | shared by every demo binary |

#[cfg(feature = "native")]
pub mod assets;
pub mod attention;
#[cfg(feature = "native")]
pub mod child;
#[cfg(feature = "native")]
pub mod demo;
#[cfg(feature = "native")]
pub mod distill;
#[cfg(feature = "native")]
pub mod engine;
#[cfg(feature = "native")]
pub mod eval;
pub mod formats;
pub mod generate;
pub mod hw;
pub mod kernels;
pub mod kv;
pub mod model;
#[cfg(feature = "native")]
pub mod obs;
#[cfg(feature = "native")]
pub mod parallel;
#[cfg(feature = "native")]
pub mod parity;
#[cfg(feature = "native")]
pub mod prune;
pub mod quant;
pub mod reference;
#[cfg(feature = "native")]
pub mod registry;
pub mod sampling;
#[cfg(feature = "native")]
pub mod scaleout;
#[cfg(feature = "native")]
pub mod serve;
#[cfg(feature = "native")]
pub mod serverless;
pub mod session;
#[cfg(feature = "native")]
pub mod speculative;
pub mod tokenizer;

#[cfg(test)]
mod testutil;

// ANCHOR: book_wiring
/// The book's chapters as doctests: every ```rust listing in `book/src` compiles and runs
/// under `cargo test`, and a failure names the chapter file and line. One item per chapter;
/// `cargo test` fails (xtask's book checks) if a chapter is missing here.
#[cfg(doctest)]
pub mod book {
    #[doc = include_str!("../../book/src/introduction.md")]
    pub struct Introduction;
    #[doc = include_str!("../../book/src/week1/hardware.md")]
    pub struct Week1Hardware;
    #[doc = include_str!("../../book/src/week1/model-file.md")]
    pub struct Week1ModelFile;
    #[doc = include_str!("../../book/src/week1/tgi-architecture.md")]
    pub struct Week1TgiArchitecture;
    #[doc = include_str!("../../book/src/week1/kv-cache.md")]
    pub struct Week1KvCache;
    #[doc = include_str!("../../book/src/week1/continuous-batching.md")]
    pub struct Week1ContinuousBatching;
    #[doc = include_str!("../../book/src/week1/serving-api.md")]
    pub struct Week1ServingApi;
    #[doc = include_str!("../../book/src/week1/streaming.md")]
    pub struct Week1Streaming;
    #[doc = include_str!("../../book/src/week1/throughput-benchmark.md")]
    pub struct Week1ThroughputBenchmark;
    #[doc = include_str!("../../book/src/week2/quantization.md")]
    pub struct Week2Quantization;
    #[doc = include_str!("../../book/src/week2/apr-format.md")]
    pub struct Week2AprFormat;
    #[doc = include_str!("../../book/src/week2/pruning.md")]
    pub struct Week2Pruning;
    #[doc = include_str!("../../book/src/week2/distillation.md")]
    pub struct Week2Distillation;
    #[doc = include_str!("../../book/src/week2/flash-attention.md")]
    pub struct Week2FlashAttention;
    #[doc = include_str!("../../book/src/week2/speculative-decoding.md")]
    pub struct Week2SpeculativeDecoding;
    #[doc = include_str!("../../book/src/week2/tensor-parallelism.md")]
    pub struct Week2TensorParallelism;
    #[doc = include_str!("../../book/src/week3/wasm-inference.md")]
    pub struct Week3WasmInference;
    #[doc = include_str!("../../book/src/week3/serverless.md")]
    pub struct Week3Serverless;
    #[doc = include_str!("../../book/src/week3/web-ui.md")]
    pub struct Week3WebUi;
    #[doc = include_str!("../../book/src/week3/latency-profiling.md")]
    pub struct Week3LatencyProfiling;
    #[doc = include_str!("../../book/src/week3/model-registry.md")]
    pub struct Week3ModelRegistry;
    #[doc = include_str!("../../book/src/week3/scaling-out.md")]
    pub struct Week3ScalingOut;
    #[doc = include_str!("../../book/src/appendix/testing.md")]
    pub struct AppendixTesting;
    #[doc = include_str!("../../book/src/appendix/falsification.md")]
    pub struct AppendixFalsification;
    #[doc = include_str!("../../book/src/appendix/bibliography.md")]
    pub struct AppendixBibliography;
}
// ANCHOR_END: book_wiring
