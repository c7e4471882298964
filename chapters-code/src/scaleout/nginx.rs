//! nginx (Debian's package) as the load balancer in front of the replicas: its configuration,
//! written for one run, and its process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// nginx's upstream balancing methods we measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Each request to the next replica (nginx's default).
    RoundRobin,
    /// The replica with the fewest active connections (`least_conn`).
    LeastConn,
    /// A consistent hash of the `X-Session-ID` request header (`hash … consistent`): requests
    /// that name the same session — here, the same system prompt — go to the same replica.
    SessionHash,
}

impl Balance {
    pub fn label(self) -> &'static str {
        match self {
            Balance::RoundRobin => "nginx round-robin",
            Balance::LeastConn => "nginx least_conn",
            Balance::SessionHash => "nginx hash(X-Session-ID)",
        }
    }

    fn directive(self) -> &'static str {
        match self {
            Balance::RoundRobin => "",
            Balance::LeastConn => "    least_conn;\n",
            Balance::SessionHash => "    hash $http_x_session_id consistent;\n",
        }
    }
}

// ANCHOR: config
/// The configuration: one upstream of `replicas` (ports), passive health checks (a replica
/// that refuses a connection is out for `fail_timeout`), a request that could not reach a
/// replica retried on the next one, and streams passed through unbuffered.
pub fn config(dir: &Path, port: u16, replicas: &[u16], balance: Balance) -> String {
    let servers: String = replicas
        .iter()
        .map(|p| format!("    server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;\n"))
        .collect();
    let d = dir.display();
    format!(
        "worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream replicas {{
{balance}{servers}    keepalive 32;
  }}
  server {{
    listen 127.0.0.1:{port};
    client_max_body_size 2m;
    location / {{
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      # Server-Sent Events: pass each event on as it comes (our server also sends
      # X-Accel-Buffering: no, which nginx honours per response).
      proxy_buffering off;
      proxy_cache off;
      proxy_read_timeout 600s;
      # A request no replica has answered yet goes to the next one. POST is retried too
      # (non_idempotent): a generation has no side effects, and a request written into a
      # pooled connection to a replica that just died was never answered. A response that
      # has started (its headers sent) is never retried: a stream half sent cannot be replayed.
      proxy_next_upstream error timeout non_idempotent;
      proxy_next_upstream_tries 3;
      proxy_connect_timeout 2s;
      add_header X-Upstream $upstream_addr always;
    }}
  }}
}}
",
        balance = balance.directive()
    )
}
// ANCHOR_END: config

/// A running nginx; stopped when dropped.
pub struct Nginx {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Drop for Nginx {
    /// SIGTERM to the master, which stops its workers (SIGKILL would orphan them); SIGKILL
    /// only if it has not exited within five seconds.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The nginx binary: $PRODML_NGINX, or `nginx` on PATH, or Debian's /usr/sbin/nginx.
pub fn find_binary() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("PRODML_NGINX") {
        Some(p) => vec![p.into()],
        None => vec!["nginx".into(), "/usr/sbin/nginx".into()],
    };
    candidates.into_iter().find(|c| {
        Command::new(c)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

impl Nginx {
    /// Writes the configuration under `dir` and starts nginx in the foreground; waits until it
    /// listens.
    pub fn start(
        binary: &Path,
        dir: &Path,
        port: u16,
        replicas: &[u16],
        balance: Balance,
    ) -> Result<Nginx, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config(dir, port, replicas, balance))
            .map_err(|e| format!("{}: {e}", conf.display()))?;
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let mut nginx = Nginx {
            child,
            port,
            dir: dir.to_path_buf(),
        };
        crate::child::wait_ready(&mut nginx.child, "nginx", Duration::from_secs(10), || {
            crate::child::listening(port)
        })
        .map_err(|e| {
            format!(
                "{e}: {}",
                crate::child::log_tail(&dir.join("error.log"), 800)
            )
        })?;
        Ok(nginx)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
