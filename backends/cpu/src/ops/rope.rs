//! Rotary position embedding.

use rbees_core::RopeVariant;

use crate::tensor::CpuTensor;

/// Rotates each head of each row `i` of `x` by the angle of its position
/// `position(i)` (`pos0 + i` for one sequence; each sequence's own in a
/// batch). `cos`/`sin` are `[positions, half_rot]`; the first `2 * half_rot`
/// values of each head are rotated, the rest copied.
#[allow(clippy::too_many_arguments)]
pub fn rope(
    x: &CpuTensor,
    n_heads: usize,
    head_dim: usize,
    position: impl Fn(usize) -> usize,
    cos: &CpuTensor,
    sin: &CpuTensor,
    variant: RopeVariant,
) -> CpuTensor {
    let half_rot = cos.cols;
    let mut out = x.clone();
    for (i, row) in out.data.chunks_exact_mut(x.cols.max(1)).enumerate() {
        let (c, s) = (cos.row(position(i)), sin.row(position(i)));
        for head in row.chunks_exact_mut(head_dim).take(n_heads) {
            for f in 0..half_rot {
                let (a, b) = match variant {
                    RopeVariant::Interleaved => (2 * f, 2 * f + 1),
                    RopeVariant::HalfSplit => (f, f + half_rot),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * c[f] - x1 * s[f];
                head[b] = x0 * s[f] + x1 * c[f];
            }
        }
    }
    out
}
