//! A GGUF model as an OCI artifact: an OCI image manifest whose config blob describes the model
//! and whose one layer is the GGUF file.
//!
//! Media types are Docker's (Docker Model Runner's `docker model push`), because llama.cpp's
//! `--docker-repo` pulls exactly these: a GGUF pushed here can be pulled by llama.cpp from the
//! same registry. CNCF ModelPack (`application/vnd.cncf.model.*`) describes more (several
//! files, tar layers, many formats) but, for one GGUF file, no runtime we serve beside reads it
//! yet.

use super::{Digest, RegistryError};
use crate::formats::gguf::Gguf;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The manifest's own media type (OCI image manifest v1).
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker's model config blob.
pub const MODEL_CONFIG: &str = "application/vnd.docker.ai.model.config.v0.1+json";
/// Docker's GGUF layer (what llama.cpp's `--docker-repo` looks for).
pub const GGUF_LAYER: &str = "application/vnd.docker.ai.gguf.v3";
/// The annotation that names a layer's file (ORAS and Docker use it).
pub const TITLE: &str = "org.opencontainers.image.title";

/// A content descriptor: what a manifest says about one blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `sha256:<hex>` (kept as text in JSON; parsed with [`Descriptor::digest`]).
    pub digest: String,
    /// Bytes.
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: digest.to_string(),
            size,
            annotations: BTreeMap::new(),
        }
    }

    pub fn digest(&self) -> Result<Digest, RegistryError> {
        Digest::parse(&self.digest)
    }
}

/// An OCI image manifest (the fields we write and read; others are ignored on read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// The manifest this one is about (a signature's subject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// Serialized for the registry. serde_json keeps field order and the maps are sorted, so
    /// one model file gives one manifest, byte for byte, and so one digest.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest serializes")
    }

    pub fn parse(bytes: &[u8]) -> Result<Manifest, RegistryError> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| RegistryError::NotAModel(format!("not an OCI manifest: {e}")))?;
        if m.schema_version != 2 || m.media_type != MANIFEST {
            return Err(RegistryError::NotAModel(format!(
                "schemaVersion {} / mediaType {} (expected 2 / {MANIFEST})",
                m.schema_version, m.media_type
            )));
        }
        Ok(m)
    }

    /// The GGUF layer of a model manifest, checked: Docker's config type, exactly one GGUF
    /// layer, a file name without a path.
    pub fn model_layer(&self) -> Result<(&Descriptor, &str), RegistryError> {
        if self.config.media_type != MODEL_CONFIG {
            return Err(RegistryError::NotAModel(format!(
                "config media type {} (expected {MODEL_CONFIG})",
                self.config.media_type
            )));
        }
        let ggufs: Vec<_> = self
            .layers
            .iter()
            .filter(|l| l.media_type == GGUF_LAYER)
            .collect();
        let [layer] = ggufs.as_slice() else {
            return Err(RegistryError::NotAModel(format!(
                "{} layers of type {GGUF_LAYER} (expected one)",
                ggufs.len()
            )));
        };
        let title = layer.annotations.get(TITLE).map_or("model.gguf", |t| t);
        if title.is_empty()
            || title.contains(['/', '\\'])
            || title == "."
            || title == ".."
            || title.starts_with('.')
        {
            return Err(RegistryError::NotAModel(format!(
                "layer file name `{title}` is not a plain file name"
            )));
        }
        Ok((layer, title))
    }
}

/// Docker's model config: what a registry UI shows about the model without downloading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub config: ModelFacts,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFacts {
    /// `gguf`.
    pub format: String,
    /// The tensor type holding most weight bytes, e.g. `Q4_1`.
    pub quantization: String,
    /// Parameter count, e.g. `134.52M`.
    pub parameters: String,
    /// `general.architecture`, e.g. `llama`.
    pub architecture: String,
    /// File size, e.g. `98.3MB` (decimal megabytes).
    pub size: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    /// The layers' digests (uncompressed: GGUF layers are stored as they are).
    pub diff_ids: Vec<String>,
}

/// The config of a GGUF file, read from its header and tensor table.
pub fn model_config(gguf: &Gguf, layer: &Digest, file_bytes: u64) -> ModelConfig {
    let mut by_type: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut parameters = 0u64;
    for t in &gguf.tensors {
        parameters += t.n_elements();
        if t.dims.len() >= 2 {
            *by_type.entry(t.ggml_type.name()).or_default() += t.n_bytes;
        }
    }
    let quantization = by_type
        .iter()
        .max_by_key(|(_, bytes)| **bytes)
        .map_or("unknown", |(name, _)| name)
        .to_string();
    ModelConfig {
        config: ModelFacts {
            format: "gguf".into(),
            quantization,
            parameters: format!("{:.2}M", parameters as f64 / 1e6),
            architecture: gguf
                .get_str("general.architecture")
                .unwrap_or("unknown")
                .to_string(),
            size: format!("{:.1}MB", file_bytes as f64 / 1e6),
        },
        rootfs: RootFs {
            kind: "rootfs".into(),
            diff_ids: vec![layer.to_string()],
        },
    }
}

/// The manifest of a model: its config blob and its one GGUF layer named `file_name`.
pub fn model_manifest(config: (&Digest, u64), layer: (&Digest, u64), file_name: &str) -> Manifest {
    let mut gguf = Descriptor::new(GGUF_LAYER, layer.0, layer.1);
    gguf.annotations.insert(TITLE.into(), file_name.into());
    Manifest {
        schema_version: 2,
        media_type: MANIFEST.into(),
        artifact_type: None,
        config: Descriptor::new(MODEL_CONFIG, config.0, config.1),
        layers: vec![gguf],
        subject: None,
        annotations: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_with(title: &str, layers: usize) -> Manifest {
        let d = Digest::of(b"x");
        let mut m = model_manifest((&d, 1), (&d, 1), title);
        let extra = m.layers[0].clone();
        m.layers.extend(std::iter::repeat_n(extra, layers - 1));
        m
    }

    #[test]
    fn a_manifest_round_trips_and_is_checked() {
        let m = manifest_with("model.gguf", 1);
        let bytes = m.to_bytes();
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);
        assert_eq!(m.model_layer().unwrap().1, "model.gguf");
        for bad in ["../evil", "a/b", ".hidden", ""] {
            assert!(manifest_with(bad, 1).model_layer().is_err(), "{bad}");
        }
        assert!(manifest_with("m.gguf", 2).model_layer().is_err());
        let mut other = m.clone();
        other.config.media_type = "application/vnd.oci.image.config.v1+json".into();
        assert!(other.model_layer().is_err());
        assert!(Manifest::parse(b"{\"schemaVersion\":1}").is_err());
    }
}
