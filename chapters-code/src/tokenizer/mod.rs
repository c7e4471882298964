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
pub use chat::{ChatMessage, ChatTemplateError, MarkedChat, render_chat, render_chat_marked};
pub use stream::StreamDecoder;

impl Tokenizer {
    /// The prompt text of a conversation, through the model's chat template. For display:
    /// to get tokens, use [`Tokenizer::encode_chat`], which keeps content from becoming
    /// control tokens (encoding this text with special tokens parsed would not).
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        let template = self.template()?;
        let (bos, eos) = (self.special_name(self.bos), self.special_name(self.eos));
        render_chat(template, messages, add_generation_prompt, &bos, &eos)
    }

    // ANCHOR: encode_chat
    /// Token ids of a conversation: the template's markers become their special tokens, every
    /// message's content (any role) is ordinary text, even where it spells `<|im_end|>`.
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<TokenId>, ChatTemplateError> {
        let template = self.template()?;
        let (bos, eos) = (self.special_name(self.bos), self.special_name(self.eos));
        let marked = render_chat_marked(template, messages, add_generation_prompt, &bos, &eos)?;
        Ok(self.encode_with_text_ranges(&marked.text, Some(&marked.content)))
    }
    // ANCHOR_END: encode_chat

    fn template(&self) -> Result<&str, ChatTemplateError> {
        self.chat_template
            .as_deref()
            .ok_or(ChatTemplateError::Missing)
    }

    fn special_name(&self, id: Option<TokenId>) -> String {
        id.and_then(|id| self.token_str(id))
            .unwrap_or("")
            .to_string()
    }
}
