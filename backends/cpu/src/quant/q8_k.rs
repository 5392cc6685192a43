//! Q8_K: the activation type of the K-quants (ggml `block_q8_K`): 256
//! values per block as i8 with one f32 scale, and the sums of each 16
//! values (the K-quants' minimums multiply those instead of every value).

/// Values per K-quant super-block.
pub const QK_K: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}

impl Default for BlockQ8K {
    fn default() -> Self {
        BlockQ8K {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
        }
    }
}

/// Rounds `x` (whole blocks of 256) as ggml's `quantize_row_q8_K_ref`:
/// the value of largest magnitude maps to -127 (`iscale = -127 / max`,
/// signed), values round half to even and are clamped at 127, `d = 1 / iscale`.
pub fn quantize_row(x: &[f32], out: &mut [BlockQ8K]) {
    for (xb, yb) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            *yb = BlockQ8K::default();
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
        }
        for (s, group) in yb.bsums.iter_mut().zip(yb.qs.chunks_exact(16)) {
            *s = group.iter().map(|&q| i16::from(q)).sum();
        }
        yb.d = 1.0 / iscale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_form_block() {
        // x = j - 100 for j in 0..256: the largest magnitude is 155 (j = 255),
        // so iscale = -127 / 155 and q = round_even(-(j - 100) * 127 / 155).
        let x: Vec<f32> = (0..256).map(|j| j as f32 - 100.0).collect();
        let mut out = [BlockQ8K::default()];
        quantize_row(&x, &mut out);
        let iscale = -127.0f32 / 155.0;
        assert_eq!(out[0].d, 1.0 / iscale);
        assert_eq!(out[0].qs[255], -127);
        assert_eq!(out[0].qs[100], 0);
        assert_eq!(out[0].qs[0], (iscale * -100.0).round_ties_even() as i8);
        let first: i16 = out[0].qs[..16].iter().map(|&q| i16::from(q)).sum();
        assert_eq!(out[0].bsums[0], first);
        let mut zeros = [BlockQ8K::default()];
        quantize_row(&[0.0; 256], &mut zeros);
        assert_eq!(zeros[0], BlockQ8K::default());
    }
}
