//! Causal grouped-query attention against the f32 KV cache.
//!
//! The fused path works one query row at a time (scores, softmax, weighted
//! sum, all heads), so rows are independent and a 128-row prompt spreads
//! over the pool; a decode step (one row) stays on the calling thread. A
//! batch of sequences is the same loop with each row's own cache and
//! position, so a row's result does not depend on what else is in the batch.

use rbees_core::{AttentionShape, Result};
use rbees_host_ops::attention as host;

use super::elementwise::axpy;
use super::softmax::softmax_in_place;
use crate::pool::Pool;
use crate::simd::Kernels;
use crate::tensor::{CpuKvCache, CpuTensor};

/// Key (or value) head `kvh` of cached position `j`.
fn head(buf: &[f32], width: usize, j: usize, kvh: usize, hd: usize) -> &[f32] {
    let start = j * width + kvh * hd;
    &buf[start..start + hd]
}

/// Where query row `i` looks: `caches[rows[i].0]`, at position `rows[i].1`
/// (it sees cached positions `0..=rows[i].1`).
pub struct RowPlace<'a> {
    pub caches: &'a [&'a CpuKvCache],
    pub rows: Vec<(usize, usize)>,
}

impl<'a> RowPlace<'a> {
    /// One sequence of `seq` rows at `pos0..` in `cache`.
    pub fn sequence(cache: &'a [&'a CpuKvCache], pos0: usize, seq: usize) -> Self {
        RowPlace {
            caches: cache,
            rows: (0..seq).map(|i| (0, pos0 + i)).collect(),
        }
    }

    /// Each span's rows in its own cache (`caches[i]` for `spans[i]`).
    pub fn batch(caches: &'a [&'a CpuKvCache], spans: &[rbees_core::SeqSpan]) -> Self {
        let rows = spans
            .iter()
            .enumerate()
            .flat_map(|(c, s)| (0..s.len).map(move |i| (c, s.pos0 + i)))
            .collect();
        RowPlace { caches, rows }
    }
}

pub fn attention(
    pool: &Pool,
    k: &Kernels,
    q: &CpuTensor,
    place: RowPlace<'_>,
    shape: AttentionShape,
) -> Result<CpuTensor> {
    let (seq, hd) = (q.rows, shape.head_dim);
    let group = shape.n_heads / shape.n_kv_heads;
    let mut out = CpuTensor::zeros(seq, shape.n_heads * hd);
    let keys: usize = place.rows.iter().map(|&(_, pos)| pos + 1).sum();
    let work = shape.n_heads * keys * hd * 2;
    pool.for_chunks(&mut out.data, shape.n_heads * hd, work, |i, orow| {
        let q_row = q.row(i);
        let (c, pos) = place.rows[i];
        let cache = place.caches[c];
        let width = cache.width;
        let mut scores = vec![0f32; pos + 1];
        for (h, o) in orow.chunks_exact_mut(hd).enumerate() {
            let kvh = h / group;
            let qh = &q_row[h * hd..(h + 1) * hd];
            for (j, s) in scores.iter_mut().enumerate() {
                *s = shape.scale * (k.f32)(qh, head(&cache.keys, width, j, kvh, hd));
            }
            softmax_in_place(&mut scores);
            for (j, &p) in scores.iter().enumerate() {
                axpy(o, p, head(&cache.values, width, j, kvh, hd));
            }
        }
    })?;
    Ok(out)
}

/// `[n_heads * seq, pos0 + seq]` scaled scores, `-inf` past each row's
/// position: the shared layout with this backend's SIMD dot product.
pub fn scores(
    k: &Kernels,
    q: &CpuTensor,
    cache: &CpuKvCache,
    pos0: usize,
    shape: AttentionShape,
) -> CpuTensor {
    let data = host::scores(&q.data, q.rows, &cache.keys, pos0, shape, k.f32);
    CpuTensor::new(shape.n_heads * q.rows, pos0 + q.rows, data)
}

/// `probs` rows (`[n_heads * seq, pos0 + seq]`) times cached values: the
/// shared layout, each head's rows accumulated with [`add_nonzero`].
pub fn weighted_sum(
    probs: &CpuTensor,
    cache: &CpuKvCache,
    seq: usize,
    shape: AttentionShape,
) -> CpuTensor {
    let (values, total) = (&cache.values, probs.cols);
    let data = host::weighted_sum_by_rows(&probs.data, total, seq, values, shape, add_nonzero);
    CpuTensor::new(seq, shape.n_heads * shape.head_dim, data)
}

/// `o += p * v` with [`axpy`], skipping zero probabilities (the causal tail).
fn add_nonzero(o: &mut [f32], p: f32, v: &[f32]) {
    if p != 0.0 {
        axpy(o, p, v);
    }
}
