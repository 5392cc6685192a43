//! RMS norm.

use crate::tensor::CpuTensor;

/// `x / sqrt(mean(x²) + eps) * weight`, per row.
pub fn rms_norm(x: &CpuTensor, weight: &[f32], eps: f32) -> CpuTensor {
    let mut out = x.clone();
    for row in out.data.chunks_exact_mut(x.cols.max(1)) {
        let mean_square = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
        let inv_rms = 1.0 / (mean_square + eps).sqrt();
        for (v, &w) in row.iter_mut().zip(weight) {
            *v = *v * inv_rms * w;
        }
    }
    out
}
