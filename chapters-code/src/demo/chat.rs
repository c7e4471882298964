//! `demo-tgi-architecture --chat` on a terminal: a multi-turn conversation with the model,
//! streamed as it is generated, as `llama-cli -cnv` offers. Each turn re-renders the whole
//! conversation with the chat template and prefills it (a fresh KV cache per turn: simple, and
//! on a 135M model a few hundred tokens of history cost milliseconds). `/reset` starts over;
//! Ctrl-C stops the answer being written, not the program; Ctrl-D or `/quit` ends.

use crate::generate::generate_interruptible;
use crate::generate::{FinishReason, Generation, Request, default_stop_tokens};
use crate::kernels::pool::ThreadPool;
use crate::model::Llama;
use crate::sampling::SamplingParams;
use crate::tokenizer::{ChatMessage, TokenId, Tokenizer};
use anyhow::{Result, bail};
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the chat prints for `/help`, and once at the start.
pub const HELP: &str = "Type a message and press Enter. /reset starts a new conversation, \
/quit (or Ctrl-D) ends, Ctrl-C stops an answer.";

/// A conversation: the settings of every answer and the turns so far.
pub struct Chat<'a> {
    pub model: &'a Llama<'a>,
    pub tokenizer: &'a Tokenizer,
    pub pool: &'a ThreadPool,
    /// The system message (None: the template's own default).
    pub system: Option<String>,
    /// Most tokens per answer.
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop_strings: Vec<String>,
    /// User and assistant messages, oldest first, alternating.
    turns: Vec<ChatMessage>,
}

/// A user message ready to be answered.
pub struct Prompt {
    pub ids: Vec<TokenId>,
    /// Earlier exchanges (a user message and its answer) left out to fit the model's context.
    pub dropped: usize,
}

/// One line typed at the chat's prompt.
#[derive(Debug, PartialEq)]
pub enum Line {
    Say(String),
    Reset,
    Quit,
    Help,
    Unknown(String),
    Empty,
}

impl Line {
    /// A line that starts with `/` is a command; `//` starts a message that begins with `/`.
    pub fn parse(line: &str) -> Line {
        let text = line.trim_end_matches(['\r', '\n']);
        if text.trim().is_empty() {
            return Line::Empty;
        }
        match text.trim() {
            "/reset" | "/clear" => Line::Reset,
            "/quit" | "/exit" => Line::Quit,
            "/help" | "/?" => Line::Help,
            t if t.starts_with("//") => Line::Say(t[1..].to_string()),
            t if t.starts_with('/') => {
                Line::Unknown(t.split_whitespace().next().unwrap_or(t).into())
            }
            _ => Line::Say(text.to_string()),
        }
    }
}

impl<'a> Chat<'a> {
    pub fn new(model: &'a Llama<'a>, tokenizer: &'a Tokenizer, pool: &'a ThreadPool) -> Chat<'a> {
        Chat {
            model,
            tokenizer,
            pool,
            system: None,
            max_tokens: 512,
            sampling: SamplingParams::default(),
            stop_strings: Vec::new(),
            turns: Vec::new(),
        }
    }

    /// Forgets every turn (the system message stays).
    pub fn reset(&mut self) {
        self.turns.clear();
    }

    /// The conversation as the template sees it: the system message, then the turns.
    pub fn messages(&self) -> Vec<ChatMessage> {
        let system = self.system.iter().map(|s| ChatMessage::new("system", s));
        system.chain(self.turns.iter().cloned()).collect()
    }

    /// Adds `text` as the user's next message and encodes the conversation. Where it no longer
    /// fits the context (with room for one answer token), the oldest exchanges are left out;
    /// a message too long on its own is refused and not kept.
    pub fn ask(&mut self, text: &str) -> Result<Prompt> {
        let context = self.model.config.context_length;
        let message = ChatMessage::new("user", text);
        let mut alone = self.messages();
        alone.truncate(self.system.is_some() as usize);
        alone.push(message.clone());
        let alone = self.tokenizer.encode_chat(&alone, true)?.len();
        if alone >= context {
            bail!(
                "this message is {alone} tokens with the template; the model's context is \
                 {context}: send a shorter one"
            );
        }
        self.turns.push(message);
        let mut dropped = 0;
        loop {
            let ids = self.tokenizer.encode_chat(&self.messages(), true)?;
            // One message alone fits (checked above), so dropping stops there at the latest.
            if ids.len() < context || self.turns.len() <= 1 {
                return Ok(Prompt { ids, dropped });
            }
            self.turns.drain(..2);
            dropped += 1;
        }
    }

    /// Answers `prompt` (from [`Chat::ask`]), streaming the text into `on_text`, and keeps the
    /// answer — the part written before an interrupt too — as the assistant's turn.
    pub fn answer(
        &mut self,
        prompt: Prompt,
        interrupt: &AtomicBool,
        on_text: impl FnMut(&str),
    ) -> Result<Generation> {
        let room = self.model.config.context_length - prompt.ids.len();
        let request = Request {
            prompt_ids: prompt.ids,
            max_tokens: self.max_tokens.min(room),
            sampling: self.sampling.clone(),
            stop_tokens: default_stop_tokens(self.tokenizer),
            stop_strings: self.stop_strings.clone(),
        };
        let generation = match generate_interruptible(
            self.model,
            self.tokenizer,
            self.pool,
            &request,
            interrupt,
            on_text,
        ) {
            Ok(generation) => generation,
            Err(e) => {
                // No answer: the question goes too, so the turns keep alternating.
                self.turns.pop();
                return Err(e.into());
            }
        };
        self.turns
            .push(ChatMessage::new("assistant", &generation.text));
        Ok(generation)
    }
}

