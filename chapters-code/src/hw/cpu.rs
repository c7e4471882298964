//! What the CPU is and which vector instructions it offers.
//!
//! Every kernel of the book picks its code path from [`SimdLevel::detect`] at run time, so one
//! binary runs the best path on whatever machine the reader has. `PRODML_SIMD=scalar` (or
//! `avx2`, `neon`...) forces a lower level, which is how the book measures scalar against SIMD
//! in the same run.

use serde::Serialize;

// ANCHOR: simd_level
/// The vector instruction tier our kernels dispatch on, best last.
///
/// Each tier implies the ones before it on the same architecture (an `Avx512` machine also
/// runs the `Avx2` path). Only tiers with a kernel behind them are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum SimdLevel {
    /// Plain Rust, no explicit vector instructions (the reference every SIMD path is tested against).
    Scalar,
    /// x86_64 AVX2 + FMA + F16C: 256-bit vectors, 8 f32 lanes.
    Avx2,
    /// x86_64 AVX-512 F/BW/VL: 512-bit vectors, 16 f32 lanes.
    Avx512,
    /// aarch64 NEON: 128-bit vectors, 4 f32 lanes (always present on aarch64).
    Neon,
}
// ANCHOR_END: simd_level

impl SimdLevel {
    /// The best tier this CPU supports, lowered by `PRODML_SIMD` if that is set.
    pub fn detect() -> SimdLevel {
        let best = Self::best_supported();
        match std::env::var("PRODML_SIMD") {
            Ok(wanted) => match Self::parse(&wanted) {
                Some(level) if level.is_supported() => level,
                _ => best,
            },
            Err(_) => best,
        }
    }

    /// Parses a tier name as written by [`SimdLevel::name`] (case-insensitive).
    pub fn parse(name: &str) -> Option<SimdLevel> {
        match name.to_ascii_lowercase().as_str() {
            "scalar" => Some(SimdLevel::Scalar),
            "avx2" => Some(SimdLevel::Avx2),
            "avx512" | "avx-512" => Some(SimdLevel::Avx512),
            "neon" => Some(SimdLevel::Neon),
            _ => None,
        }
    }

    /// Short stable name, used in JSON and benchmark tables.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
            SimdLevel::Neon => "neon",
        }
    }

    /// Number of f32 lanes in one vector register of this tier.
    pub fn f32_lanes(self) -> usize {
        match self {
            SimdLevel::Scalar => 1,
            SimdLevel::Avx2 => 8,
            SimdLevel::Avx512 => 16,
            SimdLevel::Neon => 4,
        }
    }

    /// Whether this CPU can execute the tier's instructions.
    pub fn is_supported(self) -> bool {
        match self {
            SimdLevel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => {
                Self::Avx2.is_supported()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
            #[cfg(target_arch = "aarch64")]
            SimdLevel::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    fn best_supported() -> SimdLevel {
        [SimdLevel::Avx512, SimdLevel::Avx2, SimdLevel::Neon]
            .into_iter()
            .find(|level| level.is_supported())
            .unwrap_or(SimdLevel::Scalar)
    }
}

impl std::fmt::Display for SimdLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2 => "AVX2",
            SimdLevel::Avx512 => "AVX-512",
            SimdLevel::Neon => "NEON",
        })
    }
}

/// The CPU as the operating system and the `cpuid` instruction describe it.
#[derive(Debug, Clone, Serialize)]
pub struct CpuInfo {
    /// `x86_64`, `aarch64`, ...
    pub arch: &'static str,
    /// Marketing name, e.g. "AMD EPYC 7B13" (virtual machines often shorten it).
    pub model: String,
    /// Threads this process may run on at once (respects cgroup quotas and affinity).
    pub logical_cores: usize,
    /// Distinct physical cores, when the OS tells (Linux `/proc/cpuinfo`).
    pub physical_cores: Option<usize>,
    /// Vector extensions present, by their usual names.
    pub features: Vec<&'static str>,
    /// The tier our kernels will use.
    pub simd: SimdLevel,
    /// Last-level cache size in bytes, when the OS tells (Linux sysfs).
    pub last_level_cache_bytes: Option<u64>,
}

impl CpuInfo {
    /// Reads everything above; never fails (unknown facts stay `None` or "unknown").
    pub fn detect() -> CpuInfo {
        CpuInfo {
            arch: std::env::consts::ARCH,
            model: cpu_model(),
            logical_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            physical_cores: physical_cores(),
            features: simd_features(),
            simd: SimdLevel::detect(),
            last_level_cache_bytes: last_level_cache_bytes(),
        }
    }
}

