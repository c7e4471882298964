//! APR export and load: same metadata, same tensor bytes, same order; hostile files are
//! errors; signed and encrypted files reject tampering, wrong keys and wrong passwords.

use super::*;
use crate::formats::apr_sealed::{
    SealError, encrypt, flip_byte, key_from_seed, open_encrypted, open_signed,
    open_signed_trusting_the_file, sign,
};
use crate::formats::safetensors_export;
use crate::testutil::ScratchFile;

fn small_model() -> Gguf {
    let mut w = crate::formats::GgufWriter::new();
    w.meta("general.architecture", Value::String("llama".into()))
        .meta("general.name", Value::String("tiny".into()))
        .meta("llama.block_count", Value::U32(2))
        .meta("llama.rope.freq_base", Value::F32(10000.5))
        .meta("big", Value::U64(u64::MAX))
        .meta("negative", Value::I64(-7))
        .meta("small", Value::I8(-128))
        .meta("half", Value::F64(0.1))
        .meta("flag", Value::Bool(true))
        .meta(
            "tokenizer.ggml.tokens",
            Value::Array(vec![
                Value::String("a".into()),
                Value::String("é\"\n".into()),
            ]),
        )
        .meta(
            "nested",
            Value::Array(vec![
                Value::Array(vec![Value::U16(1), Value::U16(2)]),
                Value::Array(vec![]),
            ]),
        )
        .meta("empty", Value::Array(vec![]));
    let floats: Vec<u8> = [1.0f32, -2.5, 3.0, 4.0, 5.0, 6.0]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    w.tensor("output_norm.weight", &[3, 2], GgmlType::F32, floats);
    w.tensor(
        "blk.0.attn_q.weight",
        &[32, 2],
        GgmlType::Q4_1,
        (0..40).collect(),
    );
    w.tensor(
        "a.first.by.name",
        &[32, 1],
        GgmlType::Q8_0,
        (100..134).collect(),
    );
    w.tensor("f16", &[4], GgmlType::F16, vec![0, 60, 0, 188, 1, 2, 3, 4]);
    Gguf::from_bytes(w.to_bytes()).unwrap()
}

fn assert_same_model(a: &Gguf, b: &Gguf) {
    assert_eq!(a.metadata, b.metadata);
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (x, y) in a.tensors.iter().zip(&b.tensors) {
        assert_eq!(
            (&x.name, &x.dims, x.ggml_type),
            (&y.name, &y.dims, y.ggml_type)
        );
        assert_eq!(
            a.tensor(&x.name).unwrap().data,
            b.tensor(&y.name).unwrap().data
        );
    }
}

#[test]
fn export_then_load_gives_the_same_metadata_tensors_and_order() {
    let g = small_model();
    let apr = export(&g).unwrap();
    assert_eq!(&apr[..4], b"APR\0");
    let back = from_bytes(apr.clone()).unwrap();
    assert_same_model(&g, &back);
    // Same model, same bytes.
    assert_eq!(export(&g).unwrap(), apr);
    // Exported from the APR copy: still the same bytes.
    assert_eq!(export(&back).unwrap(), apr);
}

#[test]
fn tensors_are_64_byte_aligned_views_into_the_file() {
    let apr = export(&small_model()).unwrap();
    let back = from_bytes(apr).unwrap();
    for t in &back.tensors {
        assert_eq!(t.file_offset % 64, 0, "{}", t.name);
        assert_eq!(t.file_offset % back.alignment, 0, "{}", t.name);
    }
    // The alignment reported is the one the file has, not a placeholder.
    assert!(back.alignment >= 64, "{}", back.alignment);
    assert_eq!(
        back.tensor("output_norm.weight").unwrap().as_f32().unwrap(),
        &[1.0, -2.5, 3.0, 4.0, 5.0, 6.0]
    );
}

#[test]
fn truncation_anywhere_is_an_error_not_a_panic() {
    let apr = export(&small_model()).unwrap();
    for len in 0..apr.len() - 4 {
        assert!(
            from_bytes(apr[..len].to_vec()).is_err(),
            "prefix of {len} bytes"
        );
    }
}

