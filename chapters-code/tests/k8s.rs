//! The Kubernetes manifests in deploy/k8s: validated offline against the Kubernetes schemas
//! (`pip install kubernetes-validate`, which ships them), strictly (unknown fields refused),
//! and checked against the server they run: the probes' path exists, the grace period covers
//! the preStop sleep plus `--drain-s`, every flag is one `demo-serving-api` has. Skipped (with
//! a line saying so) without kubernetes-validate unless PRODML_REQUIRE_K8S_VALIDATE is set
//! (CI sets it).

use std::path::{Path, PathBuf};
use std::process::Command;

fn manifests() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    files
}

fn validator() -> Option<PathBuf> {
    let candidate = std::env::var_os("PRODML_K8S_VALIDATE")
        .map_or_else(|| PathBuf::from("kubernetes-validate"), PathBuf::from);
    if Command::new(&candidate)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some(candidate);
    }
    assert!(
        std::env::var_os("PRODML_REQUIRE_K8S_VALIDATE").is_none(),
        "PRODML_REQUIRE_K8S_VALIDATE is set, but {} does not run",
        candidate.display()
    );
    eprintln!("SKIPPED: no kubernetes-validate (pip install kubernetes-validate)");
    None
}

#[test]
fn the_manifests_validate_against_the_kubernetes_schemas() {
    let Some(validate) = validator() else { return };
    let out = Command::new(&validate)
        .args(["--strict", "--no-warn"])
        .args(manifests())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("{text}");
    assert!(out.status.success(), "{text}");
    for kind in [
        "deployment/",
        "service/",
        "horizontalpodautoscaler/",
        "poddisruptionbudget/",
    ] {
        assert!(text.contains(kind), "no {kind} validated: {text}");
    }
    // The validator refuses what it should: an unknown field under --strict.
    let dir = std::env::temp_dir().join(format!("prodml-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    let deployment = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s/deployment.yaml"),
    )
    .unwrap();
    std::fs::write(
        &bad,
        deployment.replace("terminationGracePeriodSeconds", "terminationGraceSeconds"),
    )
    .unwrap();
    let out = Command::new(&validate)
        .arg("--strict")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a misspelt field passed");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The number after `key` (e.g. `--drain-s=30`, `terminationGracePeriodSeconds: 40`).
fn number_after(text: &str, key: &str) -> u64 {
    let at = text
        .find(key)
        .unwrap_or_else(|| panic!("{key} not in the manifest"))
        + key.len();
    text[at..]
        .trim_start_matches([':', '=', ' ', '{'])
        .trim_start_matches("seconds:")
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no number after {key}"))
}

#[test]
fn the_deployment_matches_the_server_it_runs() {
    let deployment = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s/deployment.yaml"),
    )
    .unwrap();
    let grace = number_after(&deployment, "terminationGracePeriodSeconds");
    let drain = number_after(&deployment, "- --drain-s=");
    let pre_stop = number_after(&deployment, "sleep:");
    assert!(
        grace > drain + pre_stop,
        "grace {grace} s must exceed preStop {pre_stop} s + drain {drain} s"
    );
    // Every flag the manifest passes exists in the binaries' --help.
    for (bin, marker) in [
        (
            env!("CARGO_BIN_EXE_demo-serving-api"),
            "command: [\"demo-serving-api\"]",
        ),
        (
            env!("CARGO_BIN_EXE_demo-model-registry"),
            "command: [\"demo-model-registry\"]",
        ),
    ] {
        let mut help =
            String::from_utf8(Command::new(bin).arg("--help").output().unwrap().stdout).unwrap();
        help += &String::from_utf8(
            Command::new(bin)
                .args(["pull", "--help"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap_or_default();
        let start = deployment.find(marker).unwrap();
        let args = &deployment[start..];
        let args = &args[..args.find("volumeMounts").unwrap()];
        for flag in args.lines().filter_map(|l| l.trim().strip_prefix("- --")) {
            let name = flag.split('=').next().unwrap();
            assert!(help.contains(&format!("--{name}")), "{bin} has no --{name}");
        }
    }
    assert!(deployment.contains("path: /health"));
}
