//! Serving past one process (the scaling-out chapter): replicas of `demo-serving-api` behind
//! load balancers that production uses — nginx, and SGLang's cache-aware router — a workload
//! with shared prefixes to compare their routing, and a failover run that kills a replica
//! under load.
//!
//! - [`replica`]: start, pin (`taskset`), kill and restart a replica process.
//! - [`nginx`]: nginx's configuration (round-robin, `least_conn`, a consistent hash of a
//!   header) and process.
//! - [`router`]: SGLang's router (`pip install sglang-router`), `round_robin` or `cache_aware`.
//! - [`workload`]: a few long system prompts, many short questions.
//! - [`failover`]: kill one replica under load; count what was lost and why.

pub mod failover;
pub mod nginx;
pub mod replica;
pub mod router;
pub mod workload;

use replica::{Replica, ReplicaSpec, free_port};

/// Starts `n` replicas on free ports, replica `i` pinned to core `i mod cores` (so three
/// replicas on two cores share one: the oversubscription is the machine's, and said).
pub fn start_replicas(spec: &ReplicaSpec, n: usize) -> Result<Vec<Replica>, String> {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    (0..n)
        .map(|i| {
            let port = free_port().map_err(|e| e.to_string())?;
            Replica::start(spec, port, Some(&(i % cores).to_string()))
        })
        .collect()
}
