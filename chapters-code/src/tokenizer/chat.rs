//! Chat messages → prompt text, through the model's own `tokenizer.chat_template` (a Jinja
//! template) rendered with minijinja, a real Jinja engine: the same text the model saw in
//! training, with no hand-written ChatML.

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
