//! Dot-product kernels picked once per backend: AVX2/FMA/F16C when the CPU
//! has them (checked at run time, so one binary runs everywhere), otherwise
//! the portable scalar code of [`crate::quant`].

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_k;
#[cfg(target_arch = "x86_64")]
mod avx2_x8;

use crate::quant::{self, x8, BlockQ8, BlockQ8K, Q8x4};

/// One row of quantised weight bytes against Q8 activation blocks.
pub type QuantDot = fn(&[u8], &[BlockQ8]) -> f32;
/// Consecutive weight rows (`row_bytes` each) against one row of Q8
/// activations, one result per row in `out` (decode: the row loop runs
/// inside the SIMD code, without a call per row).
pub type QuantRows = fn(&[u8], usize, &[BlockQ8], &mut [f32]);
/// One row of quantised weight bytes against four rows of Q8 activations:
/// the weight blocks are unpacked once for all four (prompt processing).
pub type QuantDot4 = fn(&[u8], &Q8x4<'_>) -> [f32; 4];
/// One row of quantised weight bytes against two groups of four rows.
pub type QuantDot8 = fn(&[u8], &Q8x4<'_>, &Q8x4<'_>) -> [f32; 8];
/// Groups of eight interleaved Q4_0, Q4_1 or Q8_0 rows (see
/// [`crate::quant::x8`]) against one row of Q8 activations and their block
/// sums (which only Q4_0 uses); eight results per group (decode).
pub type X8Rows = fn(&[u8], &[BlockQ8], &[i32], &mut [f32]);
/// Groups of eight interleaved Q4_K rows (see [`crate::quant::q4_kx8`])
/// against one row of Q8_K activations; eight results per group (decode).
pub type Q4Kx8Rows = fn(&[u8], &[BlockQ8K], &mut [f32]);
/// One group of eight interleaved Q4_0, Q4_1 or Q8_0 rows against four
/// activation rows and their block sums (prompts): eight results per
/// activation row.
pub type X8Four = fn(&[u8], [&[BlockQ8]; 4], [&[i32]; 4]) -> [[f32; 8]; 4];
/// One group of eight interleaved Q4_K rows against four activation rows.
pub type Q4Kx8Four = fn(&[u8], [&[BlockQ8K]; 4]) -> [[f32; 8]; 4];
/// One row of K-quant weight bytes against Q8_K activation blocks.
pub type KQuantDot = fn(&[u8], &[BlockQ8K]) -> f32;
/// Consecutive K-quant weight rows (`row_bytes` each) against one row of
/// Q8_K activations (decode).
pub type KQuantRows = fn(&[u8], usize, &[BlockQ8K], &mut [f32]);
/// One K-quant weight row against four rows of Q8_K activations (prompt).
pub type KQuantDot4 = fn(&[u8], [&[BlockQ8K]; 4]) -> [f32; 4];
/// One row of half-precision weight bytes against f32 activations.
pub type HalfDot = fn(&[u8], &[f32]) -> f32;
/// Two f32 rows.
pub type F32Dot = fn(&[f32], &[f32]) -> f32;
/// f32 activations (whole blocks) rounded to Q8 blocks, as
/// [`crate::quant::quantize_row`] (bit for bit).
pub type QuantizeQ8 = fn(&[f32], &mut [BlockQ8]);

/// The dot products a backend uses; every slot has the same contract as
/// the scalar function of the same name in [`crate::quant`].
///
/// Batch invariance: a slot that takes several activation rows (`*_x4`,
/// `*_x8`) gives each row bit for bit what the one-row slot of the same
/// weights (`q4_0`, `q4_0_rows`, `q4_0x8_rows`, ...) gives it, so a
/// sequence's results do not depend on the other sequences of a batch.
#[derive(Clone, Copy)]
pub struct Kernels {
    pub name: &'static str,
    pub quantize_q8: QuantizeQ8,
    pub q4_0: QuantDot,
    pub q4_1: QuantDot,
    pub q8_0: QuantDot,
    pub q4_0_rows: QuantRows,
    pub q4_1_rows: QuantRows,
    pub q8_0_rows: QuantRows,
    pub q4_0_x8: QuantDot8,
    pub q4_1_x8: QuantDot8,
    pub q8_0_x8: QuantDot8,
    pub q4_0_x4: QuantDot4,
    pub q4_1_x4: QuantDot4,
    pub q8_0_x4: QuantDot4,
    pub q4_0x8_rows: X8Rows,
    pub q4_1x8_rows: X8Rows,
    pub q8_0x8_rows: X8Rows,
    pub q4_kx8_rows: Q4Kx8Rows,
    pub q4_0x8_x4: X8Four,
    pub q4_1x8_x4: X8Four,
    pub q8_0x8_x4: X8Four,
    pub q4_kx8_x4: Q4Kx8Four,
    pub q5_0: QuantDot,
    pub q5_1: QuantDot,
    pub q5_0_rows: QuantRows,
    pub q5_1_rows: QuantRows,
    pub q5_0_x8: QuantDot8,
    pub q5_1_x8: QuantDot8,
    pub q5_0_x4: QuantDot4,
    pub q5_1_x4: QuantDot4,
    pub q4_k: KQuantDot,
    pub q5_k: KQuantDot,
    pub q6_k: KQuantDot,
    pub q4_k_rows: KQuantRows,
    pub q5_k_rows: KQuantRows,
    pub q6_k_rows: KQuantRows,
    pub q4_k_x4: KQuantDot4,
    pub q5_k_x4: KQuantDot4,
    pub q6_k_x4: KQuantDot4,
    pub f32: F32Dot,
    pub f16: HalfDot,
    pub bf16: HalfDot,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Kernels {
    /// The portable scalar kernels.
    pub fn scalar() -> Self {
        Kernels {
            name: "scalar",
            quantize_q8: quant::quantize_row,
            q4_0: quant::q4_0::dot,
            q4_1: quant::q4_1::dot,
            q8_0: quant::q8_0::dot,
            q4_0_rows: |w, rb, x, out| rows_with(quant::q4_0::dot, w, rb, x, out),
            q4_1_rows: |w, rb, x, out| rows_with(quant::q4_1::dot, w, rb, x, out),
            q8_0_rows: |w, rb, x, out| rows_with(quant::q8_0::dot, w, rb, x, out),
            q4_0_x8: |w, x, y| eight_with(quant::q4_0::dot, w, x, y),
            q4_1_x8: |w, x, y| eight_with(quant::q4_1::dot, w, x, y),
            q8_0_x8: |w, x, y| eight_with(quant::q8_0::dot, w, x, y),
            q4_0_x4: |w, x| x.rows.map(|x| quant::q4_0::dot(w, x)),
            q4_1_x4: |w, x| x.rows.map(|x| quant::q4_1::dot(w, x)),
            q8_0_x4: |w, x| x.rows.map(|x| quant::q8_0::dot(w, x)),
            q4_0x8_rows: |w, x, sums, out| {
                let group_bytes = x.len() * x8::group_block(quant::q4_0::BLOCK_BYTES);
                each_group(w, group_bytes, out, |g| x8::dot_group_q4_0(g, x, sums));
            },
            q4_1x8_rows: |w, x, _, out| {
                let group_bytes = x.len() * x8::group_block(quant::q4_1::BLOCK_BYTES);
                each_group(w, group_bytes, out, |g| x8::dot_group_q4_1(g, x));
            },
            q8_0x8_rows: |w, x, _, out| {
                let group_bytes = x.len() * x8::group_block(quant::q8_0::BLOCK_BYTES);
                each_group(w, group_bytes, out, |g| x8::dot_group_q8_0(g, x));
            },
            q4_kx8_rows: |w, x, out| {
                let group_bytes = x.len() * quant::q4_kx8::GROUP_BLOCK;
                each_group(w, group_bytes, out, |g| quant::q4_kx8::dot_group(g, x));
            },
            q4_0x8_x4: |g, x, sums| [0, 1, 2, 3].map(|r| x8::dot_group_q4_0(g, x[r], sums[r])),
            q4_1x8_x4: |g, x, _| x.map(|x| x8::dot_group_q4_1(g, x)),
            q8_0x8_x4: |g, x, _| x.map(|x| x8::dot_group_q8_0(g, x)),
            q4_kx8_x4: |g, x| x.map(|x| quant::q4_kx8::dot_group(g, x)),
            q5_0: quant::q5_0::dot,
            q5_1: quant::q5_1::dot,
            q5_0_rows: |w, rb, x, out| rows_with(quant::q5_0::dot, w, rb, x, out),
            q5_1_rows: |w, rb, x, out| rows_with(quant::q5_1::dot, w, rb, x, out),
            q5_0_x8: |w, x, y| eight_with(quant::q5_0::dot, w, x, y),
            q5_1_x8: |w, x, y| eight_with(quant::q5_1::dot, w, x, y),
            q5_0_x4: |w, x| x.rows.map(|x| quant::q5_0::dot(w, x)),
            q5_1_x4: |w, x| x.rows.map(|x| quant::q5_1::dot(w, x)),
            q4_k: quant::q4_k::dot,
            q5_k: quant::q5_k::dot,
            q6_k: quant::q6_k::dot,
            q4_k_rows: |w, rb, x, out| rows_with(quant::q4_k::dot, w, rb, x, out),
            q5_k_rows: |w, rb, x, out| rows_with(quant::q5_k::dot, w, rb, x, out),
            q6_k_rows: |w, rb, x, out| rows_with(quant::q6_k::dot, w, rb, x, out),
            q4_k_x4: |w, x| x.map(|x| quant::q4_k::dot(w, x)),
            q5_k_x4: |w, x| x.map(|x| quant::q5_k::dot(w, x)),
            q6_k_x4: |w, x| x.map(|x| quant::q6_k::dot(w, x)),
            f32: quant::float::dot_f32,
            f16: quant::float::dot_f16,
            bf16: quant::float::dot_bf16,
        }
    }

    /// The fastest kernels this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if let Some(k) = avx2::kernels() {
            return k;
        }
        Self::scalar()
    }
}

/// [`QuantRows`] (or [`KQuantRows`]) from a one-row dot product.
fn rows_with<B>(dot: fn(&[u8], &[B]) -> f32, w: &[u8], row_bytes: usize, x: &[B], out: &mut [f32]) {
    for (o, row) in out.iter_mut().zip(w.chunks_exact(row_bytes.max(1))) {
        *o = dot(row, x);
    }
}

/// Eight results per group of `group_bytes` bytes of `w`, into `out`.
pub(super) fn each_group(
    w: &[u8],
    group_bytes: usize,
    out: &mut [f32],
    dot: impl Fn(&[u8]) -> [f32; 8],
) {
    for (o, g) in out
        .chunks_exact_mut(8)
        .zip(w.chunks_exact(group_bytes.max(1)))
    {
        o.copy_from_slice(&dot(g));
    }
}

/// [`QuantDot8`] from a one-row dot product.
fn eight_with(dot: QuantDot, w: &[u8], x: &Q8x4<'_>, y: &Q8x4<'_>) -> [f32; 8] {
    let mut out = [0f32; 8];
    for (o, row) in out.iter_mut().zip(x.rows.iter().chain(&y.rows)) {
        *o = dot(w, row);
    }
    out
}
