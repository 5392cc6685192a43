//! Q4_K weight rows interleaved in groups of eight for decode, like
//! the 32-value types ([`super::x8`]): one activation load serves eight rows, and the
//! rows' 6-bit scales and minimums are unpacked once at load.
//!
//! A group of 8 rows of `nb` super-blocks is `nb` group blocks of
//! [`GROUP_BLOCK`] bytes: the 8 rows' f16 `d` (16 bytes) and `dmin` (16),
//! their scales as bytes, sub-block major (`sc[8j + r]`, 64 bytes), their
//! minimums likewise (64), then 32 chunks of 32 bytes where chunk `c` holds
//! bytes `4c..4c + 4` of each row's 128 nibble bytes, row after row.

use super::f16_at;
use super::q4_k::{self, scale_min};
use super::q8_k::BlockQ8K;

/// Rows per group.
pub const ROWS: usize = 8;
const D: usize = 0;
const DMIN: usize = 16;
const SCALES: usize = 32;
const MINS: usize = 96;
const QS: usize = 160;
/// Bytes of one super-block of a group.
pub const GROUP_BLOCK: usize = QS + ROWS * 128;

/// Interleaves `rows` (a multiple of 8) row-major Q4_K rows of `nb` blocks.
pub fn pack(data: &[u8], rows: usize, nb: usize) -> Vec<u8> {
    let row_bytes = nb * q4_k::BLOCK_BYTES;
    let mut out = vec![0u8; rows / ROWS * nb * GROUP_BLOCK];
    for (g, group) in out.chunks_exact_mut(nb * GROUP_BLOCK).enumerate() {
        for (i, gb) in group.chunks_exact_mut(GROUP_BLOCK).enumerate() {
            for r in 0..ROWS {
                let b = &data[(g * ROWS + r) * row_bytes + i * q4_k::BLOCK_BYTES..]
                    [..q4_k::BLOCK_BYTES];
                gb[D + 2 * r..D + 2 * r + 2].copy_from_slice(&b[0..2]);
                gb[DMIN + 2 * r..DMIN + 2 * r + 2].copy_from_slice(&b[2..4]);
                for j in 0..8 {
                    let (sc, m) = scale_min(j, &b[4..16]);
                    gb[SCALES + 8 * j + r] = sc;
                    gb[MINS + 8 * j + r] = m;
                }
                for c in 0..32 {
                    let at = QS + 32 * c + 4 * r;
                    gb[at..at + 4].copy_from_slice(&b[16 + 4 * c..16 + 4 * c + 4]);
                }
            }
        }
    }
    out
}

/// Row `r` of the group in `group`, back in plain Q4_K blocks (the 6-bit
/// scales and minimums packed again as ggml lays them out).
pub fn unpack_row(group: &[u8], r: usize, out: &mut [u8]) {
    for (gb, b) in group
        .chunks_exact(GROUP_BLOCK)
        .zip(out.chunks_exact_mut(q4_k::BLOCK_BYTES))
    {
        b[0..2].copy_from_slice(&gb[D + 2 * r..D + 2 * r + 2]);
        b[2..4].copy_from_slice(&gb[DMIN + 2 * r..DMIN + 2 * r + 2]);
        let sc = |j: usize| gb[SCALES + 8 * j + r];
        let m = |j: usize| gb[MINS + 8 * j + r];
        let s = &mut b[4..16];
        for j in 0..4 {
            s[j] = sc(j) | ((sc(j + 4) >> 4) << 6);
            s[j + 4] = m(j) | ((m(j + 4) >> 4) << 6);
            s[j + 8] = (sc(j + 4) & 0x0F) | ((m(j + 4) & 0x0F) << 4);
        }
        for c in 0..32 {
            let at = QS + 32 * c + 4 * r;
            b[16 + 4 * c..16 + 4 * c + 4].copy_from_slice(&gb[at..at + 4]);
        }
    }
}

/// The eight rows of one group against Q8_K activations: the portable
/// version of the SIMD kernel (f32 sums of each sub-block's exact integer
/// product times its scale, as the kernel forms them).
pub fn dot_group(group: &[u8], x: &[BlockQ8K]) -> [f32; ROWS] {
    let mut out = [0f32; ROWS];
    for (gb, y) in group.chunks_exact(GROUP_BLOCK).zip(x) {
        for (r, o) in out.iter_mut().enumerate() {
            let (mut blk, mut mins) = (0f32, 0f32);
            for j in 0..8 {
                // Sub-block j: nibble half j % 2 of bytes 32 (j / 2) .. + 32.
                let (p, high) = (j / 2, j % 2 == 1);
                let mut s = 0i32;
                for t in 0..32 {
                    let c = 8 * p + t / 4;
                    let q = gb[QS + 32 * c + 4 * r + t % 4];
                    let q = if high { q >> 4 } else { q & 0x0F };
                    s += i32::from(q) * i32::from(y.qs[32 * j + t]);
                }
                blk += f32::from(gb[SCALES + 8 * j + r]) * s as f32;
                let bsum = i32::from(y.bsums[2 * j]) + i32::from(y.bsums[2 * j + 1]);
                mins += f32::from(gb[MINS + 8 * j + r]) * bsum as f32;
            }
            *o += f16_at(gb, D + 2 * r) * y.d * blk - f16_at(gb, DMIN + 2 * r) * y.d * mins;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{q8_k, QK_K};

    #[test]
    fn packing_round_trips_and_products_match_the_plain_rows() {
        let nb = 2;
        let row_bytes = nb * q4_k::BLOCK_BYTES;
        let mut data: Vec<u8> = (0..16 * row_bytes).map(|i| (i * 53 % 251) as u8).collect();
        for b in data.chunks_exact_mut(q4_k::BLOCK_BYTES) {
            let d = half::f16::from_f32(0.01 + f32::from(b[7]) * 1e-4);
            let m = half::f16::from_f32(0.002 + f32::from(b[9]) * 1e-5);
            b[0..2].copy_from_slice(&d.to_le_bytes());
            b[2..4].copy_from_slice(&m.to_le_bytes());
        }
        let packed = pack(&data, 16, nb);
        let xf: Vec<f32> = (0..nb * QK_K)
            .map(|i| ((i * 11 % 23) as f32 - 11.0) / 5.0)
            .collect();
        let mut x = vec![BlockQ8K::default(); nb];
        q8_k::quantize_row(&xf, &mut x);
        let mut row = vec![0u8; row_bytes];
        for (g, group) in packed.chunks_exact(nb * GROUP_BLOCK).enumerate() {
            let got = dot_group(group, &x);
            for r in 0..ROWS {
                let plain = &data[(g * ROWS + r) * row_bytes..][..row_bytes];
                unpack_row(group, r, &mut row);
                assert_eq!(row, plain, "group {g} row {r}");
                let want = q4_k::dot(plain, &x);
                assert!(
                    (got[r] - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "{} vs {want}",
                    got[r]
                );
            }
        }
    }
}
