//! A signed model registry on a real OCI registry (the model-registry chapter).
//!
//! - [`digest`]: SHA-256 content addresses (`sha256:<64 hex>`), computed while streaming.
//! - [`oci`]: the few calls of the OCI distribution API we need, over reqwest: chunked and
//!   resumable blob uploads, ranged (resumable) blob downloads, manifests.
//! - [`artifact`]: a GGUF file as an OCI artifact — Docker's model media types — and its config.
//! - [`signing`]: Ed25519 signatures in a DSSE envelope over an in-toto statement that names
//!   the repository, the tag and the manifest digest; verified against keys the puller trusts.
//! - [`cache`]: a local cache laid out like the Hugging Face Hub's (`blobs/`, `refs/`,
//!   `snapshots/`), and [`cache::pull`] / [`cache::push`], which tie it all together.

pub mod artifact;
pub mod attacks;
pub mod cache;
pub mod digest;
pub mod local;
pub mod oci;
pub mod signing;

pub use digest::Digest;

/// Why a push or a pull was refused. Every refusal of a pull happens before the file is placed
/// in the cache's snapshot: a refused model is never used.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{what}: the registry answered HTTP {status}: {body}")]
    Http {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{what}: {message}")]
    Transport { what: String, message: String },
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("`{0}` is not a SHA-256 digest (expected sha256: and 64 lowercase hex digits)")]
    BadDigest(String),
    #[error("`{0}` is not a valid reference (expected NAME:TAG, NAME lowercase [a-z0-9._/-])")]
    BadReference(String),
    #[error("{what} {expected} arrived with digest {got}: its content was changed")]
    DigestMismatch {
        what: String,
        expected: Digest,
        got: Digest,
    },
    #[error("{0}:{1} does not exist in the registry")]
    NotFound(String, String),
    #[error("the manifest is not a model artifact: {0}")]
    NotAModel(String),
    #[error(
        "{reference} (manifest {manifest}) is not signed: no signature is attached, refusing to use it"
    )]
    Unsigned { reference: String, manifest: Digest },
    #[error(
        "{reference} is signed only by keys this puller does not trust ({key_ids}); trusted: {trusted}"
    )]
    UntrustedKey {
        reference: String,
        key_ids: String,
        trusted: String,
    },
    #[error("{reference}: the signature by key {key_id} does not verify: {reason}")]
    BadSignature {
        reference: String,
        key_id: String,
        reason: String,
    },
    #[error(
        "{reference}: the signature was made for {field} `{signed}`, but this is `{got}`{hint}"
    )]
    SignedForOther {
        reference: String,
        field: &'static str,
        signed: String,
        got: String,
        hint: &'static str,
    },
    #[error("{0}")]
    BadKey(String),
    #[error("the GGUF file of {reference} does not parse: {message}")]
    NotGguf { reference: String, message: String },
    #[error("transfer interrupted after {done} of {total} bytes (resumable: run it again)")]
    Interrupted { done: u64, total: u64 },
}

impl RegistryError {
    /// A pull's refusal in a few words, e.g. `refused: unsigned` (the demo's verification table
    /// and the tests compare these).
    pub fn refusal(&self) -> String {
        match self {
            RegistryError::Unsigned { .. } => "refused: unsigned".into(),
            RegistryError::UntrustedKey { .. } => "refused: untrusted key".into(),
            RegistryError::BadSignature { .. } => "refused: bad signature".into(),
            RegistryError::SignedForOther { field, .. } => {
                format!("refused: signed for another {field}")
            }
            RegistryError::DigestMismatch { .. } => "refused: digest mismatch".into(),
            e => format!("error: {e}"),
        }
    }

    pub(crate) fn io(path: &std::path::Path, e: impl std::fmt::Display) -> RegistryError {
        RegistryError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }
}

/// `name:tag` of a model in one registry, e.g. `prodml/smollm2-135m:v1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The repository: lowercase path components of `[a-z0-9._-]`, joined by `/`.
    pub name: String,
    /// The tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}` (the OCI distribution spec's rule).
    pub tag: String,
}

impl Reference {
    /// Parses `NAME:TAG` by the OCI distribution spec's rules (no registry host: the client
    /// holds it).
    pub fn parse(s: &str) -> Result<Reference, RegistryError> {
        let bad = || RegistryError::BadReference(s.to_string());
        let (name, tag) = s.rsplit_once(':').ok_or_else(bad)?;
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
        };
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && (tag.as_bytes()[0].is_ascii_alphanumeric() || tag.as_bytes()[0] == b'_')
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if name.len() > 255 || !name.split('/').all(component_ok) || !tag_ok {
            return Err(bad());
        }
        Ok(Reference {
            name: name.to_string(),
            tag: tag.to_string(),
        })
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_follow_the_distribution_spec() {
        let r = Reference::parse("prodml/smollm2-135m:v1.0").unwrap();
        assert_eq!(
            (r.name.as_str(), r.tag.as_str()),
            ("prodml/smollm2-135m", "v1.0")
        );
        for bad in [
            "noTag",
            "Upper/case:v1",
            "a//b:v1",
            "a:",
            ":v1",
            "a:-v1",
            "a:v/1",
            "/a:v1",
            "a/_b:v1",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
