//! KV cache and the two halves of attention around the softmax: the
//! layout is `rbees_host_ops::attention`'s (shared with the plugin host and
//! the cpu backend); the products are ndarray's own (`dot` of rows, and a
//! matrix product per head), so the reference's results are its own.

use ndarray::{Array2, ArrayView1, ArrayView2, CowArray, Ix2, ShapeBuilder};
use rbees_core::{AttentionShape, BackendError, Result};
use rbees_host_ops::attention::{self, Strided};

/// One layer's cached keys and values: `[capacity, n_kv_heads * head_dim]` each.
#[derive(Debug, Clone)]
pub struct NdarrayKvCache {
    pub keys: Array2<f32>,
    pub values: Array2<f32>,
}

fn other(e: impl std::fmt::Display) -> BackendError {
    BackendError::Other(format!("attention: {e}"))
}

/// The row-major values of `a` (a standard-layout copy, or the array itself).
fn row_major<'a>(a: &'a CowArray<'_, f32, Ix2>) -> Result<&'a [f32]> {
    a.as_slice()
        .ok_or_else(|| other("a tensor is not in row-major layout"))
}

/// `s` as an ndarray view (same shape and strides).
fn view(s: Strided<'_>) -> Result<ArrayView2<'_, f32>> {
    ArrayView2::from_shape((s.rows, s.cols).strides((s.stride, 1)), s.data).map_err(other)
}

/// `scale * q·k` for every query head against its key head, causally masked.
pub fn scores(
    q: &Array2<f32>,
    keys: &Array2<f32>,
    pos0: usize,
    shape: AttentionShape,
) -> Result<Array2<f32>> {
    let seq = q.nrows();
    let (q, keys) = (q.as_standard_layout(), keys.as_standard_layout());
    let out = attention::scores(
        row_major(&q)?,
        seq,
        row_major(&keys)?,
        pos0,
        shape,
        |a, b| ArrayView1::from(a).dot(&ArrayView1::from(b)),
    );
    Array2::from_shape_vec((shape.n_heads * seq, pos0 + seq), out).map_err(other)
}

/// `probs · v` per head, heads laid out side by side in each output row.
pub fn weighted_sum(
    probs: &Array2<f32>,
    values: &Array2<f32>,
    seq: usize,
    shape: AttentionShape,
) -> Result<Array2<f32>> {
    let (probs, values) = (probs.as_standard_layout(), values.as_standard_layout());
    let out = attention::weighted_sum(
        row_major(&probs)?,
        probs.ncols(),
        seq,
        row_major(&values)?,
        shape,
        |p, v| Ok(view(p)?.dot(&view(v)?).iter().copied().collect()),
    )?;
    Array2::from_shape_vec((seq, shape.n_heads * shape.head_dim), out).map_err(other)
}
