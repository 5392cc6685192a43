//! Activation rounding: f32 rows to Q8 blocks, as ggml's `quantize_row_q8_0`
//! and `quantize_row_q8_1` do before every quantised product.

use half::f16;

/// Values per block of every 32-wide format (Q4_0, Q4_1, Q8_0, Q8_1).
pub const QK: usize = 32;

/// One block of 32 activations rounded to i8.
///
/// It serves as both of ggml's activation types: Q8_0 uses `d` and `qs`;
/// Q8_1 (the Q4_1 companion) also uses `s = d * Σ qs`. ggml stores `d` and
/// `s` as f16; they are kept here as the f32 values of those f16s (same
/// numbers, no conversion in the hot loop).
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ8 {
    pub d: f32,
    pub s: f32,
    pub qs: [i8; QK],
}

impl Default for BlockQ8 {
    fn default() -> Self {
        BlockQ8 {
            d: 0.0,
            s: 0.0,
            qs: [0; QK],
        }
    }
}

/// Four rows of Q8 blocks, with their scales also laid out block by block
/// (`d[i]` holds the `d` of block `i` of the four rows, `s[i]` their `s`),
/// so a SIMD kernel gets the four scales of a block in one load.
#[derive(Debug, Clone, Copy)]
pub struct Q8x4<'a> {
    pub rows: [&'a [BlockQ8]; 4],
    pub d: &'a [[f32; 4]],
    pub s: &'a [[f32; 4]],
}

/// `d` and `s` of four rows, block by block (see [`Q8x4`]).
pub type Scales4 = (Vec<[f32; 4]>, Vec<[f32; 4]>);

/// The block-by-block scales of four rows of `nb` blocks, for [`Q8x4`].
pub fn interleave_scales(rows: [&[BlockQ8]; 4], nb: usize) -> Scales4 {
    (0..nb)
        .map(|i| (rows.map(|r| r[i].d), rows.map(|r| r[i].s)))
        .unzip()
}

/// Rounds `x` (a whole number of blocks) into `out` (`x.len() / 32` blocks):
/// `d = max|x| / 127`, `q = round(x / d)` (half away from zero, like C's
/// `roundf`), `d` and `d * Σq` rounded to f16.
///
/// The reference for the SIMD versions ([`crate::simd::Kernels::quantize_q8`]),
/// which give the same bits.
pub fn quantize_row(x: &[f32], out: &mut [BlockQ8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            *q = round_half_away(v * id) as i8;
        }
        let sum: i32 = yb.qs.iter().map(|&q| i32::from(q)).sum();
        yb.d = f16::from_f32(d).to_f32();
        yb.s = f16::from_f32(d * sum as f32).to_f32();
    }
}

/// `v` rounded half away from zero, as `f32::round` (C's `roundf`), the
/// way the SIMD versions do it (`f32::round` is a libm call per value):
/// `v - trunc(v)` is exact, so the comparison with 0.5 decides ties exactly.
#[inline]
fn round_half_away(v: f32) -> f32 {
    let t = v.trunc();
    if (v - t).abs() >= 0.5 {
        t + 1f32.copysign(v)
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_equals_roundf() {
        let below_half = 0.5f32 - f32::EPSILON / 4.0;
        let mut values = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            126.5,
            -126.5,
            127.0,
            below_half,
            -below_half,
            1.0 + f32::EPSILON,
            8388607.5,
            -8388607.5,
            1e9,
            -1e9,
        ];
        let mut state = 12345u32;
        for _ in 0..100_000 {
            state = state.wrapping_mul(1664525).wrapping_add(1013904223);
            values.push((state >> 8) as f32 / (1 << 24) as f32 * 300.0 - 150.0);
        }
        for v in values {
            assert_eq!(round_half_away(v).to_bits(), v.round().to_bits(), "{v}");
        }
    }

    #[test]
    fn closed_form_block() {
        // x = (j - 16) / 8 for j in 0..32: max |x| = 2, d = 2/127,
        // q = round((j - 16) * 127 / 16).
        let x: Vec<f32> = (0..32).map(|j| (j as f32 - 16.0) / 8.0).collect();
        let mut out = [BlockQ8::default()];
        quantize_row(&x, &mut out);
        let b = out[0];
        assert_eq!(b.d, f16::from_f32(2.0 / 127.0).to_f32());
        let want: Vec<i8> = (0..32)
            .map(|j| ((j as f32 - 16.0) * 127.0 / 16.0).round() as i8)
            .collect();
        assert_eq!(b.qs.to_vec(), want);
        assert_eq!(b.qs[0], -127);
        assert_eq!(b.qs[16], 0);
        // x is antisymmetric around j = 16 except for j = 0 (-2 -> -127): Σq = -127.
        let sum: i32 = want.iter().map(|&q| i32::from(q)).sum();
        assert_eq!(sum, -127);
        assert_eq!(b.s, f16::from_f32(2.0 / 127.0 * -127.0).to_f32());
    }

    #[test]
    fn zeros_and_halves_round_like_roundf() {
        let mut out = [BlockQ8::default(); 2];
        let mut x = vec![0f32; 64];
        // Second block: max 127 so d = 1 and x/d is exact; 0.5 and -2.5 round away from zero.
        x[32] = 127.0;
        x[33] = 0.5;
        x[34] = -2.5;
        quantize_row(&x, &mut out);
        assert_eq!(out[0].d, 0.0);
        assert_eq!(out[0].qs, [0; 32]);
        assert_eq!(out[0].s, 0.0);
        assert_eq!(out[1].d, 1.0);
        assert_eq!(&out[1].qs[..3], &[127, 1, -3]);
        assert_eq!(out[1].s, 125.0);
    }
}
