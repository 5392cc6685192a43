//! Composed attention on host f32 slices: the layout of the trait's
//! `attention_scores` and `attention_weighted_sum` (heads side by side in a
//! row, query head `h` reading KV head `h / (n_heads / n_kv_heads)`, causal
//! mask), written once for the backends whose tensors and KV caches are
//! plain row-major buffers.
//!
//! The arithmetic is a parameter: each backend passes its own dot product
//! and per-head product, so the order in which it sums, and hence every
//! bit of its results, stays its own (the ndarray reference's `dot`, the
//! plugin host's in-order sums, the cpu backend's SIMD kernels).
//! Callers have checked the shapes with `rbees_core::checks` (so a KV
//! cache's rows hold `n_kv_heads * head_dim` values).

use rbees_core::AttentionShape;

/// `rows` rows of `cols` values, row `r` at `data[r * stride..][..cols]`:
/// one head of a KV cache, or one head's rows of probabilities.
#[derive(Debug, Clone, Copy)]
pub struct Strided<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub stride: usize,
}

impl<'a> Strided<'a> {
    /// The first `rows` cached positions of KV head `kv` in a cache
    /// buffer of rows of `width` values (`head_dim` values per head).
    fn kv_head(buf: &'a [f32], width: usize, rows: usize, kv: usize, head_dim: usize) -> Self {
        Strided {
            data: &buf[kv * head_dim..],
            rows,
            cols: head_dim,
            stride: width,
        }
    }

    pub fn row(&self, r: usize) -> &'a [f32] {
        &self.data[r * self.stride..][..self.cols]
    }
}

/// `[n_heads * seq, pos0 + seq]` scores: row `h * seq + i` holds
/// `scale * dot(q_h, k_j)` of query row `i`'s head `h` against the keys of
/// its KV head at positions `j <= pos0 + i`, and `-inf` after (causal mask).
///
/// `q` is `[seq, n_heads * head_dim]`; `keys` a cache buffer holding at
/// least `pos0 + seq` positions.
pub fn scores(
    q: &[f32],
    seq: usize,
    keys: &[f32],
    pos0: usize,
    shape: AttentionShape,
    dot: impl Fn(&[f32], &[f32]) -> f32,
) -> Vec<f32> {
    let total = pos0 + seq;
    let hd = shape.head_dim;
    let group = shape.n_heads / shape.n_kv_heads;
    let (q_cols, width) = (shape.n_heads * hd, shape.n_kv_heads * hd);
    let mut out = vec![f32::NEG_INFINITY; shape.n_heads * seq * total];
    for h in 0..shape.n_heads {
        let k_head = Strided::kv_head(keys, width, total, h / group, hd);
        for i in 0..seq {
            let q_row = &q[i * q_cols + h * hd..][..hd];
            let out_row = &mut out[(h * seq + i) * total..][..total];
            for (j, o) in out_row.iter_mut().enumerate().take(pos0 + i + 1) {
                *o = shape.scale * dot(q_row, k_head.row(j));
            }
        }
    }
    out
}

/// `[seq, n_heads * head_dim]`: head `h` of row `i` is probabilities row
/// `h * seq + i` times the values of `h`'s KV head.
///
/// `probs` is `[n_heads * seq, total]`; `values` a cache buffer holding at
/// least `total` positions. `head_product(p, v)` is one head's
/// `[seq, head_dim]` product (row-major) of its probabilities `p`
/// (`[seq, total]`) and values `v` (`[total, head_dim]`).
pub fn weighted_sum<E>(
    probs: &[f32],
    total: usize,
    seq: usize,
    values: &[f32],
    shape: AttentionShape,
    mut head_product: impl FnMut(Strided<'_>, Strided<'_>) -> Result<Vec<f32>, E>,
) -> Result<Vec<f32>, E> {
    let hd = shape.head_dim;
    let group = shape.n_heads / shape.n_kv_heads;
    let (out_cols, width) = (shape.n_heads * hd, shape.n_kv_heads * hd);
    let mut out = vec![0f32; seq * out_cols];
    for h in 0..shape.n_heads {
        let p_head = Strided {
            data: &probs[h * seq * total..][..seq * total],
            rows: seq,
            cols: total,
            stride: total,
        };
        let v_head = Strided::kv_head(values, width, total, h / group, hd);
        let product = head_product(p_head, v_head)?;
        for i in 0..seq {
            out[i * out_cols + h * hd..][..hd].copy_from_slice(&product[i * hd..][..hd]);
        }
    }
    Ok(out)
}

