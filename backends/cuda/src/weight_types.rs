//! The weight types the backend runs, with candle-kernels' names for their
//! kernels: the one table that `supports` answers from and that the kernel
//! loader walks, so the two cannot disagree.

use rbees_core::WeightDType;

/// A quantised weight type candle-kernels has products and row lookups for.
pub struct QuantType {
    pub dtype: WeightDType,
    /// Its part of the kernels' names (`mul_mat_<name>`, `get_rows_<name>`).
    pub name: &'static str,
    /// Activation-row tile of `mul_mat_<name>` (`mmq_x` in candle).
    pub mmq_x: u32,
    /// Output-row tile of `mul_mat_<name>` (`mmq_y` in candle).
    pub mmq_y: u32,
}

const fn entry(dtype: WeightDType, name: &'static str, mmq_x: u32, mmq_y: u32) -> QuantType {
    QuantType {
        dtype,
        name,
        mmq_x,
        mmq_y,
    }
}

/// Float weight types: F32 multiplied by cuBLAS and looked up by
/// `get_rows_f32`; F16/BF16 matrices kept in their type, multiplied by our
/// kernels (and cuBLAS on widened bands) and looked up by candle-kernels'
/// `get_rows_f16`/`get_rows_bf16` (see `float16`).
pub const DENSE_TYPES: [WeightDType; 3] = [WeightDType::F32, WeightDType::F16, WeightDType::BF16];

/// Every quantised weight type the backend runs, with candle-kernels' names
/// and `mul_mat` tiles as candle-core's quantized CUDA code launches them.
/// Q8_K is absent: it is the K-quants' activation type, with no product or
/// lookup kernel, and GGUF weights never use it.
pub const QUANT_TYPES: [QuantType; 10] = [
    entry(WeightDType::Q4_0, "q4_0", 64, 128),
    entry(WeightDType::Q4_1, "q4_1", 64, 128),
    entry(WeightDType::Q5_0, "q5_0", 128, 64),
    entry(WeightDType::Q5_1, "q5_1", 128, 64),
    entry(WeightDType::Q8_0, "q8_0", 128, 64),
    entry(WeightDType::Q2K, "q2_K", 64, 128),
    entry(WeightDType::Q3K, "q3_K", 128, 128),
    entry(WeightDType::Q4K, "q4_K", 64, 128),
    entry(WeightDType::Q5K, "q5_K", 64, 128),
    entry(WeightDType::Q6K, "q6_K", 64, 64),
];

/// Whether the backend can hold, multiply and look up weights of `dtype`,
/// answered from [`DENSE_TYPES`] and [`QUANT_TYPES`]; why not when it cannot.
pub fn weight_support(dtype: WeightDType) -> Result<(), String> {
    if DENSE_TYPES.contains(&dtype) || QUANT_TYPES.iter().any(|q| q.dtype == dtype) {
        return Ok(());
    }
    let runs: Vec<String> = DENSE_TYPES
        .iter()
        .chain(QUANT_TYPES.iter().map(|q| &q.dtype))
        .map(ToString::to_string)
        .collect();
    Err(format!(
        "candle-kernels has no product or row lookup for {dtype} weights; \
         this backend runs {}",
        runs.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_answers_for_every_weight_type() {
        for dtype in WeightDType::ALL {
            let answer = weight_support(dtype);
            assert_eq!(
                answer.is_ok(),
                dtype != WeightDType::Q8K,
                "{dtype}: {answer:?}"
            );
        }
        let why = weight_support(WeightDType::Q8K).unwrap_err();
        assert!(why.contains("no product or row lookup for Q8_K"), "{why}");
        assert!(why.contains("F32, F16, BF16, Q4_0"), "{why}");
    }

    #[test]
    fn each_quantised_type_has_one_entry() {
        for (i, q) in QUANT_TYPES.iter().enumerate() {
            assert!(q.dtype.is_quantized(), "{}", q.dtype);
            assert!(QUANT_TYPES[i + 1..].iter().all(|o| o.dtype != q.dtype));
        }
        assert!(DENSE_TYPES.iter().all(|d| !d.is_quantized()));
    }
}
