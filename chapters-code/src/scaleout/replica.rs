//! Replicas of `demo-serving-api`, each its own process on its own loopback port, pinned to a
//! core with `taskset` where it exists.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How to start one replica.
#[derive(Debug, Clone)]
pub struct ReplicaSpec {
    /// The `demo-serving-api` executable.
    pub binary: PathBuf,
    pub model: PathBuf,
    /// Threads of its engine.
    pub threads: usize,
    /// Memory for its KV cache (and so its prefix cache), MiB.
    pub kv_mib: usize,
    /// The model id it serves (`model` in requests).
    pub model_id: String,
    /// Seconds to drain on SIGTERM.
    pub drain_s: u64,
}

/// A running replica; killed when dropped.
pub struct Replica {
    child: Option<Child>,
    pub port: u16,
    /// The cores it is pinned to (`taskset -c`), if pinned.
    pub cores: Option<String>,
    spec: ReplicaSpec,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback port (the OS picks it; there is a small window before the replica binds it).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn taskset() -> bool {
    Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Replica {
    /// Starts a replica on `port`, pinned to `cores` (a `taskset -c` list such as `0` or `0-1`)
    /// when given and `taskset` exists, and waits until `/health` answers 200.
    pub fn start(spec: &ReplicaSpec, port: u16, cores: Option<&str>) -> Result<Replica, String> {
        let cores = cores.filter(|_| taskset()).map(str::to_string);
        let mut replica = Replica {
            child: None,
            port,
            cores,
            spec: spec.clone(),
        };
        replica.spawn()?;
        Ok(replica)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let s = &self.spec;
        let mut cmd = match &self.cores {
            Some(cores) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cores]).arg(&s.binary);
                c
            }
            None => Command::new(&s.binary),
        };
        cmd.args(["--quiet", "--port", &self.port.to_string()])
            .arg("--model")
            .arg(&s.model)
            .args(["--threads", &s.threads.to_string()])
            .args(["--kv-mib", &s.kv_mib.to_string()])
            .args(["--model-id", &s.model_id])
            .args(["--drain-s", &s.drain_s.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", s.binary.display()))?;
        let authority = format!("127.0.0.1:{}", self.port);
        let ready = crate::child::wait_ready(
            &mut child,
            &format!("the replica on port {}", self.port),
            Duration::from_secs(60),
            || health_ok(&authority),
        );
        self.child = Some(child);
        ready
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the process at once (SIGKILL: no draining — a crash, as a failover test wants).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and cores, and waits until it is healthy.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn()
    }
}

/// `GET /health` answered 200.
fn health_ok(authority: &str) -> bool {
    crate::child::http_get(authority, "/health").is_some_and(|(status, _)| status == 200)
}

/// `demo-serving-api` next to the running executable (the demos and tests are built together).
pub fn sibling_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    // Integration tests run from target/<profile>/deps/.
    [dir.join(name), dir.join("..").join(name)]
        .into_iter()
        .find(|p| p.is_file())
}
