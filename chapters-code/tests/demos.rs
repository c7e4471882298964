//! Every demo binary explains itself with `--help`, and the hardware demo prints a JSON report
//! with provenance and verified measurements.

use std::process::Command;

fn run(bin: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin)
        .args(args)
        .output()
        .expect("the demo binary runs")
}

#[test]
fn hardware_demo_has_a_useful_help() {
    let out = run(env!("CARGO_BIN_EXE_demo-hardware-detect"), &["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--output",
        "--benchmark",
        "--verify",
        "--seed",
        "--threads",
        "--model-bytes",
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
    assert!(
        help.contains("roofline"),
        "--help should say what the demo does"
    );
}

#[test]
fn hardware_demo_json_carries_provenance_and_verified_measurements() {
    let out = run(
        env!("CARGO_BIN_EXE_demo-hardware-detect"),
        &[
            "--output",
            "json",
            "--verify",
            "--array-mib",
            "24",
            "--threads",
            "2",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["verified"], true);
    let p = &report["provenance"];
    for key in [
        "git_sha",
        "date_utc",
        "cpu_model",
        "simd",
        "rustc",
        "command",
    ] {
        assert!(
            p[key].as_str().is_some_and(|s| !s.is_empty()),
            "provenance.{key}"
        );
    }
    assert!(p["cores"].as_u64().unwrap() >= 1);
    let tables = report["tables"].as_array().unwrap();
    let roofline = tables
        .iter()
        .find(|t| t["name"] == "hardware-roofline")
        .unwrap();
    let bandwidth = roofline["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["measurement"] == "memory bandwidth (triad)")
        .unwrap();
    assert!(bandwidth["value"].as_f64().unwrap() > 0.0);
}

#[test]
fn tui_output_refuses_a_redirected_stdout() {
    let out = run(
        env!("CARGO_BIN_EXE_demo-hardware-detect"),
        &["--output", "tui", "--array-mib", "3"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("terminal"));
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    let out = run(
        env!("CARGO_BIN_EXE_demo-hardware-detect"),
        &["--output", "xml"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values"));
}