/// `a · b` summed in order, left to right.
pub fn dot_in_order(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>()
}

/// [`weighted_sum`] accumulated row by row straight into the result: head
/// `h` of output row `i` starts at zero and takes `add(row, p, v_j)` for
/// every position `j` in order, where `add` is the backend's
/// `row += p * v_j` (it may skip terms). No per-head buffer.
pub fn weighted_sum_by_rows(
    probs: &[f32],
    total: usize,
    seq: usize,
    values: &[f32],
    shape: AttentionShape,
    add: impl Fn(&mut [f32], f32, &[f32]),
) -> Vec<f32> {
    let hd = shape.head_dim;
    let group = shape.n_heads / shape.n_kv_heads;
    let (out_cols, width) = (shape.n_heads * hd, shape.n_kv_heads * hd);
    let mut out = vec![0f32; seq * out_cols];
    for h in 0..shape.n_heads {
        let v_head = Strided::kv_head(values, width, total, h / group, hd);
        for i in 0..seq {
            let o = &mut out[i * out_cols + h * hd..][..hd];
            let p_row = &probs[(h * seq + i) * total..][..total];
            for (j, &pj) in p_row.iter().enumerate() {
                add(o, pj, v_head.row(j));
            }
        }
    }
    out
}

/// `o += p * v`, elementwise.
pub fn axpy(o: &mut [f32], p: f32, v: &[f32]) {
    for (o, &x) in o.iter_mut().zip(v) {
        *o += p * x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    /// 4 query heads over 2 KV heads of 2 values, 2 rows after 1 cached position.
    const SHAPE: AttentionShape = AttentionShape {
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 2,
        scale: 0.5,
    };

    #[test]
    fn scores_pair_each_query_head_with_its_kv_head_causally() {
        // Keys: position j, KV head kv holds [j + 1, 10 * kv].
        let keys: Vec<f32> = (0..3)
            .flat_map(|j| [j as f32 + 1.0, 0.0, j as f32 + 1.0, 10.0])
            .collect();
        // Query row i, head h: [1, h].
        let q: Vec<f32> = (0..2)
            .flat_map(|_| (0..4).flat_map(|h| [1.0, h as f32]))
            .collect();
        let s = scores(&q, 2, &keys, 1, SHAPE, dot_in_order);
        assert_eq!(s.len(), 4 * 2 * 3);
        for h in 0..4 {
            for i in 0..2 {
                for j in 0..3 {
                    let got = s[(h * 2 + i) * 3 + j];
                    if j > 1 + i {
                        assert_eq!(got, f32::NEG_INFINITY);
                    } else {
                        let kv = h / 2;
                        let want = 0.5 * ((j as f32 + 1.0) + h as f32 * 10.0 * kv as f32);
                        assert_eq!(got, want, "h={h} i={i} j={j}");
                    }
                }
            }
        }
    }

    #[test]
    fn weighted_sum_places_each_heads_product_beside_the_others() {
        // Values: position j, KV head kv holds [j, 100 * kv + j].
        let values: Vec<f32> = (0..3)
            .flat_map(|j| [j as f32, j as f32, j as f32, 100.0 + j as f32])
            .collect();
        // Head h's rows pick position (h + i) % 3 with weight h + 1.
        let mut probs = vec![0f32; 4 * 2 * 3];
        for h in 0..4 {
            for i in 0..2 {
                probs[(h * 2 + i) * 3 + (h + i) % 3] = h as f32 + 1.0;
            }
        }
        let by_rows = weighted_sum_by_rows(&probs, 3, 2, &values, SHAPE, axpy);
        // The per-head form, with a plain matrix product for each head.
        let Ok(by_head) = weighted_sum(&probs, 3, 2, &values, SHAPE, |p, v| {
            let mut out = vec![0f32; p.rows * v.cols];
            for i in 0..p.rows {
                for (j, &pj) in p.row(i).iter().enumerate() {
                    axpy(&mut out[i * v.cols..][..v.cols], pj, v.row(j));
                }
            }
            Ok::<_, Infallible>(out)
        });
        for out in [by_rows, by_head] {
            for i in 0..2 {
                for h in 0..4 {
                    let j = ((h + i) % 3) as f32;
                    let w = h as f32 + 1.0;
                    let want = [w * j, w * (100.0 * (h / 2) as f32 + j)];
                    assert_eq!(out[i * 8 + h * 2..][..2], want, "i={i} h={h}");
                }
            }
        }
    }
}
