//! Know your hardware: what the machine is (CPU, SIMD, memory, CUDA) and what it can do
//! (measured bandwidth and FLOP/s, the roofline every later chapter compares against).

pub mod cpu;
pub mod cuda;
pub mod memory;
pub mod roofline;
#[cfg(feature = "native")]
pub mod trueno_view;

pub use cpu::{CpuInfo, SimdLevel};
pub use cuda::CudaStatus;
pub use memory::MemoryInfo;

use serde::Serialize;

/// Everything the machine says about itself, without measuring anything.
#[derive(Debug, Clone, Serialize)]
pub struct MachineInfo {
    pub cpu: CpuInfo,
    pub memory: MemoryInfo,
    pub cuda: CudaStatus,
}

impl MachineInfo {
    /// Detects CPU, memory and CUDA; takes milliseconds, never fails.
    pub fn detect() -> MachineInfo {
        MachineInfo {
            cpu: CpuInfo::detect(),
            memory: MemoryInfo::detect(),
            cuda: cuda::probe(),
        }
    }
}
