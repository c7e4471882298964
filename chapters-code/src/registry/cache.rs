//! Push and pull, and the local cache they fill, laid out like the Hugging Face Hub's:
//!
//! ```text
//! <root>/models--<name with / as -->/
//!   blobs/<sha256 hex>                 every file, by content (an HF LFS oid is the same hex)
//!   refs/<tag>                         the manifest digest (hex) the tag resolved to
//!   snapshots/<manifest hex>/<file>    symbolic links to ../../blobs/<hex>
//! ```
//!
//! A revision here is a manifest digest, where the Hub's is a git commit: both name one
//! immutable set of files.

use super::artifact::{self, Manifest, ModelConfig};
use super::oci::{Client, LocalBlob, Transfer};
use super::signing::{self, PublicKey, SecretKey, SignedFile, Statement};
use super::{Digest, Reference, RegistryError};
use crate::formats::gguf::Gguf;
use std::path::{Path, PathBuf};

/// Upload chunk size: 8 MiB (a 98 MB model is 12 requests; each can be resumed from).
pub const DEFAULT_CHUNK: usize = 8 << 20;
/// The empty JSON object's media type: config of an artifact with no config (OCI 1.1).
pub const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";

/// The tag a signature of `manifest` lives under (cosign's convention: registries without the
/// OCI 1.1 referrers API, such as distribution 2.8, can still find it).
pub fn signature_tag(manifest: &Digest) -> String {
    format!("sha256-{}.sig", manifest.hex())
}

/// A Hugging Face-style cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    pub root: PathBuf,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    /// `models--<name>` with `/` written `--`, as the Hub's cache writes `org/name`.
    pub fn repo_dir(&self, name: &str) -> PathBuf {
        self.root
            .join(format!("models--{}", name.replace('/', "--")))
    }

    pub fn blob(&self, name: &str, digest: &Digest) -> PathBuf {
        self.repo_dir(name).join("blobs").join(digest.hex())
    }

    pub fn snapshot(&self, name: &str, manifest: &Digest) -> PathBuf {
        self.repo_dir(name).join("snapshots").join(manifest.hex())
    }

    pub fn ref_file(&self, name: &str, tag: &str) -> PathBuf {
        self.repo_dir(name).join("refs").join(tag)
    }

    /// Where partial uploads remember their session (`uploads/<hex>`).
    fn upload_state(&self, digest: &Digest) -> PathBuf {
        self.root.join("uploads").join(digest.hex())
    }

    /// The manifest digest a tag resolved to at the last pull, if any.
    pub fn resolve(&self, reference: &Reference) -> Option<Digest> {
        let hex = std::fs::read_to_string(self.ref_file(&reference.name, &reference.tag)).ok()?;
        Digest::from_hex(hex.trim())
    }
}

fn mkdir(path: &Path) -> Result<(), RegistryError> {
    std::fs::create_dir_all(path).map_err(|e| RegistryError::io(path, e))
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub manifest: Digest,
    /// The manifest's length in bytes.
    pub manifest_bytes: u64,
    /// The signature envelope's length in bytes, when signed.
    pub envelope_bytes: Option<u64>,
    pub layer: Digest,
    pub layer_bytes: u64,
    pub config: ModelConfig,
    /// The GGUF upload (resumed, skipped, chunks).
    pub transfer: Transfer,
    /// The signature's key id, when signed.
    pub signed_by: Option<String>,
}

/// How a push or pull transfers its big blob.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Upload chunk, in bytes.
    pub chunk: usize,
    /// Stop after this many bytes of the GGUF blob (tests and the demo interrupt with it).
    pub budget: Option<u64>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            chunk: DEFAULT_CHUNK,
            budget: None,
        }
    }
}

// ANCHOR: push
/// Publishes the GGUF at `path` as `reference`: the file (chunked, resumable), its config, the
/// manifest under the tag, and — with a key — the signature under [`signature_tag`].
pub async fn push(
    client: &Client,
    cache: &Cache,
    reference: &Reference,
    path: &Path,
    key: Option<&SecretKey>,
    options: Options,
) -> Result<Pushed, RegistryError> {
    let gguf = Gguf::open(path).map_err(|e| RegistryError::NotGguf {
        reference: path.display().to_string(),
        message: e.to_string(),
    })?;
    let (layer, layer_bytes) = Digest::of_file(path)?;
    let config = artifact::model_config(&gguf, &layer, layer_bytes);
    drop(gguf);
    let name = &reference.name;
    let state = cache.upload_state(&layer);
    mkdir(state.parent().expect("uploads/ has a parent"))?;
    let transfer = client
        .push_blob(
            name,
            LocalBlob {
                path,
                digest: &layer,
                size: layer_bytes,
            },
            options.chunk,
            &state,
            options.budget,
        )
        .await?;
    let config_bytes = serde_json::to_vec(&config).expect("a config serializes");
    let config_digest = client.push_bytes(name, &config_bytes).await?;
    let file_name = path
        .file_name()
        .map_or("model.gguf".into(), |n| n.to_string_lossy().into_owned());
    let manifest = artifact::model_manifest(
        (&config_digest, config_bytes.len() as u64),
        (&layer, layer_bytes),
        &file_name,
    );
    let manifest_bytes = manifest.to_bytes();
    let manifest_digest = client
        .put_manifest(name, &reference.tag, artifact::MANIFEST, &manifest_bytes)
        .await?;
    let mut envelope_len = None;
    let signed_by = match key {
        Some(key) => {
            let files = vec![SignedFile {
                name: file_name,
                digest: layer.to_string(),
                size: layer_bytes,
            }];
            let envelope = signing::sign(key, reference, &manifest_digest, files);
            let subject = artifact::Descriptor::new(
                artifact::MANIFEST,
                &manifest_digest,
                manifest_bytes.len() as u64,
            );
            attach_signature(client, name, subject, &envelope).await?;
            envelope_len = Some(envelope.len() as u64);
            Some(key.public().id())
        }
        None => None,
    };
    Ok(Pushed {
        manifest: manifest_digest,
        manifest_bytes: manifest_bytes.len() as u64,
        envelope_bytes: envelope_len,
        layer,
        layer_bytes,
        config,
        transfer,
        signed_by,
    })
}
// ANCHOR_END: push

