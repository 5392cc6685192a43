//! rbees-model: a Llama-architecture GGUF model generic over [`rbees_core::Backend`].

pub mod tokenizer;
