//! The OCI distribution API calls a model registry needs, over reqwest.
//!
//! Why not an OCI client crate (`oci-client`): the calls are few (eight), the two we teach —
//! chunked uploads that resume from the registry's `Range`, downloads that resume with a
//! `Range` request into a `.incomplete` file — are the ones a crate hides, and it would bring
//! its own TLS stack and JWT code into a book that talks to a registry on loopback.
//!
//! Endpoints (OCI distribution spec v1.1):
//! - `GET /v2/` — is it a registry.
//! - `HEAD /v2/<name>/blobs/<digest>` — does the blob exist (then no upload).
//! - `POST /v2/<name>/blobs/uploads/` → `Location` of an upload session.
//! - `PATCH <location>` with `Content-Range: start-end` — one chunk; answers the new
//!   `Location` and `Range: 0-<last byte received>`.
//! - `GET <location>` — how much the registry has (to resume).
//! - `PUT <location>&digest=<digest>` — close the session; the registry checks the digest.
//! - `PUT` / `GET /v2/<name>/manifests/<reference>` — manifests by tag or digest.
//! - `GET /v2/<name>/blobs/<digest>` with `Range: bytes=N-` — download, resumed.

use super::digest::Hasher;
use super::{Digest, RegistryError};
use reqwest::StatusCode;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Largest manifest we read (the distribution spec lets registries refuse above 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// What one blob transfer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transfer {
    /// Bytes that crossed the network in this call.
    pub sent: u64,
    /// Byte offset the call started from (non-zero: it resumed).
    pub resumed_from: u64,
    /// Requests with data (chunks).
    pub requests: u64,
    /// The registry already had the blob: nothing was sent.
    pub skipped: bool,
}

/// A file to upload, with its digest and size (computed once by the caller).
#[derive(Debug, Clone, Copy)]
pub struct LocalBlob<'a> {
    pub path: &'a Path,
    pub digest: &'a Digest,
    pub size: u64,
}

