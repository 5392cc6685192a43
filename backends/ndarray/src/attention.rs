//! KV cache and the two halves of attention around the softmax.

use ndarray::{s, Array2, ArrayView2};
use rbees_core::AttentionShape;

/// One layer's cached keys and values: `[capacity, n_kv_heads * head_dim]` each.
#[derive(Debug, Clone)]
pub struct NdarrayKvCache {
    pub keys: Array2<f32>,
    pub values: Array2<f32>,
}

/// `scale * q·k` for every query head against its key head, causally masked.
pub fn scores(
    q: ArrayView2<f32>,
    keys: ArrayView2<f32>,
    pos0: usize,
    shape: AttentionShape,
) -> Array2<f32> {
    let seq = q.nrows();
    let total = pos0 + seq;
    let group = shape.n_heads / shape.n_kv_heads;
    let hd = shape.head_dim;
    let mut out = Array2::from_elem((shape.n_heads * seq, total), f32::NEG_INFINITY);
    for h in 0..shape.n_heads {
        let kv = h / group;
        let k_head = keys.slice(s![..total, kv * hd..(kv + 1) * hd]);
        for i in 0..seq {
            let q_row = q.slice(s![i, h * hd..(h + 1) * hd]);
            for j in 0..=pos0 + i {
                out[[h * seq + i, j]] = shape.scale * q_row.dot(&k_head.row(j));
            }
        }
    }
    out
}

/// `probs · v` per head, heads laid out side by side in each output row.
pub fn weighted_sum(
    probs: ArrayView2<f32>,
    values: ArrayView2<f32>,
    seq: usize,
    shape: AttentionShape,
) -> Array2<f32> {
    let total = probs.ncols();
    let group = shape.n_heads / shape.n_kv_heads;
    let hd = shape.head_dim;
    let mut out = Array2::zeros((seq, shape.n_heads * hd));
    for h in 0..shape.n_heads {
        let kv = h / group;
        let v_head = values.slice(s![..total, kv * hd..(kv + 1) * hd]);
        let p_head = probs.slice(s![h * seq..(h + 1) * seq, ..]);
        out.slice_mut(s![.., h * hd..(h + 1) * hd])
            .assign(&p_head.dot(&v_head));
    }
    out
}
