//! `demo-tgi-architecture --chat` as a reader uses it: one answer when the message is piped in,
//! a conversation on a terminal (`--interactive` stands in for the terminal here), where a real
//! SIGINT stops the answer and the chat goes on, and a SIGINT at the prompt ends the program.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_demo-tgi-architecture");

fn have_model() -> bool {
    chapters_code::assets::model_for_tests().is_some()
}

#[test]
fn a_piped_message_gets_one_answer_without_the_template() {
    if !have_model() {
        return;
    }
    let mut child = Command::new(BIN)
        .args(["--chat", "--max-tokens", "8"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"What is the capital of France?\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains("<|im_start|>"),
        "the template is not echoed:\n{stdout}"
    );
    assert!(stdout.contains("8 generated"), "{stdout}");
    assert!(
        !stdout.contains("> "),
        "no chat prompt when piped:\n{stdout}"
    );
}

/// A child's output, collected by a thread as it arrives.
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<String>>);

impl Collected {
    fn from(mut source: impl Read + Send + 'static) -> Collected {
        let text = Collected::default();
        let sink = text.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while let Ok(n @ 1..) = source.read(&mut buf) {
                sink.0
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        text
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the text (at most a minute); panics with the text if not.
    fn wait(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            let text = self.text();
            if done(&text) {
                return text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "waited a minute for {what}; the output so far:\n{}",
            self.text()
        );
    }
}

fn chat() -> (Child, ChildStdin, Collected, Collected) {
    let mut child = Command::new(BIN)
        .args(["--chat", "--interactive", "--max-tokens", "400"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = Collected::from(child.stdout.take().unwrap());
    let stderr = Collected::from(child.stderr.take().unwrap());
    // The header is printed once Ctrl-C is caught.
    stderr.wait("the chat's header", |t| {
        t.contains("Ctrl-C stops an answer")
    });
    (child, stdin, stdout, stderr)
}

fn sigint(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
#[cfg(unix)]
fn ctrl_c_stops_the_answer_not_the_chat() {
    if !have_model() {
        return;
    }
    let (mut child, mut stdin, stdout, stderr) = chat();
    stdin
        .write_all(b"Write a very long story about a dragon who learns to code.\n")
        .unwrap();
    // Some of the answer is out (past the "> " prompt): stop it.
    stdout.wait("the answer to start", |t| t.len() > 2 + 40);
    sigint(&child);
    let text = stdout.wait("the answer to stop", |t| t.contains("[stopped after"));
    stdin.write_all(b"/quit\n").unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}\n{}", stderr.text());
    println!("{text}");
    assert!(
        stdout.text().matches("> ").count() >= 2,
        "the chat asked for the next message"
    );
}

#[test]
#[cfg(unix)]
fn ctrl_c_at_the_prompt_ends_the_chat() {
    if !have_model() {
        return;
    }
    let (mut child, _stdin, stdout, _stderr) = chat();
    stdout.wait("the prompt", |t| t.contains("> "));
    sigint(&child);
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "128 + SIGINT, as a shell reports it"
    );
}
