use ndarray::{Array2, CowArray, Ix2};
use rbees_core::{HostWeight, Result, WeightDType};

use rbees_host_ops::dequant::dequantize_rows;

/// A weight of the reference backend: a dense f32 matrix, or the GGUF
/// blocks, dequantised on use a few rows at a time (see
/// [`crate::NdarrayBackend`] for which one a weight gets).
#[derive(Debug, Clone)]
pub enum NdarrayWeight {
    Dense(Array2<f32>),
    Blocks {
        dtype: WeightDType,
        rows: usize,
        cols: usize,
        bytes: Vec<u8>,
    },
}

impl NdarrayWeight {
    /// Dequantises to a dense matrix when `dense` (F32 weights always are).
    pub fn from_host(w: &HostWeight<'_>, dense: bool) -> Result<Self> {
        w.validate()?;
        let (rows, cols) = w.rows_cols();
        if dense || w.dtype == WeightDType::F32 {
            let values = dequantize_rows(w.dtype, w.data, rows, cols)?;
            let dense = Array2::from_shape_vec((rows, cols), values)
                .map_err(|e| rbees_core::BackendError::Other(e.to_string()))?;
            return Ok(NdarrayWeight::Dense(dense));
        }
        Ok(NdarrayWeight::Blocks {
            dtype: w.dtype,
            rows,
            cols,
            bytes: w.data.to_vec(),
        })
    }

    pub fn dims(&self) -> (usize, usize) {
        match self {
            NdarrayWeight::Dense(m) => m.dim(),
            NdarrayWeight::Blocks { rows, cols, .. } => (*rows, *cols),
        }
    }

    /// Rows `start..start + len` as f32: a view of a dense weight, the
    /// dequantised rows of a blocked one.
    pub fn rows_f32(&self, start: usize, len: usize) -> Result<CowArray<'_, f32, Ix2>> {
        match self {
            NdarrayWeight::Dense(m) => Ok(m.slice(ndarray::s![start..start + len, ..]).into()),
            NdarrayWeight::Blocks {
                dtype, cols, bytes, ..
            } => {
                let row_bytes = bytes.len() / self.dims().0.max(1);
                let chunk = &bytes[start * row_bytes..(start + len) * row_bytes];
                let values = dequantize_rows(*dtype, chunk, len, *cols)?;
                Array2::from_shape_vec((len, *cols), values)
                    .map(CowArray::from)
                    .map_err(|e| rbees_core::BackendError::Other(e.to_string()))
            }
        }
    }
}
