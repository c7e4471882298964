//! How much memory the machine has, and how much of it this process may use.

use serde::Serialize;

/// Memory sizes in bytes. `None` where the OS does not say (only Linux is read today).
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemoryInfo {
    /// Physical memory (`MemTotal`).
    pub total_bytes: Option<u64>,
    /// Memory that can be given to a new process without swapping (`MemAvailable`).
    pub available_bytes: Option<u64>,
    /// The cgroup v2 limit of this container (`memory.max`), when one is set.
    pub cgroup_limit_bytes: Option<u64>,
}

impl MemoryInfo {
    /// Reads `/proc/meminfo` and `/sys/fs/cgroup/memory.max`; never fails.
    pub fn detect() -> MemoryInfo {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max").unwrap_or_default();
        MemoryInfo {
            total_bytes: meminfo_field(&meminfo, "MemTotal"),
            available_bytes: meminfo_field(&meminfo, "MemAvailable"),
            cgroup_limit_bytes: cgroup.trim().parse().ok(),
        }
    }

    /// The memory this process can count on: the smaller of available memory and the cgroup limit.
    pub fn usable_bytes(&self) -> Option<u64> {
        match (self.available_bytes, self.cgroup_limit_bytes) {
            (Some(a), Some(c)) => Some(a.min(c)),
            (a, c) => a.or(c),
        }
    }
}

/// One `Key:   1234 kB` line of `/proc/meminfo`, in bytes.
fn meminfo_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, rest) = line.split_once(':')?;
        if k.trim() != key {
            return None;
        }
        let mut parts = rest.split_whitespace();
        let value: u64 = parts.next()?.parse().ok()?;
        match parts.next() {
            Some("kB") => value.checked_mul(1024),
            None => Some(value),
            Some(_) => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_lines_are_read_in_bytes() {
        let text = "MemTotal:       24683656 kB\nMemFree:  1 kB\nMemAvailable:   24413936 kB\n";
        assert_eq!(meminfo_field(text, "MemTotal"), Some(24683656 * 1024));
        assert_eq!(meminfo_field(text, "MemAvailable"), Some(24413936 * 1024));
        assert_eq!(meminfo_field(text, "SwapTotal"), None);
        assert_eq!(meminfo_field("MemTotal: lots kB", "MemTotal"), None);
    }

    #[test]
    fn usable_is_the_tighter_limit() {
        let m = MemoryInfo {
            total_bytes: Some(100),
            available_bytes: Some(80),
            cgroup_limit_bytes: Some(50),
        };
        assert_eq!(m.usable_bytes(), Some(50));
        let m = MemoryInfo {
            cgroup_limit_bytes: None,
            ..m
        };
        assert_eq!(m.usable_bytes(), Some(80));
    }
}

/// This process's memory, from `/proc/self/status` (Linux; `None` elsewhere).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcessMemory {
    /// Peak resident set size (`VmHWM`).
    pub peak_rss_bytes: Option<u64>,
    /// Resident now (`VmRSS`).
    pub rss_bytes: Option<u64>,
    /// Resident pages that belong to mapped files (`RssFile`): a memory-mapped model shows here,
    /// shared with the page cache, not copied.
    pub rss_file_bytes: Option<u64>,
    /// Resident anonymous memory (`RssAnon`): heap, stacks, the KV cache.
    pub rss_anon_bytes: Option<u64>,
}

impl ProcessMemory {
    pub fn read() -> ProcessMemory {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        ProcessMemory {
            peak_rss_bytes: meminfo_field(&status, "VmHWM"),
            rss_bytes: meminfo_field(&status, "VmRSS"),
            rss_file_bytes: meminfo_field(&status, "RssFile"),
            rss_anon_bytes: meminfo_field(&status, "RssAnon"),
        }
    }
}
