//! The C ABI between the worker and a backend plugin (a shared library built
//! separately). Specification: `docs/plugin-abi.md`; this module is its
//! Rust transcription, shared by the host (`rbees-backend-plugin`, which
//! loads libraries) and by plugins written in Rust.
//!
//! A plugin exports one `extern "C"` symbol, [`ENTRY_SYMBOL`], of type
//! [`EntryFn`], returning a pointer to a static [`PluginTable`]: the ABI
//! version, the plugin's name, and function pointers for the five kernels
//! over plain buffers ([`TensorRef`]/[`TensorMut`]), a capability query and
//! an availability/score probe. Every call returns a [`Status`] code and
//! writes a message into a caller-provided [`ErrorBuf`] on failure; nothing
//! unwinds across the boundary (see [`guard`]).
//!
//! There is no `libloading` here: core only defines the types.

use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::WeightDType;

/// The ABI version this build of rbees speaks. The loader accepts a table
/// only when its `abi_version` equals this: any change to the table, to a
/// function signature or to a struct bumps it.
pub const ABI_VERSION: u32 = 1;

/// Name of the entry symbol, without the trailing NUL.
pub const ENTRY_SYMBOL: &str = "rbees_plugin_entry";

/// `extern "C" fn rbees_plugin_entry() -> *const PluginTable`. The table
/// must stay valid for as long as the library is loaded (a `static`).
pub type EntryFn = unsafe extern "C" fn() -> *const PluginTable;

/// Return codes of every plugin call (`i32` across the boundary).
pub type Status = i32;
pub const STATUS_OK: Status = 0;
/// A bad argument the plugin noticed (the host validates shapes first, so
/// this means host and plugin disagree).
pub const STATUS_INVALID_ARGUMENT: Status = 1;
/// The plugin cannot run this op/type (it should have said so in `supports`).
pub const STATUS_UNSUPPORTED: Status = 2;
/// The kernel failed (out of memory, device error, ...).
pub const STATUS_INTERNAL: Status = 3;
/// A panic inside the plugin, caught at its edge.
pub const STATUS_PANIC: Status = 4;
/// `probe`: the plugin cannot run on this device / machine.
pub const STATUS_UNAVAILABLE: Status = 5;

/// Kernel ids of the capability query (`supports`).
pub const OP_RMS_NORM: u32 = 0;
pub const OP_ROPE: u32 = 1;
pub const OP_SOFTMAX: u32 = 2;
pub const OP_SILU: u32 = 3;
pub const OP_MATMUL: u32 = 4;

/// The `dtype` of a capability query for a kernel without a weight.
pub const DTYPE_NONE: u32 = u32::MAX;

/// Answers of `supports`.
pub const SUPPORT_NO: u32 = 0;
/// The kernel takes buffers of this type as they are.
pub const SUPPORT_NATIVE: u32 = 1;
/// Only for `OP_MATMUL` with a weight type other than F32: the plugin
/// multiplies F32 weights and asks the host to convert weights of this type
/// to F32 once, at load. The host shows this declared conversion in
/// `rbees backends` and logs it; it never converts unasked.
pub const SUPPORT_CONVERT_TO_F32: u32 = 2;

/// RoPE variants (`RopeParams::variant`), as [`crate::RopeVariant`].
pub const ROPE_INTERLEAVED: u32 = 0;
pub const ROPE_HALF_SPLIT: u32 = 1;

/// A read-only buffer: a contiguous row-major `[rows, cols]` matrix of
/// `dtype` (a ggml type id, see [`WeightDType::ggml_id`]). `bytes` is the
/// exact length of `data`. Activations are always F32 (4-byte aligned);
/// quantised weight rows are whole GGUF blocks with no alignment promise.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TensorRef {
    pub data: *const c_void,
    pub bytes: usize,
    pub dtype: u32,
    pub rows: usize,
    pub cols: usize,
}

/// A writable F32 output buffer, allocated by the host with the output's
/// shape; the plugin fills every element.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TensorMut {
    pub data: *mut c_void,
    pub bytes: usize,
    pub dtype: u32,
    pub rows: usize,
    pub cols: usize,
}

/// Where a plugin writes the message of a failed call: UTF-8 bytes, at most
/// `cap`, their count in `len`. The host owns the buffer.
#[repr(C)]
#[derive(Debug)]
pub struct ErrorBuf {
    pub data: *mut u8,
    pub cap: usize,
    pub len: usize,
}

/// What `create` gets: the device (`"cpu"`, ...) and the thread count
/// (0: the plugin's default, e.g. one per core).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CreateOptions {
    pub device: *const c_char,
    pub threads: usize,
}

/// RoPE arguments besides the buffers (see `Backend::rope`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RopeParams {
    pub n_heads: usize,
    pub head_dim: usize,
    pub pos0: usize,
    pub variant: u32,
}

