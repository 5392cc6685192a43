//! Typed access to the `tokenizer.ggml.*` GGUF metadata keys.

pub(crate) use crate::metadata::Metadata;
use crate::metadata::{MetadataError, MetadataValue};

use super::TokenizerError;

pub(crate) const KEY_MODEL: &str = "tokenizer.ggml.model";
pub(crate) const KEY_PRE: &str = "tokenizer.ggml.pre";
pub(crate) const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
pub(crate) const KEY_SCORES: &str = "tokenizer.ggml.scores";
pub(crate) const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
pub(crate) const KEY_MERGES: &str = "tokenizer.ggml.merges";
pub(crate) const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
pub(crate) const KEY_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
pub(crate) const KEY_ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
pub(crate) const KEY_GENERAL_NAME: &str = "general.name";

/// An optional string key.
pub(crate) fn opt_str<'a>(md: &'a Metadata, key: &str) -> Result<Option<&'a str>, TokenizerError> {
    Ok(md.get_str(key)?)
}

/// A required string key.
pub(crate) fn req_str<'a>(md: &'a Metadata, key: &str) -> Result<&'a str, TokenizerError> {
    opt_str(md, key)?.ok_or_else(|| TokenizerError::MissingKey(key.to_string()))
}

/// An optional boolean key.
pub(crate) fn opt_bool(md: &Metadata, key: &str) -> Result<Option<bool>, TokenizerError> {
    Ok(md.get_bool(key)?)
}

/// An optional token-id key. Any integer type is accepted; negative values
/// and values beyond `u32` are reported as wrong types.
pub(crate) fn opt_id(md: &Metadata, key: &str) -> Result<Option<u32>, TokenizerError> {
    Ok(md.get_u32(key)?)
}

/// An optional array of strings.
pub(crate) fn opt_str_array<'a>(
    md: &'a Metadata,
    key: &str,
) -> Result<Option<Vec<&'a str>>, TokenizerError> {
    Ok(md.get_str_array(key)?)
}

/// An optional array whose every item `read` converts (else a wrong type,
/// described as `expected`).
fn opt_typed_array<T>(
    md: &Metadata,
    key: &str,
    expected: &'static str,
    read: impl Fn(&MetadataValue) -> Option<T>,
) -> Result<Option<Vec<T>>, TokenizerError> {
    let Some(items) = md.get_array(key, expected)? else {
        return Ok(None);
    };
    items
        .iter()
        .map(|v| read(v).ok_or_else(|| MetadataError::wrong_type(key, expected, v).into()))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// An optional array of scores: f32, or i32 converted to f32 (as llama.cpp allows).
pub(crate) fn opt_score_array(
    md: &Metadata,
    key: &str,
) -> Result<Option<Vec<f32>>, TokenizerError> {
    opt_typed_array(md, key, "an array of f32 or i32", |v| match v {
        MetadataValue::F32(x) => Some(*x),
        MetadataValue::I32(x) => Some(*x as f32),
        _ => None,
    })
}

/// An optional array of i32.
pub(crate) fn opt_i32_array(md: &Metadata, key: &str) -> Result<Option<Vec<i32>>, TokenizerError> {
    opt_typed_array(md, key, "an array of i32", |v| match v {
        MetadataValue::I32(x) => Some(*x),
        _ => None,
    })
}
