//! Typed access to the `tokenizer.ggml.*` GGUF metadata keys.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;

use super::TokenizerError;

pub(crate) type Metadata = HashMap<String, Value>;

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

fn type_name(v: &Value) -> String {
    match v {
        Value::Array(items) => match items.first() {
            Some(first) => format!("array of {}", type_name(first)),
            None => "empty array".to_string(),
        },
        other => format!("{:?}", other.value_type()),
    }
}

fn wrong_type(key: &str, expected: &'static str, found: &Value) -> TokenizerError {
    TokenizerError::WrongType {
        key: key.to_string(),
        expected,
        found: type_name(found),
    }
}

/// An optional string key.
pub(crate) fn opt_str<'a>(md: &'a Metadata, key: &str) -> Result<Option<&'a str>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(wrong_type(key, "string", other)),
    }
}

/// A required string key.
pub(crate) fn req_str<'a>(md: &'a Metadata, key: &str) -> Result<&'a str, TokenizerError> {
    opt_str(md, key)?.ok_or_else(|| TokenizerError::MissingKey(key.to_string()))
}

/// An optional boolean key.
pub(crate) fn opt_bool(md: &Metadata, key: &str) -> Result<Option<bool>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(wrong_type(key, "bool", other)),
    }
}

/// An optional token-id key. Any integer type is accepted; negative values
/// and values beyond `u32` are reported as wrong types.
pub(crate) fn opt_id(md: &Metadata, key: &str) -> Result<Option<u32>, TokenizerError> {
    const EXPECTED: &str = "unsigned 32-bit integer";
    let Some(v) = md.get(key) else {
        return Ok(None);
    };
    let wide: i128 = match v {
        Value::U8(x) => (*x).into(),
        Value::I8(x) => (*x).into(),
        Value::U16(x) => (*x).into(),
        Value::I16(x) => (*x).into(),
        Value::U32(x) => (*x).into(),
        Value::I32(x) => (*x).into(),
        Value::U64(x) => (*x).into(),
        Value::I64(x) => (*x).into(),
        other => return Err(wrong_type(key, EXPECTED, other)),
    };
    u32::try_from(wide)
        .map(Some)
        .map_err(|_| wrong_type(key, EXPECTED, v))
}

fn opt_array<'a>(
    md: &'a Metadata,
    key: &str,
    expected: &'static str,
) -> Result<Option<&'a [Value]>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items.as_slice())),
        Some(other) => Err(wrong_type(key, expected, other)),
    }
}

/// An optional array of strings.
pub(crate) fn opt_str_array<'a>(
    md: &'a Metadata,
    key: &str,
) -> Result<Option<Vec<&'a str>>, TokenizerError> {
    const EXPECTED: &str = "array of strings";
    let Some(items) = opt_array(md, key, EXPECTED)? else {
        return Ok(None);
    };
    items
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.as_str()),
            other => Err(wrong_type(key, EXPECTED, other)),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// An optional array of scores: f32, or i32 converted to f32 (as llama.cpp allows).
pub(crate) fn opt_score_array(
    md: &Metadata,
    key: &str,
) -> Result<Option<Vec<f32>>, TokenizerError> {
    const EXPECTED: &str = "array of f32 or i32";
    let Some(items) = opt_array(md, key, EXPECTED)? else {
        return Ok(None);
    };
    items
        .iter()
        .map(|v| match v {
            Value::F32(x) => Ok(*x),
            Value::I32(x) => Ok(*x as f32),
            other => Err(wrong_type(key, EXPECTED, other)),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// An optional array of i32.
pub(crate) fn opt_i32_array(md: &Metadata, key: &str) -> Result<Option<Vec<i32>>, TokenizerError> {
    const EXPECTED: &str = "array of i32";
    let Some(items) = opt_array(md, key, EXPECTED)? else {
        return Ok(None);
    };
    items
        .iter()
        .map(|v| match v {
            Value::I32(x) => Ok(*x),
            other => Err(wrong_type(key, EXPECTED, other)),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}
