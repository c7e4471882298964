//! A workload with shared prefixes: a few long system prompts (one per "application"), each
//! followed by a short user question — the shape that makes prefix-aware routing pay, since a
//! replica that has served a system prompt holds its KV blocks in its prefix cache.

use serde_json::{Value, json};

/// One workload.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Distinct system prompts.
    pub prefixes: usize,
    /// Sentences per system prompt (each adds about ten tokens).
    pub sentences: usize,
    pub requests: usize,
    /// Tokens generated per request.
    pub max_tokens: usize,
    pub seed: u64,
    /// `model` in every request.
    pub model: String,
}

const SUBJECTS: [&str; 8] = [
    "refunds", "shipping", "warranty", "accounts", "invoices", "returns", "privacy", "orders",
];
const RULES: [&str; 6] = [
    "answer in one short paragraph and never invent a policy",
    "quote the policy number when you cite a rule",
    "ask for the order number before discussing a specific order",
    "escalate to a human when the customer mentions a legal dispute",
    "keep a friendly tone and avoid technical jargon",
    "say plainly when a question is outside the policies below",
];
const QUESTIONS: [&str; 8] = [
    "How long does a refund take?",
    "Can I change my delivery address?",
    "What does the warranty cover?",
    "How do I close my account?",
    "Where can I download an invoice?",
    "Is return shipping free?",
    "What data do you keep about me?",
    "Can I cancel an order that has shipped?",
];

/// System prompt `i`: a company's assistant instructions, `sentences` sentences long. Prompts
/// of different `i` part after about a dozen tokens (the company's name), inside the first
/// 16-token block of the chat, so they share no prefix-cache block.
pub fn system_prompt(i: usize, sentences: usize) -> String {
    let mut text = format!(
        "You are the customer assistant of Company {} (desk {i}).",
        [
            "Alder", "Birch", "Cedar", "Dogwood", "Elm", "Fir", "Ginkgo", "Hazel"
        ][i % 8]
    );
    for k in 0..sentences {
        let subject = SUBJECTS[(i + k) % SUBJECTS.len()];
        let rule = RULES[(i * 7 + k) % RULES.len()];
        text.push_str(&format!(
            " Policy {i}.{k} on {subject}: {rule}, and remember desk {i} handles {subject} case {}.",
            (i * 31 + k * 17) % 97
        ));
    }
    text
}

/// splitmix64: a seeded, well-mixed sequence (the choices of prefix and question).
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Workload {
    /// The requests in order: a streamed greedy chat body and its session id (the index of its
    /// system prompt, for balancers that hash a header).
    pub fn requests(&self) -> Vec<(Value, Option<String>)> {
        let mut state = self.seed;
        let prompts: Vec<String> = (0..self.prefixes)
            .map(|i| system_prompt(i, self.sentences))
            .collect();
        (0..self.requests)
            .map(|_| {
                let p = (splitmix(&mut state) % self.prefixes.max(1) as u64) as usize;
                let q = (splitmix(&mut state) % QUESTIONS.len() as u64) as usize;
                let body = json!({
                    "model": self.model,
                    "messages": [
                        { "role": "system", "content": prompts[p] },
                        { "role": "user", "content": QUESTIONS[q] },
                    ],
                    "max_tokens": self.max_tokens,
                    "temperature": 0,
                    "ignore_eos": true,
                    "stream": true,
                    "stream_options": { "include_usage": true },
                });
                (body, Some(format!("app-{p}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_differ_from_the_start_and_requests_repeat_with_the_seed() {
        let a = system_prompt(0, 30);
        let b = system_prompt(1, 30);
        assert_ne!(a[..48], b[..48]);
        assert!(a.len() > 1500, "{}", a.len());
        let w = Workload {
            prefixes: 4,
            sentences: 5,
            requests: 40,
            max_tokens: 8,
            seed: 7,
            model: "m".into(),
        };
        assert_eq!(w.requests(), w.requests());
        let sessions: std::collections::BTreeSet<_> =
            w.requests().into_iter().filter_map(|r| r.1).collect();
        assert_eq!(sessions.len(), 4, "{sessions:?}");
    }
}
