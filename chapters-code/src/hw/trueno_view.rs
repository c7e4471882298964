//! What trueno (the course's SIMD crate) reports about the same machine, for the side-by-side
//! table of the hardware chapter. We read its answer; we do not use it to pick our kernels.

use serde::Serialize;

/// trueno's hardware report, flattened to the fields our own detection also has.
#[derive(Debug, Clone, Serialize)]
pub struct TruenoView {
    /// Crate version, from Cargo.lock at build time.
    pub version: &'static str,
    pub cpu_model: String,
    pub cores: usize,
    pub threads: usize,
    /// `HardwareCapability::detect().cpu.simd` (the widest SIMD it detects).
    pub detected_simd: String,
    /// `select_best_available_backend()` (what its kernels actually run).
    pub selected_backend: String,
    /// trueno's estimate, not a measurement (see the chapter).
    pub memory_bandwidth_gb_s: f64,
    /// trueno's estimate: cores × lanes × 2 × an assumed clock.
    pub peak_gflops: f64,
    pub gpu: String,
}

// ANCHOR: trueno_detect
/// Asks trueno what it sees.
pub fn detect() -> TruenoView {
    let cap = trueno::hardware::HardwareCapability::detect();
    TruenoView {
        version: crate::demo::provenance::dependency_version("trueno"),
        cpu_model: format!("{} {}", cap.cpu.vendor, cap.cpu.model),
        cores: cap.cpu.cores,
        threads: cap.cpu.threads,
        detected_simd: format!("{:?}", cap.cpu.simd),
        selected_backend: format!("{:?}", trueno::select_best_available_backend()),
        memory_bandwidth_gb_s: cap.cpu.memory_bw_gbps,
        peak_gflops: cap.cpu.peak_gflops,
        gpu: cap.gpu.map_or_else(|| "none".to_string(), |g| g.model),
    }
}
// ANCHOR_END: trueno_detect
