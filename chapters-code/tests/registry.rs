//! The model registry against a real OCI registry server (Docker's distribution, Debian's
//! `docker-registry`) on loopback: a good signed pull is verified and lands in a Hugging Face-
//! style cache; uploads and downloads resume; and every tamper case is refused before the file
//! reaches a snapshot. Skipped (with a line saying so) where the registry server is not
//! installed, unless PRODML_REQUIRE_REGISTRY is set (CI sets it).

use chapters_code::formats::GgmlType;
use chapters_code::formats::gguf::Value;
use chapters_code::formats::gguf_write::GgufWriter;
use chapters_code::registry::attacks;
use chapters_code::registry::cache::{self, Cache, Options};
use chapters_code::registry::local::{LocalRegistry, find_binary};
use chapters_code::registry::oci::{Client, incomplete_path};
use chapters_code::registry::signing::{PublicKey, SecretKey};
use chapters_code::registry::{Digest, Reference, RegistryError};
use std::path::{Path, PathBuf};

/// A small but real GGUF: `blocks` Q8_0 rows of pseudo-random bytes seeded by `seed`.
fn model_file(dir: &Path, name: &str, seed: u64, rows: usize) -> PathBuf {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut data = Vec::with_capacity(rows * 34);
    for _ in 0..rows * 34 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.push(state as u8);
    }
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Value::String("llama".into()))
        .meta("general.name", Value::String(format!("test-{seed}")));
    w.tensor(
        "blk.0.ffn_up.weight",
        &[32, rows as u64],
        GgmlType::Q8_0,
        data,
    );
    let path = dir.join(name);
    w.write(&path).unwrap();
    path
}

struct Fixture {
    registry: LocalRegistry,
    client: Client,
    dir: PathBuf,
}