/// Attaches a DSSE envelope to `subject`: one layer of the signature artifact under the
/// signature tag of `subject`. Envelopes already there for the same subject are kept — one
/// manifest can be published under several tags (`v1` and `latest`), each with its own
/// signed statement — so this appends rather than replaces.
pub async fn attach_signature(
    client: &Client,
    name: &str,
    subject: artifact::Descriptor,
    envelope: &[u8],
) -> Result<Digest, RegistryError> {
    let empty = client.push_bytes(name, b"{}").await?;
    let env_digest = client.push_bytes(name, envelope).await?;
    let tag = signature_tag(&subject.digest()?);
    let mut layers: Vec<artifact::Descriptor> =
        match client.get_manifest(name, &tag, artifact::MANIFEST).await? {
            Some(bytes) => match Manifest::parse(&bytes) {
                Ok(old) if old.subject.as_ref() == Some(&subject) => old
                    .layers
                    .into_iter()
                    .filter(|l| l.media_type == signing::ENVELOPE)
                    .collect(),
                _ => Vec::new(),
            },
            None => Vec::new(),
        };
    let new = artifact::Descriptor::new(signing::ENVELOPE, &env_digest, envelope.len() as u64);
    if !layers.contains(&new) {
        layers.push(new);
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: artifact::MANIFEST.into(),
        artifact_type: Some(signing::ENVELOPE.into()),
        config: artifact::Descriptor::new(EMPTY_CONFIG, &empty, 2),
        layers,
        subject: Some(subject),
        annotations: Default::default(),
    };
    client
        .put_manifest(name, &tag, artifact::MANIFEST, &manifest.to_bytes())
        .await
}

/// What a pull verified and where the file is.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub manifest: Digest,
    /// `snapshots/<manifest>/<file>`: the verified GGUF, ready to map.
    pub path: PathBuf,
    pub config: ModelConfig,
    pub statement: Statement,
    /// The trusted key that signed it.
    pub key_id: String,
    pub transfer: Transfer,
}

// ANCHOR: pull
/// Fetches `reference` into the cache and returns the verified file. In order: the manifest
/// (its digest computed from its bytes), the signature attached to that digest, checked against
/// `trusted` and against the repository, tag and digest it names; then the config and the GGUF
/// blob, each checked against its digest while streaming, and the GGUF header parsed. Only then
/// does the snapshot link and the ref appear.
pub async fn pull(
    client: &Client,
    cache: &Cache,
    reference: &Reference,
    trusted: &[PublicKey],
    options: Options,
) -> Result<Pulled, RegistryError> {
    let name = &reference.name;
    let manifest_bytes = client
        .get_manifest(name, &reference.tag, artifact::MANIFEST)
        .await?
        .ok_or_else(|| RegistryError::NotFound(name.clone(), reference.tag.clone()))?;
    let manifest_digest = Digest::of(&manifest_bytes);
    let manifest = Manifest::parse(&manifest_bytes)?;
    let (layer, file_name) = manifest.model_layer()?;
    let layer_digest = layer.digest()?;

    let (statement, key_id) =
        verify_signature(client, reference, &manifest_digest, trusted).await?;
    let signed_file = SignedFile {
        name: file_name.to_string(),
        digest: layer.digest.clone(),
        size: layer.size,
    };
    if statement.predicate.files != [signed_file.clone()] {
        return Err(RegistryError::SignedForOther {
            reference: reference.to_string(),
            field: "files",
            signed: format!("{:?}", statement.predicate.files),
            got: format!("{:?}", [signed_file]),
            hint: "",
        });
    }

    let config_bytes = client
        .fetch_small(name, &manifest.config.digest()?, manifest.config.size)
        .await?;
    let config: ModelConfig = serde_json::from_slice(&config_bytes)
        .map_err(|e| RegistryError::NotAModel(format!("config blob: {e}")))?;

    let blobs = cache.repo_dir(name).join("blobs");
    mkdir(&blobs)?;
    let blob = cache.blob(name, &layer_digest);
    let transfer = fetch_or_reuse(client, name, &layer_digest, layer.size, &blob, options).await?;
    if let Err(e) = Gguf::open(&blob) {
        return Err(RegistryError::NotGguf {
            reference: reference.to_string(),
            message: e.to_string(),
        });
    }
    for (digest, bytes) in [
        (&manifest_digest, &manifest_bytes),
        (&manifest.config.digest()?, &config_bytes),
    ] {
        let path = cache.blob(name, digest);
        std::fs::write(&path, bytes).map_err(|e| RegistryError::io(&path, e))?;
    }
    let snapshot = cache.snapshot(name, &manifest_digest);
    mkdir(&snapshot)?;
    let path = snapshot.join(file_name);
    link_blob(&layer_digest, &path)?;
    let refs = cache.repo_dir(name).join("refs");
    mkdir(&refs)?;
    let ref_file = cache.ref_file(name, &reference.tag);
    let tmp = ref_file.with_extension("tmp");
    std::fs::write(&tmp, manifest_digest.hex()).map_err(|e| RegistryError::io(&tmp, e))?;
    std::fs::rename(&tmp, &ref_file).map_err(|e| RegistryError::io(&ref_file, e))?;
    Ok(Pulled {
        manifest: manifest_digest,
        path,
        config,
        statement,
        key_id,
        transfer,
    })
}
// ANCHOR_END: pull

