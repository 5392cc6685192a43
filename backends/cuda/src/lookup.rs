//! Row lookups in a weight, dequantised or widened to f32: embeddings
//! (F32, F16/BF16 and quantised tables), and quantised vectors (norm
//! weights) widened once at load.

use cudarc::driver::{CudaSlice, PushKernelArg};
use rbees_core::{Op, Result};

use crate::launch;
use crate::setup::{cuda_err, CudaKernelsBackend};
use crate::weight::{CudaWeight, Storage};

impl CudaKernelsBackend {
    /// Rows `ids` of a `[rows, cols]` weight as f32 `[ids.len(), cols]`.
    pub(crate) fn get_rows(&self, w: &CudaWeight, ids: &[u32]) -> Result<CudaSlice<f32>> {
        let cols = w.cols;
        let mut out = self.alloc("embedding", ids.len() * cols)?;
        if ids.is_empty() {
            return Ok(out);
        }
        let ids_dev = self.stream.clone_htod(ids).map_err(cuda_err("embedding"))?;
        let ne00 = cols as i64;
        // Bytes per stored row (get_rows_f32 ignores it: its rows are `cols` floats).
        let (func, cfg, row_bytes) = match &w.storage {
            Storage::Dense(_) => (
                &self.kernels.get_rows_f32,
                launch::get_rows_f32(ids.len(), cols),
                cols * 4,
            ),
            // F16/BF16 tables: candle's `get_rows_f16`/`get_rows_bf16` take
            // the f32 one's arguments and launch (rows of `cols` values).
            Storage::Float16(_) => (
                &self.kernels.float16(w.dtype, Op::Embedding)?.get_rows,
                launch::get_rows_f32(ids.len(), cols),
                cols * 2,
            ),
            Storage::Blocks(_) => (
                &self.kernels.quant(w.dtype, Op::Embedding)?.get_rows,
                launch::get_rows_quantized(ids.len(), cols, w.dtype)?,
                w.dtype.storage_bytes(cols).unwrap_or(0),
            ),
        };
        let mut launch = self.stream.launch_builder(func);
        match &w.storage {
            Storage::Dense(d) => launch.arg(d),
            Storage::Float16(h) => launch.arg(h),
            Storage::Blocks(b) => launch.arg(b),
        };
        launch
            .arg(&ids_dev)
            .arg(&mut out)
            .arg(&ne00)
            .arg(&row_bytes);
        unsafe { launch.launch(cfg) }.map_err(cuda_err("embedding"))?;
        Ok(out)
    }
}
