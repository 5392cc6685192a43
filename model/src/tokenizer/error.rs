//! Errors raised while building a tokenizer from GGUF metadata or while using it.

use thiserror::Error;

use crate::metadata::MetadataError;

/// Everything that can go wrong in [`super::Tokenizer`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenizerError {
    /// A required GGUF metadata key is absent.
    #[error("GGUF metadata key `{0}` is missing")]
    MissingKey(String),

    /// A GGUF metadata key holds a value of the wrong type.
    #[error("GGUF metadata key `{key}` has type {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },

    /// A per-token array is shorter than `tokenizer.ggml.tokens`.
    #[error(
        "GGUF metadata key `{key}` has {len} entries but the vocabulary has {n_tokens} tokens"
    )]
    ArrayTooShort {
        key: String,
        len: usize,
        n_tokens: usize,
    },

    /// `tokenizer.ggml.tokens` is empty.
    #[error("GGUF metadata key `tokenizer.ggml.tokens` is an empty array")]
    EmptyVocab,

    /// `tokenizer.ggml.model` names a tokenizer that is not implemented.
    #[error("unknown or unsupported tokenizer model `{0}` (tokenizer.ggml.model); supported: `llama` (SentencePiece), `gpt2` (byte-level BPE)")]
    UnknownModel(String),

    /// `tokenizer.ggml.pre` names a pre-tokenizer that is not implemented.
    #[error("unknown or unsupported pre-tokenizer `{name}` (tokenizer.ggml.pre); supported: {supported}")]
    UnknownPreTokenizer { name: String, supported: String },

    /// A token id is not in the vocabulary.
    #[error("token id {id} is out of range (vocabulary size {vocab_size})")]
    TokenIdOutOfRange { id: u32, vocab_size: usize },

    /// The model asks for a special token (e.g. BOS) it does not define.
    #[error("the tokenizer must add the {0} token but the vocabulary defines none")]
    MissingSpecialToken(&'static str),

    /// SentencePiece byte fallback needs a `<0xXX>` (or raw byte) token that is missing.
    #[error("byte fallback needs a token for byte 0x{0:02X} but the vocabulary has none")]
    MissingByteToken(u8),
}

impl From<MetadataError> for TokenizerError {
    fn from(e: MetadataError) -> Self {
        TokenizerError::WrongType {
            key: e.key,
            expected: e.expected,
            found: e.found,
        }
    }
}
