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

/// One mistake: the demo, its arguments and `PRODML_MODEL`, the parts the message must say and
/// what it must not.
struct Mistake {
    what: &'static str,
    bin: &'static str,
    args: Vec<String>,
    model_env: Option<&'static str>,
    fix: Vec<String>,
    never: &'static [&'static str],
    /// The demo reaches this mistake only after it has loaded the model.
    needs_model: bool,
}

fn mistakes() -> Vec<Mistake> {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let dir = std::env::temp_dir().display().to_string();
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead_url = format!("http://127.0.0.1:{dead_port}");
    let mut list = vec![
        Mistake {
            what: "--model to a missing file",
            bin: env!("CARGO_BIN_EXE_demo-tgi-architecture"),
            args: strings(&["--model", "/nonexistent/model.gguf"]),
            model_env: None,
            fix: strings(&["/nonexistent/model.gguf", "check the path given to --model"]),
            never: &["fetch-model"],
            needs_model: false,
        },
        Mistake {
            what: "PRODML_MODEL to a missing file",
            bin: env!("CARGO_BIN_EXE_demo-model-file"),
            args: vec![],
            model_env: Some("/nonexistent/from-env.gguf"),
            fix: strings(&[
                "PRODML_MODEL points to /nonexistent/from-env.gguf",
                "unset PRODML_MODEL",
            ]),
            never: &[],
            needs_model: false,
        },
        Mistake {
            what: "--model to a directory",
            bin: env!("CARGO_BIN_EXE_demo-tgi-architecture"),
            args: vec!["--model".into(), dir],
            model_env: None,
            fix: strings(&["is a directory", "--model takes a file"]),
            never: &["os error 19"],
            needs_model: false,
        },
        Mistake {
            what: "--file to a missing file",
            bin: env!("CARGO_BIN_EXE_demo-perplexity"),
            args: strings(&["--file", "/nonexistent/text.txt"]),
            model_env: None,
            fix: strings(&["/nonexistent/text.txt", "check the path given to --file"]),
            never: &["PRODML_MODEL"],
            needs_model: true,
        },
        Mistake {
            what: "--temperature -1",
            bin: env!("CARGO_BIN_EXE_demo-tgi-architecture"),
            args: strings(&["--temperature", "-1"]),
            model_env: None,
            fix: strings(&["--temperature", "0 or more"]),
            never: &["unexpected argument"],
            needs_model: false,
        },
        Mistake {
            what: "--kv-mib 1, too small for one request",
            bin: env!("CARGO_BIN_EXE_demo-continuous-batching"),
            args: strings(&[
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
            ]),
            model_env: None,
            fix: strings(&["the whole KV cache holds", "--kv-mib"]),
            never: &[],
            needs_model: true,
        },
        Mistake {
            what: "--contexts past the room for decoding",
            bin: env!("CARGO_BIN_EXE_demo-flash-attention"),
            args: strings(&["--benchmark", "--contexts", "128,8190"]),
            model_env: None,
            fix: strings(&["--contexts 8190", "--decode-tokens 16", "context of 8192"]),
            never: &[],
            needs_model: true,
        },
        Mistake {
            what: "a sparsity of 100%",
            bin: env!("CARGO_BIN_EXE_demo-pruning"),
            args: strings(&["--patterns", "1.0"]),
            model_env: None,
            fix: strings(&["`1.0`", "from 0 to below 1", "n:m"]),
            never: &[],
            needs_model: false,
        },
        Mistake {
            what: "a WebAssembly module that does not exist",
            bin: env!("CARGO_BIN_EXE_demo-wasm-inference"),
            args: strings(&["--module", "/nonexistent/prodml.wasm"]),
            model_env: None,
            fix: strings(&["--module /nonexistent/prodml.wasm", "no such file"]),
            never: &[],
            needs_model: true,
        },
        Mistake {
            what: "a tensor-parallel size the heads do not divide",
            bin: env!("CARGO_BIN_EXE_demo-tensor-parallel"),
            args: strings(&["--shards", "2"]),
            model_env: None,
            fix: strings(&[
                "attention heads (9)",
                "tensor parallel size (2)",
                "splits over 1, 3",
            ]),
            never: &[],
            needs_model: true,
        },
        Mistake {
            what: "a student as large as its teacher",
            bin: env!("CARGO_BIN_EXE_demo-distillation"),
            args: strings(&["--keep", "30", "--steps", "1"]),
            model_env: None,
            fix: strings(&["--keep 30", "30 blocks", "keeps fewer"]),
            never: &[],
            needs_model: true,
        },
        Mistake {
            what: "a KL direction that does not exist",
            bin: env!("CARGO_BIN_EXE_demo-distillation"),
            args: strings(&["--divergence", "sideways"]),
            model_env: None,
            fix: strings(&["`sideways`", "forward or reverse"]),
            never: &[],
            needs_model: false,
        },
        Mistake {
            what: "an unknown drafter",
            bin: env!("CARGO_BIN_EXE_demo-speculative-decode"),
            args: strings(&["--drafter", "bigram"]),
            model_env: None,
            fix: strings(&["'bigram'", "--drafter", "ngram, self:N", "draft:PATH"]),
            never: &[],
            needs_model: true,
        },
        Mistake {
            what: "a self-draft of every block",
            bin: env!("CARGO_BIN_EXE_demo-speculative-decode"),
            args: strings(&["--drafter", "self:30"]),
            model_env: None,
            fix: strings(&["1 to 29", "30 blocks"]),
            never: &[],
            needs_model: true,
        },
    ];
    for bin in [
        env!("CARGO_BIN_EXE_demo-throughput-bench"),
        env!("CARGO_BIN_EXE_demo-streaming"),
    ] {
        list.push(Mistake {
            what: "--url to a port where no server listens",
            bin,
            args: vec!["--url".into(), dead_url.clone()],
            model_env: None,
            fix: strings(&["is the server running?", "demo-serving-api"]),
            never: &[],
            needs_model: false,
        });
    }
    list
}

#[test]
fn every_mistake_gets_one_message_that_names_the_fix() {
    let have_model = chapters_code::assets::model_for_tests().is_some();
    let mut skipped = 0;
    for m in mistakes() {
        if m.needs_model && !have_model {
            skipped += 1;
            continue;
        }
        let out = run_with(
            m.bin,
            &m.args.iter().map(String::as_str).collect::<Vec<_>>(),
            m.model_env,
        );
        let what = format!("{} ({})", m.what, m.bin.rsplit('/').next().unwrap_or(m.bin));
        assert_names_fix(
            &what,
            &out,
            &m.fix.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        for word in m.never {
            assert!(
                !err.contains(word),
                "{what}: the message says `{word}`:\n{err}"
            );
        }
    }
    if skipped > 0 {
        println!("SKIPPED {skipped} mistake(s) that need the model");
    }
}