// ANCHOR: features
/// Vector extensions the CPU reports, in the order a reader would list them.
pub fn simd_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut found = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let checks: [(&'static str, bool); 12] = [
            ("sse2", has!("sse2")),
            ("avx", has!("avx")),
            ("avx2", has!("avx2")),
            ("fma", has!("fma")),
            ("f16c", has!("f16c")),
            ("avx-vnni", has!("avxvnni")),
            ("avx512f", has!("avx512f")),
            ("avx512bw", has!("avx512bw")),
            ("avx512vl", has!("avx512vl")),
            ("avx512vnni", has!("avx512vnni")),
            ("avx512bf16", has!("avx512bf16")),
            ("avx512fp16", has!("avx512fp16")),
        ];
        found.extend(checks.iter().filter(|(_, on)| *on).map(|(name, _)| *name));
    }
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::is_aarch64_feature_detected as has;
        let checks: [(&'static str, bool); 5] = [
            ("neon", has!("neon")),
            ("fp16", has!("fp16")),
            ("dotprod", has!("dotprod")),
            ("i8mm", has!("i8mm")),
            ("sve", has!("sve")),
        ];
        found.extend(checks.iter().filter(|(_, on)| *on).map(|(name, _)| *name));
    }
    found
}
// ANCHOR_END: features

/// The CPU's name: from `cpuid` on x86_64, else from the OS.
fn cpu_model() -> String {
    #[cfg(target_arch = "x86_64")]
    if let Some(brand) = x86_brand_string() {
        return brand;
    }
    proc_cpuinfo_field(&["model name", "Hardware", "Model"]).unwrap_or_else(|| "unknown".into())
}

/// The brand string of cpuid leaves 0x8000_0002..=0x8000_0004 (48 ASCII bytes, NUL-padded).
#[cfg(target_arch = "x86_64")]
fn x86_brand_string() -> Option<String> {
    use std::arch::x86_64::__cpuid;
    // Leaf 0x8000_0000 reports the highest extended leaf.
    let max_extended = __cpuid(0x8000_0000).eax;
    if max_extended < 0x8000_0004 {
        return None;
    }
    let mut bytes = Vec::with_capacity(48);
    for leaf in 0x8000_0002u32..=0x8000_0004 {
        let r = __cpuid(leaf);
        for reg in [r.eax, r.ebx, r.ecx, r.edx] {
            bytes.extend_from_slice(&reg.to_le_bytes());
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let name = text.trim_matches(char::from(0)).trim();
    (!name.is_empty()).then(|| name.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn proc_cpuinfo_field(keys: &[&str]) -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    keys.iter().find_map(|key| {
        text.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_string())
        })
    })
}

/// Distinct (physical id, core id) pairs in `/proc/cpuinfo`.
fn physical_cores() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mut cores = std::collections::BTreeSet::new();
    let mut package = String::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "physical id" => package = value.trim().to_string(),
            "core id" => {
                cores.insert((package.clone(), value.trim().to_string()));
            }
            _ => {}
        }
    }
    (!cores.is_empty()).then_some(cores.len())
}

/// Size of the highest-level cache of CPU 0, from Linux sysfs (`"32768K"` → bytes).
fn last_level_cache_bytes() -> Option<u64> {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    let mut best: Option<(u32, u64)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let read = |name: &str| std::fs::read_to_string(entry.path().join(name)).ok();
        let (Some(level), Some(size)) = (read("level"), read("size")) else {
            continue;
        };
        let Ok(level) = level.trim().parse::<u32>() else {
            continue;
        };
        let Some(bytes) = parse_size(size.trim()) else {
            continue;
        };
        if best.is_none_or(|(l, _)| level > l) {
            best = Some((level, bytes));
        }
    }
    best.map(|(_, bytes)| bytes)
}

/// `"512K"` → 524288, `"32M"` → 33554432, `"1024"` → 1024.
fn parse_size(text: &str) -> Option<u64> {
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let n: u64 = digits.parse().ok()?;
    let scale = match unit.trim() {
        "" => 1,
        "K" | "KiB" | "kB" => 1 << 10,
        "M" | "MiB" | "MB" => 1 << 20,
        "G" | "GiB" | "GB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_parse_like_sysfs_writes_them() {
        assert_eq!(parse_size("512K"), Some(512 * 1024));
        assert_eq!(parse_size("32768K"), Some(32 << 20));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("64"), Some(64));
        assert_eq!(parse_size("12Q"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn the_detected_level_is_supported_and_named() {
        let level = SimdLevel::detect();
        assert!(level.is_supported());
        assert_eq!(SimdLevel::parse(level.name()), Some(level));
        assert!(level.f32_lanes() >= 1);
    }

    #[test]
    fn detection_reports_at_least_one_core_and_a_model() {
        let cpu = CpuInfo::detect();
        assert!(cpu.logical_cores >= 1);
        assert!(!cpu.model.is_empty());
        if cfg!(target_arch = "x86_64") {
            assert!(cpu.features.contains(&"sse2"), "sse2 is part of x86_64");
        }
    }
}
