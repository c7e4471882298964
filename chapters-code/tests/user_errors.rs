//! A reader's mistakes, fed to the demos the way a reader makes them: each gets one message
//! that names the fix, and never a backtrace — with `RUST_BACKTRACE=1` set, as many Rust
//! users have it.

use std::process::{Command, Output};

/// Runs `bin` with `args` and `RUST_BACKTRACE=1`; `PRODML_MODEL` as given (None: unset).
fn run_with(bin: &str, args: &[&str], model_env: Option<&str>) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args).env("RUST_BACKTRACE", "1");
    match model_env {
        Some(v) => cmd.env("PRODML_MODEL", v),
        None => cmd.env_remove("PRODML_MODEL"),
    };
    cmd.output().expect("the demo binary runs")
}

/// The run failed with one message holding every part of `fix`, and no backtrace.
fn assert_names_fix(what: &str, out: &Output, fix: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: succeeded\n{err}");
    for part in fix {
        assert!(
            err.contains(part),
            "{what}: the message does not say `{part}`:\n{err}"
        );
    }
    for trace in ["stack backtrace", "Stack backtrace", "panicked at"] {
        assert!(!err.contains(trace), "{what}: printed `{trace}`:\n{err}");
    }
    println!("{what}: {}", err.trim());
}

#[test]
fn a_wrong_model_path_says_to_check_the_path_not_to_fetch() {
    let out = run_with(
        env!("CARGO_BIN_EXE_demo-tgi-architecture"),
        &["--model", "/nonexistent/model.gguf"],
        None,
    );
    assert_names_fix(
        "--model to a missing file",
        &out,
        &["/nonexistent/model.gguf", "check the path given to --model"],
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("fetch-model"));
}

#[test]
fn a_wrong_prodml_model_names_the_variable() {
    let out = run_with(
        env!("CARGO_BIN_EXE_demo-model-file"),
        &[],
        Some("/nonexistent/from-env.gguf"),
    );
    assert_names_fix(
        "PRODML_MODEL to a missing file",
        &out,
        &[
            "PRODML_MODEL points to /nonexistent/from-env.gguf",
            "unset PRODML_MODEL",
        ],
    );
}

#[test]
fn a_directory_as_model_says_it_is_a_directory() {
    let dir = std::env::temp_dir();
    let dir = dir.to_str().unwrap();
    let out = run_with(
        env!("CARGO_BIN_EXE_demo-tgi-architecture"),
        &["--model", dir],
        None,
    );
    assert_names_fix(
        "--model to a directory",
        &out,
        &["is a directory", "--model takes a file"],
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("os error 19"));
}

#[test]
fn a_missing_text_file_names_the_flag_not_the_model_variable() {
    let out = run_with(
        env!("CARGO_BIN_EXE_demo-perplexity"),
        &["--file", "/nonexistent/text.txt"],
        None,
    );
    if String::from_utf8_lossy(&out.stderr).contains("the model") {
        // No model on this machine: the demo stops at the model first (that message is
        // tested above); nothing to learn about --file here.
        if chapters_code::assets::model_for_tests().is_none() {
            return;
        }
    }
    assert_names_fix(
        "--file to a missing file",
        &out,
        &["/nonexistent/text.txt", "check the path given to --file"],
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("PRODML_MODEL"));
}

#[test]
fn a_negative_temperature_is_a_bad_value_not_an_unknown_flag() {
    let out = run_with(
        env!("CARGO_BIN_EXE_demo-tgi-architecture"),
        &["--temperature", "-1"],
        None,
    );
    assert_names_fix("--temperature -1", &out, &["--temperature", "0 or more"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("unexpected argument"));
}

#[test]
fn a_dead_url_asks_whether_the_server_is_running() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    for bin in [
        env!("CARGO_BIN_EXE_demo-throughput-bench"),
        env!("CARGO_BIN_EXE_demo-streaming"),
    ] {
        let out = run_with(bin, &["--url", &url], None);
        assert_names_fix(
            &format!("{bin} --url to a dead port"),
            &out,
            &["is the server running?", "demo-serving-api"],
        );
    }
}

#[test]
fn a_kv_budget_too_small_for_a_request_says_to_give_it_more_memory() {
    if chapters_code::assets::model_for_tests().is_none() {
        return;
    }
    let out = run_with(
        env!("CARGO_BIN_EXE_demo-continuous-batching"),
        &[
            "--kv-mib",
            "1",
            "--requests",
            "2",
            "--prompt-tokens",
            "90",
            "96",
            "--output-tokens",
            "2",
            "2",
        ],
        None,
    );
    assert_names_fix(
        "--kv-mib 1",
        &out,
        &["the whole KV cache holds", "--kv-mib"],
    );
}
