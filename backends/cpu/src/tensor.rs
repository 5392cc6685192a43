//! Activations and the KV cache: plain host f32 buffers.

/// A row-major `[rows, cols]` f32 matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuTensor {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl CpuTensor {
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        debug_assert_eq!(rows * cols, data.len());
        CpuTensor { rows, cols, data }
    }

    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self::new(rows, cols, vec![0.0; rows * cols])
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

/// One layer's keys and values, `[capacity, width]` f32 each, preallocated.
#[derive(Debug, Clone)]
pub struct CpuKvCache {
    pub capacity: usize,
    pub width: usize,
    pub keys: Vec<f32>,
    pub values: Vec<f32>,
}

impl CpuKvCache {
    pub fn new(capacity: usize, width: usize) -> Self {
        CpuKvCache {
            capacity,
            width,
            keys: vec![0.0; capacity * width],
            values: vec![0.0; capacity * width],
        }
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.capacity, self.width)
    }
}
