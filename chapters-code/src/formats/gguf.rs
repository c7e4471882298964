//! GGUF v3 reader: the file is memory-mapped, everything in its header is validated before it
//! is trusted, and tensors are zero-copy views into the mapping.
//!
//! Layout (all little-endian):
//!
//! ```text
//! magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
//! kv_count × (key: string, type: u32, value)             metadata
//! tensor_count × (name: string, n_dims: u32, dims: n_dims × u64, type: u32, offset: u64)
//! padding to `general.alignment` (default 32)
//! tensor data: each tensor at data_start + offset (offset a multiple of the alignment)
//! string = len u64 + UTF-8 bytes (no NUL)
//! ```
//!
//! A hostile or truncated file gives a [`GgufError`], never a panic, an out-of-bounds read or
//! a huge allocation: every count is checked against the bytes that remain before anything is
//! allocated for it.

use super::ggml_type::GgmlType;
use std::collections::HashMap;
use std::path::Path;

/// Why a GGUF file was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GgufError {
    #[error("cannot read {path}: {message}")]
    Io { path: String, message: String },
    #[error("not a GGUF file (magic bytes {found:02x?}, expected \"GGUF\")")]
    BadMagic { found: Vec<u8> },
    #[error("GGUF version {0} is not supported (this reader reads version 3)")]
    UnsupportedVersion(u32),
    #[error("file truncated: {what} at byte {offset} needs {needed} bytes, {available} remain")]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: u64,
        available: usize,
    },
    #[error("{what} count {count} is impossible: the rest of the file could hold at most {max}")]
    ImpossibleCount {
        what: &'static str,
        count: u64,
        max: u64,
    },
    #[error("string at byte {offset} is not valid UTF-8")]
    BadUtf8 { offset: usize },
    #[error("metadata key `{key}` has unknown value type {type_id}")]
    BadValueType { key: String, type_id: u32 },
    #[error("metadata key `{key}` holds bool byte {byte} (must be 0 or 1)")]
    BadBool { key: String, byte: u8 },
    #[error("metadata key `{key}` nests arrays deeper than {max} levels")]
    NestingTooDeep { key: String, max: usize },
    #[error("metadata key `{0}` appears twice")]
    DuplicateKey(String),
    #[error("`general.alignment` is {0}: it must be a power of two")]
    BadAlignment(u64),
    #[error("tensor `{name}`: {problem}")]
    BadTensor { name: String, problem: String },
    #[error("tensor `{0}` appears twice")]
    DuplicateTensor(String),
    #[error("tensors `{a}` and `{b}` overlap in the data section")]
    OverlappingTensors { a: String, b: String },
    #[error("metadata key `{0}` is missing")]
    MissingKey(String),
    #[error("metadata key `{key}` is {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("tensor `{0}` is missing")]
    MissingTensor(String),
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// The name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::F32(_) => "f32",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F64(_) => "f64",
        }
    }

    /// Any unsigned or non-negative signed integer, widened.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any float, or an integer that converts exactly.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
}

