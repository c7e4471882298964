//! Failover under load: clients stream requests through a load balancer while one replica is
//! killed (SIGKILL, a crash) and later restarted. Every request is attributed to the replica
//! that answered it (`X-Served-By`), so the report can say exactly which failures were allowed:
//! those in flight on the killed replica when it died. Anything else lost is a failure of the
//! load balancer's health checking or retrying.

use super::replica::Replica;
use crate::serve::client;
use serde_json::json;
use std::time::{Duration, Instant};

/// One failover run.
#[derive(Debug, Clone)]
pub struct FailoverSpec {
    /// Clients, each sending its next request when the last one ended.
    pub clients: usize,
    /// Tokens per request (greedy, end-of-sequence ignored: every request is as long).
    pub max_tokens: usize,
    /// When the replica is killed, from the start.
    pub kill_at: Duration,
    /// When it is started again (then its start-up time passes before it is healthy).
    pub restart_at: Duration,
    /// When the clients stop sending.
    pub end_at: Duration,
    pub model: String,
}

impl FailoverSpec {
    /// The run the chapter, its demo and its test make: six clients streaming 24-token answers
    /// for 14 s; the kill at 4 s, the restart at 7 s.
    pub fn standard(model: &str) -> FailoverSpec {
        FailoverSpec {
            clients: 6,
            max_tokens: 24,
            kill_at: Duration::from_secs(4),
            restart_at: Duration::from_secs(7),
            end_at: Duration::from_secs(14),
            model: model.into(),
        }
    }
}

/// One request as a client saw it.
#[derive(Debug, Clone)]
pub struct Record {
    /// Sent and ended, from the start of the run.
    pub sent: Duration,
    pub ended: Duration,
    /// Which replica answered (`X-Served-By`), if any did.
    pub served_by: Option<String>,
    /// The stream ended with `[DONE]` and all its tokens.
    pub ok: bool,
    pub error: Option<String>,
}

/// What happened.
#[derive(Debug, Clone)]
pub struct FailoverReport {
    pub records: Vec<Record>,
    /// The killed replica's address (`127.0.0.1:<port>`).
    pub killed: String,
    pub killed_at: Duration,
    /// When the restarted replica answered `/health` again.
    pub healthy_again_at: Duration,
}

impl FailoverReport {
    pub fn failed(&self) -> usize {
        self.records.iter().filter(|r| !r.ok).count()
    }

    fn on_killed(&self, r: &Record) -> bool {
        r.served_by.as_deref() == Some(self.killed.as_str())
    }

    fn sent_to_killed_before_kill(&self, r: &Record) -> bool {
        self.on_killed(r) && r.sent < self.killed_at
    }

    /// Requests the killed replica was serving when it died: sent to it before the kill and
    /// not ended before it.
    pub fn in_flight_at_kill(&self) -> usize {
        self.records
            .iter()
            .filter(|r| self.on_killed(r) && r.sent < self.killed_at && r.ended >= self.killed_at)
            .count()
    }

    /// Failed requests that were *not* in flight on the killed replica: must be zero.
    pub fn lost_beyond_in_flight(&self) -> usize {
        self.records
            .iter()
            .filter(|r| !r.ok && !self.sent_to_killed_before_kill(r))
            .count()
    }

    /// Requests answered by the killed replica between its death and its return: must be zero
    /// (it was taken out).
    pub fn served_while_down(&self) -> usize {
        self.records
            .iter()
            .filter(|r| {
                self.on_killed(r)
                    && r.ok
                    && r.sent > self.killed_at
                    && r.sent < self.healthy_again_at
            })
            .count()
    }

    /// Requests the restarted replica answered: it came back.
    pub fn served_after_restart(&self) -> usize {
        self.records
            .iter()
            .filter(|r| self.on_killed(r) && r.ok && r.sent >= self.healthy_again_at)
            .count()
    }
}

// ANCHOR: run
/// Runs the clients against `url` (a load balancer), kills `victim` at `kill_at`, restarts it
/// at `restart_at`, stops at `end_at`. The victim is handed back with the report.
pub async fn run(
    url: &str,
    victim: Replica,
    spec: &FailoverSpec,
) -> Result<(FailoverReport, Replica), String> {
    let start = Instant::now();
    let killed = format!("127.0.0.1:{}", victim.port);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| e.to_string())?;
    let clients: Vec<_> = (0..spec.clients)
        .map(|c| {
            let (http, url, spec) = (http.clone(), url.to_string(), spec.clone());
            tokio::spawn(async move {
                let mut records = Vec::new();
                let mut i = c;
                while start.elapsed() < spec.end_at {
                    let body = json!({
                        "model": spec.model,
                        "messages": [{ "role": "user", "content": format!("Count to {} slowly.", 3 + i % 7) }],
                        "max_tokens": spec.max_tokens,
                        "temperature": 0,
                        "ignore_eos": true,
                        "stream": true,
                    });
                    let sent = start.elapsed();
                    let result = client::stream(&http, &url, &body, |_| {}).await;
                    let ended = start.elapsed();
                    records.push(match result {
                        Ok(s) => Record {
                            sent,
                            ended,
                            ok: s.done && s.finish_reason.as_deref() == Some("length"),
                            error: (!s.done).then(|| "the stream ended without [DONE]".into()),
                            served_by: s.served_by,
                        },
                        Err(e) => Record {
                            sent,
                            ended,
                            served_by: match &e {
                                client::ClientError::Broken { served_by, .. } => served_by.clone(),
                                _ => None,
                            },
                            ok: false,
                            error: Some(e.to_string()),
                        },
                    });
                    i += spec.clients;
                }
                records
            })
        })
        .collect();
    // Kill, then restart, on a blocking thread (the restart waits for /health).
    let (kill_at, restart_at) = (spec.kill_at, spec.restart_at);
    let chaos = tokio::task::spawn_blocking(move || {
        let mut victim = victim;
        std::thread::sleep(kill_at.saturating_sub(start.elapsed()));
        // Every request still open at this moment counts as in flight.
        let killed_at = start.elapsed();
        victim.kill();
        std::thread::sleep(restart_at.saturating_sub(start.elapsed()));
        let restarted = victim.restart();
        (victim, killed_at, start.elapsed(), restarted)
    });
    let mut records = Vec::new();
    for c in clients {
        records.extend(c.await.map_err(|e| e.to_string())?);
    }
    let (victim, killed_at, healthy_again_at, restarted) =
        chaos.await.map_err(|e| e.to_string())?;
    restarted?;
    records.sort_by_key(|r| r.sent);
    Ok((
        FailoverReport {
            records,
            killed,
            killed_at,
            healthy_again_at,
        },
        victim,
    ))
}
// ANCHOR_END: run