/// What Ctrl-C does: while an answer is being written it stops the answer; otherwise it ends
/// the program, as in a shell.
#[derive(Default)]
pub struct Interrupt {
    answering: AtomicBool,
    stop: AtomicBool,
}

impl Interrupt {
    /// Ctrl-C pressed: true if it stopped an answer, false if the program should end.
    pub fn press(&self) -> bool {
        if self.answering.load(Ordering::SeqCst) {
            self.stop.store(true, Ordering::SeqCst);
            true
        } else {
            false
        }
    }

    /// Catches SIGINT from now on, on a thread of its own: an answer in progress stops; at the
    /// prompt the program exits with status 130 (128 + SIGINT, what shells report).
    pub fn catch_ctrl_c(self: &Arc<Interrupt>) -> std::io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // Registered here, before the chat reads its first line, so no early Ctrl-C is lost.
        let mut signals = {
            let _context = runtime.enter();
            SigInt::register()?
        };
        let interrupt = Arc::clone(self);
        std::thread::spawn(move || {
            runtime.block_on(async {
                while signals.recv().await {
                    if !interrupt.press() {
                        eprintln!();
                        std::process::exit(130);
                    }
                }
            })
        });
        Ok(())
    }

    fn begin_answer(&self) -> &AtomicBool {
        self.stop.store(false, Ordering::SeqCst);
        self.answering.store(true, Ordering::SeqCst);
        &self.stop
    }

    fn end_answer(&self) {
        self.answering.store(false, Ordering::SeqCst);
    }
}

/// The SIGINT stream (Ctrl-C on Windows).
struct SigInt {
    #[cfg(unix)]
    inner: tokio::signal::unix::Signal,
}

impl SigInt {
    #[cfg(unix)]
    fn register() -> std::io::Result<SigInt> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(SigInt {
            inner: signal(SignalKind::interrupt())?,
        })
    }

    #[cfg(unix)]
    async fn recv(&mut self) -> bool {
        self.inner.recv().await.is_some()
    }

    #[cfg(not(unix))]
    fn register() -> std::io::Result<SigInt> {
        Ok(SigInt {})
    }

    #[cfg(not(unix))]
    async fn recv(&mut self) -> bool {
        tokio::signal::ctrl_c().await.is_ok()
    }
}

