//! GGUF blocks -> f32 with candle-core, for the conversions a plugin asks
//! for (`SUPPORT_CONVERT_TO_F32`) and for embedding rows of raw weights.

use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::Device;
use rbees_core::{BackendError, Result, WeightDType};

/// Whether the host can turn `dtype` into f32 (candle-core cannot
/// dequantise Q8_K, an activation-only type).
pub fn can_convert(dtype: WeightDType) -> bool {
    dtype != WeightDType::Q8K
}

/// Dequantises `rows` whole rows of `cols` values stored as `dtype`.
pub fn to_f32(dtype: WeightDType, bytes: &[u8], rows: usize, cols: usize) -> Result<Vec<f32>> {
    if dtype == WeightDType::F32 {
        return Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect());
    }
    if !can_convert(dtype) {
        return Err(BackendError::Other(format!(
            "the plugin host cannot convert {dtype} weights to F32"
        )));
    }
    let err = |e: candle_core::Error| BackendError::Other(format!("dequantising {dtype}: {e}"));
    let qtensor =
        qtensor_from_ggml(dtype.to_candle(), bytes, vec![rows, cols], &Device::Cpu).map_err(err)?;
    let dense = qtensor.dequantize(&Device::Cpu).map_err(err)?;
    dense.flatten_all().and_then(|t| t.to_vec1()).map_err(err)
}
