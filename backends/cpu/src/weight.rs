//! Weights: f32 values, or the GGUF blocks copied byte for byte.

use std::sync::Arc;

use rbees_core::{BackendError, HostWeight, Result, WeightDType};

use crate::quant::{dequantize_row, unsupported_reason};

#[derive(Debug, Clone)]
pub enum Storage {
    /// F32 weights, ready for the f32 dot product.
    F32(Vec<f32>),
    /// Any other type: the GGUF bytes, rows of whole blocks.
    Blocks(Vec<u8>),
}

/// A `[rows, cols]` weight (a vector is one row).
#[derive(Debug, Clone)]
pub struct CpuWeight {
    pub dtype: WeightDType,
    pub rows: usize,
    pub cols: usize,
    /// Bytes of one row in `Storage::Blocks`.
    pub row_bytes: usize,
    /// Shared with the bands of a product in flight (see `Pool::run_bands`).
    pub storage: Arc<Storage>,
}

impl CpuWeight {
    pub fn from_host(w: &HostWeight<'_>) -> Result<Self> {
        w.validate()?;
        if let Some(reason) = unsupported_reason(w.dtype) {
            return Err(BackendError::Weight {
                name: w.name.to_string(),
                detail: reason,
            });
        }
        let (rows, cols) = w.rows_cols();
        // `validate` checked that whole rows of whole blocks fill `data`.
        let row_bytes = w.data.len() / rows.max(1);
        let storage = if w.dtype == WeightDType::F32 {
            let values = w
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            Storage::F32(values)
        } else {
            Storage::Blocks(w.data.to_vec())
        };
        Ok(CpuWeight {
            dtype: w.dtype,
            rows,
            cols,
            row_bytes,
            storage: Arc::new(storage),
        })
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Row `r` dequantised into `out` (`cols` values); `r < rows`.
    pub fn dequantize_row_into(&self, r: usize, out: &mut [f32]) -> Result<()> {
        match self.storage.as_ref() {
            Storage::F32(v) => out.copy_from_slice(&v[r * self.cols..(r + 1) * self.cols]),
            Storage::Blocks(b) => {
                let bytes = &b[r * self.row_bytes..(r + 1) * self.row_bytes];
                if !dequantize_row(self.dtype, bytes, out) {
                    return Err(BackendError::Other(format!(
                        "cannot dequantise {} rows",
                        self.dtype
                    )));
                }
            }
        }
        Ok(())
    }

    /// The whole of a vector weight (one row) as f32.
    pub fn vector(&self) -> Result<Vec<f32>> {
        let mut out = vec![0.0; self.cols];
        self.dequantize_row_into(0, &mut out)?;
        Ok(out)
    }
}
