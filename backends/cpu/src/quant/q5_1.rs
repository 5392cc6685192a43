//! Q5_1: 32 weights per 24-byte block: f16 `d` and `m`, 32 fifth bits,
//! 16 bytes of nibbles (laid out as in Q5_0); `w = d * q + m`.

use super::q5_0::{high_bits, pair};
use super::{f16_at, BlockQ8, QK};

pub const BLOCK_BYTES: usize = 24;

/// `Σ w·x` against Q8_1 activations (ggml `ggml_vec_dot_q5_1_q8_1`):
/// `Σ_blocks d_w d_x Σ q_w q_x + m_w s_x`.
pub fn dot(w: &[u8], x: &[BlockQ8]) -> f32 {
    let mut sum = 0f32;
    for (b, y) in w.chunks_exact(BLOCK_BYTES).zip(x) {
        let qh = high_bits(b, 4);
        let mut sumi = 0i32;
        for (j, &q) in b[8..].iter().enumerate() {
            let (lo, hi) = pair(q, qh, j);
            sumi += lo * i32::from(y.qs[j]) + hi * i32::from(y.qs[j + QK / 2]);
        }
        sum += (f16_at(b, 0) * y.d) * sumi as f32 + f16_at(b, 2) * y.s;
    }
    sum
}

pub fn dequantize(w: &[u8], out: &mut [f32]) {
    for (b, o) in w.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(QK)) {
        let (d, m, qh) = (f16_at(b, 0), f16_at(b, 2), high_bits(b, 4));
        for (j, &q) in b[8..].iter().enumerate() {
            let (lo, hi) = pair(q, qh, j);
            o[j] = d * lo as f32 + m;
            o[j + QK / 2] = d * hi as f32 + m;
        }
    }
}
