//! GGUF block formats: layouts, scalar reference dot products, dequantisation.
//!
//! Every function here is portable scalar code written the way ggml's
//! reference (`*_ref`) functions read; the SIMD kernels in [`crate::simd`]
//! are checked against them.

pub mod float;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q4_kx8;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8;
pub mod q8_0;
pub mod q8_k;
pub mod x8;

pub use q8::{interleave_scales, quantize_row, BlockQ8, Q8x4, Scales4, QK};
pub use q8_k::{BlockQ8K, QK_K};

/// Reads the little-endian f16 at `bytes[at..at + 2]` as f32.
#[inline(always)]
pub(crate) fn f16_at(bytes: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}
