//! Q8_0 weights: 32 per 34-byte block, `w = d * q`, `q` an i8.

use super::{f16_at, BlockQ8, QK};

pub const BLOCK_BYTES: usize = 34;

/// `Σ w·x` of one row against Q8_0 activations (ggml `ggml_vec_dot_q8_0_q8_0`).
pub fn dot(w: &[u8], x: &[BlockQ8]) -> f32 {
    let mut sum = 0f32;
    for (b, y) in w.chunks_exact(BLOCK_BYTES).zip(x) {
        let sumi: i32 = b[2..]
            .iter()
            .zip(&y.qs)
            .map(|(&q, &v)| i32::from(q as i8) * i32::from(v))
            .sum();
        sum += sumi as f32 * (f16_at(b, 0) * y.d);
    }
    sum
}

pub fn dequantize(w: &[u8], out: &mut [f32]) {
    for (b, o) in w.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        for (v, &q) in o.iter_mut().zip(&b[2..]) {
            *v = d * f32::from(q as i8);
        }
    }
}
