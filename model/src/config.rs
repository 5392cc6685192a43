//! Llama hyper-parameters from GGUF metadata.

use crate::error::{ModelError, Result};
use crate::metadata::{Metadata, MetadataError};

/// The shape of a Llama-architecture model, read from `llama.*` keys.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub name: String,
    pub n_layers: usize,
    pub dim: usize,
    pub ff_dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Dimensions of each head that RoPE rotates (`rope.dimension_count`).
    pub rope_dim: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
    /// Context length the model was trained for.
    pub train_context: usize,
}

/// Architectures that are Llama in everything rbees uses.
const SUPPORTED_ARCHITECTURES: &[&str] = &["llama"];

fn metadata_err(key: &str, detail: impl Into<String>) -> ModelError {
    ModelError::Metadata {
        key: key.to_string(),
        detail: detail.into(),
    }
}

/// A non-negative integer of any GGUF integer type.
pub(crate) fn get_usize(md: &Metadata, key: &str) -> Result<Option<usize>> {
    let Some(v) = md.get(key) else {
        return Ok(None);
    };
    let n = v
        .as_integer()
        .ok_or_else(|| MetadataError::wrong_type(key, "an integer", v))?;
    usize::try_from(n)
        .map(Some)
        .map_err(|_| metadata_err(key, format!("{v:?} is not a valid count")))
}

fn required<T>(value: Option<T>, key: &str) -> Result<T> {
    value.ok_or_else(|| metadata_err(key, "missing (required for a llama model)"))
}

/// `general.architecture`, or an error when it is missing or not Llama.
pub fn architecture(md: &Metadata) -> Result<String> {
    const KEY: &str = "general.architecture";
    let arch = md
        .get_str(KEY)?
        .ok_or_else(|| metadata_err(KEY, "missing"))?
        .to_string();
    if !SUPPORTED_ARCHITECTURES.contains(&arch.as_str()) {
        return Err(ModelError::UnsupportedArchitecture(arch));
    }
    Ok(arch)
}

impl LlamaConfig {
    pub fn from_metadata(md: &Metadata) -> Result<Self> {
        let arch = architecture(md)?;
        let key = |k: &str| format!("{arch}.{k}");
        let count = |k: &str| -> Result<usize> {
            let full = key(k);
            let v = required(get_usize(md, &full)?, &full)?;
            if v == 0 {
                return Err(metadata_err(&full, "must be at least 1"));
            }
            Ok(v)
        };
        let n_layers = count("block_count")?;
        let dim = count("embedding_length")?;
        let ff_dim = count("feed_forward_length")?;
        let n_heads = count("attention.head_count")?;
        let kv_key = key("attention.head_count_kv");
        let n_kv_heads = get_usize(md, &kv_key)?.unwrap_or(n_heads);
        if n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(metadata_err(
                &kv_key,
                format!("{n_kv_heads} key/value heads do not divide {n_heads} query heads"),
            ));
        }
        if dim % n_heads != 0 {
            return Err(metadata_err(
                &key("attention.head_count"),
                format!("{n_heads} heads do not divide the embedding width {dim}"),
            ));
        }
        let head_dim = dim / n_heads;
        let rope_key = key("rope.dimension_count");
        let rope_dim = get_usize(md, &rope_key)?.unwrap_or(head_dim);
        if rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(metadata_err(
                &rope_key,
                format!("{rope_dim} must be even and at most the head size {head_dim}"),
            ));
        }
        let base_key = key("rope.freq_base");
        let rope_base = md.get_f32(&base_key)?.unwrap_or(10_000.0);
        if !(rope_base.is_finite() && rope_base > 0.0) {
            return Err(metadata_err(
                &base_key,
                format!("{rope_base} is not a positive number"),
            ));
        }
        let eps_key = key("attention.layer_norm_rms_epsilon");
        let rms_eps = required(md.get_f32(&eps_key)?, &eps_key)?;
        if !(rms_eps.is_finite() && rms_eps >= 0.0) {
            return Err(metadata_err(
                &eps_key,
                format!("{rms_eps} is not a valid epsilon"),
            ));
        }
        let train_context = count("context_length")?;
        let name = md
            .get("general.name")
            .and_then(|v| v.as_str())
            .unwrap_or("unnamed")
            .to_string();
        Ok(LlamaConfig {
            name,
            n_layers,
            dim,
            ff_dim,
            n_heads,
            n_kv_heads,
            head_dim,
            rope_dim,
            rope_base,
            rms_eps,
            train_context,
        })
    }

    /// Width of one K or V row: `n_kv_heads * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}
