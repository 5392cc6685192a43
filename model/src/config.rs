//! Llama hyper-parameters from GGUF metadata.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;

use crate::error::{ModelError, Result};

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
pub(crate) fn get_usize(md: &HashMap<String, Value>, key: &str) -> Result<Option<usize>> {
    let Some(v) = md.get(key) else {
        return Ok(None);
    };
    let n: Option<u64> = match v {
        Value::U8(x) => Some(*x as u64),
        Value::U16(x) => Some(*x as u64),
        Value::U32(x) => Some(*x as u64),
        Value::U64(x) => Some(*x),
        Value::I8(x) => u64::try_from(*x).ok(),
        Value::I16(x) => u64::try_from(*x).ok(),
        Value::I32(x) => u64::try_from(*x).ok(),
        Value::I64(x) => u64::try_from(*x).ok(),
        other => {
            return Err(metadata_err(
                key,
                format!("expected an integer, found {:?}", other.value_type()),
            ))
        }
    };
    n.and_then(|n| usize::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| metadata_err(key, format!("{v:?} is not a valid count")))
}

fn get_f32(md: &HashMap<String, Value>, key: &str) -> Result<Option<f32>> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::F32(x)) => Ok(Some(*x)),
        Some(Value::F64(x)) => Ok(Some(*x as f32)),
        Some(other) => Err(metadata_err(
            key,
            format!("expected a float, found {:?}", other.value_type()),
        )),
    }
}

fn required<T>(value: Option<T>, key: &str) -> Result<T> {
    value.ok_or_else(|| metadata_err(key, "missing (required for a llama model)"))
}

/// `general.architecture`, or an error when it is missing or not Llama.
pub fn architecture(md: &HashMap<String, Value>) -> Result<String> {
    let arch = match md.get("general.architecture") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(metadata_err(
                "general.architecture",
                format!("expected a string, found {:?}", other.value_type()),
            ))
        }
        None => return Err(metadata_err("general.architecture", "missing")),
    };
    if !SUPPORTED_ARCHITECTURES.contains(&arch.as_str()) {
        return Err(ModelError::UnsupportedArchitecture(arch));
    }
    Ok(arch)
}

impl LlamaConfig {
    pub fn from_metadata(md: &HashMap<String, Value>) -> Result<Self> {
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
        let rope_base = get_f32(md, &base_key)?.unwrap_or(10_000.0);
        if !(rope_base.is_finite() && rope_base > 0.0) {
            return Err(metadata_err(
                &base_key,
                format!("{rope_base} is not a positive number"),
            ));
        }
        let eps_key = key("attention.layer_norm_rms_epsilon");
        let rms_eps = required(get_f32(md, &eps_key)?, &eps_key)?;
        if !(rms_eps.is_finite() && rms_eps >= 0.0) {
            return Err(metadata_err(
                &eps_key,
                format!("{rms_eps} is not a valid epsilon"),
            ));
        }
        let train_context = count("context_length")?;
        let name = match md.get("general.name") {
            Some(Value::String(s)) => s.clone(),
            _ => "unnamed".to_string(),
        };
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
