//! Dot-product kernels picked once per backend: AVX2/FMA/F16C when the CPU
//! has them (checked at run time, so one binary runs everywhere), otherwise
//! the portable scalar code of [`crate::quant`].

#[cfg(target_arch = "x86_64")]
mod avx2;

use crate::quant::{self, BlockQ8};

/// One row of quantised weight bytes against Q8 activation blocks.
pub type QuantDot = fn(&[u8], &[BlockQ8]) -> f32;
/// One row of half-precision weight bytes against f32 activations.
pub type HalfDot = fn(&[u8], &[f32]) -> f32;
/// Two f32 rows.
pub type F32Dot = fn(&[f32], &[f32]) -> f32;

/// The dot products a backend uses; every slot has the same contract as
/// the scalar function of the same name in [`crate::quant`].
#[derive(Clone, Copy)]
pub struct Kernels {
    pub name: &'static str,
    pub q4_0: QuantDot,
    pub q4_1: QuantDot,
    pub q8_0: QuantDot,
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
            q4_0: quant::q4_0::dot,
            q4_1: quant::q4_1::dot,
            q8_0: quant::q8_0::dot,
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