// ANCHOR: tensor_info
/// Where a tensor lives and what it holds. `dims[0]` is the innermost (contiguous) dimension,
/// as in GGML: a weight matrix with `dims = [576, 1536]` has 1536 rows of 576 elements.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Byte offset of the data from the start of the file (validated to lie inside it).
    pub file_offset: u64,
    pub n_bytes: u64,
}
// ANCHOR_END: tensor_info

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// The bytes behind a [`Gguf`]: a read-only mapping of the file, or a buffer.
pub(crate) enum Backing {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Backing {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Backing::Mapped(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file. Metadata and tensor infos are owned; tensor data stays in the file.
/// (The APR loader builds one too, over an APR file: the engine reads both the same way.)
pub struct Gguf {
    backing: Backing,
    /// GGUF version (0 when the model came from another container).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    pub alignment: u64,
    /// Start of the tensor data section.
    pub data_offset: u64,
}

impl std::fmt::Debug for Gguf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gguf")
            .field("version", &self.version)
            .field("bytes", &self.file_len())
            .field("mapped", &self.is_mapped())
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// A zero-copy view of one tensor's bytes.
#[derive(Clone, Copy)]
pub struct TensorView<'a> {
    pub info: &'a TensorInfo,
    pub data: &'a [u8],
}

/// Deepest nesting of arrays we accept in metadata (GGUF files use one level).
const MAX_ARRAY_DEPTH: usize = 3;
/// GGML's limit on tensor dimensions.
const MAX_DIMS: u32 = 4;

impl Gguf {
    // ANCHOR: open
    /// Maps the file at `path` read-only and parses it. The data stays on disk and in the page
    /// cache: opening a 100 MB model costs a few page reads, not 100 MB of copies.
    pub fn open(path: impl AsRef<Path>) -> Result<Gguf, GgufError> {
        let path = path.as_ref();
        let io = |e: std::io::Error| GgufError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only. If another process truncates or rewrites the file
        // while it is mapped, reads may fault or see new bytes: the usual caveat of mmap,
        // accepted by every model loader that maps weights (llama.cpp, safetensors).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse(Backing::Mapped(map))
    }
    // ANCHOR_END: open

    /// Parses a GGUF file held in memory (tests, fuzzing, files from the network).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Gguf, GgufError> {
        Self::parse(Backing::Owned(bytes))
    }

    fn parse(backing: Backing) -> Result<Gguf, GgufError> {
        let header = parse_header(&backing)?;
        Ok(Gguf {
            backing,
            version: header.version,
            index: header
                .metadata
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (k.clone(), i))
                .collect(),
            metadata: header.metadata,
            tensor_index: header
                .tensors
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.clone(), i))
                .collect(),
            tensors: header.tensors,
            alignment: header.alignment,
            data_offset: header.data_offset,
        })
    }

    /// A model held in another container (the APR loader): `metadata` and `tensors` whose
    /// `file_offset`s point into `bytes`. Every tensor passes the GGUF parser's checks (size
    /// matches type and dims, inside the bytes, no overlap), so the views stay zero-copy and
    /// in bounds whatever container they came from.
    #[cfg_attr(not(feature = "native"), allow(dead_code))] // APR's reader
    pub(crate) fn from_index(
        bytes: Backing,
        metadata: Vec<(String, Value)>,
        tensors: Vec<TensorInfo>,
    ) -> Result<Gguf, GgufError> {
        for t in &tensors {
            let bad = |problem: String| GgufError::BadTensor {
                name: t.name.clone(),
                problem,
            };
            if t.dims.is_empty() || t.dims.len() > MAX_DIMS as usize {
                return Err(bad(format!("{} dimensions", t.dims.len())));
            }
            let expected = tensor_bytes(&t.dims, t.ggml_type).map_err(bad)?;
            if expected != t.n_bytes {
                return Err(bad(format!(
                    "holds {} bytes, {} of type {} take {expected}",
                    t.n_bytes,
                    t.n_elements(),
                    t.ggml_type
                )));
            }
            if t.file_offset
                .checked_add(t.n_bytes)
                .is_none_or(|end| end > bytes.len() as u64)
            {
                return Err(bad("data ends past the end of the file".into()));
            }
        }
        check_distinct(&tensors)?;
        let alignment = common_alignment(&tensors);
        Ok(Gguf {
            version: 0,
            index: metadata
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (k.clone(), i))
                .collect(),
            metadata,
            tensor_index: tensors
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.clone(), i))
                .collect(),
            data_offset: tensors.iter().map(|t| t.file_offset).min().unwrap_or(0),
            tensors,
            alignment,
            backing: bytes,
        })
    }

    /// Total size of the file in bytes.
    pub fn file_len(&self) -> usize {
        self.backing.len()
    }

    /// Whether the bytes are a memory mapping (not a copy).
    pub fn is_mapped(&self) -> bool {
        matches!(self.backing, Backing::Mapped(_))
    }

    /// The metadata value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// A required metadata value.
    pub fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key)
            .ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    /// A required string.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        match self.require(key)? {
            Value::String(s) => Ok(s),
            other => Err(wrong_type(key, "a string", other)),
        }
    }

    /// A required non-negative integer of any width.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| wrong_type(key, "a non-negative integer", v))
    }

    /// A required number of any type.
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| wrong_type(key, "a number", v))
    }

    /// A required array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        match self.require(key)? {
            Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.as_str()),
                    other => Err(wrong_type(key, "an array of strings", other)),
                })
                .collect(),
            other => Err(wrong_type(key, "an array of strings", other)),
        }
    }

    /// A required array of integers.
    pub fn get_int_array(&self, key: &str) -> Result<Vec<i64>, GgufError> {
        match self.require(key)? {
            Value::Array(items) => items
                .iter()
                .map(|v| match *v {
                    Value::I32(x) => Ok(x.into()),
                    Value::I64(x) => Ok(x),
                    Value::U32(x) => Ok(x.into()),
                    Value::I8(x) => Ok(x.into()),
                    Value::U8(x) => Ok(x.into()),
                    ref other => Err(wrong_type(key, "an array of integers", other)),
                })
                .collect(),
            other => Err(wrong_type(key, "an array of integers", other)),
        }
    }

    /// Info of tensor `name`.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    // ANCHOR: tensor_view
    /// A view of tensor `name`'s bytes, straight from the mapping: no copy, no allocation.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, GgufError> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| GgufError::MissingTensor(name.to_string()))?;
        // In bounds: parse_header checked file_offset + n_bytes <= file length.
        let start = info.file_offset as usize;
        let data = &self.backing[start..start + info.n_bytes as usize];
        Ok(TensorView { info, data })
    }
    // ANCHOR_END: tensor_view
}

