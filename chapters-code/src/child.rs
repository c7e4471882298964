//! Processes the demos and tests start beside the book's code (a registry server, nginx,
//! SGLang's router, server replicas, cargo-lambda's emulator): wait until one is ready, and
//! say so at once when it dies first instead of waiting out the limit.

use std::process::Child;
use std::time::{Duration, Instant};

/// Polls `ready` until it is true. Fails with `what` and the limit when it is not within
/// `limit`, and at once, with the exit status, when `child` exits first.
pub fn wait_ready(
    child: &mut Child,
    what: &str,
    limit: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let started = Instant::now();
    loop {
        if ready() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited before it was ready ({status})"));
        }
        if started.elapsed() > limit {
            return Err(format!("{what} was not ready within {} s", limit.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True when something accepts connections on loopback `port`.
pub fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// One blocking `GET` over a plain socket (no async runtime needed): status and body (the
/// body as sent: chunked encoding is not undone, which `contains` checks tolerate).
pub fn http_get(authority: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(authority).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    s.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((status, body))
}

/// The last `n` characters of a log file (for an error message), or nothing.
pub fn log_tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let skip = text.chars().count().saturating_sub(n);
    text.chars().skip(skip).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_that_exits_is_reported_at_once() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let started = Instant::now();
        let e = wait_ready(&mut child, "true", Duration::from_secs(30), || false).unwrap_err();
        assert!(e.contains("exited before it was ready"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let mut sleeper = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let e =
            wait_ready(&mut sleeper, "sleep", Duration::from_millis(100), || false).unwrap_err();
        assert!(e.contains("not ready within"), "{e}");
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        assert!(wait_ready(&mut sleeper, "x", Duration::from_secs(1), || true).is_ok());
    }
}
