//! Q4_1: 32 weights per 20-byte block, `w = d * q + m`, `q` a nibble.
//! Byte `j` holds element `j` (low nibble) and element `j + 16` (high).

use super::{f16_at, BlockQ8, QK};

pub const BLOCK_BYTES: usize = 20;

/// `Σ w·x` of one row against Q8_1 activations (ggml `ggml_vec_dot_q4_1_q8_1`):
/// `Σ_blocks d_w d_x Σ q_w q_x + m_w s_x`, where `s_x = d_x Σ q_x`.
pub fn dot(w: &[u8], x: &[BlockQ8]) -> f32 {
    let mut sum = 0f32;
    for (b, y) in w.chunks_exact(BLOCK_BYTES).zip(x) {
        let (y_lo, y_hi) = y.qs.split_at(QK / 2);
        let mut sumi = 0i32;
        for ((&q, &a), &c) in b[4..].iter().zip(y_lo).zip(y_hi) {
            sumi += i32::from(q & 0x0F) * i32::from(a) + i32::from(q >> 4) * i32::from(c);
        }
        sum += (f16_at(b, 0) * y.d) * sumi as f32 + f16_at(b, 2) * y.s;
    }
    sum
}

pub fn dequantize(w: &[u8], out: &mut [f32]) {
    for (b, o) in w.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(QK)) {
        let (d, m) = (f16_at(b, 0), f16_at(b, 2));
        for j in 0..QK / 2 {
            o[j] = d * f32::from(b[4 + j] & 0x0F) + m;
            o[j + QK / 2] = d * f32::from(b[4 + j] >> 4) + m;
        }
    }
}
