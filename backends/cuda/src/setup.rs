//! The backend value and its start-up: device check, CUDA context and
//! stream, cuBLAS, every kernel module and attention's shared memory. All
//! of it is settled in `new`, so a missing kernel or an unusable device is
//! a start-up error, never a failure in the middle of a request.

use std::fmt::Display;
use std::sync::Arc;

use cudarc::cublas::CudaBlas;
use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{CudaContext, CudaStream};
use rbees_core::{BackendError, BackendOptions, BuiltInBackend, Result};

use crate::device;
use crate::kernels::Kernels;
use crate::memory::keep_freed_memory_pooled;
use crate::NAME;

pub struct CudaKernelsBackend {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) blas: CudaBlas,
    // Boxed: dozens of function handles, kept out of the model enum's size.
    pub(crate) kernels: Box<Kernels>,
    pub(crate) device_name: String,
    /// Dynamic shared memory one attention block may use, in bytes.
    pub(crate) attention_shared_bytes: usize,
}

/// A driver or cuBLAS error as a backend error naming the op that hit it.
pub(crate) fn cuda_err<E: Display>(op: &'static str) -> impl Fn(E) -> BackendError {
    move |e| BackendError::Other(format!("cuda {op}: {e}"))
}

impl CudaKernelsBackend {
    pub fn new(options: &BackendOptions) -> Result<Self> {
        let device_err = |reason: String| BackendError::Device {
            backend: NAME.into(),
            device: options.device.clone(),
            reason,
        };
        let ordinal = device::ordinal(&options.device).map_err(device_err)?;
        device::check(ordinal).map_err(device_err)?;
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| device_err(format!("cannot create a CUDA context: {e}")))?;
        // One stream: cudarc's per-buffer events would only add work.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(|e| device_err(format!("cannot create a stream: {e}")))?;
        keep_freed_memory_pooled(&ctx)
            .map_err(|e| device_err(format!("cannot configure the memory pool: {e}")))?;
        let blas = CudaBlas::new(stream.clone())
            .map_err(|e| device_err(format!("cannot start cuBLAS: {e}")))?;
        let kernels = Box::new(Kernels::load(&ctx).map_err(device_err)?);
        let opt_in = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_err(|e| device_err(format!("cannot read the shared memory size: {e}")))?;
        // The kernel's static shared memory (one float per warp) comes on top.
        let attention_shared_bytes = (opt_in.max(0) as usize).saturating_sub(32 * 4);
        kernels
            .attention
            .set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                attention_shared_bytes as i32,
            )
            .map_err(|e| device_err(format!("cannot size attention's shared memory: {e}")))?;
        Ok(CudaKernelsBackend {
            ctx,
            stream,
            blas,
            kernels,
            device_name: options.device.clone(),
            attention_shared_bytes,
        })
    }
}

/// How the worker constructs it by name. The name stays the crate's
/// [`NAME`]: the descriptor needs it in builds without CUDA too, where this
/// type does not exist.
impl BuiltInBackend for CudaKernelsBackend {
    const NAME: &'static str = NAME;

    fn start(options: &BackendOptions) -> Result<Self> {
        Self::new(options)
    }
}
