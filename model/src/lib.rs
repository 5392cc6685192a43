//! rbees-model: a Llama-architecture GGUF model generic over [`rbees_core::Backend`],
//! with its tokenizer, KV cache, sampler and generation loop.

pub mod config;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod llama;
pub mod metadata;
mod prescan;
pub mod sampler;
pub mod stop;
pub mod synth;
pub mod tokenizer;

pub use config::LlamaConfig;
pub use error::{ModelError, Result};
pub use generate::{
    generate, Decoding, GenerateParams, Generated, StopReason, Timings, TokenEvent, PROMPT_BATCH,
};
pub use gguf::GgufFile;
pub use llama::{CapabilityReport, Llama, LoadOptions, SeqChunk, MAX_SLOTS};
pub use metadata::{Metadata, MetadataError, MetadataValue};
pub use sampler::{Sampler, SamplingParams};
pub use tokenizer::{chat_template, Tokenizer, CHAT_TEMPLATE_KEY};
