//! GGUF blocks -> f32, through candle-core's quantized module.

use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::Device;
use rbees_core::{BackendError, Result, WeightDType};

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
    let qtensor =
        qtensor_from_ggml(dtype.to_candle(), bytes, vec![rows, cols], &Device::Cpu).map_err(err)?;
    let dense = qtensor.dequantize(&Device::Cpu).map_err(err)?;
    dense.flatten_all().and_then(|t| t.to_vec1()).map_err(err)
}
