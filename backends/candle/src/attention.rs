//! KV cache and the two halves of attention around the softmax, as batched
//! candle matrix products over heads.

use candle_core::{DType, Device, Tensor};
use rbees_core::AttentionShape;

/// One layer's keys and values, `[capacity, n_kv_heads * head_dim]` each.
pub struct CandleKvCache {
    pub keys: Tensor,
    pub values: Tensor,
}

/// `[rows, heads * hd]` -> `[heads, rows, hd]`, contiguous.
pub fn split_heads(x: &Tensor, heads: usize, hd: usize) -> candle_core::Result<Tensor> {
    let rows = x.dim(0)?;
    x.reshape((rows, heads, hd))?.transpose(0, 1)?.contiguous()
}

/// Cached rows `0..total` as `[n_heads, total, hd]`, each KV head repeated
/// for the query heads of its group.
fn cached_heads(
    cache: &Tensor,
    total: usize,
    shape: AttentionShape,
) -> candle_core::Result<Tensor> {
    let group = shape.n_heads / shape.n_kv_heads;
    let heads = split_heads(
        &cache.narrow(0, 0, total)?,
        shape.n_kv_heads,
        shape.head_dim,
    )?;
    if group == 1 {
        return Ok(heads);
    }
    heads
        .unsqueeze(1)?
        .expand((shape.n_kv_heads, group, total, shape.head_dim))?
        .reshape((shape.n_heads, total, shape.head_dim))
}

/// 0 where query `i` (at `pos0 + i`) may see key `j`, `-inf` after it.
fn causal_mask(seq: usize, pos0: usize, device: &Device) -> candle_core::Result<Tensor> {
    let total = pos0 + seq;
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j <= pos0 + i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (seq, total), device)
}

pub fn scores(
    q: &Tensor,
    keys: &Tensor,
    pos0: usize,
    shape: AttentionShape,
) -> candle_core::Result<Tensor> {
    let seq = q.dim(0)?;
    let total = pos0 + seq;
    let q = split_heads(q, shape.n_heads, shape.head_dim)?;
    let k = cached_heads(keys, total, shape)?;
    let scores = (q.matmul(&k.t()?)? * shape.scale as f64)?;
    let scores = if seq > 1 {
        scores.broadcast_add(&causal_mask(seq, pos0, q.device())?)?
    } else {
        scores // one new row sees every cached position
    };
    scores.reshape((shape.n_heads * seq, total))
}

pub fn weighted_sum(
    probs: &Tensor,
    values: &Tensor,
    seq: usize,
    shape: AttentionShape,
) -> candle_core::Result<Tensor> {
    let total = probs.dim(1)?;
    let probs = probs.reshape((shape.n_heads, seq, total))?;
    let v = cached_heads(values, total, shape)?;
    probs
        .matmul(&v)?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((seq, shape.n_heads * shape.head_dim))
}

pub fn zeros(capacity: usize, width: usize, device: &Device) -> candle_core::Result<CandleKvCache> {
    Ok(CandleKvCache {
        keys: Tensor::zeros((capacity, width), DType::F32, device)?,
        values: Tensor::zeros((capacity, width), DType::F32, device)?,
    })
}
