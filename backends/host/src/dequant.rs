//! GGUF blocks -> f32 on the host, through candle-core's quantized module
//! (the reference backend's weights, and the weights the plugin host
//! converts for a plugin).

use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::Device;
use rbees_core::{BackendError, Result, WeightDType};

/// Why `dtype` cannot be dequantised here, if it cannot: candle-core has
/// no dequantisation for Q8_K, an activation-only type.
pub fn undequantizable(dtype: WeightDType) -> Option<String> {
    (dtype == WeightDType::Q8K)
        .then(|| format!("candle-core cannot dequantise {dtype} blocks (an activation-only type)"))
}

/// Dequantises `rows` whole rows of `cols` values stored as `dtype` in
/// `bytes` (F32 is read as it is).
///
/// `bytes` must start on a row boundary of a buffer whose rows are whole
/// blocks; GGUF rows always are (the loader checks it).
pub fn dequantize_rows(
    dtype: WeightDType,
    bytes: &[u8],
    rows: usize,
    cols: usize,
) -> Result<Vec<f32>> {
    if dtype == WeightDType::F32 {
        return Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect());
    }
    if let Some(reason) = undequantizable(dtype) {
        return Err(BackendError::Other(reason));
    }
    let err = |e: candle_core::Error| BackendError::Other(format!("dequantising {dtype}: {e}"));
    let qtensor =
        qtensor_from_ggml(dtype.to_candle(), bytes, vec![rows, cols], &Device::Cpu).map_err(err)?;
    let dense = qtensor.dequantize(&Device::Cpu).map_err(err)?;
    dense.flatten_all().and_then(|t| t.to_vec1()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_rows_are_read_as_they_are() {
        let values = [1.5f32, -0.0, f32::MIN_POSITIVE, 3e38];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let got = dequantize_rows(WeightDType::F32, &bytes, 2, 2).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&values));
    }

    #[test]
    fn q8_0_blocks_dequantise_and_q8_k_is_refused() {
        // One Q8_0 block: f16 scale 0.5, then 32 signed quants.
        let mut block = 0x3800u16.to_le_bytes().to_vec();
        block.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let got = dequantize_rows(WeightDType::Q8_0, &block, 1, 32).unwrap();
        let want: Vec<f32> = (0..32).map(|i| 0.5 * (i - 16) as f32).collect();
        assert_eq!(got, want);
        assert!(undequantizable(WeightDType::Q8_0).is_none());
        let why = undequantizable(WeightDType::Q8K).unwrap();
        assert!(why.contains("Q8_K"), "{why}");
        assert!(dequantize_rows(WeightDType::Q8K, &[0; 292], 1, 256).is_err());
    }
}