/// A client for one registry, e.g. `http://127.0.0.1:5000`.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, location: &str) -> String {
        if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location.to_string()
        }
    }

    async fn send(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RegistryError> {
        request.send().await.map_err(|e| RegistryError::Transport {
            what: what.to_string(),
            message: format!("{e} (is the registry at {} running?)", self.base),
        })
    }

    /// Fails unless `response` has one of `ok`, with the registry's error body in the message.
    async fn expect(
        what: &str,
        response: reqwest::Response,
        ok: &[StatusCode],
    ) -> Result<reqwest::Response, RegistryError> {
        if ok.contains(&response.status()) {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        Err(RegistryError::Http {
            what: what.to_string(),
            status,
            body: body.chars().take(400).collect(),
        })
    }

    /// `GET /v2/`: the registry answers 200 (401 would mean it wants a login we do not do).
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let r = self
            .send("ping", self.http.get(format!("{}/v2/", self.base)))
            .await?;
        Self::expect("ping", r, &[StatusCode::OK]).await.map(drop)
    }

    /// The blob's size if the repository has it.
    pub async fn blob_size(
        &self,
        name: &str,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        let what = format!("HEAD blob {digest}");
        let url = format!("{}/v2/{name}/blobs/{digest}", self.base);
        let r = self.send(&what, self.http.head(url)).await?;
        if r.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let r = Self::expect(&what, r, &[StatusCode::OK]).await?;
        // From the header: a HEAD response has no body, so reqwest's body length reads 0.
        Ok(r.headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()))
    }

    /// Uploads small bytes (a manifest's config, a signature) in one request.
    pub async fn push_bytes(&self, name: &str, data: &[u8]) -> Result<Digest, RegistryError> {
        let digest = Digest::of(data);
        if self.blob_size(name, &digest).await?.is_some() {
            return Ok(digest);
        }
        let location = self.start_upload(name).await?;
        let what = format!("PUT blob {digest}");
        let r = self
            .send(
                &what,
                self.http
                    .put(with_digest(&self.url(&location), &digest))
                    .header("content-type", "application/octet-stream")
                    .body(data.to_vec()),
            )
            .await?;
        Self::expect(&what, r, &[StatusCode::CREATED]).await?;
        Ok(digest)
    }

    async fn start_upload(&self, name: &str) -> Result<String, RegistryError> {
        let what = format!("POST upload to {name}");
        let url = format!("{}/v2/{name}/blobs/uploads/", self.base);
        let r = self.send(&what, self.http.post(url)).await?;
        let r = Self::expect(&what, r, &[StatusCode::ACCEPTED]).await?;
        location(&what, &r)
    }

    /// Bytes the registry holds for an upload session, and the session's current location;
    /// `None` when the session is gone (expired, finished, or from another registry).
    async fn upload_offset(&self, location: &str) -> Result<Option<(u64, String)>, RegistryError> {
        let what = "GET upload status";
        let r = self.send(what, self.http.get(self.url(location))).await?;
        if r.status() != StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let next = location_or(&r, location);
        Ok(Some((received(&r).unwrap_or(0), next)))
    }

    // ANCHOR: push_blob
    /// Uploads the file at `path` (digest and size known) in chunks of `chunk` bytes. The
    /// session's latest location is written to `state` after every chunk, so that a new call
    /// after an interruption asks the registry how much it holds and sends only the rest.
    /// `budget`, when set, stops after that many bytes this call (how the tests interrupt).
    pub async fn push_blob(
        &self,
        name: &str,
        blob: LocalBlob<'_>,
        chunk: usize,
        state: &Path,
        budget: Option<u64>,
    ) -> Result<Transfer, RegistryError> {
        let LocalBlob { path, digest, size } = blob;
        if self.blob_size(name, digest).await? == Some(size) {
            let _ = std::fs::remove_file(state);
            return Ok(Transfer {
                skipped: true,
                ..Transfer::default()
            });
        }
        // Resume the session named in `state`, if the registry still knows it.
        let saved = std::fs::read_to_string(state).ok();
        let resumed = match saved {
            Some(loc) => self.upload_offset(loc.trim()).await?,
            None => None,
        };
        let (mut offset, mut location) = match resumed {
            Some((offset, loc)) if offset <= size => (offset, loc),
            _ => (0, self.start_upload(name).await?),
        };
        let mut transfer = Transfer {
            resumed_from: offset,
            ..Transfer::default()
        };
        let mut file = std::fs::File::open(path).map_err(|e| RegistryError::io(path, e))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| RegistryError::io(path, e))?;
        let mut buf = vec![0u8; chunk.max(1)];
        while offset < size {
            if budget.is_some_and(|b| transfer.sent >= b) {
                return Err(RegistryError::Interrupted {
                    done: offset,
                    total: size,
                });
            }
            let n = ((size - offset) as usize).min(buf.len());
            file.read_exact(&mut buf[..n])
                .map_err(|e| RegistryError::io(path, e))?;
            let what = format!("PATCH chunk at byte {offset} of {digest}");
            let r = self
                .send(
                    &what,
                    self.http
                        .patch(self.url(&location))
                        .header("content-type", "application/octet-stream")
                        .header(
                            "content-range",
                            format!("{}-{}", offset, offset + n as u64 - 1),
                        )
                        .body(buf[..n].to_vec()),
                )
                .await?;
            let r = Self::expect(&what, r, &[StatusCode::ACCEPTED]).await?;
            location = location_or(&r, &location);
            offset = received(&r).unwrap_or(offset + n as u64);
            transfer.sent += n as u64;
            transfer.requests += 1;
            std::fs::write(state, &location).map_err(|e| RegistryError::io(state, e))?;
        }
        let what = format!("PUT (close upload of) {digest}");
        let r = self
            .send(
                &what,
                self.http.put(with_digest(&self.url(&location), digest)),
            )
            .await?;
        Self::expect(&what, r, &[StatusCode::CREATED]).await?;
        let _ = std::fs::remove_file(state);
        Ok(transfer)
    }
    // ANCHOR_END: push_blob

    // ANCHOR: fetch_blob
    /// Downloads a blob to `dest`, through `dest.incomplete`: an earlier, interrupted download
    /// is hashed and continued with `Range: bytes=N-`. The digest and size are checked before
    /// `dest` appears; a blob that does not match is deleted, never kept.
    pub async fn fetch_blob(
        &self,
        name: &str,
        digest: &Digest,
        size: u64,
        dest: &Path,
        budget: Option<u64>,
    ) -> Result<Transfer, RegistryError> {
        let partial = incomplete_path(dest);
        let mut hasher = Hasher::default();
        if let Ok(mut f) = std::fs::File::open(&partial) {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f
                    .read(&mut buf)
                    .map_err(|e| RegistryError::io(&partial, e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
        }
        if hasher.len() > size {
            hasher = Hasher::default();
        }
        let mut transfer = Transfer {
            resumed_from: hasher.len(),
            ..Transfer::default()
        };
        if hasher.len() < size {
            let what = format!("GET blob {digest}");
            let mut request = self
                .http
                .get(format!("{}/v2/{name}/blobs/{digest}", self.base));
            if !hasher.is_empty() {
                request = request.header("range", format!("bytes={}-", hasher.len()));
            }
            let mut r = self.send(&what, request).await?;
            if r.status() == StatusCode::NOT_FOUND {
                return Err(RegistryError::NotFound(
                    name.to_string(),
                    digest.to_string(),
                ));
            }
            r = Self::expect(&what, r, &[StatusCode::OK, StatusCode::PARTIAL_CONTENT]).await?;
            // 200 to a ranged request: the registry sends the whole blob; start over.
            let append = r.status() == StatusCode::PARTIAL_CONTENT;
            if !append {
                hasher = Hasher::default();
                transfer.resumed_from = 0;
            }
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(append)
                .truncate(!append)
                .open(&partial)
                .map_err(|e| RegistryError::io(&partial, e))?;
            transfer.requests = 1;
            loop {
                if budget.is_some_and(|b| transfer.sent >= b) {
                    return Err(RegistryError::Interrupted {
                        done: hasher.len(),
                        total: size,
                    });
                }
                let chunk = r.chunk().await.map_err(|e| RegistryError::Transport {
                    what: what.clone(),
                    message: e.to_string(),
                })?;
                let Some(mut chunk) = chunk else { break };
                if hasher.len() + chunk.len() as u64 > size {
                    // More bytes than the manifest declared: keep none of the excess.
                    chunk.truncate((size - hasher.len()) as usize);
                    hasher.update(&chunk);
                    let got = hasher.clone().finish().0;
                    let _ = std::fs::remove_file(&partial);
                    return Err(RegistryError::DigestMismatch {
                        what: format!("blob (longer than its {size} bytes)"),
                        expected: digest.clone(),
                        got,
                    });
                }
                hasher.update(&chunk);
                out.write_all(&chunk)
                    .map_err(|e| RegistryError::io(&partial, e))?;
                transfer.sent += chunk.len() as u64;
            }
            out.sync_all().map_err(|e| RegistryError::io(&partial, e))?;
        }
        let (got, len) = hasher.finish();
        if &got != digest || len != size {
            let _ = std::fs::remove_file(&partial);
            return Err(RegistryError::DigestMismatch {
                what: format!("blob ({len} of {size} bytes)"),
                expected: digest.clone(),
                got,
            });
        }
        std::fs::rename(&partial, dest).map_err(|e| RegistryError::io(dest, e))?;
        Ok(transfer)
    }
    // ANCHOR_END: fetch_blob

    /// Downloads a small blob (config, signature envelope) into memory, digest-checked.
    pub async fn fetch_small(
        &self,
        name: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        if size > MAX_MANIFEST_BYTES as u64 {
            return Err(RegistryError::NotAModel(format!(
                "a metadata blob of {size} bytes (at most {MAX_MANIFEST_BYTES})"
            )));
        }
        let what = format!("GET blob {digest}");
        let r = self
            .send(
                &what,
                self.http
                    .get(format!("{}/v2/{name}/blobs/{digest}", self.base)),
            )
            .await?;
        if r.status() == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound(
                name.to_string(),
                digest.to_string(),
            ));
        }
        let r = Self::expect(&what, r, &[StatusCode::OK]).await?;
        let bytes = read_capped(&what, r, MAX_MANIFEST_BYTES).await?;
        let got = Digest::of(&bytes);
        if &got != digest {
            return Err(RegistryError::DigestMismatch {
                what: "metadata blob".into(),
                expected: digest.clone(),
                got,
            });
        }
        Ok(bytes)
    }

    /// Stores a manifest under a tag; returns its digest.
    pub async fn put_manifest(
        &self,
        name: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, RegistryError> {
        let what = format!("PUT manifest {name}:{reference}");
        let r = self
            .send(
                &what,
                self.http
                    .put(format!("{}/v2/{name}/manifests/{reference}", self.base))
                    .header("content-type", media_type)
                    .body(bytes.to_vec()),
            )
            .await?;
        Self::expect(&what, r, &[StatusCode::CREATED]).await?;
        Ok(Digest::of(bytes))
    }

    /// A manifest by tag or digest, as the registry stores it; `None` if there is none.
    pub async fn get_manifest(
        &self,
        name: &str,
        reference: &str,
        accept: &str,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let what = format!("GET manifest {name}:{reference}");
        let r = self
            .send(
                &what,
                self.http
                    .get(format!("{}/v2/{name}/manifests/{reference}", self.base))
                    .header("accept", accept),
            )
            .await?;
        if r.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let r = Self::expect(&what, r, &[StatusCode::OK]).await?;
        read_capped(&what, r, MAX_MANIFEST_BYTES).await.map(Some)
    }
}

