//! Calling into the plugin: a message buffer per call and the translation
//! of status codes into `BackendError`s that name the plugin and its file.

use rbees_core::plugin_abi::{
    ErrorBuf, Status, TensorMut, TensorRef, STATUS_INTERNAL, STATUS_INVALID_ARGUMENT, STATUS_OK,
    STATUS_PANIC, STATUS_UNAVAILABLE, STATUS_UNSUPPORTED,
};
use rbees_core::{BackendError, Result, WeightDType};

use crate::PluginLibrary;

/// Longest message kept from a plugin.
const MESSAGE_CAP: usize = 1024;

/// The host-owned storage behind an [`ErrorBuf`].
pub(crate) struct ErrorStorage {
    bytes: Vec<u8>,
    buf: ErrorBuf,
}

impl ErrorStorage {
    pub fn new() -> Self {
        let mut bytes = vec![0u8; MESSAGE_CAP];
        let buf = ErrorBuf {
            data: bytes.as_mut_ptr(),
            cap: MESSAGE_CAP,
            len: 0,
        };
        ErrorStorage { bytes, buf }
    }

    pub fn buf(&mut self) -> *mut ErrorBuf {
        &mut self.buf
    }

    /// The plugin's message for a failed call, with the status's meaning.
    pub fn message(&self, status: Status) -> String {
        // A plugin that claims more than it may write gets cut to the buffer.
        let len = self.buf.len.min(self.bytes.len());
        let text = String::from_utf8_lossy(&self.bytes[..len]);
        let text = if text.is_empty() { "no message" } else { &text };
        format!("{} ({text})", status_meaning(status))
    }
}

fn status_meaning(status: Status) -> String {
    match status {
        STATUS_INVALID_ARGUMENT => "invalid argument".into(),
        STATUS_UNSUPPORTED => "unsupported".into(),
        STATUS_INTERNAL => "kernel error".into(),
        STATUS_PANIC => "panic caught in the plugin".into(),
        STATUS_UNAVAILABLE => "unavailable".into(),
        other => format!("unknown status {other}"),
    }
}

/// Runs one plugin call and turns a failure into an error naming the op,
/// the plugin and its file.
pub(crate) fn checked(
    lib: &PluginLibrary,
    op: &str,
    f: impl FnOnce(*mut ErrorBuf) -> Status,
) -> Result<()> {
    let mut err = ErrorStorage::new();
    let status = f(err.buf());
    if status == STATUS_OK {
        return Ok(());
    }
    Err(BackendError::Other(format!(
        "plugin '{}' ({}): {op} failed: {}",
        lib.name(),
        lib.path().display(),
        err.message(status)
    )))
}

/// A read-only view of f32 values as an ABI buffer.
pub(crate) fn f32_ref(data: &[f32], rows: usize, cols: usize) -> TensorRef {
    TensorRef {
        data: data.as_ptr().cast(),
        bytes: std::mem::size_of_val(data),
        dtype: WeightDType::F32.ggml_id(),
        rows,
        cols,
    }
}

/// A view of raw weight bytes of `dtype` as an ABI buffer.
pub(crate) fn raw_ref(bytes: &[u8], dtype: WeightDType, rows: usize, cols: usize) -> TensorRef {
    TensorRef {
        data: bytes.as_ptr().cast(),
        bytes: bytes.len(),
        dtype: dtype.ggml_id(),
        rows,
        cols,
    }
}

/// An f32 output buffer as an ABI buffer.
pub(crate) fn f32_mut(data: &mut [f32], rows: usize, cols: usize) -> TensorMut {
    TensorMut {
        data: data.as_mut_ptr().cast(),
        bytes: std::mem::size_of_val(data),
        dtype: WeightDType::F32.ggml_id(),
        rows,
        cols,
    }
}
