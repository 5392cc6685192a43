use crate::{Op, WeightDType};

/// Errors a backend reports as values; no backend may panic on bad input.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("backend '{backend}' cannot run {op} on {dtype} weights: {reason}")]
    Unsupported {
        backend: String,
        op: Op,
        dtype: WeightDType,
        reason: String,
    },
    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: &'static str, detail: String },
    #[error("invalid weight '{name}': {detail}")]
    Weight { name: String, detail: String },
    #[error("device '{device}' is not available for backend '{backend}': {reason}")]
    Device {
        backend: String,
        device: String,
        reason: String,
    },
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = BackendError> = std::result::Result<T, E>;

impl BackendError {
    /// Convenience for shape checks: `BackendError::shape("matmul", format!(..))`.
    pub fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        BackendError::Shape {
            op,
            detail: detail.into(),
        }
    }
}
