//! Helpers shared by the unit tests.

/// Deterministic pseudo-random values in [-1, 1): a multiplicative hash of the index, so
/// tests need no RNG and give the same data everywhere.
pub fn wave(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = (i as u32)
                .wrapping_add(seed.wrapping_mul(0x9E37_79B9))
                .wrapping_mul(2_654_435_761);
            (x >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// A file path in the system's temporary directory, unique to this process and `name`,
/// removed when dropped.
pub struct ScratchFile(pub std::path::PathBuf);

impl ScratchFile {
    pub fn new(name: &str) -> ScratchFile {
        ScratchFile(std::env::temp_dir().join(format!("prodml-{}-{name}", std::process::id())))
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
