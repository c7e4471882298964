//! One request, start to end: prefill the prompt in one pass, then decode token by token —
//! sample, check stop conditions, detokenize as a stream — timing every stage.

use crate::kernels::pool::ThreadPool;
use crate::model::{KvCache, KvPrecision, Llama, Logits, ModelError};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{StreamDecoder, TokenId, Tokenizer};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What to generate.
#[derive(Debug, Clone)]
pub struct Request {
    pub prompt_ids: Vec<TokenId>,
    /// Most tokens to generate.
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Tokens that end generation (not part of the text), e.g. EOS and `<|im_end|>`.
    pub stop_tokens: Vec<TokenId>,
    /// Strings that end generation; the text is cut before them.
    pub stop_strings: Vec<String>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A stop token or stop string.
    Stop,
    /// `max_tokens` reached (or the context is full).
    Length,
    /// The request's deadline passed (engine only).
    Timeout,
    /// The caller interrupted it (e.g. Ctrl-C in the interactive chat); the text so far is kept.
    Interrupted,
}

/// Wall time of each stage.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageTimes {
    /// Prompt tokens through the model in one pass (plus sampling the first token).
    pub prefill: Duration,
    /// Every later forward pass and sampling step.
    pub decode: Duration,
    /// Turning tokens into text.
    pub detokenize: Duration,
}

/// The result of a request.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub generated_ids: Vec<TokenId>,
    pub text: String,
    pub finish_reason: FinishReason,
    pub times: StageTimes,
}

impl Generation {
    /// Prompt tokens per second of prefill.
    pub fn prefill_tokens_per_s(&self, prompt_len: usize) -> f64 {
        prompt_len as f64 / self.times.prefill.as_secs_f64().max(1e-9)
    }

    /// Generated tokens per second after the first (each needs one decode step).
    pub fn decode_tokens_per_s(&self) -> f64 {
        let steps = self.generated_ids.len().saturating_sub(1);
        steps as f64 / self.times.decode.as_secs_f64().max(1e-9)
    }
}

/// The stop tokens a tokenizer defines: EOS and the end-of-turn markers it has.
pub fn default_stop_tokens(tokenizer: &Tokenizer) -> Vec<TokenId> {
    let mut stops: Vec<TokenId> = tokenizer.eos.into_iter().collect();
    for name in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>"] {
        if let Some(id) = tokenizer.token_id(name)
            && !stops.contains(&id)
        {
            stops.push(id);
        }
    }
    stops
}

// ANCHOR: stop_matcher
/// Finds stop strings in streamed text without ever releasing part of one: text that could
/// be the beginning of a stop string is held back until it is clearly not.
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> StopMatcher {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Adds `piece`; returns the text safe to release, and whether a stop string was found
    /// (then the released text ends right before it, and the rest is dropped).
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        self.held.push_str(piece);
        let first_stop = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first_stop {
            let out = self.held[..at].to_string();
            self.held.clear();
            return (out, true);
        }
        // Hold back the longest tail that is a proper prefix of some stop string.
        let keep = self
            .stops
            .iter()
            .map(|s| longest_tail_prefix(&self.held, s))
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        (out, false)
    }

    /// Releases what is held (at the end of generation, when no stop string came).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}
// ANCHOR_END: stop_matcher

// ANCHOR: tail_prefix
/// The length of the longest tail of `held` that is a proper prefix of `stop`, in
/// O(`stop.len()`) with the Knuth–Morris–Pratt failure function of `stop` run over the last
/// `stop.len() - 1` bytes of `held` (so per token the matcher costs the stop strings' length,
/// not its square). The tail starts with the first byte of `stop`, a character's first byte,
/// so it is whole characters: a cut there is a character boundary.
fn longest_tail_prefix(held: &str, stop: &str) -> usize {
    let (s, h) = (stop.as_bytes(), held.as_bytes());
    if s.len() < 2 {
        return 0;
    }
    // fail[i]: length of the longest proper prefix of s[..=i] that is also its suffix.
    let mut fail = vec![0usize; s.len()];
    let mut k = 0;
    for i in 1..s.len() {
        while k > 0 && s[i] != s[k] {
            k = fail[k - 1];
        }
        if s[i] == s[k] {
            k += 1;
        }
        fail[i] = k;
    }
    let mut matched = 0;
    for &b in &h[h.len().saturating_sub(s.len() - 1)..] {
        while matched > 0 && (matched == s.len() || b != s[matched]) {
            matched = fail[matched - 1];
        }
        if b == s[matched] {
            matched += 1;
        }
    }
    matched.min(s.len() - 1)
}
// ANCHOR_END: tail_prefix

// ANCHOR: generate
/// Runs `request` on a fresh KV cache. `on_text` receives the text as it is produced (never a
/// partial character, never part of a stop string).
pub fn generate(
    model: &Llama,
    tokenizer: &Tokenizer,
    pool: &ThreadPool,
    request: &Request,
    on_text: impl FnMut(&str),
) -> Result<Generation, ModelError> {
    generate_with_cache(model, tokenizer, pool, request, KvPrecision::F16, on_text)
}

/// [`generate`] with the KV cache stored at `precision`.
pub fn generate_with_cache(
    model: &Llama,
    tokenizer: &Tokenizer,
    pool: &ThreadPool,
    request: &Request,
    precision: KvPrecision,
    on_text: impl FnMut(&str),
) -> Result<Generation, ModelError> {
    run(model, tokenizer, pool, request, precision, None, on_text)
}