fn wrong_type(key: &str, expected: &'static str, found: &Value) -> GgufError {
    GgufError::WrongType {
        key: key.to_string(),
        expected,
        found: found.type_name(),
    }
}

impl<'a> TensorView<'a> {
    /// Elements per row (`dims[0]`).
    pub fn row_len(&self) -> usize {
        self.info.dims[0] as usize
    }

    /// Number of rows (product of the other dimensions).
    pub fn n_rows(&self) -> usize {
        self.info.dims[1..].iter().product::<u64>() as usize
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.data.len() / self.n_rows().max(1)
    }

    /// The elements of an F32 tensor, zero-copy (the data is 4-byte aligned in the mapping).
    pub fn as_f32(&self) -> Result<&'a [f32], GgufError> {
        if self.info.ggml_type != GgmlType::F32 {
            return Err(GgufError::BadTensor {
                name: self.info.name.clone(),
                problem: format!("is {}, expected F32", self.info.ggml_type),
            });
        }
        cast_slice(self.data).ok_or_else(|| GgufError::BadTensor {
            name: self.info.name.clone(),
            problem: "data is not 4-byte aligned".into(),
        })
    }
}

/// Reinterprets bytes as a slice of plain-old-data values (little-endian host only), or `None`
/// if the bytes are misaligned or not a whole number of values.
///
/// `T` must be a type for which every bit pattern is valid (integers, floats, and `#[repr(C)]`
/// structs of those without padding): the callers in this crate are exactly those.
pub fn cast_slice<T: Pod>(bytes: &[u8]) -> Option<&[T]> {
    if cfg!(target_endian = "big") || !bytes.len().is_multiple_of(std::mem::size_of::<T>()) {
        return None;
    }
    // SAFETY: T is Pod (every bit pattern valid, no padding); align_to only yields a middle
    // part that is correctly aligned, and we require the prefix and suffix to be empty.
    let (head, body, tail) = unsafe { bytes.align_to::<T>() };
    (head.is_empty() && tail.is_empty()).then_some(body)
}

/// Types that may be viewed from raw bytes: every bit pattern is a valid value, and there is
/// no padding.
///
/// # Safety
/// Implement only for such types.
pub unsafe trait Pod: Copy {}
// SAFETY: primitive integers and floats accept every bit pattern.
unsafe impl Pod for f32 {}
// SAFETY: as above.
unsafe impl Pod for u16 {}
// SAFETY: as above.
unsafe impl Pod for u8 {}

