use std::path::PathBuf;

use rbees_core::BackendError;

use crate::metadata::MetadataError;
use crate::tokenizer::TokenizerError;

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    // The I/O error is part of the message, not a `source`, so that
    // `{:#}` printing does not repeat it.
    #[error("cannot read model file {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} is not a valid GGUF file: {detail}")]
    Gguf { path: PathBuf, detail: String },
    #[error("model metadata key '{key}': {detail}")]
    Metadata { key: String, detail: String },
    /// A metadata key of the file at `path` is unusable (for messages about
    /// a whole model file, where the path tells which).
    #[error("{path}: {error}")]
    FileMetadata { path: PathBuf, error: MetadataError },
    /// The tokenizer metadata of the file at `path` is unusable.
    #[error("cannot build the tokenizer of {path}: {error}")]
    FileTokenizer {
        path: PathBuf,
        error: TokenizerError,
    },
    /// The vocabulary and the token embedding's rows disagree.
    #[error("{path}: the tokenizer has {tokens} tokens but token_embd.weight has shape {embedding_shape:?}; the file is inconsistent")]
    VocabMismatch {
        path: PathBuf,
        tokens: usize,
        embedding_shape: Vec<usize>,
    },
    #[error("architecture '{0}' is not supported; rbees runs 'llama' GGUF models (Llama-2, TinyLlama, SmolLM2, ...)")]
    UnsupportedArchitecture(String),
    #[error("tensor '{name}': {detail}")]
    Tensor { name: String, detail: String },
    #[error(
        "the '{backend}' backend cannot run this model: {op} on {dtype} is unsupported ({reason})"
    )]
    Capability {
        backend: String,
        op: String,
        dtype: String,
        reason: String,
    },
    #[error("the prompt is {prompt_tokens} tokens but the context holds {context} tokens; shorten the prompt or raise the context size")]
    PromptTooLong {
        prompt_tokens: usize,
        context: usize,
    },
    #[error("invalid context size: {0}")]
    Context(String),
    #[error("the prompt is empty: nothing to generate from (this model adds no BOS token)")]
    EmptyPrompt,
    #[error("token id {id} is outside the vocabulary of {vocab} tokens")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("invalid batch: {0}")]
    Batch(String),
    #[error("invalid sampling setting: {0}")]
    Sampling(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

impl From<MetadataError> for ModelError {
    fn from(e: MetadataError) -> Self {
        ModelError::Metadata {
            detail: format!("expected {}, found {}", e.expected, e.found),
            key: e.key,
        }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
