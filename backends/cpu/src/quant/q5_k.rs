//! Q5_K: 256 weights per 176-byte block (ggml `block_q5_K`): as Q4_K (f16
//! `d`, `dmin`, 12 bytes of packed scales and minimums) plus 32 bytes of
//! fifth bits, then 128 bytes of nibbles. Sub-block `j` takes its fifth bit
//! from bit `j` of `qh[l]`.

use super::f16_at;
use super::q4_k::{min_sum, scale_min};
use super::q8_k::{BlockQ8K, QK_K};

pub const BLOCK_BYTES: usize = 176;

/// The 5-bit values of sub-blocks `2i` (low nibbles) and `2i + 1` (high).
#[inline(always)]
fn values(b: &[u8], i: usize, l: usize) -> (i32, i32) {
    let (qh, qs) = (&b[16..48], &b[48..]);
    let q = qs[32 * i + l];
    let lo = i32::from(q & 0x0F) | (i32::from((qh[l] >> (2 * i)) & 1) << 4);
    let hi = i32::from(q >> 4) | (i32::from((qh[l] >> (2 * i + 1)) & 1) << 4);
    (lo, hi)
}

/// `Σ w·x` against Q8_K activations (ggml `ggml_vec_dot_q5_K_q8_K`).
pub fn dot(w: &[u8], x: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (b, y) in w.chunks_exact(BLOCK_BYTES).zip(x) {
        let scales = &b[4..16];
        let mut sumi = 0i32;
        for i in 0..4 {
            let (mut lo, mut hi) = (0i32, 0i32);
            for l in 0..32 {
                let (vl, vh) = values(b, i, l);
                lo += vl * i32::from(y.qs[64 * i + l]);
                hi += vh * i32::from(y.qs[64 * i + 32 + l]);
            }
            let (sc_lo, _) = scale_min(2 * i, scales);
            let (sc_hi, _) = scale_min(2 * i + 1, scales);
            sumi += i32::from(sc_lo) * lo + i32::from(sc_hi) * hi;
        }
        let summ = min_sum(scales, y);
        sum += y.d * (f16_at(b, 0) * sumi as f32 - f16_at(b, 2) * summ as f32);
    }
    sum
}

pub fn dequantize(w: &[u8], out: &mut [f32]) {
    for (b, o) in w.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
        let scales = &b[4..16];
        for i in 0..4 {
            let (sc_lo, m_lo) = scale_min(2 * i, scales);
            let (sc_hi, m_hi) = scale_min(2 * i + 1, scales);
            for l in 0..32 {
                let (vl, vh) = values(b, i, l);
                o[64 * i + l] = d * f32::from(sc_lo) * vl as f32 - dmin * f32::from(m_lo);
                o[64 * i + 32 + l] = d * f32::from(sc_hi) * vh as f32 - dmin * f32::from(m_hi);
            }
        }
    }
}