/// An opaque plugin instance, created by `create` and freed by `destroy`.
pub type Context = *mut c_void;

/// `probe(device, score, err)`: `STATUS_OK` and a score (higher is
/// preferred) when the plugin can run on `device` here, else
/// `STATUS_UNAVAILABLE` with the reason in `err`.
pub type ProbeFn =
    unsafe extern "C" fn(device: *const c_char, score: *mut i32, err: *mut ErrorBuf) -> Status;
/// `supports(op, dtype)`: one of the `SUPPORT_*` answers. Static: no context.
pub type SupportsFn = unsafe extern "C" fn(op: u32, dtype: u32) -> u32;
pub type CreateFn = unsafe extern "C" fn(
    options: *const CreateOptions,
    out: *mut Context,
    err: *mut ErrorBuf,
) -> Status;
pub type DestroyFn = unsafe extern "C" fn(ctx: Context);
pub type RmsNormFn = unsafe extern "C" fn(
    ctx: Context,
    x: *const TensorRef,
    weight: *const TensorRef,
    eps: f32,
    out: *const TensorMut,
    err: *mut ErrorBuf,
) -> Status;
pub type RopeFn = unsafe extern "C" fn(
    ctx: Context,
    x: *const TensorRef,
    cos: *const TensorRef,
    sin: *const TensorRef,
    params: *const RopeParams,
    out: *const TensorMut,
    err: *mut ErrorBuf,
) -> Status;
/// softmax and silu: `out = f(x)`, same shape.
pub type UnaryFn = unsafe extern "C" fn(
    ctx: Context,
    x: *const TensorRef,
    out: *const TensorMut,
    err: *mut ErrorBuf,
) -> Status;
/// `out = x · weightᵀ`: `x [m, k]` F32, `weight [n, k]`, `out [m, n]`.
pub type MatMulFn = unsafe extern "C" fn(
    ctx: Context,
    x: *const TensorRef,
    weight: *const TensorRef,
    out: *const TensorMut,
    err: *mut ErrorBuf,
) -> Status;

/// The table a plugin's entry symbol returns.
///
/// `abi_version` is the first field in every version of the ABI, so the
/// host can read it before trusting the rest. `table_size` is
/// `size_of::<PluginTable>()` as the plugin was compiled; every function
/// pointer is required (a null one is a malformed table).
#[repr(C)]
#[derive(Debug)]
pub struct PluginTable {
    pub abi_version: u32,
    pub table_size: u32,
    /// NUL-terminated UTF-8, `[a-z0-9_-]{1,32}`: the name usable as `kind`.
    pub name: *const c_char,
    /// NUL-terminated UTF-8, one line for `rbees backends`.
    pub description: *const c_char,
    pub probe: Option<ProbeFn>,
    pub supports: Option<SupportsFn>,
    pub create: Option<CreateFn>,
    pub destroy: Option<DestroyFn>,
    pub rms_norm: Option<RmsNormFn>,
    pub rope: Option<RopeFn>,
    pub softmax: Option<UnaryFn>,
    pub silu: Option<UnaryFn>,
    pub matmul: Option<MatMulFn>,
}

// SAFETY: the pointers point to static, immutable data of the library (the
// table is a `static` of the plugin), so sharing it between threads is safe.
unsafe impl Sync for PluginTable {}
unsafe impl Send for PluginTable {}

/// `size_of::<PluginTable>()` as a `table_size` value.
pub const TABLE_SIZE: u32 = std::mem::size_of::<PluginTable>() as u32;

/// `NUL`-terminated static string for the table.
#[macro_export]
macro_rules! plugin_cstr {
    ($s:expr) => {
        concat!($s, "\0").as_ptr() as *const ::std::ffi::c_char
    };
}

impl ErrorBuf {
    /// Writes `msg` (truncated to `cap` bytes on a character boundary).
    ///
    /// # Safety
    /// `err` is null or points to a valid `ErrorBuf` whose `data` has `cap`
    /// writable bytes.
    pub unsafe fn write(err: *mut ErrorBuf, msg: &str) {
        let Some(err) = (unsafe { err.as_mut() }) else {
            return;
        };
        if err.data.is_null() {
            err.len = 0;
            return;
        }
        let mut end = msg.len().min(err.cap);
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        // SAFETY: `end <= cap` bytes fit the caller's buffer.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), err.data, end) };
        err.len = end;
    }
}

/// A plugin's failure inside [`guard`]: a status code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFailure {
    pub status: Status,
    pub message: String,
}