#[test]
fn every_single_byte_corruption_is_an_error_or_a_valid_model() {
    let apr = export(&small_model()).unwrap();
    for i in 0..apr.len() {
        let mut bad = apr.clone();
        bad[i] ^= 0x5A;
        // Tensor data and padding are not checked at load (zero-copy): a model that opens
        // must still have every view inside the file, which `Gguf::tensor` slices.
        if let Ok(g) = from_bytes(bad) {
            for t in &g.tensors {
                g.tensor(&t.name).unwrap();
            }
        }
    }
}

#[test]
fn a_plain_apr_file_without_our_index_is_named() {
    let mut w = AprV2Writer::new(AprV2Metadata::new("mlp"));
    w.add_f32_tensor("w", vec![2], &[1.0, 2.0]);
    let err = from_bytes(w.write().unwrap()).unwrap_err();
    assert!(matches!(err, AprError::NoIndex("gguf")), "{err}");
}

#[test]
fn an_index_that_disagrees_with_the_tensors_is_refused() {
    let g = small_model();
    // Claim Q4_0 for a Q4_1 tensor: the byte count no longer matches type and dims.
    let mut meta = AprV2Metadata::new("llama");
    meta.custom.insert(
        GGUF.into(),
        json!({
            GGUF_METADATA: [],
            GGUF_TENSORS: [["q", GgmlType::Q4_0.id(), [32, 2]]],
        }),
    );
    let mut w = AprV2Writer::new(meta);
    w.add_tensor(
        "q",
        TensorDType::U8,
        vec![40],
        g.tensor("blk.0.attn_q.weight").unwrap().data.to_vec(),
    );
    let err = from_bytes(w.write().unwrap()).unwrap_err();
    assert!(
        matches!(err, AprError::Gguf(GgufError::BadTensor { .. })),
        "{err}"
    );
}

#[test]
fn metadata_of_the_wrong_type_is_named() {
    let j = json!({"type": "u8", "value": 300});
    assert!(matches!(
        value_from_json("k", &j),
        Err(AprError::BadMetadata { .. })
    ));
    let j = json!({"type": "complex", "value": 1});
    assert!(matches!(
        value_from_json("k", &j),
        Err(AprError::BadMetadata { .. })
    ));
    assert!(value_to_json("k", &Value::F32(f32::NAN)).is_err());
}

#[test]
fn safetensors_export_holds_the_same_bytes() {
    let g = small_model();
    let bytes = safetensors_export::export(&g).unwrap();
    let tensors = safetensors_export::tensors(&bytes).unwrap();
    assert_eq!(tensors.len(), g.tensors.len());
    for (name, data) in tensors {
        assert_eq!(data, g.tensor(&name).unwrap().data, "{name}");
    }
}

fn sealed_file(name: &str) -> (ScratchFile, Vec<u8>) {
    (ScratchFile::new(name), export(&small_model()).unwrap())
}

/// The file's bytes with one changed, and the CRC32 at its end recomputed (what an attacker
/// who knows the format does).
fn tamper(path: &std::path::Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    flip_byte(&mut b, at, true).unwrap();
    std::fs::write(path, b).unwrap();
}

#[test]
fn a_signed_file_opens_with_the_publishers_key_only() {
    let (file, apr) = sealed_file("signed.apr");
    let publisher = key_from_seed([1; 32]);
    let attacker = key_from_seed([2; 32]);
    sign(&apr, &file.0, &publisher).unwrap();
    assert_eq!(
        open_signed(&file.0, &publisher.verifying_key()).unwrap(),
        apr
    );
    assert!(matches!(
        open_signed(&file.0, &attacker.verifying_key()),
        Err(SealError::Rejected { .. })
    ));

    // One byte of the model changed: the CRC catches it, and with the CRC fixed the
    // signature does.
    let mut bytes = std::fs::read(&file.0).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&file.0, &bytes).unwrap();
    assert!(matches!(
        open_signed(&file.0, &publisher.verifying_key()),
        Err(SealError::Rejected { .. })
    ));
    bytes[at] ^= 1;
    std::fs::write(&file.0, &bytes).unwrap();
    tamper(&file.0, at);
    let err = open_signed(&file.0, &publisher.verifying_key()).unwrap_err();
    assert!(err.to_string().contains("ignature"), "{err}");
}

