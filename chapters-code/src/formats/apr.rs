//! APR v2 — aprender's tensor container — for a GGUF model: export every tensor and the
//! metadata, map the file back, and hand the engine the same zero-copy views it gets from
//! GGUF.
//!
//! APR v2 has no dtype for GGML's Q4_1 or Q8_0 blocks (its dtypes are F32, F16, BF16, plain
//! integers, its own one-scale "Q8" and Q4, and raw Q4_K/Q6_K). Such tensors are stored as
//! `U8` — the GGUF blocks, byte for byte — and the JSON metadata (`custom`) records every
//! tensor's GGML type and dims and every GGUF metadata key with its type, so the way back
//! is exact.
//!
//! Layout (all offsets 64-byte aligned): 64-byte header · JSON metadata · tensor index
//! (sorted by name) · tensor data · CRC32 of everything before it.

use super::ggml_type::GgmlType;
use super::gguf::{Backing, Gguf, GgufError, TensorInfo, Value};
use aprender::format::v2::{
    AprV2Metadata, AprV2ReaderRef, AprV2Writer, TensorDType, required_file_len,
};
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::path::Path;

/// Key of our model index in APR's `custom` metadata: `{"metadata": [...], "tensors": [...]}`
/// (one key, so the JSON comes out in the same order every time: same model, same bytes).
const GGUF: &str = "gguf";
/// The GGUF metadata: a list of `{key, value: {type, value}}`, file order.
const GGUF_METADATA: &str = "metadata";
/// The tensor table: a list of `[name, ggml type id, dims]`, GGUF order.
const GGUF_TENSORS: &str = "tensors";

