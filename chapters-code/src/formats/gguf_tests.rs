//! Hand-made valid and corrupt GGUF files: every corruption is a typed error, never a panic.

use super::GgmlType;
use super::gguf::{Gguf, GgufError, Value};
use super::gguf_write::GgufWriter;

fn small_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Value::String("llama".into()))
        .meta("llama.block_count", Value::U32(2))
        .meta(
            "tokenizer.ggml.tokens",
            Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
        )
        .meta("flag", Value::Bool(true));
    let floats: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    w.tensor("norm.weight", &[3, 2], GgmlType::F32, floats);
    w.tensor("q.weight", &[32, 1], GgmlType::Q4_1, vec![7u8; 20]);
    w.to_bytes()
}

/// Byte offset of the first tensor info (right after the metadata) in `small_file()`.
fn tensor_infos_start(bytes: &[u8]) -> usize {
    let needle = b"norm.weight";
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
        - 8
}

#[test]
fn a_written_file_reads_back() {
    let g = Gguf::from_bytes(small_file()).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(g.get_u64("llama.block_count").unwrap(), 2);
    assert_eq!(
        g.get_str_array("tokenizer.ggml.tokens").unwrap(),
        vec!["a", "b"]
    );
    assert_eq!(g.get("flag"), Some(&Value::Bool(true)));
    let t = g.tensor("norm.weight").unwrap();
    assert_eq!((t.row_len(), t.n_rows()), (3, 2));
    assert_eq!(t.as_f32().unwrap(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(g.tensor("q.weight").unwrap().data, &[7u8; 20]);
    assert_eq!(
        g.tensor("nope").err(),
        Some(GgufError::MissingTensor("nope".into()))
    );
    assert!(matches!(
        g.get_u64("general.architecture"),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        g.get_str("missing.key"),
        Err(GgufError::MissingKey(_))
    ));
    assert!(
        g.tensor_info("q.weight")
            .unwrap()
            .file_offset
            .is_multiple_of(32)
    );
}

#[test]
fn truncation_anywhere_is_an_error_not_a_panic() {
    let bytes = small_file();
    for len in 0..bytes.len() {
        assert!(
            Gguf::from_bytes(bytes[..len].to_vec()).is_err(),
            "accepted a file cut at {len}"
        );
    }
}

#[test]
fn every_single_byte_corruption_is_handled() {
    let bytes = small_file();
    for pos in 0..bytes.len() {
        for new in [0x00, 0xFF, bytes[pos].wrapping_add(1), 0x80] {
            let mut b = bytes.clone();
            b[pos] = new;
            // Any outcome but a panic is fine; many corruptions (in tensor data) are harmless.
            let _ = Gguf::from_bytes(b);
        }
    }
}

#[test]
fn bad_magic_and_version_are_named() {
    let mut b = small_file();
    b[0] = b'X';
    assert!(matches!(
        Gguf::from_bytes(b),
        Err(GgufError::BadMagic { .. })
    ));
    let mut b = small_file();
    b[4] = 2;
    assert_eq!(
        Gguf::from_bytes(b).err(),
        Some(GgufError::UnsupportedVersion(2))
    );
    assert!(matches!(
        Gguf::from_bytes(vec![]),
        Err(GgufError::BadMagic { .. })
    ));
}

fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b
}

fn string(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

#[test]
fn huge_counts_are_refused_before_allocating() {
    let b = header(0, u64::MAX);
    assert!(matches!(
        Gguf::from_bytes(b),
        Err(GgufError::ImpossibleCount { .. })
    ));
    let b = header(u64::MAX, 0);
    assert!(matches!(
        Gguf::from_bytes(b),
        Err(GgufError::ImpossibleCount { .. })
    ));
    // An array claiming 2^62 items.
    let mut b = header(0, 1);
    string(&mut b, "k");
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(matches!(
        Gguf::from_bytes(b),
        Err(GgufError::ImpossibleCount { .. })
    ));
    // A string claiming u64::MAX bytes.
    let mut b = header(0, 1);
    b.extend_from_slice(&u64::MAX.to_le_bytes());
    b.extend_from_slice(&[0; 16]);
    assert!(matches!(
        Gguf::from_bytes(b),
        Err(GgufError::Truncated { .. })
    ));
}

#[test]
fn bad_metadata_is_named() {
    let kv = |type_id: u32, value: &[u8]| {
        let mut b = header(0, 1);
        string(&mut b, "key");
        b.extend_from_slice(&type_id.to_le_bytes());
        b.extend_from_slice(value);
        b.extend_from_slice(&[0; 16]);
        Gguf::from_bytes(b).err()
    };
    assert!(matches!(
        kv(13, &[]),
        Some(GgufError::BadValueType { type_id: 13, .. })
    ));
    assert!(matches!(
        kv(7, &[2]),
        Some(GgufError::BadBool { byte: 2, .. })
    ));
    let mut not_utf8 = 2u64.to_le_bytes().to_vec();
    not_utf8.extend_from_slice(&[0xC3, 0x28]);
    assert!(matches!(kv(8, &not_utf8), Some(GgufError::BadUtf8 { .. })));
    // Arrays of arrays of arrays of arrays.
    let mut nested = Vec::new();
    for _ in 0..4 {
        nested.extend_from_slice(&9u32.to_le_bytes());
        nested.extend_from_slice(&1u64.to_le_bytes());
    }
    assert!(matches!(
        kv(9, &nested),
        Some(GgufError::NestingTooDeep { .. })
    ));

    let mut w = GgufWriter::new();
    w.meta("general.alignment", Value::U32(24));
    assert_eq!(
        Gguf::from_bytes(w.to_bytes()).err(),
        Some(GgufError::BadAlignment(24))
    );

    let mut b = header(0, 2);
    for _ in 0..2 {
        string(&mut b, "same");
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
    }
    assert_eq!(
        Gguf::from_bytes(b).err(),
        Some(GgufError::DuplicateKey("same".into()))
    );
}

/// A file with one tensor info written by hand after an empty metadata section.
fn one_tensor(
    n_dims: u32,
    dims: &[u64],
    type_id: u32,
    offset: u64,
    data_len: usize,
) -> Result<Gguf, GgufError> {
    let mut b = header(1, 0);
    string(&mut b, "t");
    b.extend_from_slice(&n_dims.to_le_bytes());
    for d in dims {
        b.extend_from_slice(&d.to_le_bytes());
    }
    b.extend_from_slice(&type_id.to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
    b.resize(b.len().next_multiple_of(32) + data_len, 0);
    Gguf::from_bytes(b)
}

#[test]
fn bad_tensor_infos_are_named() {
    let bad = |r: Result<Gguf, GgufError>| match r {
        Err(GgufError::BadTensor { problem, .. }) => problem,
        other => panic!("expected BadTensor, got {:?}", other.err()),
    };
    assert!(one_tensor(1, &[4], 0, 0, 16).is_ok());
    assert!(bad(one_tensor(5, &[1; 5], 0, 0, 4)).contains("dimensions"));
    assert!(bad(one_tensor(0, &[], 0, 0, 4)).contains("dimensions"));
    assert!(bad(one_tensor(2, &[4, 0], 0, 0, 16)).contains("zero"));
    assert!(bad(one_tensor(2, &[1 << 40, 1 << 40], 0, 0, 16)).contains("overflow"));
    assert!(bad(one_tensor(1, &[4], 99, 0, 16)).contains("unknown type"));
    assert!(bad(one_tensor(1, &[4], 0, 8, 64)).contains("alignment"));
    assert!(bad(one_tensor(1, &[4], 0, 0, 15)).contains("past the end"));
    assert!(bad(one_tensor(1, &[4], 0, u64::MAX - 31, 16)).contains("past the end"));
    assert!(bad(one_tensor(1, &[33], 3, 0, 64)).contains("block size"));
}

#[test]
fn duplicate_and_overlapping_tensors_are_refused() {
    let mut w = GgufWriter::new();
    w.tensor("a", &[4], GgmlType::F32, vec![0; 16]);
    w.tensor("a", &[4], GgmlType::F32, vec![0; 16]);
    assert_eq!(
        Gguf::from_bytes(w.to_bytes()).err(),
        Some(GgufError::DuplicateTensor("a".into()))
    );

    // Two tensor infos pointing at the same offset.
    let mut b = header(2, 0);
    for name in ["a", "b"] {
        string(&mut b, name);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&8u64.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
    }
    b.resize(b.len().next_multiple_of(32) + 32, 0);
    assert!(matches!(
        Gguf::from_bytes(b),
        Err(GgufError::OverlappingTensors { .. })
    ));
}

#[test]
fn truncating_the_tensor_infos_is_caught() {
    let bytes = small_file();
    let start = tensor_infos_start(&bytes);
    // Room for both infos by the count check (32 bytes each), but the second one is cut.
    let err = Gguf::from_bytes(bytes[..start + 80].to_vec())
        .err()
        .unwrap();
    assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
}

#[test]
fn the_course_model_opens_mapped() {
    let Some(path) = crate::assets::model_for_tests() else {
        return;
    };
    let g = Gguf::open(&path).unwrap();
    assert!(g.is_mapped());
    assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(g.tensors.len(), 272);
    assert_eq!(g.metadata.len(), 33);
    let embd = g.tensor("token_embd.weight").unwrap();
    assert_eq!(embd.info.ggml_type, GgmlType::Q8_0);
    assert_eq!((embd.row_len(), embd.n_rows()), (576, 49152));
    assert_eq!(g.file_len(), 98_362_432);
}

#[test]
fn random_multi_byte_corruptions_never_panic() {
    // A stable-Rust stand-in for the cargo-fuzz target: seeded random edits of a valid file.
    let bytes = small_file();
    let mut rng = crate::sampling::Rng::new(42);
    for _ in 0..20_000 {
        let mut b = bytes.clone();
        let edits = 1 + rng.next_u64() % 8;
        for _ in 0..edits {
            let pos = (rng.next_u64() % b.len() as u64) as usize;
            b[pos] = rng.next_u64() as u8;
        }
        if rng.next_u64().is_multiple_of(4) {
            b.truncate((rng.next_u64() % b.len() as u64) as usize);
        }
        if let Ok(g) = Gguf::from_bytes(b) {
            for info in &g.tensors {
                assert_eq!(
                    g.tensor(&info.name).unwrap().data.len() as u64,
                    info.n_bytes
                );
            }
        }
    }
}