impl PluginFailure {
    pub fn invalid(message: impl Into<String>) -> Self {
        PluginFailure {
            status: STATUS_INVALID_ARGUMENT,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        PluginFailure {
            status: STATUS_INTERNAL,
            message: message.into(),
        }
    }
}

/// The edge of every plugin entry point written in Rust: runs `f`, catches
/// a panic (a panic must never unwind into the host), and turns the outcome
/// into a status code plus a message in `err`.
///
/// # Safety
/// `err` as for [`ErrorBuf::write`].
pub unsafe fn guard(err: *mut ErrorBuf, f: impl FnOnce() -> Result<(), PluginFailure>) -> Status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => STATUS_OK,
        Ok(Err(failure)) => {
            unsafe { ErrorBuf::write(err, &failure.message) };
            failure.status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic payload".to_string());
            unsafe { ErrorBuf::write(err, &format!("plugin panicked: {what}")) };
            STATUS_PANIC
        }
    }
}

impl TensorRef {
    /// The F32 values of an activation (or F32 weight) buffer.
    ///
    /// # Safety
    /// `data` points to `bytes` readable bytes that outlive `'a`.
    pub unsafe fn as_f32<'a>(&self) -> Result<&'a [f32], PluginFailure> {
        let n = f32_len(self.dtype, self.rows, self.cols, self.bytes)?;
        if n == 0 {
            return Ok(&[]);
        }
        if self.data.is_null() || !(self.data as usize).is_multiple_of(4) {
            return Err(PluginFailure::invalid("null or misaligned F32 buffer"));
        }
        // SAFETY: length and alignment checked; validity is the caller's promise.
        Ok(unsafe { std::slice::from_raw_parts(self.data as *const f32, n) })
    }
}

impl TensorMut {
    /// The F32 values of an output buffer.
    ///
    /// # Safety
    /// `data` points to `bytes` writable bytes, not aliased, that outlive `'a`.
    pub unsafe fn as_f32_mut<'a>(&self) -> Result<&'a mut [f32], PluginFailure> {
        let n = f32_len(self.dtype, self.rows, self.cols, self.bytes)?;
        if n == 0 {
            return Ok(&mut []);
        }
        if self.data.is_null() || !(self.data as usize).is_multiple_of(4) {
            return Err(PluginFailure::invalid("null or misaligned F32 output"));
        }
        // SAFETY: length and alignment checked; validity is the caller's promise.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.data as *mut f32, n) })
    }
}

/// `rows * cols` when the buffer really is that many F32 values.
fn f32_len(dtype: u32, rows: usize, cols: usize, bytes: usize) -> Result<usize, PluginFailure> {
    if dtype != WeightDType::F32.ggml_id() {
        return Err(PluginFailure::invalid(format!(
            "expected an F32 buffer, got ggml type {dtype}"
        )));
    }
    match rows.checked_mul(cols) {
        Some(n) if n.checked_mul(4) == Some(bytes) => Ok(n),
        _ => Err(PluginFailure::invalid(format!(
            "[{rows}, {cols}] F32 does not match a buffer of {bytes} bytes"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(storage: &mut [u8]) -> ErrorBuf {
        ErrorBuf {
            data: storage.as_mut_ptr(),
            cap: storage.len(),
            len: 0,
        }
    }

    #[test]
    fn guard_turns_errors_and_panics_into_codes() {
        let mut storage = [0u8; 64];
        let mut err = buf(&mut storage);
        let ok = unsafe { guard(&mut err, || Ok(())) };
        assert_eq!(ok, STATUS_OK);
        let status = unsafe { guard(&mut err, || Err(PluginFailure::internal("boom"))) };
        assert_eq!((status, err.len), (STATUS_INTERNAL, 4));
        let status = unsafe { guard(&mut err, || panic!("kernel bug")) };
        assert_eq!(status, STATUS_PANIC);
        let msg = std::str::from_utf8(&storage[..err.len]).unwrap();
        assert_eq!(msg, "plugin panicked: kernel bug");
    }

    #[test]
    fn error_messages_are_truncated_on_a_char_boundary() {
        let mut storage = [0u8; 5];
        let mut err = buf(&mut storage);
        unsafe { ErrorBuf::write(&mut err, "abcdé") }; // é is 2 bytes: only 4 fit
        assert_eq!(&storage[..err.len], b"abcd");
    }

    #[test]
    fn f32_views_check_shape_against_bytes() {
        let values = [1.0f32; 6];
        let t = TensorRef {
            data: values.as_ptr().cast(),
            bytes: 24,
            dtype: 0,
            rows: 2,
            cols: 3,
        };
        assert_eq!(unsafe { t.as_f32() }.unwrap().len(), 6);
        let bad = TensorRef { cols: 4, ..t };
        assert!(unsafe { bad.as_f32() }.is_err());
        let quantised = TensorRef { dtype: 3, ..t };
        assert!(unsafe { quantised.as_f32() }.is_err());
    }
}
