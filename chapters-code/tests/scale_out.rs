//! Three replicas of the server behind nginx on loopback: one is killed under load and
//! restarted. No request may be lost except those in flight on the killed replica; nginx must
//! take it out and bring it back. Skipped (with a line saying so) without nginx or the model,
//! unless PRODML_REQUIRE_NGINX / PRODML_REQUIRE_MODEL is set (CI sets both).

use chapters_code::scaleout::failover::{self, FailoverSpec};
use chapters_code::scaleout::nginx::{Balance, Nginx};
use chapters_code::scaleout::replica::{ReplicaSpec, free_port};
use chapters_code::scaleout::{nginx, start_replicas};
use std::path::PathBuf;

fn model() -> Option<PathBuf> {
    let path = chapters_code::assets::model_path();
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("PRODML_REQUIRE_MODEL").is_none(),
        "PRODML_REQUIRE_MODEL is set but {} is missing",
        path.display()
    );
    eprintln!("SKIPPED: no model at {}", path.display());
    None
}

fn nginx_binary() -> Option<PathBuf> {
    let found = nginx::find_binary();
    if found.is_none() {
        assert!(
            std::env::var_os("PRODML_REQUIRE_NGINX").is_none(),
            "PRODML_REQUIRE_NGINX is set, but nginx does not run"
        );
        eprintln!("SKIPPED: no nginx (apt install nginx-light)");
    }
    found
}

#[test]
fn a_replica_killed_under_load_loses_only_its_requests_in_flight() {
    let (Some(model), Some(nginx_bin)) = (model(), nginx_binary()) else {
        return;
    };
    let spec = ReplicaSpec {
        binary: env!("CARGO_BIN_EXE_demo-serving-api").into(),
        model,
        threads: 1,
        kv_mib: 64,
        model_id: "smollm2".into(),
        drain_s: 5,
    };
    let mut replicas = start_replicas(&spec, 3).unwrap();
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    let dir = std::env::temp_dir().join(format!("prodml-failover-{}", std::process::id()));
    let lb = Nginx::start(
        &nginx_bin,
        &dir,
        free_port().unwrap(),
        &ports,
        Balance::RoundRobin,
    )
    .unwrap();
    let victim = replicas.pop().unwrap();
    let run = FailoverSpec::standard("smollm2");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = format!("{}/v1/chat/completions", lb.url());
    let (report, _victim) = rt.block_on(failover::run(&url, victim, &run)).unwrap();
    let served: std::collections::BTreeMap<_, usize> =
        report.records.iter().fold(Default::default(), |mut m, r| {
            *m.entry(r.served_by.clone().unwrap_or_default())
                .or_default() += 1;
            m
        });
    eprintln!(
        "{} requests, {} failed, {} in flight on {} at the kill ({:?}), healthy again at {:?}; served by {served:?}",
        report.records.len(),
        report.failed(),
        report.in_flight_at_kill(),
        report.killed,
        report.killed_at,
        report.healthy_again_at,
    );
    for r in report.records.iter().filter(|r| !r.ok) {
        eprintln!("  failed: {r:?}");
    }
    assert!(
        report.in_flight_at_kill() > 0,
        "nothing was in flight on the victim: the test tested nothing"
    );
    assert_eq!(
        report.lost_beyond_in_flight(),
        0,
        "requests lost beyond those in flight"
    );
    assert!(report.failed() <= report.in_flight_at_kill());
    assert_eq!(report.served_while_down(), 0, "the dead replica answered?");
    assert!(
        report.served_after_restart() > 0,
        "the restarted replica got no requests"
    );
    drop(lb);
    let _ = std::fs::remove_dir_all(&dir);
}
