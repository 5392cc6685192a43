//! Q5_0: 32 weights per 22-byte block: f16 `d`, 32 fifth bits (`qh`, a
//! little-endian u32), 16 bytes of nibbles; `w = d * (q - 16)`. Byte `j`
//! holds the low four bits of element `j` and of element `j + 16`; bit `j`
//! of `qh` is the fifth bit of element `j`.

use super::{f16_at, BlockQ8, QK};

pub const BLOCK_BYTES: usize = 22;

/// Elements `j` and `j + 16` of a block, 0..=31 each.
#[inline(always)]
pub(crate) fn pair(nibbles: u8, qh: u32, j: usize) -> (i32, i32) {
    let lo = i32::from(nibbles & 0x0F) | (((qh >> j) & 1) << 4) as i32;
    let hi = i32::from(nibbles >> 4) | (((qh >> (j + 16)) & 1) << 4) as i32;
    (lo, hi)
}

#[inline(always)]
pub(crate) fn high_bits(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// `Σ w·x` of one row against Q8_0 activations (ggml `ggml_vec_dot_q5_0_q8_0`).
pub fn dot(w: &[u8], x: &[BlockQ8]) -> f32 {
    let mut sum = 0f32;
    for (b, y) in w.chunks_exact(BLOCK_BYTES).zip(x) {
        let qh = high_bits(b, 2);
        let mut sumi = 0i32;
        for (j, &q) in b[6..].iter().enumerate() {
            let (lo, hi) = pair(q, qh, j);
            sumi += (lo - 16) * i32::from(y.qs[j]) + (hi - 16) * i32::from(y.qs[j + QK / 2]);
        }
        sum += sumi as f32 * f16_at(b, 0) * y.d;
    }
    sum
}

pub fn dequantize(w: &[u8], out: &mut [f32]) {
    for (b, o) in w.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(QK)) {
        let (d, qh) = (f16_at(b, 0), high_bits(b, 2));
        for (j, &q) in b[6..].iter().enumerate() {
            let (lo, hi) = pair(q, qh, j);
            o[j] = d * (lo - 16) as f32;
            o[j + QK / 2] = d * (hi - 16) as f32;
        }
    }
}