/// `dest` with `.incomplete` appended (the Hugging Face cache's name for a partial download).
pub fn incomplete_path(dest: &Path) -> PathBuf {
    let mut name = dest.as_os_str().to_owned();
    name.push(".incomplete");
    PathBuf::from(name)
}

async fn read_capped(
    what: &str,
    mut r: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, RegistryError> {
    let mut out = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(|e| RegistryError::Transport {
        what: what.to_string(),
        message: e.to_string(),
    })? {
        if out.len() + chunk.len() > cap {
            return Err(RegistryError::NotAModel(format!(
                "{what}: more than {cap} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn with_digest(url: &str, digest: &Digest) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}digest={digest}")
}

fn location(what: &str, r: &reqwest::Response) -> Result<String, RegistryError> {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| RegistryError::Transport {
            what: what.to_string(),
            message: "the registry sent no Location for the upload session".into(),
        })
}

fn location_or(r: &reqwest::Response, previous: &str) -> String {
    location("", r).unwrap_or_else(|_| previous.to_string())
}

/// Bytes received so far, from `Range: 0-<last byte>` (inclusive). The spec writes `0-0` both
/// for one byte and for none; we read it only after a chunk was accepted (the state file is
/// written after a PATCH), where it means one byte.
fn received(r: &reqwest::Response) -> Option<u64> {
    let range = r.headers().get("range")?.to_str().ok()?;
    let (_, last) = range.trim_start_matches("bytes=").split_once('-')?;
    last.parse::<u64>().ok().map(|l| l + 1)
}
