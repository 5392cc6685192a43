//! Weights: f32 values, or the GGUF blocks copied byte for byte.

use std::sync::Arc;

use rbees_core::{BackendError, HostWeight, Result, WeightDType};

use crate::quant::{dequantize_row, q4_kx8, unsupported_reason, x8, QK, QK_K};

#[derive(Debug, Clone)]
pub enum Storage {
    /// F32 weights, ready for the f32 dot product.
    F32(Vec<f32>),
    /// Any other type: the GGUF bytes, rows of whole blocks.
    Blocks(Vec<u8>),
    /// Q4_0, Q4_1 and Q8_0 matrices with a multiple of 8 rows, interleaved
    /// in groups of eight (see [`x8`]).
    X8(Vec<u8>),
    /// Q4_K matrices likewise (see [`q4_kx8`]).
    Q4Kx8(Vec<u8>),
}

/// A `[rows, cols]` weight (a vector is one row).
#[derive(Debug, Clone)]
pub struct CpuWeight {
    pub dtype: WeightDType,
    pub rows: usize,
    pub cols: usize,
    /// Bytes of one row in `Storage::Blocks`.
    pub row_bytes: usize,
    /// Shared by clones of the weight (cloning never copies the bytes).
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
        // Matrices of whole groups of eight rows are interleaved for decode.
        let groups = w.shape.len() == 2 && rows >= 8 && rows.is_multiple_of(8);
        let storage = if let Some(format) = x8::format(w.dtype).filter(|_| groups) {
            Storage::X8(x8::pack(w.data, rows, cols / QK, format))
        } else if groups && w.dtype == WeightDType::Q4K {
            Storage::Q4Kx8(q4_kx8::pack(w.data, rows, cols / QK_K))
        } else if w.dtype == WeightDType::F32 {
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
                self.dequantize_bytes(bytes, out)?;
            }
            Storage::X8(packed) => {
                let group_bytes = x8::ROWS * self.row_bytes;
                let group = &packed[r / x8::ROWS * group_bytes..][..group_bytes];
                let format = x8::format(self.dtype).ok_or_else(|| {
                    BackendError::Other(format!("{} rows are never interleaved", self.dtype))
                })?;
                let mut bytes = vec![0u8; self.row_bytes];
                x8::unpack_row(group, r % x8::ROWS, format, &mut bytes);
                self.dequantize_bytes(&bytes, out)?;
            }
            Storage::Q4Kx8(packed) => {
                let group_bytes = self.cols / QK_K * q4_kx8::GROUP_BLOCK;
                let group = &packed[r / q4_kx8::ROWS * group_bytes..][..group_bytes];
                let mut bytes = vec![0u8; self.row_bytes];
                q4_kx8::unpack_row(group, r % q4_kx8::ROWS, &mut bytes);
                self.dequantize_bytes(&bytes, out)?;
            }
        }
        Ok(())
    }

    fn dequantize_bytes(&self, bytes: &[u8], out: &mut [f32]) -> Result<()> {
        if !dequantize_row(self.dtype, bytes, out) {
            return Err(BackendError::Other(format!(
                "cannot dequantise {} rows",
                self.dtype
            )));
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
