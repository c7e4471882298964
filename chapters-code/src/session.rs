//! One model held in memory and one greedy generation at a time, driven a token per call — the
//! shape a browser needs (the WebAssembly module in `wasm/` wraps it): control returns to the
//! caller between tokens, so a page can show each piece of text and a stop button can end the
//! generation between two calls. Natively it is the reference the WebAssembly build is
//! compared with.

use crate::formats::Gguf;
use crate::generate::default_stop_tokens;
use crate::kernels::pool::ThreadPool;
use crate::model::{KvCache, Llama, Logits};
use crate::sampling::argmax;
use crate::tokenizer::{ChatMessage, StreamDecoder, TokenId, Tokenizer};

/// A loaded model: the file's bytes (owned, never copied again), its tokenizer, and the
/// state of the current generation.
pub struct Session {
    // Declared before `_file`: dropped first, while the bytes it borrows still exist.
    model: Llama<'static>,
    tokenizer: Tokenizer,
    pool: ThreadPool,
    stops: Vec<TokenId>,
    generation: Option<Generation>,
    _file: Box<Gguf>,
}

/// The generation in progress.
struct Generation {
    cache: KvCache,
    /// Logits of the next token to choose.
    logits: Vec<f32>,
    left: usize,
    decoder: StreamDecoder,
    tokens: Vec<TokenId>,
}

/// What one step produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A token and the text it completes (may be empty while a UTF-8 character is split).
    Token(TokenId, String),
    /// The generation ended (a stop token, or `max_tokens`); the rest of the text.
    Done(String),
}

impl Session {
    /// Parses a GGUF file held in memory and checks every tensor the forward pass needs.
    pub fn load(bytes: Vec<u8>) -> Result<Session, String> {
        let file = Box::new(Gguf::from_bytes(bytes).map_err(|e| e.to_string())?);
        // SAFETY: the Gguf is boxed (its address never changes) and owned by the session,
        // which drops `model` before `_file` (field order); nothing else borrows it.
        let file_ref: &'static Gguf = unsafe { &*(file.as_ref() as *const Gguf) };
        let model = Llama::load(file_ref).map_err(|e| e.to_string())?;
        let tokenizer = Tokenizer::from_gguf(file_ref).map_err(|e| e.to_string())?;
        let stops = default_stop_tokens(&tokenizer);
        Ok(Session {
            model,
            tokenizer,
            pool: ThreadPool::new(1),
            stops,
            generation: None,
            _file: file,
        })
    }

    /// Token ids of `prompt`: as a user message through the model's chat template when `chat`
    /// is set, else as raw text.
    pub fn prompt_ids(&self, prompt: &str, chat: bool) -> Result<Vec<TokenId>, String> {
        if chat {
            let messages = [ChatMessage::new("user", prompt)];
            self.tokenizer
                .encode_chat(&messages, true)
                .map_err(|e| e.to_string())
        } else {
            Ok(self.tokenizer.encode(prompt, false))
        }
    }

    /// Token ids of a conversation given as JSON — `[{"role": "user", "content": "…"}, …]`, as
    /// OpenAI's `messages` — through the model's chat template, ready for the assistant's turn.
    pub fn conversation_ids(&self, json: &str) -> Result<Vec<TokenId>, String> {
        let messages: Vec<ChatMessage> = serde_json::from_str(json)
            .map_err(|e| format!("the conversation is not a JSON list of messages: {e}"))?;
        if messages.is_empty() {
            return Err("the conversation has no messages".into());
        }
        if let Some(m) = messages
            .iter()
            .find(|m| !matches!(m.role.as_str(), "system" | "user" | "assistant"))
        {
            return Err(format!(
                "unknown role {:?}: use system, user or assistant",
                m.role
            ));
        }
        self.tokenizer
            .encode_chat(&messages, true)
            .map_err(|e| e.to_string())
    }

    /// Starts a greedy generation of at most `max_tokens` tokens after `ids`: runs the prompt
    /// through the model (prefill). A generation in progress is dropped.
    pub fn start(&mut self, ids: &[TokenId], max_tokens: usize) -> Result<(), String> {
        self.generation = None;
        if ids.is_empty() {
            return Err("the prompt is empty".into());
        }
        let context = self.model.config.context_length;
        let limit = (ids.len() + max_tokens).min(context);
        if ids.len() >= limit {
            return Err(format!(
                "the prompt has {} tokens; the model's context is {context}",
                ids.len()
            ));
        }
        let mut cache = KvCache::with_limit(&self.model.config, limit);
        let logits = self
            .model
            .forward(&self.pool, &mut cache, ids, Logits::Last)
            .map_err(|e| e.to_string())?;
        self.generation = Some(Generation {
            left: limit - ids.len(),
            cache,
            logits,
            decoder: StreamDecoder::new(),
            tokens: Vec::new(),
        });
        Ok(())
    }

    // ANCHOR: step
    /// Chooses the next token (greedy) and runs it through the model for the one after.
    pub fn step(&mut self) -> Result<Step, String> {
        let Some(g) = self.generation.as_mut() else {
            return Err("no generation in progress: call start first".into());
        };
        let token = argmax(&g.logits);
        if g.left == 0 || self.stops.contains(&token) {
            let rest = g.decoder.finish();
            self.generation = None;
            return Ok(Step::Done(rest));
        }
        g.left -= 1;
        g.tokens.push(token);
        let text = g.decoder.push(&self.tokenizer, token);
        if g.left > 0 {
            g.logits = self
                .model
                .forward(&self.pool, &mut g.cache, &[token], Logits::Last)
                .map_err(|e| e.to_string())?;
        }
        Ok(Step::Token(token, text))
    }
    // ANCHOR_END: step

    /// Ends the generation in progress, if any (its KV cache is freed).
    pub fn stop(&mut self) {
        self.generation = None;
    }

    /// Greedy tokens and text after `ids`, to the end: what the tests compare.
    pub fn greedy(
        &mut self,
        ids: &[TokenId],
        max_tokens: usize,
    ) -> Result<(Vec<TokenId>, String), String> {
        self.start(ids, max_tokens)?;
        let (mut tokens, mut text) = (Vec::new(), String::new());
        loop {
            match self.step()? {
                Step::Token(t, piece) => {
                    tokens.push(t);
                    text.push_str(&piece);
                }
                Step::Done(rest) => {
                    text.push_str(&rest);
                    return Ok((tokens, text));
                }
            }
        }
    }
}
