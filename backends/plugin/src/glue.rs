//! The glue ops, run in the host on f32 vectors (the ABI has only the five
//! kernels). Callers have validated shapes with `rbees_core::checks`.

use rbees_core::AttentionShape;

use crate::tensor::PluginKvCache;

/// `scale * q·k` for every query head against its key head, causally
/// masked: row `h * seq + i` of a `[n_heads * seq, pos0 + seq]` matrix.
pub fn scores(
    q: &[f32],
    seq: usize,
    cache: &PluginKvCache,
    pos0: usize,
    s: AttentionShape,
) -> Vec<f32> {
    let total = pos0 + seq;
    let (hd, width) = (s.head_dim, cache.width);
    let group = s.n_heads / s.n_kv_heads;
    let q_cols = s.n_heads * hd;
    let mut out = vec![f32::NEG_INFINITY; s.n_heads * seq * total];
    for h in 0..s.n_heads {
        let kv = (h / group) * hd;
        for i in 0..seq {
            let q_row = &q[i * q_cols + h * hd..][..hd];
            let out_row = &mut out[(h * seq + i) * total..][..total];
            for (j, o) in out_row.iter_mut().enumerate().take(pos0 + i + 1) {
                let k_row = &cache.keys[j * width + kv..][..hd];
                *o = s.scale * q_row.iter().zip(k_row).map(|(a, b)| a * b).sum::<f32>();
            }
        }
    }
    out
}

/// `probs · v` per head, heads side by side in each `[seq, n_heads * head_dim]` row.
pub fn weighted_sum(
    probs: &[f32],
    total: usize,
    seq: usize,
    cache: &PluginKvCache,
    s: AttentionShape,
) -> Vec<f32> {
    let (hd, width) = (s.head_dim, cache.width);
    let group = s.n_heads / s.n_kv_heads;
    let out_cols = s.n_heads * hd;
    let mut out = vec![0f32; seq * out_cols];
    for h in 0..s.n_heads {
        let kv = (h / group) * hd;
        for i in 0..seq {
            let p_row = &probs[(h * seq + i) * total..][..total];
            let o = &mut out[i * out_cols + h * hd..][..hd];
            for (j, &p) in p_row.iter().enumerate() {
                let v_row = &cache.values[j * width + kv..][..hd];
                for (o, &v) in o.iter_mut().zip(v_row) {
                    *o += p * v;
                }
            }
        }
    }
    out
}

/// Elementwise `f(a, b)` of two same-length vectors.
pub fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> Vec<f32> {
    a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
}
