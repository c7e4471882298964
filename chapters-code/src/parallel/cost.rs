//! A cost model of tensor-parallel decoding: the compute and communication volumes our run
//! measures, projected onto real accelerators and interconnects for larger Llama shapes.
//!
//! Per decode step of `batch` tokens on N shards:
//! - compute: every shard reads its 1/N of the weights (decode is bound by memory bandwidth
//!   at small batches) or does its 1/N of the multiply-adds, whichever takes longer;
//! - communication: 2 all-reduces per block plus one for the embedding, each of
//!   `batch × dim` activations, and one gather of `batch × vocab` logits. A ring all-reduce
//!   of S bytes takes `base + 2(N−1)·hop + 2(N−1)/N · S / bandwidth`, a gather
//!   `base + (N−1)·hop + (N−1)/N · S / bandwidth` — NCCL's own latency model
//!   (`src/graph/tuning.cc`) with the link's bandwidth per direction.
//!
//! Compute and communication are added, not overlapped: in a decode step each all-reduce
//! sits between two matrix products that need its result.

use crate::model::LlamaConfig;

/// A Llama model's hyper-parameters, with where they come from.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub name: &'static str,
    pub source: &'static str,
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub ffn_dim: usize,
    pub vocab: usize,
    /// Whether the output head is the embedding table (no second copy).
    pub tied: bool,
}

impl Shape {
    /// The shape of a loaded model.
    pub fn of(name: &'static str, c: &LlamaConfig, tied: bool) -> Shape {
        Shape {
            name,
            source: "the GGUF file's metadata",
            dim: c.dim,
            n_layers: c.n_layers,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            ffn_dim: c.ffn_dim,
            vocab: c.vocab_size,
            tied,
        }
    }

    /// Weights: per block Q, K, V, O and the three FFN matrices; the embedding; the head
    /// unless tied (norms are negligible and left out).
    pub fn params(&self) -> u64 {
        let (d, f) = (self.dim as u64, self.ffn_dim as u64);
        let kv = d / self.n_heads as u64 * self.n_kv_heads as u64;
        let block = d * d * 2 + d * kv * 2 + 3 * d * f;
        let tables = if self.tied { 1 } else { 2 };
        self.n_layers as u64 * block + tables * self.vocab as u64 * d
    }

    /// The largest N ≤ `max` the heads and KV heads allow, and every one below it.
    pub fn valid_sizes(&self, max: usize) -> Vec<usize> {
        (1..=max)
            .filter(|&n| self.n_heads.is_multiple_of(n) && self.n_kv_heads.is_multiple_of(n))
            .collect()
    }
}

/// Llama 2 7B, from its published configuration.
pub const LLAMA2_7B: Shape = Shape {
    name: "Llama-2-7B",
    source: "meta-llama/Llama-2-7b-hf config.json",
    dim: 4096,
    n_layers: 32,
    n_heads: 32,
    n_kv_heads: 32,
    ffn_dim: 11008,
    vocab: 32000,
    tied: false,
};

/// Llama 2 70B, from its published configuration (grouped-query attention, 8 KV heads).
pub const LLAMA2_70B: Shape = Shape {
    name: "Llama-2-70B",
    source: "meta-llama/Llama-2-70b-hf config.json",
    dim: 8192,
    n_layers: 80,
    n_heads: 64,
    n_kv_heads: 8,
    ffn_dim: 28672,
    vocab: 32000,
    tied: false,
};

/// An accelerator: how fast it reads its memory and multiplies (`source` cites where the
/// figures come from; they are only in the fields).
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub name: &'static str,
    pub source: &'static str,
    /// Bytes per second.
    pub memory_bandwidth: f64,
    /// Bytes.
    pub memory: f64,
    /// Dense 16-bit multiply-adds × 2 per second.
    pub flops: f64,
}

/// NVIDIA H100 SXM5 (80 GB).
pub const H100_SXM: Device = Device {
    name: "H100 SXM5",
    source: "NVIDIA H100 Tensor Core GPU datasheet (SXM5: HBM3 bandwidth and size, dense BF16 tensor throughput)",
    memory_bandwidth: 3.35e12,
    memory: 80e9,
    flops: 989e12,
};

// ANCHOR: links
/// A link between shards.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub name: &'static str,
    /// Where the figures below come from (the figures themselves are only in the fields).
    pub source: &'static str,
    /// Bytes per second, one direction.
    pub bandwidth: f64,
    /// Fixed cost of a collective (seconds).
    pub base_latency: f64,
    /// Cost of each step of the ring (seconds).
    pub hop_latency: f64,
}

impl Link {
    /// The link's figures as the model uses them, and where they come from.
    pub fn describe(&self) -> String {
        format!(
            "{}: {:.1} GB/s per direction, {:.1} µs per collective plus {:.1} µs per ring step ({})",
            self.name,
            self.bandwidth / 1e9,
            self.base_latency * 1e6,
            self.hop_latency * 1e6,
            self.source
        )
    }
}

impl Device {
    /// The device's figures as the model uses them, and where they come from.
    pub fn describe(&self) -> String {
        format!(
            "{}: memory {:.2} TB/s, {:.0} GB, {:.0} TFLOPS ({})",
            self.name,
            self.memory_bandwidth / 1e12,
            self.memory / 1e9,
            self.flops / 1e12,
            self.source
        )
    }
}

