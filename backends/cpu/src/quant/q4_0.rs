//! Q4_0: 32 weights per 18-byte block, `w = d * (q - 8)`, `q` a nibble.
//! Byte `j` holds element `j` (low nibble) and element `j + 16` (high).

use super::{f16_at, BlockQ8, QK};

pub const BLOCK_BYTES: usize = 18;

/// `Σ w·x` of one row against Q8_0 activations (ggml `ggml_vec_dot_q4_0_q8_0`).
pub fn dot(w: &[u8], x: &[BlockQ8]) -> f32 {
    let mut sum = 0f32;
    for (b, y) in w.chunks_exact(BLOCK_BYTES).zip(x) {
        let (y_lo, y_hi) = y.qs.split_at(QK / 2);
        let mut sumi = 0i32;
        for ((&q, &a), &c) in b[2..].iter().zip(y_lo).zip(y_hi) {
            let lo = i32::from(q & 0x0F) - 8;
            let hi = i32::from(q >> 4) - 8;
            sumi += lo * i32::from(a) + hi * i32::from(c);
        }
        sum += sumi as f32 * f16_at(b, 0) * y.d;
    }
    sum
}

pub fn dequantize(w: &[u8], out: &mut [f32]) {
    for (b, o) in w.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        for j in 0..QK / 2 {
            o[j] = d * (f32::from(b[2 + j] & 0x0F) - 8.0);
            o[j + QK / 2] = d * (f32::from(b[2 + j] >> 4) - 8.0);
        }
    }
}