/// Why an APR file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum AprError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("not a valid APR v2 file: {0}")]
    Format(String),
    #[error("truncated APR file: {len} bytes, its index needs {needed}")]
    Truncated { len: u64, needed: u64 },
    #[error(
        "the APR file has no GGUF model index (`{0}` in its metadata): it was not exported from a GGUF model"
    )]
    NoIndex(&'static str),
    #[error("APR metadata `{key}`: {problem}")]
    BadMetadata { key: String, problem: String },
    #[error("tensor `{name}` is in the index but not in the APR file")]
    MissingTensor { name: String },
    #[error(transparent)]
    Gguf(#[from] GgufError),
}

// ANCHOR: export
/// The model in `g` as an APR v2 file: every tensor's bytes unchanged, the metadata kept.
pub fn export(g: &Gguf) -> Result<Vec<u8>, AprError> {
    let mut meta = AprV2Metadata::new(
        g.get_str("general.architecture")
            .unwrap_or("unknown")
            .to_string(),
    );
    describe_for_apr_readers(g, &mut meta);
    let keys = g
        .metadata
        .iter()
        .map(|(k, v)| Ok(json!({ "key": k, "value": value_to_json(k, v)? })))
        .collect::<Result<Vec<_>, AprError>>()?;
    let table: Vec<Json> = g
        .tensors
        .iter()
        .map(|t| json!([t.name, t.ggml_type.id(), t.dims]))
        .collect();
    meta.custom.insert(
        GGUF.into(),
        json!({ GGUF_METADATA: keys, GGUF_TENSORS: table }),
    );

    let mut writer = AprV2Writer::new(meta);
    for t in &g.tensors {
        let data = g.tensor(&t.name)?.data.to_vec();
        // APR shapes are row-major, outermost first: GGML's dims reversed.
        let shape: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
        match t.ggml_type {
            GgmlType::F32 => writer.add_tensor(&t.name, TensorDType::F32, shape, data),
            GgmlType::F16 => writer.add_tensor(&t.name, TensorDType::F16, shape, data),
            // GGML blocks APR has no dtype for: the bytes, as bytes.
            _ => writer.add_tensor(&t.name, TensorDType::U8, vec![data.len()], data),
        }
    }
    writer.write().map_err(|e| AprError::Format(e.to_string()))
}
// ANCHOR_END: export

/// APR's own fields (what realizar and the `apr` tool read), filled where the GGUF has them.
fn describe_for_apr_readers(g: &Gguf, meta: &mut AprV2Metadata) {
    let arch = g.get_str("general.architecture").unwrap_or("").to_string();
    let int = |key: &str| g.get_u64(&format!("{arch}.{key}")).ok().map(|v| v as usize);
    let float = |key: &str| g.get_f64(&format!("{arch}.{key}")).ok().map(|v| v as f32);
    meta.name = g.get_str("general.name").ok().map(str::to_string);
    meta.original_format = Some("gguf".into());
    meta.architecture = Some(arch.clone());
    meta.hidden_size = int("embedding_length");
    meta.num_layers = int("block_count");
    meta.num_heads = int("attention.head_count");
    meta.num_kv_heads = int("attention.head_count_kv");
    meta.intermediate_size = int("feed_forward_length");
    meta.max_position_embeddings = int("context_length");
    meta.rope_theta = float("rope.freq_base");
    meta.rms_norm_eps = float("attention.layer_norm_rms_epsilon");
    meta.vocab_size = g
        .get_str_array("tokenizer.ggml.tokens")
        .ok()
        .map(|t| t.len());
    meta.chat_template = g
        .get_str("tokenizer.chat_template")
        .ok()
        .map(str::to_string);
    meta.param_count = g.tensors.iter().map(TensorInfo::n_elements).sum();
    meta.total_size = g.tensors.iter().map(|t| t.n_bytes).sum();
}

// ANCHOR: open
/// Maps the APR file at `path` and indexes it for the engine: metadata parsed, tensors
/// borrowed from the mapping (no copy).
pub fn open(path: impl AsRef<Path>) -> Result<Gguf, AprError> {
    let path = path.as_ref();
    let io = |e: std::io::Error| AprError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: read-only mapping; the same caveat as `Gguf::open` (a file rewritten while
    // mapped may fault or change under us).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    index(Backing::Mapped(map))
}
// ANCHOR_END: open

/// Indexes an APR file held in memory (tests, and files that were decrypted or verified).
pub fn from_bytes(bytes: Vec<u8>) -> Result<Gguf, AprError> {
    index(Backing::Owned(bytes))
}

fn index(bytes: Backing) -> Result<Gguf, AprError> {
    let (metadata, tensors) = {
        let format = |e: aprender::format::v2::V2FormatError| AprError::Format(e.to_string());
        let reader = AprV2ReaderRef::from_bytes(&bytes).map_err(format)?;
        // Tensor data plus padding, then the 4-byte CRC32 footer: a file cut anywhere is
        // caught here, without reading the data (the CRC would read all of it).
        let needed = required_file_len(&bytes).map_err(format)? + 4;
        if (bytes.len() as u64) < needed {
            return Err(AprError::Truncated {
                len: bytes.len() as u64,
                needed,
            });
        }
        let custom = reader
            .metadata()
            .custom
            .get(GGUF)
            .ok_or(AprError::NoIndex(GGUF))?;
        let metadata = custom
            .get(GGUF_METADATA)
            .ok_or(AprError::NoIndex(GGUF_METADATA))?
            .as_array()
            .ok_or_else(|| bad_meta(GGUF_METADATA, "not a list"))?
            .iter()
            .map(|entry| {
                let key = entry["key"]
                    .as_str()
                    .ok_or_else(|| bad_meta(GGUF_METADATA, "an entry has no string `key`"))?;
                Ok((key.to_string(), value_from_json(key, &entry["value"])?))
            })
            .collect::<Result<Vec<_>, AprError>>()?;
        let base = bytes.as_ptr() as usize;
        let entries: HashMap<&str, &[u8]> = reader
            .tensor_index()
            .iter()
            .filter_map(|e| Some((e.name.as_str(), reader.get_tensor_data(&e.name)?)))
            .collect();
        let tensors = custom
            .get(GGUF_TENSORS)
            .ok_or(AprError::NoIndex(GGUF_TENSORS))?
            .as_array()
            .ok_or_else(|| bad_meta(GGUF_TENSORS, "not a list"))?
            .iter()
            .map(|row| {
                let (name, ty, dims) = parse_tensor_row(row)?;
                let data = entries
                    .get(name.as_str())
                    .ok_or_else(|| AprError::MissingTensor { name: name.clone() })?;
                Ok(TensorInfo {
                    name,
                    dims,
                    ggml_type: ty,
                    file_offset: (data.as_ptr() as usize - base) as u64,
                    n_bytes: data.len() as u64,
                })
            })
            .collect::<Result<Vec<_>, AprError>>()?;
        (metadata, tensors)
    };
    Ok(Gguf::from_index(bytes, metadata, tensors)?)
}

fn bad_meta(key: &str, problem: &str) -> AprError {
    AprError::BadMetadata {
        key: key.into(),
        problem: problem.into(),
    }
}

/// One row of the tensor table: `[name, ggml type id, dims]`.
fn parse_tensor_row(row: &Json) -> Result<(String, GgmlType, Vec<u64>), AprError> {
    let bad = |problem: &str| bad_meta(GGUF_TENSORS, problem);
    let name = row[0].as_str().ok_or_else(|| bad("a row has no name"))?;
    let ty = row[1]
        .as_u64()
        .and_then(|id| GgmlType::from_id(u32::try_from(id).ok()?))
        .ok_or_else(|| bad(&format!("`{name}` has no known GGML type")))?;
    let dims = row[2]
        .as_array()
        .and_then(|d| d.iter().map(Json::as_u64).collect::<Option<Vec<u64>>>())
        .ok_or_else(|| bad(&format!("`{name}` has no list of dims")))?;
    Ok((name.to_string(), ty, dims))
}

// ANCHOR: value_json
/// A GGUF value as JSON that keeps its type: `{"type": "u32", "value": 8}`. Arrays (GGUF
/// arrays hold one type) are `{"type": "array", "items": "string", "value": [...]}`.
fn value_to_json(key: &str, v: &Value) -> Result<Json, AprError> {
    Ok(match v {
        Value::Array(items) => {
            let items_type = items.first().map_or("u8", Value::type_name);
            let values = items
                .iter()
                .map(|item| match item {
                    Value::Array(_) => value_to_json(key, item),
                    scalar => scalar_to_json(key, scalar),
                })
                .collect::<Result<Vec<_>, _>>()?;
            json!({ "type": "array", "items": items_type, "value": values })
        }
        scalar => json!({ "type": scalar.type_name(), "value": scalar_to_json(key, scalar)? }),
    })
}
// ANCHOR_END: value_json

fn scalar_to_json(key: &str, v: &Value) -> Result<Json, AprError> {
    let finite = |x: f64| {
        if x.is_finite() {
            Ok(json!(x))
        } else {
            Err(bad_meta(key, "is not finite: JSON cannot hold it"))
        }
    };
    Ok(match *v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) => finite(x.into())?,
        Value::F64(x) => finite(x)?,
        Value::Bool(x) => json!(x),
        Value::String(ref x) => json!(x),
        Value::Array(_) => unreachable!("arrays go through value_to_json"),
    })
}

