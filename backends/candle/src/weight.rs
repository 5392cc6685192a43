use std::sync::{Arc, OnceLock};

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Tensor};
use rbees_core::{BackendError, HostWeight, Result, WeightDType};

use crate::backend::candle_err;

/// A weight on a candle device. Matrices keep their GGUF blocks for
/// `QMatMul`; a dense copy is made only if the weight is used for row lookups
/// (the embedding table) or is a vector (norm weights).
pub struct CandleWeight {
    pub dtype: WeightDType,
    pub rows: usize,
    pub cols: usize,
    qtensor: Arc<QTensor>,
    matmul: OnceLock<QMatMul>,
    dense: OnceLock<Tensor>,
}

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

impl CandleWeight {
    pub fn from_host(w: &HostWeight<'_>, device: &Device) -> Result<Self> {
        w.validate()?;
        let (rows, cols) = w.rows_cols();
        let qtensor = qtensor_from_ggml(candle_dtype(w.dtype), w.data, w.shape.to_vec(), device)
            .map_err(|e| BackendError::Weight {
                name: w.name.to_string(),
                detail: e.to_string(),
            })?;
        Ok(CandleWeight {
            dtype: w.dtype,
            rows,
            cols,
            qtensor: Arc::new(qtensor),
            matmul: OnceLock::new(),
            dense: OnceLock::new(),
        })
    }

    /// The product handle, built on first use.
    pub fn qmatmul(&self) -> Result<&QMatMul> {
        if let Some(m) = self.matmul.get() {
            return Ok(m);
        }
        let m = QMatMul::from_arc(self.qtensor.clone()).map_err(candle_err("matmul"))?;
        Ok(self.matmul.get_or_init(|| m))
    }

    /// The weight dequantised to f32 (kept after the first call).
    pub fn dense(&self) -> Result<&Tensor> {
        if let Some(t) = self.dense.get() {
            return Ok(t);
        }
        let t = self
            .qtensor
            .dequantize(&self.qtensor.device())
            .map_err(candle_err("dequantize"))?;
        Ok(self.dense.get_or_init(|| t))
    }
}
