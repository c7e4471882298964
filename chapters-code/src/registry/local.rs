//! A real OCI registry on loopback for the tests and the demo: Docker's registry server
//! (CNCF distribution; Debian's `docker-registry` package), with its storage in a directory we
//! own — so that a test can change a stored blob behind the registry's back, as an attacker
//! with access to the storage bucket would.

use super::{Digest, RegistryError};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A registry process; killed when dropped.
pub struct LocalRegistry {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The filesystem driver's root directory.
    pub storage: PathBuf,
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The registry binary: $PRODML_REGISTRY_BIN, or `docker-registry` (Debian) or `registry`
/// (the upstream name) on PATH.
pub fn find_binary() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("PRODML_REGISTRY_BIN") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec!["docker-registry".into(), "registry".into()],
    };
    candidates.into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

impl LocalRegistry {
    /// Starts the registry with storage under `dir` (created), on a free loopback port, and
    /// waits until `GET /v2/` answers.
    pub fn start(binary: &Path, dir: &Path) -> Result<LocalRegistry, RegistryError> {
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage).map_err(|e| RegistryError::io(&storage, e))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| RegistryError::io(dir, e))?
            .port();
        let config = dir.join("config.yml");
        let text = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        std::fs::write(&config, text).map_err(|e| RegistryError::io(&config, e))?;
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| RegistryError::io(binary, e))?;
        let mut registry = LocalRegistry {
            child,
            base: format!("http://127.0.0.1:{port}"),
            storage,
        };
        crate::child::wait_ready(
            &mut registry.child,
            &format!("the registry server ({})", binary.display()),
            Duration::from_secs(20),
            || crate::child::listening(port),
        )
        .map_err(|message| RegistryError::Transport {
            what: format!("starting {}", binary.display()),
            message,
        })?;
        Ok(registry)
    }

    /// Where the filesystem driver keeps a blob's bytes (distribution's storage layout).
    pub fn blob_data(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(&hex)
            .join("data")
    }
}