struct Header {
    version: u32,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
}

/// A bounds-checked little-endian cursor.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], GgufError> {
        let truncated = || GgufError::Truncated {
            what,
            offset: self.pos,
            needed: n,
            available: self.remaining(),
        };
        let n = usize::try_from(n).map_err(|_| truncated())?;
        if n > self.remaining() {
            return Err(truncated());
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &'static str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let offset = self.pos;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::BadUtf8 { offset })
    }

    /// Checks that `count` items of at least `min_size` bytes each can still fit.
    fn check_count(
        &self,
        count: u64,
        min_size: u64,
        what: &'static str,
    ) -> Result<usize, GgufError> {
        let max = self.remaining() as u64 / min_size.max(1);
        if count > max {
            return Err(GgufError::ImpossibleCount { what, count, max });
        }
        Ok(count as usize)
    }
}

/// Smallest encoding of a value of type `type_id` (for count checks).
fn min_value_size(type_id: u32) -> u64 {
    match type_id {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,  // string: its length
        9 => 12, // array: type + length
        _ => 8,  // u64, i64, f64
    }
}

fn read_value(
    c: &mut Cursor<'_>,
    type_id: u32,
    key: &str,
    depth: usize,
) -> Result<Value, GgufError> {
    let what = "metadata value";
    Ok(match type_id {
        0 => Value::U8(c.array::<1>(what)?[0]),
        1 => Value::I8(c.array::<1>(what)?[0] as i8),
        2 => Value::U16(u16::from_le_bytes(c.array(what)?)),
        3 => Value::I16(i16::from_le_bytes(c.array(what)?)),
        4 => Value::U32(c.u32(what)?),
        5 => Value::I32(i32::from_le_bytes(c.array(what)?)),
        6 => Value::F32(f32::from_le_bytes(c.array(what)?)),
        7 => match c.array::<1>(what)?[0] {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            byte => {
                return Err(GgufError::BadBool {
                    key: key.to_string(),
                    byte,
                });
            }
        },
        8 => Value::String(c.string("metadata string")?),
        9 => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(GgufError::NestingTooDeep {
                    key: key.to_string(),
                    max: MAX_ARRAY_DEPTH,
                });
            }
            let item_type = c.u32("array item type")?;
            let len = c.u64("array length")?;
            let len = c.check_count(len, min_value_size(item_type), "array item")?;
            let mut items = Vec::with_capacity(len);
            for _ in 0..len {
                items.push(read_value(c, item_type, key, depth + 1)?);
            }
            Value::Array(items)
        }
        10 => Value::U64(c.u64(what)?),
        11 => Value::I64(i64::from_le_bytes(c.array(what)?)),
        12 => Value::F64(f64::from_le_bytes(c.array(what)?)),
        _ => {
            return Err(GgufError::BadValueType {
                key: key.to_string(),
                type_id,
            });
        }
    })
}

