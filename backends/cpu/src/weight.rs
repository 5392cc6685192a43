//! Weights in the layout their type's kernels read, chosen at load.

use std::sync::Arc;

use rbees_core::{BackendError, HostWeight, Result, WeightDType};

use crate::types::{portable, unsupported_reason, Interleave, GROUP_ROWS};

/// How a weight's values are stored.
#[derive(Debug, Clone)]
pub enum Layout {
    /// F32 weights, ready for the f32 dot product.
    F32(Vec<f32>),
    /// The GGUF bytes: rows of whole blocks.
    Rows(Vec<u8>),
    /// Matrices of whole groups of eight rows of a type with group kernels,
    /// interleaved group by group.
    Interleaved(Interleave, Vec<u8>),
}

/// A `[rows, cols]` weight (a vector is one row).
#[derive(Debug, Clone)]
pub struct CpuWeight {
    pub dtype: WeightDType,
    pub rows: usize,
    pub cols: usize,
    /// Bytes of one row of blocks.
    pub row_bytes: usize,
    /// Shared by clones of the weight (cloning never copies the bytes).
    pub layout: Arc<Layout>,
}

impl CpuWeight {
    pub fn from_host(w: &HostWeight<'_>) -> Result<Self> {
        w.validate()?;
        let entry = portable(w.dtype).ok_or_else(|| BackendError::Weight {
            name: w.name.to_string(),
            detail: unsupported_reason(w.dtype).unwrap_or_default(),
        })?;
        let (rows, cols) = w.rows_cols();
        // `validate` checked that whole rows of whole blocks fill `data`.
        let row_bytes = w.data.len() / rows.max(1);
        let layout = if let Some(interleave) = entry.interleave_for(rows, w.shape.len() == 2) {
            Layout::Interleaved(interleave, interleave.pack(w.data, rows, cols))
        } else if w.dtype == WeightDType::F32 {
            let values = w
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            Layout::F32(values)
        } else {
            Layout::Rows(w.data.to_vec())
        };
        Ok(CpuWeight {
            dtype: w.dtype,
            rows,
            cols,
            row_bytes,
            layout: Arc::new(layout),
        })
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Row `r` dequantised into `out` (`cols` values); `r < rows`.
    pub fn dequantize_row_into(&self, r: usize, out: &mut [f32]) -> Result<()> {
        let entry = portable(self.dtype)
            .ok_or_else(|| BackendError::Other(format!("cannot dequantise {} rows", self.dtype)))?;
        match self.layout.as_ref() {
            Layout::F32(v) => out.copy_from_slice(&v[r * self.cols..(r + 1) * self.cols]),
            Layout::Rows(b) => {
                (entry.dequantize)(&b[r * self.row_bytes..(r + 1) * self.row_bytes], out)
            }
            Layout::Interleaved(interleave, packed) => {
                let group_bytes = interleave.group_bytes(self.cols, self.row_bytes);
                let group = &packed[r / GROUP_ROWS * group_bytes..][..group_bytes];
                let mut bytes = vec![0u8; self.row_bytes];
                interleave.unpack_row(group, r % GROUP_ROWS, &mut bytes);
                (entry.dequantize)(&bytes, out);
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