fn fixture(tag: &str) -> Option<Fixture> {
    let Some(binary) = find_binary() else {
        assert!(
            std::env::var_os("PRODML_REQUIRE_REGISTRY").is_none(),
            "PRODML_REQUIRE_REGISTRY is set, but no registry server (`docker-registry`) runs"
        );
        eprintln!("SKIPPED: no registry server (apt install docker-registry)");
        return None;
    };
    let dir = std::env::temp_dir().join(format!("prodml-registry-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let registry = LocalRegistry::start(&binary, &dir.join("server")).unwrap();
    let client = Client::new(&registry.base);
    Some(Fixture {
        registry,
        client,
        dir,
    })
}

impl Fixture {
    fn push(
        &self,
        rt: &tokio::runtime::Runtime,
        publisher: &Cache,
        r: &Reference,
        path: &Path,
        key: Option<&SecretKey>,
        options: Options,
    ) -> Result<cache::Pushed, RegistryError> {
        rt.block_on(cache::push(&self.client, publisher, r, path, key, options))
    }

    fn pull(
        &self,
        rt: &tokio::runtime::Runtime,
        cache: &Cache,
        r: &Reference,
        trusted: &[PublicKey],
        options: Options,
    ) -> Result<cache::Pulled, RegistryError> {
        rt.block_on(cache::pull(&self.client, cache, r, trusted, options))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn small_chunks() -> Options {
    Options {
        chunk: 64 << 10,
        budget: None,
    }
}

/// Nothing of a refused pull may be usable: no ref, no snapshot.
fn assert_nothing_cached(cache: &Cache, r: &Reference) {
    assert!(cache.resolve(r).is_none(), "{r}: a ref was written");
    let snapshots = cache.repo_dir(&r.name).join("snapshots");
    let n = std::fs::read_dir(&snapshots).map_or(0, |d| d.count());
    assert_eq!(n, 0, "{r}: a snapshot was written");
}

#[test]
fn a_signed_model_round_trips_through_the_registry() {
    let Some(f) = fixture("good") else { return };
    let rt = runtime();
    let key = SecretKey::generate().unwrap();
    let publisher = Cache::new(f.dir.join("publisher"));
    for (i, rows) in [1usize, 7, 3000, 9000].into_iter().enumerate() {
        let path = model_file(&f.dir, &format!("m{i}.gguf"), i as u64, rows);
        let r = Reference::parse(&format!("prodml/tiny-{i}:v1")).unwrap();
        let pushed = f
            .push(&rt, &publisher, &r, &path, Some(&key), small_chunks())
            .unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        assert_eq!(pushed.transfer.sent, size);
        assert_eq!(pushed.transfer.requests, size.div_ceil(64 << 10));
        let cache = Cache::new(f.dir.join(format!("cache-{i}")));
        let pulled = f
            .pull(&rt, &cache, &r, &[key.public()], Options::default())
            .unwrap();
        assert_eq!(
            std::fs::read(&pulled.path).unwrap(),
            std::fs::read(&path).unwrap()
        );
        assert_eq!(pulled.manifest, pushed.manifest);
        assert_eq!(pulled.key_id, key.public().id());
        assert_eq!(pulled.config.config.quantization, "Q8_0");
        // The Hub's layout: refs/<tag> → revision; the snapshot links to blobs/<sha256>.
        assert_eq!(cache.resolve(&r), Some(pushed.manifest.clone()));
        let (digest, _) = Digest::of_file(&path).unwrap();
        assert_eq!(
            std::fs::read_link(&pulled.path).unwrap(),
            Path::new("../../blobs").join(digest.hex())
        );
        assert!(cache.blob(&r.name, &digest).is_file());
        // The same manifest under a second tag, signed for it too: both tags verify (the
        // signature artifact keeps one envelope per tag).
        let latest = Reference::parse(&format!("prodml/tiny-{i}:latest")).unwrap();
        f.push(&rt, &publisher, &latest, &path, Some(&key), small_chunks())
            .unwrap();
        for r in [&r, &latest] {
            let cache = Cache::new(f.dir.join(format!("cache-{i}-{}", r.tag)));
            f.pull(&rt, &cache, r, &[key.public()], Options::default())
                .unwrap();
        }
        // A second push sends nothing; a second pull downloads nothing.
        let again = f
            .push(&rt, &publisher, &r, &path, Some(&key), small_chunks())
            .unwrap();
        assert!(again.transfer.skipped);
        let again = f
            .pull(&rt, &cache, &r, &[key.public()], Options::default())
            .unwrap();
        assert!(again.transfer.skipped);
    }
}

#[test]
fn uploads_and_downloads_resume_where_they_stopped() {
    let Some(f) = fixture("resume") else { return };
    let rt = runtime();
    let key = SecretKey::generate().unwrap();
    let path = model_file(&f.dir, "m.gguf", 42, 12_000);
    let size = std::fs::metadata(&path).unwrap().len();
    let r = Reference::parse("prodml/resume:v1").unwrap();
    let publisher = Cache::new(f.dir.join("publisher"));
    let cut = Options {
        chunk: 64 << 10,
        budget: Some(3 * (64 << 10)),
    };
    let err = f
        .push(&rt, &publisher, &r, &path, Some(&key), cut)
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Interrupted { done, .. } if done == 3 * (64 << 10)),
        "{err}"
    );
    let pushed = f
        .push(&rt, &publisher, &r, &path, Some(&key), small_chunks())
        .unwrap();
    assert_eq!(pushed.transfer.resumed_from, 3 * (64 << 10));
    assert_eq!(pushed.transfer.sent, size - 3 * (64 << 10));

    let cache = Cache::new(f.dir.join("cache"));
    let cut = Options {
        chunk: 64 << 10,
        budget: Some(100_000),
    };
    let err = f.pull(&rt, &cache, &r, &[key.public()], cut).unwrap_err();
    assert!(matches!(err, RegistryError::Interrupted { .. }), "{err}");
    let blob = cache.blob(&r.name, &pushed.layer);
    let partial = std::fs::metadata(incomplete_path(&blob)).unwrap().len();
    assert!(partial >= 100_000 && partial < size, "{partial}");
    assert_nothing_cached(&cache, &r);
    let pulled = f
        .pull(&rt, &cache, &r, &[key.public()], Options::default())
        .unwrap();
    assert_eq!(pulled.transfer.resumed_from, partial);
    assert_eq!(pulled.transfer.sent, size - partial);
    assert_eq!(
        std::fs::read(&pulled.path).unwrap(),
        std::fs::read(&path).unwrap()
    );
}

#[test]
fn every_tamper_case_is_refused() {
    let Some(f) = fixture("tamper") else { return };
    let rt = runtime();
    let key = SecretKey::generate().unwrap();
    let stranger = SecretKey::generate().unwrap();
    let trusted = [key.public()];
    let publisher = Cache::new(f.dir.join("publisher"));
    let push = |r: &str, path: &Path, key: Option<&SecretKey>| {
        let r = Reference::parse(r).unwrap();
        f.push(&rt, &publisher, &r, path, key, small_chunks())
            .unwrap()
    };
    // Every pull into a new, empty cache.
    let pulls = std::cell::Cell::new(0);
    let fresh_cache = || {
        pulls.set(pulls.get() + 1);
        Cache::new(f.dir.join(format!("cache-{}", pulls.get())))
    };
    let pull = |r: &str, trusted: &[PublicKey]| {
        let r = Reference::parse(r).unwrap();
        let cache = fresh_cache();
        let result = f.pull(&rt, &cache, &r, trusted, Options::default());
        if result.is_err() {
            assert_nothing_cached(&cache, &r);
        }
        result
    };
    let a = model_file(&f.dir, "a.gguf", 1, 2000);
    let b = model_file(&f.dir, "b.gguf", 2, 2500);
    let v1 = push("prodml/m:v1", &a, Some(&key));
    let v2 = push("prodml/m:v2", &b, Some(&key));
    assert!(pull("prodml/m:v1", &trusted).is_ok());
    assert!(pull("prodml/m:v2", &trusted).is_ok());

    // Unsigned.
    push("prodml/m:unsigned", &a, None);
    let e = pull("prodml/m:unsigned", &trusted).unwrap_err();
    // The same manifest as v1 is signed — but for the tag v1, not `unsigned`.
    assert_eq!(e.refusal(), "refused: signed for another tag");
    let c = model_file(&f.dir, "c.gguf", 3, 10);
    push("prodml/m:unsigned", &c, None);
    let e = pull("prodml/m:unsigned", &trusted).unwrap_err();
    assert_eq!(e.refusal(), "refused: unsigned");
    eprintln!("unsigned: {e}");

    // Signed by a key the puller does not trust; and a puller that trusts nobody.
    push("prodml/m:stranger", &c, Some(&stranger));
    let e = pull("prodml/m:stranger", &trusted).unwrap_err();
    assert_eq!(e.refusal(), "refused: untrusted key");
    eprintln!("another key: {e}");
    let e = pull("prodml/m:v1", &[]).unwrap_err();
    assert_eq!(e.refusal(), "refused: untrusted key");

    // An old version replayed under a new tag: v1's manifest (and its valid signature) put
    // under v2.
    rt.block_on(attacks::replay(&f.client, "prodml/m", "v1", "v2"))
        .unwrap();
    let e = pull("prodml/m:v2", &trusted).unwrap_err();
    assert_eq!(e.refusal(), "refused: signed for another tag");
    eprintln!("replay: {e}");

    // A swapped manifest under v2: unsigned; then with v2's real signature artifact copied to
    // it (its subject names the real v2); then with v2's envelope re-attached to it.
    let (swapped, len) = rt
        .block_on(attacks::swap_manifest(&f.client, "prodml/m", "v2"))
        .unwrap();
    let e = pull("prodml/m:v2", &trusted).unwrap_err();
    assert_eq!(e.refusal(), "refused: unsigned");
    rt.block_on(attacks::copy_signature(
        &f.client,
        "prodml/m",
        &v2.manifest,
        &swapped,
    ))
    .unwrap();
    let e = pull("prodml/m:v2", &trusted).unwrap_err();
    assert_eq!(e.refusal(), "refused: signed for another manifest");
    rt.block_on(attacks::reattach_signature(
        &f.client,
        "prodml/m",
        &v2.manifest,
        (&swapped, len),
    ))
    .unwrap();
    let e = pull("prodml/m:v2", &trusted).unwrap_err();
    assert_eq!(e.refusal(), "refused: signed for another manifest");
    eprintln!("swapped manifest: {e}");

    // A blob changed in the registry's storage (same length, one bit flipped).
    attacks::flip_stored_byte(&f.registry, &v1.layer).unwrap();
    let e = pull("prodml/m:v1", &trusted).unwrap_err();
    assert_eq!(e.refusal(), "refused: digest mismatch");
    eprintln!("changed blob: {e}");
    let cache = Cache::new(f.dir.join(format!("cache-{}", pulls.get())));
    let blob = cache.blob("prodml/m", &v1.layer);
    assert!(
        !blob.exists() && !incomplete_path(&blob).exists(),
        "a bad blob was kept"
    );
}

#[test]
fn clear_errors_for_a_missing_registry_tag_or_file() {
    let rt = runtime();
    let nobody = Client::new("http://127.0.0.1:9");
    let e = rt.block_on(nobody.ping()).unwrap_err();
    assert!(e.to_string().contains("is the registry at"), "{e}");
    let Some(f) = fixture("errors") else { return };
    let cache = Cache::new(f.dir.join("cache"));
    let r = Reference::parse("prodml/none:v1").unwrap();
    let e = f
        .pull(&rt, &cache, &r, &[], Options::default())
        .unwrap_err();
    assert!(matches!(e, RegistryError::NotFound(..)), "{e}");
    let not_gguf = f.dir.join("x.gguf");
    std::fs::write(&not_gguf, b"not a model").unwrap();
    let e = f
        .push(&rt, &cache, &r, &not_gguf, None, Options::default())
        .unwrap_err();
    assert!(matches!(e, RegistryError::NotGguf { .. }), "{e}");
}
