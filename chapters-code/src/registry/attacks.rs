//! What an attacker with write access to the registry (or its storage) can do, as functions:
//! the tests and `demo-model-registry --verify` run each one and check that a pull refuses the
//! result. None of them needs the publisher's secret key — that is the point.

use super::artifact::{self, Descriptor, Manifest};
use super::cache::{attach_signature, signature_tag};
use super::local::LocalRegistry;
use super::oci::Client;
use super::{Digest, RegistryError};

fn manifest_of(bytes: Option<Vec<u8>>, name: &str, tag: &str) -> Result<Vec<u8>, RegistryError> {
    bytes.ok_or_else(|| RegistryError::NotFound(name.to_string(), tag.to_string()))
}

/// Puts the manifest of `old_tag` under `new_tag` (its signature stays valid for `old_tag`).
pub async fn replay(
    client: &Client,
    name: &str,
    old_tag: &str,
    new_tag: &str,
) -> Result<Digest, RegistryError> {
    let old = manifest_of(
        client
            .get_manifest(name, old_tag, artifact::MANIFEST)
            .await?,
        name,
        old_tag,
    )?;
    client
        .put_manifest(name, new_tag, artifact::MANIFEST, &old)
        .await
}

/// Replaces the manifest under `tag` by one that differs (an annotation added) and returns
/// its digest. The original's signature is then attached to nothing under this tag.
pub async fn swap_manifest(
    client: &Client,
    name: &str,
    tag: &str,
) -> Result<(Digest, u64), RegistryError> {
    let bytes = manifest_of(
        client.get_manifest(name, tag, artifact::MANIFEST).await?,
        name,
        tag,
    )?;
    let mut m = Manifest::parse(&bytes)?;
    m.annotations.insert(
        "org.opencontainers.image.description".into(),
        "swapped".into(),
    );
    let swapped = m.to_bytes();
    let digest = client
        .put_manifest(name, tag, artifact::MANIFEST, &swapped)
        .await?;
    Ok((digest, swapped.len() as u64))
}

/// Copies the signature artifact of manifest `from` to the signature tag of `to`, unchanged
/// (its subject still names `from`).
pub async fn copy_signature(
    client: &Client,
    name: &str,
    from: &Digest,
    to: &Digest,
) -> Result<(), RegistryError> {
    let tag = signature_tag(from);
    let sig = manifest_of(
        client.get_manifest(name, &tag, artifact::MANIFEST).await?,
        name,
        &tag,
    )?;
    client
        .put_manifest(name, &signature_tag(to), artifact::MANIFEST, &sig)
        .await
        .map(drop)
}

/// Re-attaches the signed envelope of manifest `from` to manifest `to` as a new signature
/// artifact whose subject is `to` (the envelope's bytes, and so its signature, untouched).
pub async fn reattach_signature(
    client: &Client,
    name: &str,
    from: &Digest,
    to: (&Digest, u64),
) -> Result<(), RegistryError> {
    let tag = signature_tag(from);
    let sig = Manifest::parse(&manifest_of(
        client.get_manifest(name, &tag, artifact::MANIFEST).await?,
        name,
        &tag,
    )?)?;
    let layer = sig
        .layers
        .first()
        .ok_or_else(|| RegistryError::NotAModel("a signature without a layer".into()))?;
    let envelope = client
        .fetch_small(name, &layer.digest()?, layer.size)
        .await?;
    let subject = Descriptor::new(artifact::MANIFEST, to.0, to.1);
    attach_signature(client, name, subject, &envelope)
        .await
        .map(drop)
}

/// Flips one bit in the middle of a stored blob, behind the registry's back (same length);
/// a second call flips it back.
pub fn flip_stored_byte(registry: &LocalRegistry, blob: &Digest) -> Result<(), RegistryError> {
    let path = registry.blob_data(blob);
    let mut bytes = std::fs::read(&path).map_err(|e| RegistryError::io(&path, e))?;
    let at = bytes.len() / 2;
    if let Some(b) = bytes.get_mut(at) {
        *b ^= 0x40;
    }
    std::fs::write(&path, &bytes).map_err(|e| RegistryError::io(&path, e))
}
