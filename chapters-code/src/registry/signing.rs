//! Signatures for model artifacts: Ed25519 over a DSSE envelope that carries an in-toto
//! statement — the envelope and statement the OpenSSF model-signing format uses, with our own
//! predicate. The statement names the manifest digest *and* the repository and tag it was
//! published as, so a signed old version cannot be replayed under a new tag.
//!
//! The key that verifies is never taken from the artifact: the puller holds a list of trusted
//! public keys, and a signature by any other key is refused.

use super::{Digest, Reference, RegistryError};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// DSSE payload type of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// Media type of the envelope blob in the registry.
pub const ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
/// in-toto statement type.
pub const STATEMENT: &str = "https://in-toto.io/Statement/v1";
/// Our predicate: what was published, under which name.
pub const PREDICATE: &str = "urn:prodml:model-registry:publication:v1";

/// A private key that signs (32-byte Ed25519 seed).
pub struct SecretKey(SigningKey);

/// A public key, and its id: the first 16 hex digits of the SHA-256 of its 32 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl SecretKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<SecretKey, RegistryError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| RegistryError::BadKey(format!("no random source: {e}")))?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Writes `ed25519-secret <hex>` with permissions 0600.
    pub fn save(&self, path: &Path) -> Result<(), RegistryError> {
        let text = format!("ed25519-secret {}\n", hex(self.0.as_bytes()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(path).map_err(|e| RegistryError::io(path, e))?;
        std::io::Write::write_all(&mut f, text.as_bytes()).map_err(|e| RegistryError::io(path, e))
    }

    pub fn load(path: &Path) -> Result<SecretKey, RegistryError> {
        let bytes = read_key(path, "ed25519-secret")?;
        Ok(SecretKey(SigningKey::from_bytes(&bytes)))
    }
}

impl PublicKey {
    pub fn id(&self) -> String {
        Digest::of(self.0.as_bytes()).hex()[..16].to_string()
    }

    /// Writes `ed25519-public <hex>`.
    pub fn save(&self, path: &Path) -> Result<(), RegistryError> {
        std::fs::write(path, format!("ed25519-public {}\n", hex(self.0.as_bytes())))
            .map_err(|e| RegistryError::io(path, e))
    }

    pub fn load(path: &Path) -> Result<PublicKey, RegistryError> {
        let bytes = read_key(path, "ed25519-public")?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|e| RegistryError::BadKey(format!("{}: {e}", path.display())))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads `<kind> <64 hex>` from a key file.
fn read_key(path: &Path, kind: &str) -> Result<[u8; 32], RegistryError> {
    let text = std::fs::read_to_string(path).map_err(|e| RegistryError::io(path, e))?;
    let bad = || {
        RegistryError::BadKey(format!(
            "{} is not an `{kind} <64 hex digits>` key file",
            path.display()
        ))
    };
    let hex = text.trim().strip_prefix(kind).ok_or_else(bad)?.trim();
    // 64 lowercase hex digits → 32 bytes (the digest type's parser).
    Digest::from_hex(hex).map(|d| *d.as_bytes()).ok_or_else(bad)
}

/// A DSSE envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// Base64 of the statement's JSON.
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    pub keyid: String,
    /// Base64 of the 64-byte Ed25519 signature over the PAE of the payload.
    pub sig: String,
}

/// The in-toto statement we sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub kind: String,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: Publication,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub name: String,
    /// `{"sha256": "<hex>"}`.
    pub digest: std::collections::BTreeMap<String, String>,
}

/// What the publisher vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    pub repository: String,
    pub tag: String,
    /// The manifest's digest (`sha256:<hex>`).
    pub manifest: String,
    /// Every file of the model: its name, digest and size.
    pub files: Vec<SignedFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedFile {
    pub name: String,
    pub digest: String,
    pub size: u64,
}

/// DSSE's pre-authentication encoding: what is signed, binding the payload to its type.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