/// The signature artifact attached to `manifest`, verified: the first envelope that verifies
/// for this reference wins. When none does, the refusal reported is the most telling one: a
/// signature that does not verify (tampering), then a statement for another manifest, tag or
/// repository (a replay), then keys nobody trusts.
async fn verify_signature(
    client: &Client,
    reference: &Reference,
    manifest: &Digest,
    trusted: &[PublicKey],
) -> Result<(Statement, String), RegistryError> {
    let rank = |e: &RegistryError| match e {
        RegistryError::BadSignature { .. } => 0,
        RegistryError::SignedForOther { .. } => 1,
        _ => 2,
    };
    let mut refusal: Option<RegistryError> = None;
    for envelope in signature_envelopes(client, reference, manifest).await? {
        match signing::verify(&envelope, trusted, reference, manifest) {
            Ok(verified) => return Ok(verified),
            Err(e) => {
                if refusal.as_ref().is_none_or(|r| rank(&e) < rank(r)) {
                    refusal = Some(e);
                }
            }
        }
    }
    Err(refusal.unwrap_or_else(|| RegistryError::Unsigned {
        reference: reference.to_string(),
        manifest: manifest.clone(),
    }))
}

async fn signature_envelopes(
    client: &Client,
    reference: &Reference,
    manifest: &Digest,
) -> Result<Vec<Vec<u8>>, RegistryError> {
    let name = &reference.name;
    let Some(sig_bytes) = client
        .get_manifest(name, &signature_tag(manifest), artifact::MANIFEST)
        .await?
    else {
        return Ok(Vec::new());
    };
    let sig = Manifest::parse(&sig_bytes)?;
    let Some(subject) = sig.subject.as_ref() else {
        return Ok(Vec::new());
    };
    if &subject.digest()? != manifest {
        return Err(RegistryError::SignedForOther {
            reference: reference.to_string(),
            field: "manifest",
            signed: subject.digest.clone(),
            got: manifest.to_string(),
            hint: " (the signature artifact names another manifest)",
        });
    }
    let mut envelopes = Vec::new();
    for layer in sig
        .layers
        .iter()
        .filter(|l| l.media_type == signing::ENVELOPE)
    {
        envelopes.push(
            client
                .fetch_small(name, &layer.digest()?, layer.size)
                .await?,
        );
    }
    Ok(envelopes)
}

/// Reuses a cached blob if it still hashes to its name (a changed file is deleted and fetched
/// again); otherwise downloads it, resuming a partial download.
async fn fetch_or_reuse(
    client: &Client,
    name: &str,
    digest: &Digest,
    size: u64,
    blob: &Path,
    options: Options,
) -> Result<Transfer, RegistryError> {
    if blob.exists() {
        if Digest::of_file(blob)? == (digest.clone(), size) {
            return Ok(Transfer {
                skipped: true,
                ..Transfer::default()
            });
        }
        std::fs::remove_file(blob).map_err(|e| RegistryError::io(blob, e))?;
    }
    client
        .fetch_blob(name, digest, size, blob, options.budget)
        .await
}

/// `snapshots/<rev>/<file>` → `../../blobs/<hex>` (a copy where links are not available).
fn link_blob(digest: &Digest, path: &Path) -> Result<(), RegistryError> {
    let _ = std::fs::remove_file(path);
    let target = Path::new("../../blobs").join(digest.hex());
    #[cfg(unix)]
    let made = std::os::unix::fs::symlink(&target, path);
    #[cfg(not(unix))]
    let made = std::fs::copy(path.parent().unwrap().join(&target), path).map(drop);
    made.map_err(|e| RegistryError::io(path, e))
}