/// Runs the conversation: reads lines from `input` until end of input or `/quit`, answering
/// each message on `out` as it is generated. A failed turn (a message too long for the
/// context) is reported and the chat goes on.
pub fn repl(
    chat: &mut Chat,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    interrupt: &Interrupt,
) -> Result<()> {
    loop {
        write!(out, "> ")?;
        out.flush()?;
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            writeln!(out)?;
            return Ok(());
        }
        match Line::parse(&line) {
            Line::Empty => {}
            Line::Quit => return Ok(()),
            Line::Help => writeln!(out, "{HELP}")?,
            Line::Reset => {
                chat.reset();
                writeln!(out, "(a new conversation)")?;
            }
            Line::Unknown(command) => writeln!(out, "unknown command {command}: /help lists them")?,
            Line::Say(text) => {
                let prompt = match chat.ask(&text) {
                    Ok(prompt) => prompt,
                    Err(e) => {
                        writeln!(out, "({e:#})")?;
                        continue;
                    }
                };
                if prompt.dropped > 0 {
                    writeln!(
                        out,
                        "(the oldest {} exchange(s) no longer fit the model's context of {} tokens \
                         and are left out)",
                        prompt.dropped, chat.model.config.context_length
                    )?;
                }
                let stop = interrupt.begin_answer();
                let mut written = Ok(());
                let answer = chat.answer(prompt, stop, |piece| {
                    if written.is_ok() {
                        written = write!(out, "{piece}").and_then(|_| out.flush());
                    }
                });
                interrupt.end_answer();
                written?;
                let generation = answer?;
                writeln!(out)?;
                if generation.finish_reason == FinishReason::Interrupted {
                    writeln!(
                        out,
                        "[stopped after {} tokens]",
                        generation.generated_ids.len()
                    )?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_commands_or_messages() {
        assert_eq!(Line::parse("/reset\n"), Line::Reset);
        assert_eq!(Line::parse("  /quit \r\n"), Line::Quit);
        assert_eq!(Line::parse("\n"), Line::Empty);
        assert_eq!(
            Line::parse("/frobnicate now"),
            Line::Unknown("/frobnicate".into())
        );
        assert_eq!(
            Line::parse("//reset is a word\n"),
            Line::Say("/reset is a word".into())
        );
        assert_eq!(
            Line::parse("Hello there\n"),
            Line::Say("Hello there".into())
        );
    }

    #[test]
    fn ctrl_c_stops_an_answer_and_ends_the_program_only_at_the_prompt() {
        let interrupt = Interrupt::default();
        assert!(!interrupt.press(), "at the prompt: the program ends");
        let stop = interrupt.begin_answer();
        assert!(interrupt.press(), "while answering: the answer stops");
        assert!(stop.load(Ordering::SeqCst));
        interrupt.end_answer();
        assert!(!interrupt.press());
        interrupt.begin_answer();
        assert!(
            !interrupt.stop.load(Ordering::SeqCst),
            "each answer starts unstopped"
        );
    }

    /// A terminal that presses Ctrl-C once `after` bytes of an answer have arrived.
    struct Terminal {
        text: Vec<u8>,
        interrupt: Arc<Interrupt>,
        after: Option<usize>,
        answer_bytes: usize,
    }

    impl Write for Terminal {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.text.extend_from_slice(buf);
            if buf != b"> " {
                self.answer_bytes += buf.len();
            }
            if self.after.is_some_and(|n| self.answer_bytes >= n) {
                assert!(self.interrupt.press(), "an answer was being written");
                self.after = None;
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn converse(chat: &mut Chat, lines: &str, ctrl_c_after: Option<usize>) -> String {
        let interrupt = Arc::new(Interrupt::default());
        let mut terminal = Terminal {
            text: Vec::new(),
            interrupt: Arc::clone(&interrupt),
            after: ctrl_c_after,
            answer_bytes: 0,
        };
        repl(chat, &mut lines.as_bytes(), &mut terminal, &interrupt).unwrap();
        String::from_utf8(terminal.text).unwrap()
    }

    /// Runs `test` on a chat with the course model answering at most `max_tokens` per turn;
    /// nothing without the model.
    fn with_chat(max_tokens: usize, test: impl FnOnce(&mut Chat)) {
        let Some(path) = crate::assets::model_for_tests() else {
            return;
        };
        let gguf = crate::formats::Gguf::open(path).unwrap();
        let (model, tokenizer) = (
            Llama::load(&gguf).unwrap(),
            Tokenizer::from_gguf(&gguf).unwrap(),
        );
        let pool = ThreadPool::new(2);
        let mut chat = Chat::new(&model, &tokenizer, &pool);
        chat.max_tokens = max_tokens;
        test(&mut chat);
    }

    #[test]
    fn turns_build_on_each_other_until_reset() {
        with_chat(12, |chat| {
            let question = "What is the capital of France?";

            let first = converse(chat, &format!("{question}\n"), None);
            assert_eq!(chat.messages().len(), 2, "a user turn and an answer");
            let answer = chat.messages()[1].content.clone();
            assert!(!answer.is_empty() && first.contains(&answer), "{first}");

            // The same question again, without and with /reset: the history changes the prompt.
            let alone = chat
                .tokenizer
                .encode_chat(&chat.messages()[..1], true)
                .unwrap()
                .len();
            let prompt = chat.ask(question).unwrap();
            assert!(
                prompt.ids.len() > alone + 10,
                "the second turn carries the first"
            );
            chat.reset();
            let again = converse(chat, &format!("/reset\n{question}\n/quit\n"), None);
            assert!(again.contains("(a new conversation)"));
            assert_eq!(chat.messages().len(), 2);
            assert_eq!(
                chat.messages()[1].content,
                answer,
                "greedy: a fresh start answers the same"
            );
            let unknown = converse(chat, "/nonsense\n", None);
            assert!(unknown.contains("/help lists them"), "{unknown}");
            println!("answer: {answer:?}");
        });
    }

    #[test]
    fn ctrl_c_keeps_the_partial_answer_and_the_chat_goes_on() {
        with_chat(200, |chat| {
            let text = converse(
                chat,
                "Write a long story about a dragon.\nThanks!\n",
                Some(12),
            );
            assert!(text.contains("[stopped after"), "{text}");
            let messages = chat.messages();
            assert_eq!(
                messages.len(),
                4,
                "the stopped answer is kept, the next turn answered"
            );
            assert!(messages[1].content.len() >= 12 && text.contains(&messages[1].content));
            assert_eq!(
                text.matches("[stopped after").count(),
                1,
                "only the first answer stopped"
            );
        });
    }
}
