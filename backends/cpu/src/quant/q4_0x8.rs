//! Q4_0 weight rows interleaved in groups of eight, for decode (after
//! llama.cpp's CPU "repack"): one activation block, its scale and its sum
//! serve eight weight rows at once, and the eight row scales convert in one
//! instruction.
//!
//! A group of 8 rows of `nb` blocks is `nb` group blocks of [`GROUP_BLOCK`]
//! bytes: the 8 rows' f16 scales, then 4 chunks of 32 bytes where chunk `c`
//! holds bytes `4c..4c + 4` of each row's 16 nibble bytes, row after row.
//! A byte holds element `j` (low nibble) and `j + 16` (high), as in Q4_0.
//!
//! Products use the unsigned nibbles: `Σ (q - 8) y = Σ q y - 8 Σ y`, with
//! `Σ y` of each activation block computed once per product.

use super::{f16_at, q4_0, BlockQ8};

/// Rows per group.
pub const ROWS: usize = 8;
/// Bytes of one block of a group (8 rows' scales and nibbles).
pub const GROUP_BLOCK: usize = ROWS * q4_0::BLOCK_BYTES;

/// Interleaves `rows` (a multiple of 8) row-major Q4_0 rows of `nb` blocks.
pub fn pack(data: &[u8], rows: usize, nb: usize) -> Vec<u8> {
    let row_bytes = nb * q4_0::BLOCK_BYTES;
    let mut out = vec![0u8; rows * row_bytes];
    for (g, group) in out.chunks_exact_mut(nb * GROUP_BLOCK).enumerate() {
        for (i, gb) in group.chunks_exact_mut(GROUP_BLOCK).enumerate() {
            for r in 0..ROWS {
                let b = &data[(g * ROWS + r) * row_bytes + i * q4_0::BLOCK_BYTES..]
                    [..q4_0::BLOCK_BYTES];
                gb[2 * r..2 * r + 2].copy_from_slice(&b[..2]);
                for c in 0..4 {
                    let at = 2 * ROWS + 32 * c + 4 * r;
                    gb[at..at + 4].copy_from_slice(&b[2 + 4 * c..2 + 4 * c + 4]);
                }
            }
        }
    }
    out
}

/// Row `r` (of the group that `group` holds) back in plain Q4_0 blocks.
pub fn unpack_row(group: &[u8], r: usize, out: &mut [u8]) {
    for (gb, b) in group
        .chunks_exact(GROUP_BLOCK)
        .zip(out.chunks_exact_mut(q4_0::BLOCK_BYTES))
    {
        b[..2].copy_from_slice(&gb[2 * r..2 * r + 2]);
        for c in 0..4 {
            let at = 2 * ROWS + 32 * c + 4 * r;
            b[2 + 4 * c..2 + 4 * c + 4].copy_from_slice(&gb[at..at + 4]);
        }
    }
}

/// `Σ q` of each activation block (the `8 Σ y` correction of every row).
pub fn block_sums(x: &[BlockQ8]) -> Vec<i32> {
    x.iter()
        .map(|b| b.qs.iter().map(|&q| i32::from(q)).sum())
        .collect()
}

/// The eight rows of one group against Q8_0 activations: the portable
/// version of the SIMD kernel, with the same arithmetic (exact integer sums
/// per block, then one f32 multiply-add by `d_w * d_x`).
pub fn dot_group(group: &[u8], x: &[BlockQ8], sums: &[i32]) -> [f32; ROWS] {
    let mut acc = [0f32; ROWS];
    for ((gb, y), &ysum) in group.chunks_exact(GROUP_BLOCK).zip(x).zip(sums) {
        for (r, a) in acc.iter_mut().enumerate() {
            let mut sumi = 0i32;
            for c in 0..4 {
                for k in 0..4 {
                    let q = gb[2 * ROWS + 32 * c + 4 * r + k];
                    let j = 4 * c + k;
                    sumi += i32::from(q & 0x0F) * i32::from(y.qs[j])
                        + i32::from(q >> 4) * i32::from(y.qs[j + 16]);
                }
            }
            *a += f16_at(gb, 2 * r) * y.d * (sumi - 8 * ysum) as f32;
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{quantize_row, QK};

    #[test]
    fn packing_round_trips_and_products_match_the_plain_rows() {
        let nb = 3;
        let row_bytes = nb * q4_0::BLOCK_BYTES;
        // Deterministic bytes with small f16 scales at the front of each block.
        let mut data: Vec<u8> = (0..16 * row_bytes).map(|i| (i * 37 % 251) as u8).collect();
        for b in data.chunks_exact_mut(q4_0::BLOCK_BYTES) {
            let d = half::f16::from_f32(0.01 + f32::from(b[5]) * 1e-4);
            b[..2].copy_from_slice(&d.to_le_bytes());
        }
        let packed = pack(&data, 16, nb);
        let x: Vec<f32> = (0..nb * QK)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 3.0)
            .collect();
        let mut q = vec![BlockQ8::default(); nb];
        quantize_row(&x, &mut q);
        let sums = block_sums(&q);
        let mut row = vec![0u8; row_bytes];
        for (g, group) in packed.chunks_exact(nb * GROUP_BLOCK).enumerate() {
            let got = dot_group(group, &q, &sums);
            for r in 0..ROWS {
                let plain = &data[(g * ROWS + r) * row_bytes..][..row_bytes];
                unpack_row(group, r, &mut row);
                assert_eq!(row, plain, "group {g} row {r}");
                let want = q4_0::dot(plain, &q);
                assert!(
                    (got[r] - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "{} vs {want}",
                    got[r]
                );
            }
        }
    }
}