/// NCCL's base latency of a ring collective with its low-latency protocol (`baseLat`, Ring,
/// LL), in `src/graph/tuning.cc`.
const NCCL_BASE: f64 = 6.6e-6;

pub const PCIE4: Link = Link {
    name: "PCIe 4.0 x16",
    source: "PCI-SIG PCIe 4.0 (16 GT/s per lane, 16 lanes, 128b/130b encoding); latencies: NCCL src/graph/tuning.cc (baseLat and hwLat, PCI, Ring, LL)",
    bandwidth: 31.5e9,
    base_latency: NCCL_BASE,
    hop_latency: 1.0e-6,
};

pub const PCIE5: Link = Link {
    name: "PCIe 5.0 x16",
    source: "PCI-SIG PCIe 5.0 (32 GT/s per lane, 16 lanes; the H100 datasheet gives the sum of both directions); latencies: NCCL src/graph/tuning.cc (PCI, Ring, LL)",
    bandwidth: 63e9,
    base_latency: NCCL_BASE,
    hop_latency: 1.0e-6,
};

pub const NVLINK4: Link = Link {
    name: "NVLink 4 (H100 SXM)",
    source: "NVIDIA H100 datasheet (NVLink 4, the sum of both directions, halved); latencies: NCCL src/graph/tuning.cc (NVLink, Ring, LL)",
    bandwidth: 450e9,
    base_latency: NCCL_BASE,
    hop_latency: 0.6e-6,
};
// ANCHOR_END: links

// ANCHOR: collective_time
/// Seconds of a ring all-reduce of `bytes` (one rank's contribution) over `n` ranks.
pub fn all_reduce_time(link: &Link, n: usize, bytes: f64) -> f64 {
    if n <= 1 {
        return 0.0;
    }
    let steps = 2.0 * (n - 1) as f64;
    link.base_latency + steps * link.hop_latency + steps / n as f64 * bytes / link.bandwidth
}

/// Seconds of a ring gather of `bytes` (the whole result) over `n` ranks.
pub fn gather_time(link: &Link, n: usize, bytes: f64) -> f64 {
    if n <= 1 {
        return 0.0;
    }
    let steps = (n - 1) as f64;
    link.base_latency + steps * link.hop_latency + steps / n as f64 * bytes / link.bandwidth
}
// ANCHOR_END: collective_time

/// Collectives of one decode step of a Llama split N ways: all-reduces of `dim` activations
/// per token (2 per block, 1 for the embedding) and the gather of `vocab` logits per token.
pub fn collectives_per_step(shape: &Shape) -> (usize, usize) {
    (2 * shape.n_layers + 1, 1)
}

/// One projected configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    pub n: usize,
    pub batch: usize,
    /// Bytes of weights each shard holds.
    pub weights_per_shard: f64,
    /// Whether a shard's weights fit in the device's memory.
    pub fits: bool,
    pub compute_s: f64,
    pub communication_s: f64,
}

impl Projection {
    /// Seconds per decode step.
    pub fn step_s(&self) -> f64 {
        self.compute_s + self.communication_s
    }

    /// Tokens per second, all `batch` sequences together.
    pub fn tokens_per_s(&self) -> f64 {
        self.batch as f64 / self.step_s()
    }

    /// Communication's share of the step.
    pub fn communication_share(&self) -> f64 {
        self.communication_s / self.step_s()
    }
}

// ANCHOR: project
/// One decode step of `batch` tokens of `shape` split over `n` devices joined by `link`,
/// weights of `weight_bytes` bytes each, activations of `act_bytes` bytes each.
pub fn project(
    shape: &Shape,
    device: &Device,
    link: &Link,
    n: usize,
    batch: usize,
    weight_bytes: f64,
    act_bytes: f64,
) -> Projection {
    let params = shape.params() as f64;
    let per_shard = params * weight_bytes / n as f64;
    let read = per_shard / device.memory_bandwidth;
    let multiply = 2.0 * params * batch as f64 / n as f64 / device.flops;
    let (all_reduces, gathers) = collectives_per_step(shape);
    let row = batch as f64 * shape.dim as f64 * act_bytes;
    let logits = batch as f64 * shape.vocab as f64 * act_bytes;
    Projection {
        n,
        batch,
        weights_per_shard: per_shard,
        fits: per_shard < device.memory,
        compute_s: read.max(multiply),
        communication_s: all_reduces as f64 * all_reduce_time(link, n, row)
            + gathers as f64 * gather_time(link, n, logits),
    }
}
// ANCHOR_END: project

// ANCHOR: cpu_model
/// The same model for our own run, where the "devices" are threads on `cores` cores: a step
/// that takes `compute_1` on one shard takes `compute_1 / n` per shard, but n shards on fewer
/// cores run in ⌈n / cores⌉ rounds between barriers; then every collective costs what a
/// measured one costs here (`all_reduce_s`, `gather_s`: latency-bound at these sizes).
pub fn cpu_step_s(
    compute_1: f64,
    n: usize,
    cores: usize,
    blocks: usize,
    all_reduce_s: f64,
    gather_s: f64,
) -> f64 {
    let rounds = n.div_ceil(cores.max(1)) as f64;
    let compute = compute_1 / n as f64 * rounds;
    if n <= 1 {
        return compute;
    }
    compute + (2 * blocks + 1) as f64 * all_reduce_s + gather_s
}
// ANCHOR_END: cpu_model
