use std::sync::{Arc, OnceLock};

use candle_core::quantized::{ggml_file::qtensor_from_ggml, QMatMul, QTensor};
use candle_core::{Device, Tensor};
use rbees_core::{BackendError, HostWeight, Result, WeightDType};

use crate::backend::candle_err;

/// A weight on a candle device. Matrices keep their GGUF blocks for
/// `QMatMul`; a dense copy is made only for vectors (norm weights) and, off
/// the CPU, for a table used for row lookups (the embedding).
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

    /// Rows `ids` as a dense `[ids.len(), cols]` tensor.
    ///
    /// On the CPU only those rows are dequantised, from the blocks in place:
    /// the embedding table is the largest tensor of small models (SmolLM2's
    /// is 113 MB in f32, more than the whole Q4_1 file's layers), and a
    /// dense copy would be held for the lifetime of the model. On a GPU the
    /// blocks are not host-readable without a copy, so the dense table is
    /// gathered from instead.
    pub fn rows(&self, ids: &[u32]) -> Result<Tensor> {
        let device = self.qtensor.device();
        if !device.is_cpu() {
            let ids =
                Tensor::from_slice(ids, ids.len(), &device).map_err(candle_err("embedding"))?;
            return self
                .dense()?
                .index_select(&ids, 0)
                .map_err(candle_err("embedding"));
        }
        let blocks = self.qtensor.data().map_err(candle_err("embedding"))?;
        let row_bytes = blocks.len() / self.rows.max(1);
        let rows = ids
            .iter()
            .map(|&id| {
                let start = id as usize * row_bytes;
                let row = blocks.get(start..start + row_bytes).ok_or_else(|| {
                    BackendError::Other(format!("embedding row {id} is outside the table"))
                })?;
                qtensor_from_ggml(self.dtype.to_candle(), row, vec![1, self.cols], &device)
                    .and_then(|q| q.dequantize(&device))
                    .map_err(candle_err("embedding"))
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&rows, 0).map_err(candle_err("embedding"))
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
