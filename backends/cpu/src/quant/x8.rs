//! Rows of a 32-value block type (Q4_0, Q8_0) interleaved in groups of
//! eight, for decode and prompts (after llama.cpp's CPU "repack"): one
//! activation block and its scale serve eight weight rows at once, and the
//! eight row scales convert in one instruction.
//!
//! A group of 8 rows of `nb` blocks is `nb` group blocks of
//! [`group_block`] bytes: the 8 rows' f16 scales, then chunks of 32 bytes
//! where chunk `c` holds bytes `4c..4c + 4` of each row's data bytes (16
//! nibble bytes for Q4_0: element `j` low, `j + 16` high; 32 i8 for Q8_0),
//! row after row.
//!
//! Q4_0 products use the unsigned nibbles: `Σ (q - 8) y = Σ q y - 8 Σ y`,
//! with `Σ y` of each activation block computed once per product.

use super::{f16_at, q4_0, q8_0, BlockQ8};

/// Rows per group.
pub const ROWS: usize = 8;

/// Bytes of one block of a group of a type with `block_bytes`-byte blocks.
pub const fn group_block(block_bytes: usize) -> usize {
    ROWS * block_bytes
}

/// Offset of row `r`'s bytes of chunk `c` in a group block.
const fn chunk_at(c: usize, r: usize) -> usize {
    2 * ROWS + 32 * c + 4 * r
}

/// Interleaves `rows` (a multiple of 8) row-major rows of `nb` blocks of
/// `block_bytes` bytes (an f16 scale, then the data).
pub fn pack(data: &[u8], rows: usize, nb: usize, block_bytes: usize) -> Vec<u8> {
    let row_bytes = nb * block_bytes;
    let chunks = (block_bytes - 2) / 4;
    let mut out = vec![0u8; rows * row_bytes];
    for (g, group) in out
        .chunks_exact_mut(nb * group_block(block_bytes))
        .enumerate()
    {
        for (i, gb) in group.chunks_exact_mut(group_block(block_bytes)).enumerate() {
            for r in 0..ROWS {
                let b = &data[(g * ROWS + r) * row_bytes + i * block_bytes..][..block_bytes];
                gb[2 * r..2 * r + 2].copy_from_slice(&b[..2]);
                for c in 0..chunks {
                    gb[chunk_at(c, r)..][..4].copy_from_slice(&b[2 + 4 * c..2 + 4 * c + 4]);
                }
            }
        }
    }
    out
}

/// Row `r` (of the group that `group` holds) back in plain blocks.
pub fn unpack_row(group: &[u8], r: usize, block_bytes: usize, out: &mut [u8]) {
    let chunks = (block_bytes - 2) / 4;
    for (gb, b) in group
        .chunks_exact(group_block(block_bytes))
        .zip(out.chunks_exact_mut(block_bytes))
    {
        b[..2].copy_from_slice(&gb[2 * r..2 * r + 2]);
        for c in 0..chunks {
            b[2 + 4 * c..2 + 4 * c + 4].copy_from_slice(&gb[chunk_at(c, r)..][..4]);
        }
    }
}

/// `Σ q` of each activation block (the `8 Σ y` correction of Q4_0 rows).
pub fn block_sums(x: &[BlockQ8]) -> Vec<i32> {
    x.iter()
        .map(|b| b.qs.iter().map(|&q| i32::from(q)).sum())
        .collect()
}