/// [`generate`] that also ends, with [`FinishReason::Interrupted`], once `interrupt` is set —
/// from another thread, e.g. a Ctrl-C handler. The flag is read before every forward pass, so
/// the answer stops within one token's time.
pub fn generate_interruptible(
    model: &Llama,
    tokenizer: &Tokenizer,
    pool: &ThreadPool,
    request: &Request,
    interrupt: &AtomicBool,
    on_text: impl FnMut(&str),
) -> Result<Generation, ModelError> {
    let precision = KvPrecision::F16;
    run(
        model,
        tokenizer,
        pool,
        request,
        precision,
        Some(interrupt),
        on_text,
    )
}

fn run(
    model: &Llama,
    tokenizer: &Tokenizer,
    pool: &ThreadPool,
    request: &Request,
    precision: KvPrecision,
    interrupt: Option<&AtomicBool>,
    mut on_text: impl FnMut(&str),
) -> Result<Generation, ModelError> {
    let interrupted = || interrupt.is_some_and(|flag| flag.load(Ordering::Relaxed));
    let limit = (request.prompt_ids.len() + request.max_tokens).min(model.config.context_length);
    let mut cache = KvCache::with_precision(&model.config, limit, precision)?;
    let mut sampler = Sampler::new(request.sampling.clone());
    let mut decoder = StreamDecoder::new();
    let mut stops = StopMatcher::new(&request.stop_strings);
    let mut times = StageTimes::default();
    let mut history = request.prompt_ids.clone();
    let mut generated = Vec::new();
    let mut text = String::new();
    let mut finish = FinishReason::Length;

    let start = Instant::now();
    let mut logits = model.forward(pool, &mut cache, &request.prompt_ids, Logits::Last)?;
    let mut next = sampler.sample(&mut logits, &history);
    times.prefill = start.elapsed();

    while generated.len() < request.max_tokens {
        if request.stop_tokens.contains(&next) {
            finish = FinishReason::Stop;
            break;
        }
        generated.push(next);
        history.push(next);

        let t = Instant::now();
        let piece = decoder.push(tokenizer, next);
        let (released, hit_stop) = stops.push(&piece);
        times.detokenize += t.elapsed();
        if !released.is_empty() {
            on_text(&released);
            text.push_str(&released);
        }
        if hit_stop {
            finish = FinishReason::Stop;
            break;
        }
        if generated.len() == request.max_tokens || cache.len() >= cache.limit() {
            break;
        }
        if interrupted() {
            finish = FinishReason::Interrupted;
            break;
        }
        let t = Instant::now();
        logits = model.forward(pool, &mut cache, &[next], Logits::Last)?;
        next = sampler.sample(&mut logits, &history);
        times.decode += t.elapsed();
    }
    if matches!(finish, FinishReason::Length | FinishReason::Interrupted) {
        let t = Instant::now();
        let (mut rest, hit_stop) = stops.push(&decoder.finish());
        if hit_stop {
            if finish == FinishReason::Length {
                finish = FinishReason::Stop;
            }
        } else {
            rest += &stops.finish();
        }
        times.detokenize += t.elapsed();
        if !rest.is_empty() {
            on_text(&rest);
            text.push_str(&rest);
        }
    }
    Ok(Generation {
        generated_ids: generated,
        text,
        finish_reason: finish,
        times,
    })
}
// ANCHOR_END: generate

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_are_never_released_in_part() {
        let mut m = StopMatcher::new(&["\n\nUser:".to_string()]);
        assert_eq!(m.push("Hello"), ("Hello".to_string(), false));
        assert_eq!(m.push(" world\n"), (" world".to_string(), false));
        assert_eq!(m.push("\nUs"), (String::new(), false));
        assert_eq!(m.push("er: hi"), (String::new(), true));
    }

    #[test]
    fn a_false_start_is_released_when_it_stops_matching() {
        let mut m = StopMatcher::new(&["STOP".to_string()]);
        assert_eq!(m.push("ST"), (String::new(), false));
        assert_eq!(m.push("ART"), ("START".to_string(), false));
        assert_eq!(m.push("x ST"), ("x ".to_string(), false));
        assert_eq!(m.finish(), "ST");
    }

    #[test]
    fn the_earliest_stop_string_wins() {
        let mut m = StopMatcher::new(&["b".to_string(), "abc".to_string()]);
        assert_eq!(m.push("xxabc"), ("xx".to_string(), true));
    }

    /// The quadratic definition the KMP version replaces: every proper prefix, longest first.
    fn naive_tail_prefix(held: &str, stop: &str) -> usize {
        (1..stop.len())
            .rev()
            .filter(|&n| stop.is_char_boundary(n))
            .find(|&n| held.ends_with(&stop[..n]))
            .unwrap_or(0)
    }

    #[test]
    fn the_linear_tail_match_agrees_with_the_naive_one() {
        // Small alphabets (with a two-byte and a three-byte character) make overlaps common.
        let alphabet = ['a', 'b', 'é', '€'];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut pick = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let word = |pick: &mut dyn FnMut(usize) -> usize, max: usize| -> String {
            let len = pick(max + 1);
            (0..len).map(|_| alphabet[pick(alphabet.len())]).collect()
        };
        for _ in 0..20_000 {
            let held = word(&mut pick, 12);
            let stop = word(&mut pick, 6);
            if held.contains(&stop) && !stop.is_empty() {
                continue; // push() cuts at a full match before it asks for a tail
            }
            assert_eq!(
                longest_tail_prefix(&held, &stop),
                naive_tail_prefix(&held, &stop),
                "held {held:?}, stop {stop:?}"
            );
        }
    }
}
