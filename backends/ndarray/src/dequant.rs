//! GGUF blocks -> f32, through candle-core's quantized module.

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType};
use candle_core::Device;
use rbees_core::{BackendError, Result, WeightDType};

/// candle's name for a ggml storage type.
pub fn candle_dtype(dtype: WeightDType) -> GgmlDType {
    match dtype {
        WeightDType::F32 => GgmlDType::F32,
        WeightDType::F16 => GgmlDType::F16,
        WeightDType::BF16 => GgmlDType::BF16,
        WeightDType::Q4_0 => GgmlDType::Q4_0,
        WeightDType::Q4_1 => GgmlDType::Q4_1,
        WeightDType::Q5_0 => GgmlDType::Q5_0,
        WeightDType::Q5_1 => GgmlDType::Q5_1,
        WeightDType::Q8_0 => GgmlDType::Q8_0,
        WeightDType::Q2K => GgmlDType::Q2K,
        WeightDType::Q3K => GgmlDType::Q3K,
        WeightDType::Q4K => GgmlDType::Q4K,
        WeightDType::Q5K => GgmlDType::Q5K,
        WeightDType::Q6K => GgmlDType::Q6K,
        WeightDType::Q8K => GgmlDType::Q8K,
    }
}

/// Dequantises `rows` whole rows of `cols` values stored as `dtype` in `bytes`.
///
/// `bytes` must start on a row boundary of a buffer whose rows are whole
/// blocks; GGUF rows always are (the loader checks it).
pub fn dequantize_rows(
    dtype: WeightDType,
    bytes: &[u8],
    rows: usize,
    cols: usize,
) -> Result<Vec<f32>> {
    let err = |e: candle_core::Error| BackendError::Other(format!("dequantising {dtype}: {e}"));
    let qtensor = qtensor_from_ggml(candle_dtype(dtype), bytes, vec![rows, cols], &Device::Cpu)
        .map_err(err)?;
    let dense = qtensor.dequantize(&Device::Cpu).map_err(err)?;
    dense.flatten_all().and_then(|t| t.to_vec1()).map_err(err)
}
