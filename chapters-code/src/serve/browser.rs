//! What the chat page needs to run the model in the browser instead of on the server: the
//! WebAssembly engine (`prodml-wasm`, built for wasm32-unknown-unknown), its JavaScript (the
//! loader and the Web Worker of `wasm/`), and the model file, under `/browser/`.
//!
//! The module is a build product of another target, so the server takes its path
//! (`--wasm-module`) instead of embedding it; the two JavaScript files are compiled in.

use super::errors::ApiError;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// The files behind `/browser/`.
#[derive(Debug, Clone)]
pub struct BrowserAssets {
    /// `prodml_wasm.wasm`, as `cargo build -p prodml-wasm --profile wasm --target
    /// wasm32-unknown-unknown` writes it.
    pub module: PathBuf,
    /// The same built with `RUSTFLAGS="-C target-feature=+simd128,+relaxed-simd"`, offered to
    /// the page first (engines without relaxed-SIMD refuse it; the page then takes `module`).
    pub relaxed: Option<PathBuf>,
    /// The GGUF file the server runs: the browser gets the same bytes.
    pub model: PathBuf,
    module_bytes: u64,
    relaxed_bytes: Option<u64>,
    model_bytes: u64,
}

impl BrowserAssets {
    /// Checks that the files are there and that the modules are WebAssembly.
    pub fn new(
        module: &Path,
        relaxed: Option<&Path>,
        model: &Path,
    ) -> Result<BrowserAssets, String> {
        // The magic number and the size: the module itself is read when a page asks for it.
        let wasm_size = |path: &Path| {
            use std::io::Read;
            let mut magic = [0u8; 4];
            let mut file = std::fs::File::open(path).map_err(|e| {
                format!(
                    "{}: {e} (build it with: cargo build -p prodml-wasm --profile wasm --target wasm32-unknown-unknown)",
                    path.display()
                )
            })?;
            if file.read_exact(&mut magic).is_err() || &magic != b"\0asm" {
                return Err(format!("{}: not a WebAssembly module", path.display()));
            }
            file.metadata()
                .map(|m| m.len())
                .map_err(|e| format!("{}: {e}", path.display()))
        };
        let model_bytes = std::fs::metadata(model)
            .map(|m| m.len())
            .map_err(|e| format!("{}: {e}", model.display()))?;
        Ok(BrowserAssets {
            module_bytes: wasm_size(module)?,
            relaxed_bytes: relaxed.map(wasm_size).transpose()?,
            model_bytes,
            module: module.to_path_buf(),
            relaxed: relaxed.map(Path::to_path_buf),
            model: model.to_path_buf(),
        })
    }
}

/// The routes under `/browser/`, to merge into the API's router.
pub fn routes(assets: BrowserAssets) -> Router {
    Router::new()
        .route("/browser/status", get(status))
        .route("/browser/prodml_wasm.wasm", get(module))
        .route("/browser/prodml_wasm_relaxed.wasm", get(relaxed))
        .route("/browser/model.gguf", get(model))
        .route("/browser/js/engine.mjs", get(|| script(ENGINE_JS)))
        .route("/browser/web/worker.mjs", get(|| script(WORKER_JS)))
        .with_state(Arc::new(assets))
}

// The worker imports "../js/engine.mjs": the same layout as in `wasm/`.
const ENGINE_JS: &str = include_str!("../../../wasm/js/engine.mjs");
const WORKER_JS: &str = include_str!("../../../wasm/web/worker.mjs");

async fn script(text: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        text,
    )
        .into_response()
}

async fn status(State(a): State<Arc<BrowserAssets>>) -> Response {
    axum::Json(json!({
        "module_bytes": a.module_bytes,
        "relaxed_bytes": a.relaxed_bytes,
        "model_bytes": a.model_bytes,
    }))
    .into_response()
}

async fn module(State(a): State<Arc<BrowserAssets>>) -> Response {
    // `WebAssembly.compileStreaming` requires this content type.
    file(&a.module, "application/wasm").await
}

async fn relaxed(State(a): State<Arc<BrowserAssets>>) -> Response {
    match &a.relaxed {
        Some(path) => file(path, "application/wasm").await,
        None => ApiError::not_found(
            "the server was started without --wasm-module-relaxed",
            None,
            "no_relaxed_module",
        )
        .into_response(),
    }
}

async fn model(State(a): State<Arc<BrowserAssets>>) -> Response {
    file(&a.model, "application/octet-stream").await
}

/// The file in 1 MiB chunks with its Content-Length (the worker sizes its buffer from it):
/// the server never holds a second copy of the model.
async fn file(path: &Path, content_type: &'static str) -> Response {
    let opened = match tokio::fs::File::open(path).await {
        Ok(f) => f.metadata().await.map(|m| (f, m.len())),
        Err(e) => Err(e),
    };
    let (file, len) = match opened {
        Ok(x) => x,
        Err(e) => {
            return ApiError::internal(format!("cannot read {}: {e}", path.display()))
                .into_response();
        }
    };
    let chunks = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 1 << 20];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (header::CACHE_CONTROL, "no-cache".to_string()),
        ],
        Body::from_stream(chunks),
    )
        .into_response()
}
