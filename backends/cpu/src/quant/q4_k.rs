//! Q4_K: 256 weights per 144-byte block (ggml `block_q4_K`): f16 `d` and
//! `dmin`, 12 bytes of 6-bit scales and minimums for the eight 32-value
//! sub-blocks, then 128 bytes of nibbles. Sub-block `j` has
//! `w = d * sc_j * q - dmin * m_j`; bytes `32i..32i+32` hold sub-block `2i`
//! in their low nibbles and `2i + 1` in their high ones.

use super::f16_at;
use super::q8_k::{BlockQ8K, QK_K};

pub const BLOCK_BYTES: usize = 144;

/// Scale and minimum of sub-block `j` from the 12 packed bytes (ggml `get_scale_min_k4`).
#[inline(always)]
pub(crate) fn scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// `Σ_j m_j Σ q_x` over the eight sub-blocks of a Q4_K/Q5_K block: the
/// minimums (from the packed scale bytes) times the activation sums, each
/// sub-block's from two `bsums`.
#[inline(always)]
pub(crate) fn min_sum(scales: &[u8], y: &BlockQ8K) -> i32 {
    (0..8)
        .map(|j| {
            let (_, m) = scale_min(j, scales);
            i32::from(m) * (i32::from(y.bsums[2 * j]) + i32::from(y.bsums[2 * j + 1]))
        })
        .sum()
}

/// `Σ w·x` of one row against Q8_K activations (ggml `ggml_vec_dot_q4_K_q8_K`):
/// `d_x (d Σ_j sc_j Σ q·q_x - dmin Σ_j m_j Σ q_x)`, the last sums from `bsums`.
pub fn dot(w: &[u8], x: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (b, y) in w.chunks_exact(BLOCK_BYTES).zip(x) {
        let (scales, qs) = (&b[4..16], &b[16..]);
        let mut sumi = 0i32;
        for i in 0..4 {
            let q = &qs[32 * i..32 * i + 32];
            let (y_lo, y_hi) = y.qs[64 * i..64 * i + 64].split_at(32);
            let lo: i32 = q
                .iter()
                .zip(y_lo)
                .map(|(&q, &a)| i32::from(q & 0x0F) * i32::from(a))
                .sum();
            let hi: i32 = q
                .iter()
                .zip(y_hi)
                .map(|(&q, &a)| i32::from(q >> 4) * i32::from(a))
                .sum();
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
        let (scales, qs) = (&b[4..16], &b[16..]);
        for i in 0..4 {
            let (sc_lo, m_lo) = scale_min(2 * i, scales);
            let (sc_hi, m_hi) = scale_min(2 * i + 1, scales);
            let (d_lo, m_lo) = (d * f32::from(sc_lo), dmin * f32::from(m_lo));
            let (d_hi, m_hi) = (d * f32::from(sc_hi), dmin * f32::from(m_hi));
            for l in 0..32 {
                let q = qs[32 * i + l];
                o[64 * i + l] = d_lo * f32::from(q & 0x0F) - m_lo;
                o[64 * i + 32 + l] = d_hi * f32::from(q >> 4) - m_hi;
            }
        }
    }
}
