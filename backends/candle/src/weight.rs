use std::sync::{Arc, OnceLock};

use candle_core::quantized::{ggml_file::qtensor_from_ggml, QMatMul, QTensor};
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

impl CandleWeight {
    pub fn from_host(w: &HostWeight<'_>, device: &Device) -> Result<Self> {
        w.validate()?;
        let (rows, cols) = w.rows_cols();
        let qtensor = qtensor_from_ggml(w.dtype.to_candle(), w.data, w.shape.to_vec(), device)
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