fn value_from_json(key: &str, j: &Json) -> Result<Value, AprError> {
    let ty = j["type"]
        .as_str()
        .ok_or_else(|| bad_meta(key, "has no `type`"))?;
    if ty != "array" {
        return scalar_from_json(key, ty, &j["value"]);
    }
    let items = j["items"]
        .as_str()
        .ok_or_else(|| bad_meta(key, "array without `items` type"))?;
    let values = j["value"]
        .as_array()
        .ok_or_else(|| bad_meta(key, "array without a list of values"))?;
    values
        .iter()
        .map(|v| match items {
            "array" => value_from_json(key, v),
            _ => scalar_from_json(key, items, v),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

fn scalar_from_json(key: &str, ty: &str, v: &Json) -> Result<Value, AprError> {
    let wrong = || bad_meta(key, &format!("value {v} is not a {ty}"));
    let uint = || v.as_u64().ok_or_else(wrong);
    let int = || v.as_i64().ok_or_else(wrong);
    let fits = |r: Result<Value, std::num::TryFromIntError>| r.map_err(|_| wrong());
    Ok(match ty {
        "u8" => fits(u8::try_from(uint()?).map(Value::U8))?,
        "u16" => fits(u16::try_from(uint()?).map(Value::U16))?,
        "u32" => fits(u32::try_from(uint()?).map(Value::U32))?,
        "u64" => Value::U64(uint()?),
        "i8" => fits(i8::try_from(int()?).map(Value::I8))?,
        "i16" => fits(i16::try_from(int()?).map(Value::I16))?,
        "i32" => fits(i32::try_from(int()?).map(Value::I32))?,
        "i64" => Value::I64(int()?),
        // An f32 widened to f64 and printed by serde_json reads back as the same f32.
        "f32" => Value::F32(v.as_f64().ok_or_else(wrong)? as f32),
        "f64" => Value::F64(v.as_f64().ok_or_else(wrong)?),
        "bool" => Value::Bool(v.as_bool().ok_or_else(wrong)?),
        "string" => Value::String(v.as_str().ok_or_else(wrong)?.to_string()),
        other => return Err(bad_meta(key, &format!("unknown type `{other}`"))),
    })
}

#[cfg(test)]
#[path = "apr_tests.rs"]
mod tests;