// ANCHOR: sign
/// Signs the publication of `manifest` as `reference`.
pub fn sign(
    key: &SecretKey,
    reference: &Reference,
    manifest: &Digest,
    files: Vec<SignedFile>,
) -> Vec<u8> {
    let statement = Statement {
        kind: STATEMENT.into(),
        subject: vec![Subject {
            name: reference.to_string(),
            digest: [("sha256".to_string(), manifest.hex())].into(),
        }],
        predicate_type: PREDICATE.into(),
        predicate: Publication {
            repository: reference.name.clone(),
            tag: reference.tag.clone(),
            manifest: manifest.to_string(),
            files,
        },
    };
    let payload = serde_json::to_vec(&statement).expect("a statement serializes");
    let sig = key.0.sign(&pae(PAYLOAD_TYPE, &payload));
    let envelope = Envelope {
        payload_type: PAYLOAD_TYPE.into(),
        payload: B64.encode(&payload),
        signatures: vec![EnvelopeSignature {
            keyid: key.public().id(),
            sig: B64.encode(sig.to_bytes()),
        }],
    };
    serde_json::to_vec(&envelope).expect("an envelope serializes")
}
// ANCHOR_END: sign

// ANCHOR: verify
/// Verifies an envelope for `manifest` pulled as `reference`: a signature by a trusted key
/// over this payload, a statement about this manifest digest, published under this
/// repository and tag. Returns the statement and the id of the trusted key that signed it.
pub fn verify(
    envelope: &[u8],
    trusted: &[PublicKey],
    reference: &Reference,
    manifest: &Digest,
) -> Result<(Statement, String), RegistryError> {
    let r = reference.to_string();
    let bad = |key_id: &str, reason: String| RegistryError::BadSignature {
        reference: r.clone(),
        key_id: key_id.to_string(),
        reason,
    };
    let envelope: Envelope = serde_json::from_slice(envelope)
        .map_err(|e| bad("?", format!("not a DSSE envelope: {e}")))?;
    if envelope.payload_type != PAYLOAD_TYPE {
        return Err(bad("?", format!("payload type {}", envelope.payload_type)));
    }
    let payload = B64
        .decode(&envelope.payload)
        .map_err(|e| bad("?", format!("payload is not base64: {e}")))?;
    // Only signatures whose key id names a trusted key count; the id is a hint, the
    // verification below is the proof.
    let candidates: Vec<(&EnvelopeSignature, &PublicKey)> = envelope
        .signatures
        .iter()
        .filter_map(|s| trusted.iter().find(|k| k.id() == s.keyid).map(|k| (s, k)))
        .collect();
    if candidates.is_empty() {
        let ids: Vec<&str> = envelope
            .signatures
            .iter()
            .map(|s| s.keyid.as_str())
            .collect();
        let trusted: Vec<String> = trusted.iter().map(PublicKey::id).collect();
        return Err(RegistryError::UntrustedKey {
            reference: r,
            key_ids: if ids.is_empty() {
                "none".into()
            } else {
                ids.join(", ")
            },
            trusted: if trusted.is_empty() {
                "none".into()
            } else {
                trusted.join(", ")
            },
        });
    }
    let message = pae(PAYLOAD_TYPE, &payload);
    for (s, key) in &candidates {
        let sig = B64
            .decode(&s.sig)
            .ok()
            .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
            .ok_or_else(|| bad(&s.keyid, "the signature is not 64 bytes of base64".into()))?;
        key.0
            .verify(&message, &sig)
            .map_err(|_| bad(&s.keyid, "the payload or the signature was changed".into()))?;
    }
    let statement: Statement = serde_json::from_slice(&payload)
        .map_err(|e| bad(&candidates[0].0.keyid, format!("not our statement: {e}")))?;
    let other = |field: &'static str, signed: String, got: String, hint: &'static str| {
        RegistryError::SignedForOther {
            reference: r.clone(),
            field,
            signed,
            got,
            hint,
        }
    };
    let p = &statement.predicate;
    if statement.kind != STATEMENT || statement.predicate_type != PREDICATE {
        return Err(bad(
            &candidates[0].0.keyid,
            "not a publication statement".into(),
        ));
    }
    if p.manifest != manifest.to_string()
        || statement
            .subject
            .iter()
            .all(|s| s.digest.get("sha256") != Some(&manifest.hex()))
    {
        return Err(other(
            "manifest",
            p.manifest.clone(),
            manifest.to_string(),
            " (the manifest under this tag was swapped)",
        ));
    }
    if p.repository != reference.name {
        return Err(other(
            "repository",
            p.repository.clone(),
            reference.name.clone(),
            " (a model copied from another repository)",
        ));
    }
    if p.tag != reference.tag {
        return Err(other(
            "tag",
            p.tag.clone(),
            reference.tag.clone(),
            " (an old version replayed under a new tag)",
        ));
    }
    Ok((statement, candidates[0].0.keyid.clone()))
}
// ANCHOR_END: verify

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_verify_only_for_their_key_manifest_and_tag() {
        let key = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let r = Reference::parse("m/x:v1").unwrap();
        let d = Digest::of(b"manifest");
        let env = sign(&key, &r, &d, vec![]);
        assert!(verify(&env, &[key.public()], &r, &d).is_ok());
        assert!(matches!(
            verify(&env, &[other.public()], &r, &d),
            Err(RegistryError::UntrustedKey { .. })
        ));
        assert!(matches!(
            verify(&env, &[], &r, &d),
            Err(RegistryError::UntrustedKey { .. })
        ));
        let v2 = Reference::parse("m/x:v2").unwrap();
        assert!(matches!(
            verify(&env, &[key.public()], &v2, &d),
            Err(RegistryError::SignedForOther { field: "tag", .. })
        ));
        assert!(matches!(
            verify(&env, &[key.public()], &r, &Digest::of(b"other")),
            Err(RegistryError::SignedForOther {
                field: "manifest",
                ..
            })
        ));
        // A payload changed after signing (here: the tag rewritten to v2).
        let mut e: Envelope = serde_json::from_slice(&env).unwrap();
        let text = String::from_utf8(B64.decode(&e.payload).unwrap()).unwrap();
        e.payload = B64.encode(text.replace("\"v1\"", "\"v2\"").replace("m/x:v1", "m/x:v2"));
        let forged = serde_json::to_vec(&e).unwrap();
        assert!(matches!(
            verify(&forged, &[key.public()], &v2, &d),
            Err(RegistryError::BadSignature { .. })
        ));
        // Another key's signature relabelled with the trusted key's id.
        let mut e: Envelope = serde_json::from_slice(&sign(&other, &r, &d, vec![])).unwrap();
        e.signatures[0].keyid = key.public().id();
        assert!(matches!(
            verify(&serde_json::to_vec(&e).unwrap(), &[key.public()], &r, &d),
            Err(RegistryError::BadSignature { .. })
        ));
    }

    #[test]
    fn keys_round_trip_through_files() {
        let dir = std::env::temp_dir().join(format!("prodml-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = SecretKey::generate().unwrap();
        key.save(&dir.join("k")).unwrap();
        key.public().save(&dir.join("k.pub")).unwrap();
        assert!(SecretKey::load(&dir.join("k")).unwrap().public() == key.public());
        assert!(PublicKey::load(&dir.join("k.pub")).unwrap() == key.public());
        std::fs::write(dir.join("bad"), "ed25519-public 1234").unwrap();
        assert!(matches!(
            PublicKey::load(&dir.join("bad")),
            Err(RegistryError::BadKey(_))
        ));
        assert!(
            PublicKey::load(&dir.join("k")).is_err(),
            "a secret key is not a public one"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
