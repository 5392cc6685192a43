//! A SentencePiece-style (`tokenizer.ggml.model = "llama"`) vocabulary of
//! any size: the Llama-2 special and byte tokens, the printable ASCII
//! characters, then filler pieces. Any text encodes (bytes fall back to
//! byte tokens) and any id decodes, which is all a random-weight model needs.

use super::writer::MetaValue;

// llama.cpp token types.
const TYPE_NORMAL: i32 = 1;
const TYPE_UNKNOWN: i32 = 2;
const TYPE_CONTROL: i32 = 3;
const TYPE_BYTE: i32 = 6;

pub const BOS_ID: u32 = 1;
pub const EOS_ID: u32 = 2;

/// The tokenizer metadata for a vocabulary of `size` tokens (at least 512).
pub fn vocab_metadata(size: usize) -> Vec<(String, MetaValue)> {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![TYPE_UNKNOWN, TYPE_CONTROL, TYPE_CONTROL];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(TYPE_BYTE);
    }
    // "▁" is SentencePiece's space.
    let printable = std::iter::once("\u{2581}".to_string())
        .chain((b'!'..=b'~').map(|c| (c as char).to_string()));
    for piece in printable {
        tokens.push(piece);
        types.push(TYPE_NORMAL);
    }
    let mut filler = 0;
    while tokens.len() < size {
        tokens.push(format!("\u{2581}synth{filler}"));
        types.push(TYPE_NORMAL);
        filler += 1;
    }
    tokens.truncate(size);
    types.truncate(size);
    // Longer pieces score higher, as SentencePiece merges prefer them.
    let scores: Vec<f32> = tokens
        .iter()
        .zip(&types)
        .map(|(t, ty)| {
            if *ty == TYPE_NORMAL {
                t.chars().count() as f32 - 100.0
            } else {
                0.0
            }
        })
        .collect();
    vec![
        (
            "tokenizer.ggml.model".into(),
            MetaValue::String("llama".into()),
        ),
        (
            "tokenizer.ggml.tokens".into(),
            MetaValue::StringArray(tokens),
        ),
        ("tokenizer.ggml.scores".into(), MetaValue::F32Array(scores)),
        (
            "tokenizer.ggml.token_type".into(),
            MetaValue::I32Array(types),
        ),
        ("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(BOS_ID)),
        ("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(EOS_ID)),
        ("tokenizer.ggml.unknown_token_id".into(), MetaValue::U32(0)),
        ("tokenizer.ggml.add_bos_token".into(), MetaValue::Bool(true)),
        (
            "tokenizer.ggml.add_eos_token".into(),
            MetaValue::Bool(false),
        ),
    ]
}
