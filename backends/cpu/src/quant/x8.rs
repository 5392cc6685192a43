//! Rows of a 32-value block type (Q4_0, Q4_1, Q8_0) interleaved in groups
//! of eight, for decode and prompts (after llama.cpp's CPU "repack"): one
//! activation block and its scale serve eight weight rows at once, and the
//! eight row scales convert in one instruction.
//!
//! A group of 8 rows of `nb` blocks is `nb` group blocks of
//! [`group_block`] bytes: for each f16 at the front of a block (`d`; `d`
//! then `m` for Q4_1), the 8 rows' values; then chunks of 32 bytes where
//! chunk `c` holds bytes `4c..4c + 4` of each row's data bytes (16 nibble
//! bytes for Q4_0/Q4_1: element `j` low, `j + 16` high; 32 i8 for Q8_0),
//! row after row.
//!
//! Q4_0 products use the unsigned nibbles: `Σ (q - 8) y = Σ q y - 8 Σ y`,
//! with `Σ y` of each activation block computed once per product. Q4_1
//! products are `d_w d_x Σ q y + m_w s_x` (`s_x = d_x Σ y`, carried by the
//! activation block).

use rbees_core::WeightDType;

use super::{f16_at, q4_0, q4_1, q8_0, BlockQ8};

/// Rows per group.
pub const ROWS: usize = 8;

/// A block type as the layout sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Format {
    /// Bytes of one block.
    pub block_bytes: usize,
    /// f16 values at the front of a block (the rest are data bytes).
    pub halves: usize,
    /// Whether products undo an offset of the stored values with the
    /// activation blocks' sums (Q4_0's unsigned nibbles).
    pub block_sums: bool,
}

pub const Q4_0: Format = Format {
    block_bytes: q4_0::BLOCK_BYTES,
    halves: 1,
    block_sums: true,
};
pub const Q4_1: Format = Format {
    block_bytes: q4_1::BLOCK_BYTES,
    halves: 2,
    block_sums: false,
};
pub const Q8_0: Format = Format {
    block_bytes: q8_0::BLOCK_BYTES,
    halves: 1,
    block_sums: false,
};

/// The layout of `dtype`, if its matrices are interleaved.
pub const fn format(dtype: WeightDType) -> Option<Format> {
    match dtype {
        WeightDType::Q4_0 => Some(Q4_0),
        WeightDType::Q4_1 => Some(Q4_1),
        WeightDType::Q8_0 => Some(Q8_0),
        _ => None,
    }
}

/// Bytes of one block of a group of a type with `block_bytes`-byte blocks.
pub const fn group_block(block_bytes: usize) -> usize {
    ROWS * block_bytes
}

impl Format {
    /// Offset of row `r`'s bytes of chunk `c` in a group block.
    const fn chunk_at(self, c: usize, r: usize) -> usize {
        2 * ROWS * self.halves + 32 * c + 4 * r
    }

    /// Offset of row `r`'s f16 number `h` in a group block.
    const fn half_at(self, h: usize, r: usize) -> usize {
        2 * (ROWS * h + r)
    }

    /// 4-byte chunks of data in a block.
    const fn chunks(self) -> usize {
        (self.block_bytes - 2 * self.halves) / 4
    }
}

/// Interleaves `rows` (a multiple of 8) row-major rows of `nb` blocks.
pub fn pack(data: &[u8], rows: usize, nb: usize, f: Format) -> Vec<u8> {
    let row_bytes = nb * f.block_bytes;
    let mut out = vec![0u8; rows * row_bytes];
    for (g, group) in out
        .chunks_exact_mut(nb * group_block(f.block_bytes))
        .enumerate()
    {
        for (i, gb) in group
            .chunks_exact_mut(group_block(f.block_bytes))
            .enumerate()
        {
            for r in 0..ROWS {
                let b = &data[(g * ROWS + r) * row_bytes + i * f.block_bytes..][..f.block_bytes];
                for h in 0..f.halves {
                    gb[f.half_at(h, r)..][..2].copy_from_slice(&b[2 * h..2 * h + 2]);
                }
                let body = &b[2 * f.halves..];
                for c in 0..f.chunks() {
                    gb[f.chunk_at(c, r)..][..4].copy_from_slice(&body[4 * c..4 * c + 4]);
                }
            }
        }
    }
    out
}

/// Row `r` (of the group that `group` holds) back in plain blocks.
pub fn unpack_row(group: &[u8], r: usize, f: Format, out: &mut [u8]) {
    for (gb, b) in group
        .chunks_exact(group_block(f.block_bytes))
        .zip(out.chunks_exact_mut(f.block_bytes))
    {
        for h in 0..f.halves {
            b[2 * h..2 * h + 2].copy_from_slice(&gb[f.half_at(h, r)..][..2]);
        }
        let body = &mut b[2 * f.halves..];
        for c in 0..f.chunks() {
            body[4 * c..4 * c + 4].copy_from_slice(&gb[f.chunk_at(c, r)..][..4]);
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
            let sumi = nibble_sum(Q4_0, gb, r, y);
            *a += f16_at(gb, Q4_0.half_at(0, r)) * y.d * (sumi - 8 * ysum) as f32;
        }
    }
    acc
}

