//! SGLang's router (`pip install sglang-router`: the Rust "model gateway" in a Python wheel) in
//! front of the replicas. It probes a worker's `/health`, `/server_info` and `/model_info`
//! (our server answers all three), keeps an approximate radix tree of the request text it sent
//! to each worker, and with `cache_aware` sends a request to the worker whose tree shares the
//! longest prefix with it — unless the load is too uneven, when it takes the least loaded.

use super::replica;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The router's policies we measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    RoundRobin,
    /// Prefix-aware: the longest shared prefix of request text, balanced by queue length.
    CacheAware,
}

impl Policy {
    pub fn label(self) -> &'static str {
        match self {
            Policy::RoundRobin => "sglang-router round_robin",
            Policy::CacheAware => "sglang-router cache_aware",
        }
    }

    fn arg(self) -> &'static str {
        match self {
            Policy::RoundRobin => "round_robin",
            Policy::CacheAware => "cache_aware",
        }
    }
}

/// A Python that can import `sglang_router`: `given`, else $PRODML_SGLANG_PYTHON, else
/// `python3`; `None` if that one cannot.
pub fn find_python(given: Option<&Path>) -> Option<PathBuf> {
    let python: PathBuf = given
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("PRODML_SGLANG_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| "python3".into());
    Command::new(&python)
        .args(["-c", "import sglang_router"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        .then_some(python)
}

/// A running router; stopped when dropped.
pub struct Router {
    child: Child,
    pub port: u16,
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Router {
    /// Starts the router on `port` over `workers` (URLs), health-checking them every second
    /// (one failure takes a worker out, one success brings it back), and waits until it
    /// serves `/v1/models` with `model_id` from every worker registered.
    pub fn start(
        python: &Path,
        port: u16,
        workers: &[String],
        policy: Policy,
        model_id: &str,
        log: &Path,
    ) -> Result<Router, String> {
        let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(python)
            .args(["-m", "sglang_router.launch_router", "--host", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .arg("--worker-urls")
            .args(workers)
            .args(["--policy", policy.arg()])
            .args(["--health-check-interval-secs", "1"])
            .args(["--health-failure-threshold", "1"])
            .args(["--health-success-threshold", "1"])
            .args(["--health-check-endpoint", "/health"])
            .args(["--log-level", "warn"])
            // Its Prometheus exporter listens on 29000 by default: one free port per router.
            .args(["--prometheus-host", "127.0.0.1", "--prometheus-port"])
            .arg(replica::free_port().map_err(|e| e.to_string())?.to_string())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("starting {} -m sglang_router: {e}", python.display()))?;
        let mut router = Router { child, port };
        let authority = format!("127.0.0.1:{port}");
        let ready = || {
            let get = |path| crate::child::http_get(&authority, path);
            get("/workers").is_some_and(|(status, body)| {
                status == 200 && workers.iter().all(|w| body.contains(w.as_str()))
            }) && get("/v1/models")
                .is_some_and(|(status, body)| status == 200 && body.contains(model_id))
        };
        crate::child::wait_ready(
            &mut router.child,
            "sglang-router (registering its workers)",
            Duration::from_secs(60),
            ready,
        )
        .map_err(|e| format!("{e}: {}", crate::child::log_tail(log, 800)))?;
        Ok(router)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Whether the router counts the worker at `url` healthy now (`GET /workers`), if it
    /// lists it.
    pub fn worker_healthy(&self, url: &str) -> Option<bool> {
        let (_, body) = crate::child::http_get(&format!("127.0.0.1:{}", self.port), "/workers")?;
        let start = body.find('{')?;
        let end = body.rfind('}')?;
        let json: serde_json::Value = serde_json::from_str(&body[start..=end]).ok()?;
        json["workers"]
            .as_array()?
            .iter()
            .find(|w| w["url"] == url)
            .and_then(|w| w["is_healthy"].as_bool())
    }
}
