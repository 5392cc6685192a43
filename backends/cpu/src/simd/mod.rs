//! Dot-product kernels picked once per backend: AVX2/FMA/F16C when the CPU
//! has them (checked at run time, so one binary runs everywhere), otherwise
//! the portable scalar code of [`crate::quant`].

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_k;
#[cfg(target_arch = "x86_64")]
mod avx2_q5;
#[cfg(target_arch = "x86_64")]
mod avx2_x8;

use rbees_core::WeightDType;

use crate::quant::{self, BlockQ8, BlockQ8K, Q8x4};
use crate::types::{Products, TypeKernels, PORTABLE};

/// One row of quantised weight bytes against Q8 activation blocks.
pub type Q8Dot = fn(&[u8], &[BlockQ8]) -> f32;
/// Consecutive weight rows (`row_bytes` each) against one row of Q8
/// activations, one result per row in `out` (decode: the row loop runs
/// inside the SIMD code, without a call per row).
pub type Q8Rows = fn(&[u8], usize, &[BlockQ8], &mut [f32]);
/// One row of quantised weight bytes against four rows of Q8 activations:
/// the weight blocks are unpacked once for all four (prompt processing).
pub type Q8Dot4 = fn(&[u8], &Q8x4<'_>) -> [f32; 4];
/// One row of quantised weight bytes against two groups of four rows.
pub type Q8Dot8 = fn(&[u8], &Q8x4<'_>, &Q8x4<'_>) -> [f32; 8];
/// Groups of eight interleaved Q4_0, Q4_1 or Q8_0 rows (see
/// [`crate::quant::x8`]) against one row of Q8 activations and their block
/// sums (which only Q4_0 uses); eight results per group (decode).
pub type Q8GroupRows = fn(&[u8], &[BlockQ8], &[i32], &mut [f32]);
/// Groups of eight interleaved Q4_K rows (see [`crate::quant::q4_kx8`])
/// against one row of Q8_K activations; eight results per group (decode).
pub type Q8KGroupRows = fn(&[u8], &[BlockQ8K], &mut [f32]);
/// One group of eight interleaved Q4_0, Q4_1 or Q8_0 rows against four
/// activation rows and their block sums (prompts): eight results per
/// activation row.
pub type Q8GroupFour = fn(&[u8], [&[BlockQ8]; 4], [&[i32]; 4]) -> [[f32; 8]; 4];
/// One group of eight interleaved Q4_K rows against four activation rows.
pub type Q8KGroupFour = fn(&[u8], [&[BlockQ8K]; 4]) -> [[f32; 8]; 4];
/// One row of K-quant weight bytes against Q8_K activation blocks.
pub type Q8KDot = fn(&[u8], &[BlockQ8K]) -> f32;
/// Consecutive K-quant weight rows (`row_bytes` each) against one row of
/// Q8_K activations (decode).
pub type Q8KRows = fn(&[u8], usize, &[BlockQ8K], &mut [f32]);
/// One K-quant weight row against four rows of Q8_K activations (prompt).
pub type Q8KDot4 = fn(&[u8], [&[BlockQ8K]; 4]) -> [f32; 4];
/// One row of half-precision weight bytes against f32 activations.
pub type HalfDot = fn(&[u8], &[f32]) -> f32;
/// Two f32 rows.
pub type F32Dot = fn(&[f32], &[f32]) -> f32;
/// f32 activations (whole blocks) rounded to Q8 blocks, as
/// [`crate::quant::quantize_row`] (bit for bit).
pub type QuantizeQ8 = fn(&[f32], &mut [BlockQ8]);

/// The kernels a backend runs: the activation rounding, the f32 dot of
/// attention, and the weight-type table ([`crate::types`]), one entry per
/// supported type. SIMD sets override entries of the portable table; every
/// kernel has the contract of the portable function it replaces.
#[derive(Clone, Copy)]
pub struct Kernels {
    pub name: &'static str,
    pub quantize_q8: QuantizeQ8,
    pub f32: F32Dot,
    types: [TypeKernels; PORTABLE.len()],
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
            f32: quant::float::dot_f32,
            types: PORTABLE,
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

    /// The entry of `dtype`, if this backend runs it.
    pub fn of(&self, dtype: WeightDType) -> Option<&TypeKernels> {
        self.types.iter().find(|t| t.dtype == dtype)
    }

    /// Replaces the products of `dtype`'s entry (a SIMD override); the
    /// entry must exist, since overrides never add a type.
    fn set_products(&mut self, dtype: WeightDType, products: Products) {
        match self.types.iter_mut().find(|t| t.dtype == dtype) {
            Some(t) => t.products = products,
            None => unreachable!("{dtype} has no portable entry to override"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SIMD sets override kernels, never the layout: an entry interleaved
    /// at load has group kernels in every set, and only such an entry does.
    #[test]
    fn every_kernel_set_has_group_kernels_exactly_where_weights_interleave() {
        for k in [Kernels::scalar(), Kernels::detect()] {
            for t in &k.types {
                let groups = match t.products {
                    Products::Q8(p) => p.groups.is_some(),
                    Products::Q8K(p) => p.groups.is_some(),
                    Products::F32(_) | Products::Half(_) => false,
                };
                assert_eq!(t.interleave.is_some(), groups, "{} {}", k.name, t.dtype);
                assert_eq!(
                    k.of(t.dtype).map(|e| e.dtype),
                    Some(t.dtype),
                    "{} {}",
                    k.name,
                    t.dtype
                );
            }
            assert_eq!(k.types.len(), PORTABLE.len());
        }
    }
}
