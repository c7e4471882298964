//! Chat messages → prompt text, through the model's own `tokenizer.chat_template` (a Jinja
//! template) rendered with minijinja, a real Jinja engine: the same text the model saw in
//! training, with no hand-written ChatML.
//!
//! The rendered prompt mixes two kinds of text: the template's own markers (`<|im_start|>`,
//! which must become control tokens) and the messages' content (which must stay text, even
//! when a user types `<|im_end|>` into it). [`render_chat_marked`] renders once more with each
//! content wrapped in two private-use characters that appear nowhere else, and returns where
//! the content landed, so the encoder parses special tokens only outside it.

use serde::{Deserialize, Serialize};

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    #[error("the model file has no tokenizer.chat_template")]
    Missing,
    #[error("chat template error: {0}")]
    Render(String),
    #[error(
        "the chat template cuts or reorders message content, so its markers cannot be told \
         from the user's text; this server needs a template that copies `content` whole"
    )]
    ContentNotWhole,
}

// ANCHOR: render_chat
/// Renders `messages` with `template`. `add_generation_prompt` appends the assistant's turn
/// header, so that the model answers next.
pub fn render_chat(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String, ChatTemplateError> {
    let mut env = minijinja::Environment::new();
    env.add_template("chat", template)
        .map_err(|e| ChatTemplateError::Render(e.to_string()))?;
    let messages: Vec<minijinja::Value> = messages
        .iter()
        .map(|m| {
            let fields = [("role", m.role.clone()), ("content", m.content.clone())];
            minijinja::Value::from(std::collections::BTreeMap::from(fields))
        })
        .collect();
    let ctx = minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
    };
    env.get_template("chat")
        .and_then(|t| t.render(ctx))
        .map_err(|e| ChatTemplateError::Render(e.to_string()))
}
// ANCHOR_END: render_chat

/// A rendered conversation and the byte ranges of it that are message content (sorted,
/// disjoint, none empty): the only places where a special token's spelling is text.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkedChat {
    pub text: String,
    pub content: Vec<std::ops::Range<usize>>,
}

// ANCHOR: render_chat_marked
/// Renders `messages` as [`render_chat`] does, and finds where each message's content landed.
///
/// Each content is wrapped in an opening and a closing private-use character that occur in
/// no message and not in the template; the wrapped render is then read once: the markers are
/// dropped and what lay between them is recorded as content. The text is the plain render's
/// whenever the template copies content unchanged (ChatML does); a template that transforms
/// content (`| trim`) sees the markers, so its whitespace rules may act differently — the
/// content is still never parsed for special tokens. Markers left unbalanced (a template that
/// slices content) are refused with [`ChatTemplateError::ContentNotWhole`].
pub fn render_chat_marked(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<MarkedChat, ChatTemplateError> {
    // One pass over every input collects the private-use characters in use (scanning the
    // inputs once per candidate pair would let a message full of them cost thousands of scans).
    let mut used = std::collections::HashSet::new();
    let texts = [template, bos_token, eos_token].into_iter().chain(
        messages
            .iter()
            .flat_map(|m| [m.content.as_str(), m.role.as_str()]),
    );
    for text in texts {
        used.extend(
            text.chars()
                .filter(|c| ('\u{E000}'..='\u{F8FF}').contains(c)),
        );
    }
    // Private-use pairs, U+E000 up: the first pair that nothing uses.
    let (open, close) = (0xE000u32..0xF8FF)
        .step_by(2)
        .filter_map(|c| Some((char::from_u32(c)?, char::from_u32(c + 1)?)))
        .find(|(o, c)| !used.contains(o) && !used.contains(c))
        .ok_or_else(|| ChatTemplateError::Render("no free marker character".into()))?;
    let wrapped: Vec<ChatMessage> = messages
        .iter()
        .map(|m| ChatMessage {
            role: m.role.clone(),
            content: format!("{open}{}{close}", m.content),
        })
        .collect();
    let rendered = render_chat(
        template,
        &wrapped,
        add_generation_prompt,
        bos_token,
        eos_token,
    )?;
    let mut text = String::with_capacity(rendered.len());
    let mut content = Vec::new();
    let mut start = None;
    for c in rendered.chars() {
        if c == open {
            if start.is_some() {
                return Err(ChatTemplateError::ContentNotWhole);
            }
            start = Some(text.len());
        } else if c == close {
            let from = start.take().ok_or(ChatTemplateError::ContentNotWhole)?;
            if from < text.len() {
                content.push(from..text.len());
            }
        } else {
            text.push(c);
        }
    }
    if start.is_some() {
        return Err(ChatTemplateError::ContentNotWhole);
    }
    Ok(MarkedChat { text, content })
}
// ANCHOR_END: render_chat_marked
