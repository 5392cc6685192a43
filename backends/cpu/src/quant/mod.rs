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

use rbees_core::WeightDType;

pub use q8::{interleave_scales, quantize_row, BlockQ8, Q8x4, Scales4, QK};
pub use q8_k::{BlockQ8K, QK_K};

/// Weight types this backend multiplies and looks up natively.
pub fn supported_matmul_dtypes() -> &'static [WeightDType] {
    &[
        WeightDType::F32,
        WeightDType::F16,
        WeightDType::BF16,
        WeightDType::Q4_0,
        WeightDType::Q4_1,
        WeightDType::Q5_0,
        WeightDType::Q5_1,
        WeightDType::Q8_0,
        WeightDType::Q4K,
        WeightDType::Q5K,
        WeightDType::Q6K,
    ]
}

/// Why weights of `dtype` cannot be used, or `None` if they can.
pub fn unsupported_reason(dtype: WeightDType) -> Option<String> {
    if supported_matmul_dtypes().contains(&dtype) {
        return None;
    }
    Some(match dtype {
        WeightDType::Q8K => format!("{dtype} is an activation-only type"),
        _ => format!(
            "the cpu backend has no {dtype} kernels yet (it runs F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K)"
        ),
    })
}

/// Reads the little-endian f16 at `bytes[at..at + 2]` as f32.
#[inline(always)]
pub(crate) fn f16_at(bytes: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Dequantises one row of `dtype` (`bytes` holds exactly that row) into `out`.
///
/// Only called with supported types (the backend refuses others at load);
/// for any other type it leaves `out` untouched and returns `false`.
pub fn dequantize_row(dtype: WeightDType, bytes: &[u8], out: &mut [f32]) -> bool {
    match dtype {
        WeightDType::F32 => float::dequantize_f32(bytes, out),
        WeightDType::F16 => float::dequantize_f16(bytes, out),
        WeightDType::BF16 => float::dequantize_bf16(bytes, out),
        WeightDType::Q4_0 => q4_0::dequantize(bytes, out),
        WeightDType::Q4_1 => q4_1::dequantize(bytes, out),
        WeightDType::Q5_0 => q5_0::dequantize(bytes, out),
        WeightDType::Q5_1 => q5_1::dequantize(bytes, out),
        WeightDType::Q8_0 => q8_0::dequantize(bytes, out),
        WeightDType::Q4K => q4_k::dequantize(bytes, out),
        WeightDType::Q5K => q5_k::dequantize(bytes, out),
        WeightDType::Q6K => q6_k::dequantize(bytes, out),
        _ => return false,
    }
    true
}