/// Eight interleaved Q4_0 rows against Q8_0 activations: the portable
/// version of the SIMD kernel, with the same arithmetic (exact integer sums
/// per block, then one f32 multiply-add by `d_w * d_x`).
pub fn dot_group_q4_0(group: &[u8], x: &[BlockQ8], sums: &[i32]) -> [f32; ROWS] {
    let mut acc = [0f32; ROWS];
    let gb_len = group_block(q4_0::BLOCK_BYTES);
    for ((gb, y), &ysum) in group.chunks_exact(gb_len).zip(x).zip(sums) {
        for (r, a) in acc.iter_mut().enumerate() {
            let mut sumi = 0i32;
            for c in 0..4 {
                for k in 0..4 {
                    let q = gb[chunk_at(c, r) + k];
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

/// Eight interleaved Q8_0 rows against Q8_0 activations (portable version).
pub fn dot_group_q8_0(group: &[u8], x: &[BlockQ8]) -> [f32; ROWS] {
    let mut acc = [0f32; ROWS];
    let gb_len = group_block(q8_0::BLOCK_BYTES);
    for (gb, y) in group.chunks_exact(gb_len).zip(x) {
        for (r, a) in acc.iter_mut().enumerate() {
            let mut sumi = 0i32;
            for c in 0..8 {
                for k in 0..4 {
                    let q = gb[chunk_at(c, r) + k] as i8;
                    sumi += i32::from(q) * i32::from(y.qs[4 * c + k]);
                }
            }
            *a += f16_at(gb, 2 * r) * y.d * sumi as f32;
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{quantize_row, QK};

    #[test]
    fn q4_0_packing_round_trips_and_products_match_the_plain_rows() {
        let nb = 3;
        let row_bytes = nb * q4_0::BLOCK_BYTES;
        // Deterministic bytes with small f16 scales at the front of each block.
        let mut data: Vec<u8> = (0..16 * row_bytes).map(|i| (i * 37 % 251) as u8).collect();
        for b in data.chunks_exact_mut(q4_0::BLOCK_BYTES) {
            let d = half::f16::from_f32(0.01 + f32::from(b[5]) * 1e-4);
            b[..2].copy_from_slice(&d.to_le_bytes());
        }
        let packed = pack(&data, 16, nb, q4_0::BLOCK_BYTES);
        let x: Vec<f32> = (0..nb * QK)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 3.0)
            .collect();
        let mut q = vec![BlockQ8::default(); nb];
        quantize_row(&x, &mut q);
        let sums = block_sums(&q);
        let mut row = vec![0u8; row_bytes];
        for (g, group) in packed
            .chunks_exact(nb * group_block(q4_0::BLOCK_BYTES))
            .enumerate()
        {
            let got = dot_group_q4_0(group, &q, &sums);
            for r in 0..ROWS {
                let plain = &data[(g * ROWS + r) * row_bytes..][..row_bytes];
                unpack_row(group, r, q4_0::BLOCK_BYTES, &mut row);
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

    #[test]
    fn q8_0_packing_round_trips_and_products_match_the_plain_rows() {
        let nb = 2;
        let row_bytes = nb * q8_0::BLOCK_BYTES;
        let mut data: Vec<u8> = (0..8 * row_bytes).map(|i| (i * 29 % 253) as u8).collect();
        for b in data.chunks_exact_mut(q8_0::BLOCK_BYTES) {
            let d = half::f16::from_f32(0.01 + f32::from(b[3]) * 1e-4);
            b[..2].copy_from_slice(&d.to_le_bytes());
            for q in &mut b[2..] {
                *q = (*q as i8).max(-127) as u8;
            }
        }
        let packed = pack(&data, 8, nb, q8_0::BLOCK_BYTES);
        let x: Vec<f32> = (0..nb * QK)
            .map(|i| ((i * 5 % 17) as f32 - 8.0) / 2.0)
            .collect();
        let mut q = vec![BlockQ8::default(); nb];
        quantize_row(&x, &mut q);
        let got = dot_group_q8_0(&packed, &q);
        let mut row = vec![0u8; row_bytes];
        for r in 0..ROWS {
            let plain = &data[r * row_bytes..][..row_bytes];
            unpack_row(&packed, r, q8_0::BLOCK_BYTES, &mut row);
            assert_eq!(row, plain, "row {r}");
            let want = q8_0::dot(plain, &q);
            assert!(
                (got[r] - want).abs() <= 1e-4 * (1.0 + want.abs()),
                "{} vs {want}",
                got[r]
            );
        }
    }
}
