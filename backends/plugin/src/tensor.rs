//! The host-side data of a plugin backend: activations, weights and KV
//! caches all live in host memory (the plugin sees them as plain buffers).

use rbees_core::{BackendError, Result, WeightDType};

use crate::call::{f32_ref, raw_ref};
use rbees_core::plugin_abi::TensorRef;

/// A row-major `[rows, cols]` f32 matrix (`data.len() == rows * cols`,
/// kept so by every constructor).
#[derive(Debug, Clone, PartialEq)]
pub struct PluginTensor {
    pub(crate) data: Vec<f32>,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
}

impl PluginTensor {
    pub(crate) fn new(data: Vec<f32>, rows: usize, cols: usize) -> Result<Self> {
        rbees_core::checks::upload(data.len(), rows, cols)?;
        Ok(PluginTensor { data, rows, cols })
    }

    pub(crate) fn zeros(rows: usize, cols: usize) -> Result<Self> {
        let n = rows.checked_mul(cols).ok_or_else(|| {
            BackendError::Other(format!("a [{rows}, {cols}] tensor does not fit in memory"))
        })?;
        Ok(PluginTensor {
            data: vec![0.0; n],
            rows,
            cols,
        })
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    pub(crate) fn as_ref(&self) -> TensorRef {
        f32_ref(&self.data, self.rows, self.cols)
    }
}

/// A weight as the plugin receives it.
#[derive(Debug, Clone)]
pub enum WeightData {
    F32(Vec<f32>),
    /// GGUF blocks of a type the plugin takes natively.
    Raw {
        dtype: WeightDType,
        bytes: Vec<u8>,
    },
}

#[derive(Debug, Clone)]
pub struct PluginWeight {
    pub(crate) data: WeightData,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    /// The type in the model file (differs from F32 after a conversion).
    pub(crate) source: WeightDType,
}

impl PluginWeight {
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The type in the model file.
    pub fn source_dtype(&self) -> WeightDType {
        self.source
    }

    /// The type the plugin receives.
    pub fn dtype(&self) -> WeightDType {
        match &self.data {
            WeightData::F32(_) => WeightDType::F32,
            WeightData::Raw { dtype, .. } => *dtype,
        }
    }

    pub(crate) fn as_ref(&self) -> TensorRef {
        match &self.data {
            WeightData::F32(v) => f32_ref(v, self.rows, self.cols),
            WeightData::Raw { dtype, bytes } => raw_ref(bytes, *dtype, self.rows, self.cols),
        }
    }
}

/// One layer's keys and values, `[capacity, width]` each, row-major.
#[derive(Debug, Clone)]
pub struct PluginKvCache {
    pub(crate) keys: Vec<f32>,
    pub(crate) values: Vec<f32>,
    pub(crate) capacity: usize,
    pub(crate) width: usize,
}

impl PluginKvCache {
    pub fn dims(&self) -> (usize, usize) {
        (self.capacity, self.width)
    }
}