// ANCHOR: parse_header
fn parse_header(buf: &[u8]) -> Result<Header, GgufError> {
    let mut c = Cursor { buf, pos: 0 };
    let magic = c.take(4, "magic").map_err(|_| GgufError::BadMagic {
        found: buf[..buf.len().min(4)].to_vec(),
    })?;
    if magic != b"GGUF" {
        return Err(GgufError::BadMagic {
            found: magic.to_vec(),
        });
    }
    let version = c.u32("version")?;
    if version != 3 {
        return Err(GgufError::UnsupportedVersion(version));
    }
    let n_tensors = c.u64("tensor count")?;
    let n_kv = c.u64("metadata count")?;
    // Smallest key/value: key length (8) + type (4) + a 1-byte value.
    let n_kv = c.check_count(n_kv, 13, "metadata")?;

    let mut metadata = Vec::with_capacity(n_kv);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..n_kv {
        let key = c.string("metadata key")?;
        let type_id = c.u32("metadata type")?;
        let value = read_value(&mut c, type_id, &key, 0)?;
        if !seen.insert(key.clone()) {
            return Err(GgufError::DuplicateKey(key));
        }
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => 32,
        Some((_, v)) => match v.as_u64() {
            Some(a) if a.is_power_of_two() => a,
            Some(a) => return Err(GgufError::BadAlignment(a)),
            None => return Err(wrong_type("general.alignment", "an integer", v)),
        },
    };

    // Smallest tensor info: name length (8) + n_dims (4) + one dim (8) + type (4) + offset (8).
    let n_tensors = c.check_count(n_tensors, 32, "tensor")?;
    let mut infos = Vec::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let name = c.string("tensor name")?;
        let bad = |problem: String| GgufError::BadTensor {
            name: name.clone(),
            problem,
        };
        let n_dims = c.u32("tensor dimension count")?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(bad(format!(
                "{n_dims} dimensions (GGML allows 1 to {MAX_DIMS})"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64("tensor dimension")?);
        }
        let type_id = c.u32("tensor type")?;
        let offset = c.u64("tensor offset")?;
        let ggml_type =
            GgmlType::from_id(type_id).ok_or_else(|| bad(format!("unknown type id {type_id}")))?;
        let n_bytes = tensor_bytes(&dims, ggml_type).map_err(bad)?;
        if !offset.is_multiple_of(alignment) {
            return Err(bad(format!(
                "offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        infos.push((name, dims, ggml_type, offset, n_bytes));
    }

    let data_offset = (c.pos as u64).next_multiple_of(alignment);
    let file_len = buf.len() as u64;
    let mut tensors = Vec::with_capacity(infos.len());
    for (name, dims, ggml_type, offset, n_bytes) in infos {
        let end = data_offset
            .checked_add(offset)
            .and_then(|start| start.checked_add(n_bytes));
        match end {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(GgufError::BadTensor {
                    problem: format!(
                        "data (offset {offset}, {n_bytes} bytes) ends past the end of the file ({file_len} bytes)"
                    ),
                    name,
                });
            }
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            file_offset: data_offset + offset,
            n_bytes,
        });
    }

    check_distinct(&tensors)?;

    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}
// ANCHOR_END: parse_header

/// The alignment a container's tensors really have: the largest power of two (at most 4096)
/// that divides every tensor's offset; 4096 when there are none.
#[cfg_attr(not(feature = "native"), allow(dead_code))] // APR's reader
fn common_alignment(tensors: &[TensorInfo]) -> u64 {
    let offsets = tensors.iter().fold(0u64, |acc, t| acc | t.file_offset);
    1 << offsets.trailing_zeros().min(12)
}

/// No two tensors share a name or a byte (each one already lies inside the file).
fn check_distinct(tensors: &[TensorInfo]) -> Result<(), GgufError> {
    let mut names = std::collections::HashSet::new();
    for t in tensors {
        if !names.insert(t.name.as_str()) {
            return Err(GgufError::DuplicateTensor(t.name.clone()));
        }
    }
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
    by_offset.sort_by_key(|t| t.file_offset);
    for pair in by_offset.windows(2) {
        if pair[0].file_offset + pair[0].n_bytes > pair[1].file_offset {
            return Err(GgufError::OverlappingTensors {
                a: pair[0].name.clone(),
                b: pair[1].name.clone(),
            });
        }
    }
    Ok(())
}

/// Bytes of a tensor of `dims` and `ty`, after the checks every tensor must pass: no zero
/// dimension, no overflow, rows of whole blocks.
fn tensor_bytes(dims: &[u64], ty: GgmlType) -> Result<u64, String> {
    if dims.contains(&0) {
        return Err(format!("a dimension is zero: {dims:?}"));
    }
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| format!("dimensions {dims:?} overflow"))?;
    if !dims[0].is_multiple_of(ty.block_size()) {
        return Err(format!(
            "row length {} is not a multiple of the {ty} block size {}",
            dims[0],
            ty.block_size()
        ));
    }
    ty.bytes_for(n_elements)
        .ok_or_else(|| "byte size overflows".into())
}
