//! Is there an NVIDIA GPU? Asked through cudarc with dynamic loading.
//!
//! The CUDA driver library (`libcuda.so`) is opened at run time, not linked at build time, so the
//! book builds and runs on machines without CUDA; there the probe answers "no CUDA driver".

use serde::Serialize;

/// One CUDA device as the driver describes it.
#[derive(Debug, Clone, Serialize)]
pub struct CudaDevice {
    pub ordinal: usize,
    pub name: String,
    /// (major, minor), e.g. (9, 0) for Hopper.
    pub compute_capability: (i32, i32),
    pub total_memory_bytes: u64,
}

/// What the probe found.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CudaStatus {
    /// The binary was built without the `cuda` feature.
    NotBuilt,
    /// `libcuda` could not be opened: no NVIDIA driver on this machine.
    NoDriver,
    /// The driver loaded but a call failed (message from the driver).
    Error { message: String },
    /// The driver answered; the list may be empty.
    Devices { devices: Vec<CudaDevice> },
}

impl std::fmt::Display for CudaStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CudaStatus::NotBuilt => f.write_str("not built (enable the `cuda` feature)"),
            CudaStatus::NoDriver => f.write_str("no CUDA driver"),
            CudaStatus::Error { message } => write!(f, "CUDA driver error: {message}"),
            CudaStatus::Devices { devices } if devices.is_empty() => {
                f.write_str("CUDA driver present, no device")
            }
            CudaStatus::Devices { devices } => {
                let names: Vec<String> = devices
                    .iter()
                    .map(|d| {
                        let (major, minor) = d.compute_capability;
                        format!(
                            "#{} {} (sm_{major}{minor}, {:.0} GiB)",
                            d.ordinal,
                            d.name,
                            d.total_memory_bytes as f64 / (1u64 << 30) as f64
                        )
                    })
                    .collect();
                f.write_str(&names.join(", "))
            }
        }
    }
}

/// Probes the CUDA driver. Never panics, also not when the driver is too old for cudarc's
/// bindings (cudarc panics on a missing symbol; the probe turns that into an `Error`).
pub fn probe() -> CudaStatus {
    #[cfg(feature = "cuda")]
    {
        match std::panic::catch_unwind(probe_driver) {
            Ok(status) => status,
            Err(_) => CudaStatus::Error {
                message: "the CUDA driver lacks a function cudarc needs (driver too old?)".into(),
            },
        }
    }
    #[cfg(not(feature = "cuda"))]
    {
        CudaStatus::NotBuilt
    }
}

// ANCHOR: probe
#[cfg(feature = "cuda")]
fn probe_driver() -> CudaStatus {
    use cudarc::driver::CudaContext;
    // SAFETY: only tries to open the shared library; no CUDA call is made.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return CudaStatus::NoDriver;
    }
    let describe = |ordinal: usize| -> Result<CudaDevice, cudarc::driver::DriverError> {
        let ctx = CudaContext::new(ordinal)?;
        Ok(CudaDevice {
            ordinal,
            name: ctx.name()?,
            compute_capability: ctx.compute_capability()?,
            total_memory_bytes: ctx.total_mem()? as u64,
        })
    };
    let count = match CudaContext::device_count() {
        Ok(n) => n.max(0) as usize,
        Err(e) => {
            return CudaStatus::Error {
                message: e.to_string(),
            };
        }
    };
    match (0..count).map(describe).collect() {
        Ok(devices) => CudaStatus::Devices { devices },
        Err(e) => CudaStatus::Error {
            message: e.to_string(),
        },
    }
}
// ANCHOR_END: probe

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_answers_without_panicking() {
        // On a machine without CUDA this is NoDriver; with one, a device list. Either way it
        // must return, and its description must be printable.
        let status = probe();
        assert!(!status.to_string().is_empty());
        if cfg!(not(feature = "cuda")) {
            assert!(matches!(status, CudaStatus::NotBuilt));
        }
    }
}