/// `Σ q y` of row `r`'s nibbles in a Q4_0 or Q4_1 group block.
fn nibble_sum(f: Format, gb: &[u8], r: usize, y: &BlockQ8) -> i32 {
    let mut sumi = 0i32;
    for c in 0..4 {
        for k in 0..4 {
            let q = gb[f.chunk_at(c, r) + k];
            let j = 4 * c + k;
            sumi += i32::from(q & 0x0F) * i32::from(y.qs[j])
                + i32::from(q >> 4) * i32::from(y.qs[j + 16]);
        }
    }
    sumi
}

/// Eight interleaved Q4_1 rows against Q8_1 activations (portable version
/// of the SIMD kernel: `d_w d_x Σ q y`, then `m_w s_x`, added per block).
pub fn dot_group_q4_1(group: &[u8], x: &[BlockQ8]) -> [f32; ROWS] {
    let mut acc = [0f32; ROWS];
    let gb_len = group_block(q4_1::BLOCK_BYTES);
    for (gb, y) in group.chunks_exact(gb_len).zip(x) {
        for (r, a) in acc.iter_mut().enumerate() {
            let sumi = nibble_sum(Q4_1, gb, r, y);
            let (d, m) = (
                f16_at(gb, Q4_1.half_at(0, r)),
                f16_at(gb, Q4_1.half_at(1, r)),
            );
            *a += d * y.d * sumi as f32;
            *a += m * y.s;
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
                    let q = gb[Q8_0.chunk_at(c, r) + k] as i8;
                    sumi += i32::from(q) * i32::from(y.qs[4 * c + k]);
                }
            }
            *a += f16_at(gb, Q8_0.half_at(0, r)) * y.d * sumi as f32;
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{quantize_row, QK};

    /// A group product with the activation blocks' sums (unused but by Q4_0).
    type GroupDot = fn(&[u8], &[BlockQ8], &[i32]) -> [f32; 8];

    /// Packs 16 rows of 3 blocks of deterministic bytes (`prepare` makes
    /// each block valid for its type), then checks that every row unpacks
    /// to its plain bytes and that the group product gives the plain rows'
    /// one-row products.
    fn packing_round_trips(
        format: Format,
        prepare: fn(&mut [u8]),
        plain_dot: fn(&[u8], &[BlockQ8]) -> f32,
        group_dot: GroupDot,
    ) {
        let (nb, rows) = (3, 16);
        let row_bytes = nb * format.block_bytes;
        let mut data: Vec<u8> = (0..rows * row_bytes)
            .map(|i| (i * 37 % 251) as u8)
            .collect();
        data.chunks_exact_mut(format.block_bytes).for_each(prepare);
        let packed = pack(&data, rows, nb, format);
        let x: Vec<f32> = (0..nb * QK)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 3.0)
            .collect();
        let mut q = vec![BlockQ8::default(); nb];
        quantize_row(&x, &mut q);
        let sums = if format.block_sums {
            block_sums(&q)
        } else {
            Vec::new()
        };
        let mut row = vec![0u8; row_bytes];
        for (g, group) in packed
            .chunks_exact(nb * group_block(format.block_bytes))
            .enumerate()
        {
            let got = group_dot(group, &q, &sums);
            for r in 0..ROWS {
                let plain = &data[(g * ROWS + r) * row_bytes..][..row_bytes];
                unpack_row(group, r, format, &mut row);
                assert_eq!(row, plain, "{format:?} group {g} row {r}");
                let want = plain_dot(plain, &q);
                assert!(
                    (got[r] - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "{format:?}: {} vs {want}",
                    got[r]
                );
            }
        }
    }

    /// Small positive f16 scale from a byte of the block.
    fn scale_from(b: &mut [u8], at: usize) {
        let d = half::f16::from_f32(0.01 + f32::from(b[at]) * 1e-4);
        b[..2].copy_from_slice(&d.to_le_bytes());
    }

    #[test]
    fn q4_0_packing_round_trips_and_products_match_the_plain_rows() {
        packing_round_trips(Q4_0, |b| scale_from(b, 5), q4_0::dot, dot_group_q4_0);
    }

    #[test]
    fn q4_1_packing_round_trips_and_products_match_the_plain_rows() {
        packing_round_trips(
            Q4_1,
            |b| {
                scale_from(b, 5);
                let m = half::f16::from_f32(-0.1 + f32::from(b[7]) * 1e-4);
                b[2..4].copy_from_slice(&m.to_le_bytes());
            },
            q4_1::dot,
            |g, x, _| dot_group_q4_1(g, x),
        );
    }

    #[test]
    fn q8_0_packing_round_trips_and_products_match_the_plain_rows() {
        packing_round_trips(
            Q8_0,
            |b| {
                scale_from(b, 3);
                // ggml's Q8_0 weights never hold -128.
                for q in &mut b[2..] {
                    *q = (*q as i8).max(-127) as u8;
                }
            },
            q8_0::dot,
            |g, x, _| dot_group_q8_0(g, x),
        );
    }
}
