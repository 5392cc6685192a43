//! The token list: texts, scores, attributes and the text -> id index.

use std::collections::HashMap;

use super::metadata::{self, Metadata};
use super::TokenizerError;

/// Token attribute bits, numbered as llama.cpp's `llama_token_attr`.
pub(crate) mod attr {
    pub(crate) const UNDEFINED: u16 = 0;
    pub(crate) const UNKNOWN: u16 = 1 << 0;
    pub(crate) const UNUSED: u16 = 1 << 1;
    pub(crate) const NORMAL: u16 = 1 << 2;
    pub(crate) const CONTROL: u16 = 1 << 3;
    pub(crate) const USER_DEFINED: u16 = 1 << 4;
    pub(crate) const BYTE: u16 = 1 << 5;
    pub(crate) const LSTRIP: u16 = 1 << 7;
    pub(crate) const RSTRIP: u16 = 1 << 8;

    /// Attribute for a GGUF `tokenizer.ggml.token_type` value.
    pub(crate) fn from_token_type(t: i32) -> u16 {
        match t {
            1 => NORMAL,
            2 => UNKNOWN,
            3 => CONTROL,
            4 => USER_DEFINED,
            5 => UNUSED,
            6 => BYTE,
            _ => UNDEFINED,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Vocab {
    pub(crate) texts: Vec<String>,
    pub(crate) scores: Vec<f32>,
    pub(crate) attrs: Vec<u16>,
    /// Text -> id; when a text occurs twice the later id wins (as in llama.cpp).
    pub(crate) token_to_id: HashMap<String, u32>,
}

impl Vocab {
    /// Read tokens, scores and token types from the metadata.
    pub(crate) fn from_metadata(md: &Metadata) -> Result<Self, TokenizerError> {
        let tokens = metadata::opt_str_array(md, metadata::KEY_TOKENS)?
            .ok_or_else(|| TokenizerError::MissingKey(metadata::KEY_TOKENS.to_string()))?;
        let n = tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        if u32::try_from(n).is_err() {
            return Err(TokenizerError::WrongType {
                key: metadata::KEY_TOKENS.to_string(),
                expected: "at most 2^32 tokens",
                found: format!("{n} tokens"),
            });
        }

        let scores = match metadata::opt_score_array(md, metadata::KEY_SCORES)? {
            Some(s) if s.len() < n => {
                return Err(TokenizerError::ArrayTooShort {
                    key: metadata::KEY_SCORES.to_string(),
                    len: s.len(),
                    n_tokens: n,
                })
            }
            Some(mut s) => {
                s.truncate(n);
                s
            }
            None => vec![0.0; n],
        };

        let attrs = match metadata::opt_i32_array(md, metadata::KEY_TOKEN_TYPE)? {
            Some(t) if t.len() < n => {
                return Err(TokenizerError::ArrayTooShort {
                    key: metadata::KEY_TOKEN_TYPE.to_string(),
                    len: t.len(),
                    n_tokens: n,
                })
            }
            Some(t) => t[..n].iter().map(|&t| attr::from_token_type(t)).collect(),
            None => vec![attr::NORMAL; n],
        };

        let mut texts = Vec::with_capacity(n);
        let mut token_to_id = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            // llama.cpp renames empty tokens so that every text is unique-ish and non-empty.
            let text = if t.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                (*t).to_string()
            };
            token_to_id.insert(text.clone(), i as u32);
            texts.push(text);
        }

        Ok(Vocab {
            texts,
            scores,
            attrs,
            token_to_id,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.texts.len()
    }

    pub(crate) fn id(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    pub(crate) fn attr(&self, id: u32) -> u16 {
        self.attrs[id as usize]
    }

    pub(crate) fn has_attr(&self, id: u32, mask: u16) -> bool {
        self.attr(id) & mask != 0
    }

    /// Ids that the text index maps to (the last id of each text), ascending.
    pub(crate) fn indexed_ids(&self) -> Vec<u32> {
        (0..self.texts.len() as u32)
            .filter(|&id| self.id(&self.texts[id as usize]) == Some(id))
            .collect()
    }
}