#[test]
fn a_file_re_signed_by_an_attacker_passes_aprenders_default_check() {
    let (file, apr) = sealed_file("resigned.apr");
    let publisher = key_from_seed([1; 32]);
    let attacker = key_from_seed([2; 32]);
    let mut evil = apr.clone();
    let n = evil.len();
    evil[n / 2] ^= 1;
    sign(&evil, &file.0, &attacker).unwrap();
    // The pitfall: trusting the key in the file accepts the attacker's model...
    assert_eq!(open_signed_trusting_the_file(&file.0).unwrap(), evil);
    // ...the publisher's key does not.
    assert!(matches!(
        open_signed(&file.0, &publisher.verifying_key()),
        Err(SealError::Rejected { .. })
    ));
}

#[test]
fn an_encrypted_file_opens_with_its_password_only() {
    let (file, apr) = sealed_file("encrypted.apr");
    encrypt(&apr, &file.0, "correct horse").unwrap();
    let bytes = std::fs::read(&file.0).unwrap();
    assert!(
        !bytes.windows(8).any(|w| w == &apr[64..72]),
        "plaintext leaked"
    );
    assert_eq!(open_encrypted(&file.0, "correct horse").unwrap(), apr);
    assert!(matches!(
        open_encrypted(&file.0, "wrong horse"),
        Err(SealError::Rejected { .. })
    ));
    // A changed ciphertext byte (CRC fixed): AES-GCM's tag rejects it.
    tamper(&file.0, bytes.len() - 100);
    assert!(matches!(
        open_encrypted(&file.0, "correct horse"),
        Err(SealError::Rejected { .. })
    ));
}

#[test]
fn a_crafted_sealed_header_is_an_error_not_a_panic() {
    let (file, apr) = sealed_file("crafted.apr");
    let key = key_from_seed([1; 32]);
    sign(&apr, &file.0, &key).unwrap();
    let clean = std::fs::read(&file.0).unwrap();
    // Only bytes before the CRC footer can be flipped.
    assert!(flip_byte(&mut clean.clone(), clean.len() - 4, true).is_none());
    assert!(flip_byte(&mut [0u8; 3], 0, false).is_none());
    // Every byte of the v1 header, changed with a valid CRC.
    for at in 0..32 {
        std::fs::write(&file.0, &clean).unwrap();
        tamper(&file.0, at);
        assert!(
            open_signed(&file.0, &key.verifying_key()).is_err(),
            "byte {at}"
        );
    }
}

#[test]
fn the_course_model_round_trips_and_generates_the_same_tokens() {
    let Some(path) = crate::assets::model_for_tests() else {
        return;
    };
    let g = Gguf::open(path).unwrap();
    let apr = export(&g).unwrap();
    let file = ScratchFile::new("model.apr");
    std::fs::write(&file.0, &apr).unwrap();
    let back = open(&file.0).unwrap();
    assert!(back.is_mapped());
    assert_same_model(&g, &back);

    let pool = crate::kernels::pool::ThreadPool::new(2);
    let greedy = |g: &Gguf| {
        let model = crate::model::Llama::load(g).unwrap();
        let tokenizer = crate::tokenizer::Tokenizer::from_gguf(g).unwrap();
        let request = crate::generate::Request {
            prompt_ids: tokenizer.encode("The capital of France is", true),
            max_tokens: 8,
            sampling: Default::default(),
            stop_tokens: vec![],
            stop_strings: vec![],
        };
        crate::generate::generate(&model, &tokenizer, &pool, &request, |_| {})
            .unwrap()
            .generated_ids
    };
    assert_eq!(greedy(&g), greedy(&back));
}
