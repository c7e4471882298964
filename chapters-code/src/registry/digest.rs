//! SHA-256 content addresses, as OCI writes them (`sha256:` + 64 lowercase hex digits). The
//! same hex is a Hugging Face LFS object id, so one blob has one name in both worlds.

use super::RegistryError;
use sha2::{Digest as _, Sha256};
use std::io::Read;
use std::path::Path;

/// A SHA-256 digest; displays as `sha256:<hex>`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    /// 32 bytes of SHA-256.
    bytes: [u8; 32],
}

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest {
            bytes: Sha256::digest(data).into(),
        }
    }

    /// The digest of a file, streamed (constant memory), and its length in bytes.
    pub fn of_file(path: &Path) -> Result<(Digest, u64), RegistryError> {
        let mut file = std::fs::File::open(path).map_err(|e| RegistryError::io(path, e))?;
        let mut hasher = Hasher::default();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| RegistryError::io(path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hasher.finish())
    }

    /// Parses `sha256:<64 lowercase hex>`; anything else (another algorithm, uppercase, a
    /// wrong length) is refused.
    pub fn parse(s: &str) -> Result<Digest, RegistryError> {
        let bad = || RegistryError::BadDigest(s.to_string());
        let hex = s.strip_prefix("sha256:").ok_or_else(bad)?;
        Self::from_hex(hex).ok_or_else(bad)
    }

    /// From 64 lowercase hex digits (a cache's file name).
    pub fn from_hex(hex: &str) -> Option<Digest> {
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Digest { bytes })
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// 64 lowercase hex digits.
    pub fn hex(&self) -> String {
        self.bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// Hashes a stream and counts its bytes.
#[derive(Default, Clone)]
pub struct Hasher {
    sha: Sha256,
    len: u64,
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        self.sha.update(data);
        self.len += data.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest and the byte count.
    pub fn finish(self) -> (Digest, u64) {
        (
            Digest {
                bytes: self.sha.finalize().into(),
            },
            self.len,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_sha256_and_parse_strictly() {
        // SHA-256 of the empty string (FIPS 180-2 test vector).
        let empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(Digest::of(b"").to_string(), empty);
        assert_eq!(Digest::parse(empty).unwrap(), Digest::of(b""));
        let mut h = Hasher::default();
        h.update(b"ab");
        h.update(b"c");
        assert_eq!(h.finish(), (Digest::of(b"abc"), 3));
        for bad in [
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0",
            "sha256:../../etc/passwd",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
