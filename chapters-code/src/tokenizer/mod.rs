//! From text to tokens and back: byte-level BPE from the model file, the chat template, and a
//! streaming detokenizer.

pub mod bpe;
pub mod byte_level;
pub mod chat;
pub mod pretokenize;
pub mod stream;

#[cfg(test)]
mod tests;

pub use bpe::{TokenId, TokenKind, Tokenizer, TokenizerError};
pub use chat::{ChatMessage, ChatTemplateError, render_chat};
pub use stream::StreamDecoder;

impl Tokenizer {
    /// The prompt text of a conversation, through the model's chat template.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        let template = self
            .chat_template
            .as_deref()
            .ok_or(ChatTemplateError::Missing)?;
        let name = |id: Option<TokenId>| {
            id.and_then(|id| self.token_str(id))
                .unwrap_or("")
                .to_string()
        };
        render_chat(
            template,
            messages,
            add_generation_prompt,
            &name(self.bos),
            &name(self.eos),
        )
    }
}
