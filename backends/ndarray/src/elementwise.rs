//! Row-wise kernels written the way the math reads.

use ndarray::{Array2, ArrayView1, ArrayView2, Axis, Zip};
use rbees_core::RopeVariant;

/// `x / sqrt(mean(x²) + eps) * weight`, per row.
pub fn rms_norm(x: ArrayView2<f32>, weight: ArrayView1<f32>, eps: f32) -> Array2<f32> {
    let mut out = x.to_owned();
    for mut row in out.axis_iter_mut(Axis(0)) {
        let mean_square = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
        let inv_rms = 1.0 / (mean_square + eps).sqrt();
        Zip::from(&mut row)
            .and(&weight)
            .for_each(|v, &w| *v = *v * inv_rms * w);
    }
    out
}

/// Numerically stable softmax per row; `-inf` gives 0.
pub fn softmax(x: ArrayView2<f32>) -> Array2<f32> {
    let mut out = x.to_owned();
    for mut row in out.axis_iter_mut(Axis(0)) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        row.mapv_inplace(|v| (v - max).exp());
        let sum = row.sum();
        row.mapv_inplace(|v| v / sum);
    }
    out
}

pub fn silu(x: ArrayView2<f32>) -> Array2<f32> {
    x.mapv(|v| v / (1.0 + (-v).exp()))
}

/// Rotates each head of each row by the angle of its position.
///
/// `cos`/`sin` rows are positions, columns are rotation frequencies; the
/// first `2 * cos.ncols()` values of each head are rotated, the rest copied.
pub fn rope(
    x: ArrayView2<f32>,
    n_heads: usize,
    head_dim: usize,
    pos0: usize,
    cos: ArrayView2<f32>,
    sin: ArrayView2<f32>,
    variant: RopeVariant,
) -> Array2<f32> {
    let half_rot = cos.ncols();
    let mut out = x.to_owned();
    for (i, mut row) in out.axis_iter_mut(Axis(0)).enumerate() {
        let (c, s) = (cos.row(pos0 + i), sin.row(pos0 + i));
        for h in 0..n_heads {
            let head = h * head_dim;
            for f in 0..half_rot {
                let (a, b) = match variant {
                    RopeVariant::Interleaved => (head + 2 * f, head + 2 * f + 1),
                    RopeVariant::HalfSplit => (head + f, head + f + half_rot),
                };
                let (x0, x1) = (row[a], row[b]);
                row[a] = x0 * c[f] - x1 * s[f];
                row[b] = x0 * s[f] + x1 * c[f];
            }
        }
    }
    out
}
