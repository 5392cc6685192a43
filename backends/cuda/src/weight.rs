//! Weights in device memory: F32 as dense f32 (for cuBLAS), F16/BF16
//! matrices in their 16-bit type (for our kernels, see `float16`), quantised
//! types in their GGUF blocks (for candle-kernels' products); every vector
//! (norm weights) as f32, which is what the kernels reading them take.

use cudarc::driver::CudaSlice;
use rbees_core::{BackendError, HostWeight, Result, WeightDType};

use crate::index::MATRIX_ROW_PADDING;

pub enum Storage {
    /// Row-major f32 (F32 weights, and every vector).
    Dense(CudaSlice<f32>),
    /// Row-major 16-bit values of an F16 or BF16 matrix (the weight's dtype says which).
    Float16(CudaSlice<u16>),
    /// GGUF blocks, row-major, followed by [`MATRIX_ROW_PADDING`] values of zeros.
    Blocks(CudaSlice<u8>),
}

pub struct CudaWeight {
    pub(crate) storage: Storage,
    pub dtype: WeightDType,
    pub rows: usize,
    pub cols: usize,
}

/// Bytes of padding after a block buffer of `dtype`.
pub fn padding_bytes(dtype: WeightDType) -> usize {
    dtype.storage_bytes(MATRIX_ROW_PADDING).unwrap_or(0)
}

/// F32, F16 and BF16 data widened to f32 on the host (little-endian, as GGUF
/// stores it): F32 weights, and F16/BF16 vectors.
pub fn float_values(w: &HostWeight<'_>) -> Result<Vec<f32>> {
    let values = match w.dtype {
        WeightDType::F32 => w
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        WeightDType::F16 => w
            .data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        WeightDType::BF16 => w
            .data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return Err(BackendError::Weight {
                name: w.name.to_string(),
                detail: format!("{other} is not a float type"),
            })
        }
    };
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_types_widen_exactly() {
        let f16: Vec<u8> = [1.5f32, -2.25]
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        let w = HostWeight::new("w", WeightDType::F16, &[2], &f16).unwrap();
        assert_eq!(float_values(&w).unwrap(), vec![1.5, -2.25]);
        let bf16: Vec<u8> = half::bf16::from_f32(3.0).to_le_bytes().to_vec();
        let w = HostWeight::new("w", WeightDType::BF16, &[1], &bf16).unwrap();
        assert_eq!(float_values(&w).unwrap(), vec![3.0]);
        assert_eq!(padding_bytes(WeightDType::Q4_0), 512 / 32 * 18);
        assert_eq!(padding_bytes(WeightDType::Q6K), 2 * 210);
    }
}
