//! Signed and encrypted APR files, through aprender's own functions.
//!
//! aprender signs (Ed25519) and encrypts (Argon2id key from a password, then AES-256-GCM)
//! its *v1* container, whose payload is any serde value. Its v2 tensor container has flag
//! bits for "signed" and "encrypted" but, in aprender-core 0.72.3, no function that writes
//! or checks either. So a sealed model here is a v1 file whose payload is the whole APR v2
//! file: verifying it reads and hashes every byte, and the tensors then live in that buffer
//! (no zero-copy mapping — a signature check cannot be lazier than the bytes it covers).
//!
//! The pitfall this module exists to avoid: `aprender::format::load_verified(path, type,
//! None)` checks the signature against the public key *stored in the file*, so a file
//! re-signed by anyone passes. [`open_signed`] takes the publisher's key and has no
//! `None`.

use aprender::format::{ModelType, SaveOptions};
pub use aprender::format::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The v1 model type of a sealed APR file (aprender's "custom" type).
const SEALED_TYPE: ModelType = ModelType::Custom;

/// The payload aprender signs or encrypts: an APR v2 file, as bytes.
#[derive(Serialize)]
struct Sealing<'a> {
    #[serde(with = "serde_bytes")]
    apr: &'a [u8],
}

#[derive(Deserialize)]
struct Sealed {
    #[serde(with = "serde_bytes")]
    apr: Vec<u8>,
}

/// Why a sealed file could not be written or opened. The message is aprender's.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The signature does not verify with the trusted key, or the password/ciphertext is
    /// wrong (AES-GCM authenticates: a changed byte fails like a wrong key).
    #[error("{path}: {message}")]
    Rejected { path: String, message: String },
    #[error("{path}: {message}")]
    Other { path: String, message: String },
}

impl SealError {
    fn from_aprender(path: &Path, e: aprender::error::AprenderError) -> SealError {
        use aprender::error::AprenderError as E;
        let (path, message) = (path.display().to_string(), e.to_string());
        match e {
            E::SignatureInvalid { .. }
            | E::DecryptionFailed { .. }
            | E::ChecksumMismatch { .. } => SealError::Rejected { path, message },
            _ => SealError::Other { path, message },
        }
    }
}

/// Runs one of aprender's loaders, turning a panic on a malformed file into an error: the
/// loaders check the CRC first, but a file crafted with a valid CRC reaches slicing code
/// that trusts the header's sizes.
fn guarded<T>(path: &Path, f: impl FnOnce() -> aprender::error::Result<T>) -> Result<T, SealError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(|e| SealError::from_aprender(path, e)),
        Err(_) => Err(SealError::Other {
            path: path.display().to_string(),
            message: "malformed sealed file (aprender's reader panicked on it)".into(),
        }),
    }
}

// ANCHOR: sign
/// Writes `apr` (an APR v2 file) to `path`, signed with the publisher's `key`.
pub fn sign(apr: &[u8], path: &Path, key: &SigningKey) -> Result<(), SealError> {
    guarded(path, || {
        aprender::format::save_signed(
            &Sealing { apr },
            SEALED_TYPE,
            path,
            SaveOptions::default(),
            key,
        )
    })
}

/// The APR v2 bytes of the signed file at `path`, if its signature verifies with the
/// publisher's key `trusted` (never with the key the file carries).
pub fn open_signed(path: &Path, trusted: &VerifyingKey) -> Result<Vec<u8>, SealError> {
    guarded(path, || {
        aprender::format::load_verified::<Sealed>(path, SEALED_TYPE, Some(trusted))
    })
    .map(|s| s.apr)
}
// ANCHOR_END: sign

/// aprender's default check, kept to show the pitfall: it trusts the key inside the file.
pub fn open_signed_trusting_the_file(path: &Path) -> Result<Vec<u8>, SealError> {
    guarded(path, || {
        aprender::format::load_verified::<Sealed>(path, SEALED_TYPE, None)
    })
    .map(|s| s.apr)
}

// ANCHOR: encrypt
/// Writes `apr` to `path` encrypted with a key derived from `password` (Argon2id, random
/// salt and nonce: two encryptions of the same model differ).
pub fn encrypt(apr: &[u8], path: &Path, password: &str) -> Result<(), SealError> {
    guarded(path, || {
        aprender::format::save_encrypted(
            &Sealing { apr },
            SEALED_TYPE,
            path,
            SaveOptions::default(),
            password,
        )
    })
}

/// The APR v2 bytes of the encrypted file at `path`.
pub fn open_encrypted(path: &Path, password: &str) -> Result<Vec<u8>, SealError> {
    guarded(path, || {
        aprender::format::load_encrypted::<Sealed>(path, SEALED_TYPE, password)
    })
    .map(|s| s.apr)
}
// ANCHOR_END: encrypt

/// What an attacker who knows the format does to a sealed file: flip one bit of byte `at` and
/// recompute the CRC32 footer, so that only the signature or the AES-GCM tag can catch it.
/// (With `fix_crc = false`, the accidental case: the CRC catches it.) Demos and tests use it.
/// Returns `None` when `at` is not a byte before the footer.
pub fn flip_byte(bytes: &mut [u8], at: usize, fix_crc: bool) -> Option<()> {
    let n = bytes.len().checked_sub(4).filter(|&n| at < n)?;
    bytes[at] ^= 1;
    if fix_crc {
        let crc = aprender::format::crc32(&bytes[..n]);
        bytes[n..].copy_from_slice(&crc.to_le_bytes());
    }
    Some(())
}

/// A key pair from a 32-byte seed. Demos and tests use fixed seeds so runs repeat; a real
/// publisher draws the seed once from the operating system's CSPRNG and keeps it secret.
pub fn key_from_seed(seed: [u8; 32]) -> SigningKey {
    SigningKey::from_bytes(&seed)
}
