//! Device memory: activations and KV caches as device buffers, the
//! stream-ordered pool they come from, and the copies between host and device.

use std::sync::OnceLock;

use cudarc::driver::{CudaContext, CudaSlice};
use rbees_core::{checks, BackendError, HostWeight, Result, WeightDType};

use crate::budget::DeviceMemory;
use crate::float16;
use crate::setup::{cuda_err, CudaKernelsBackend};
use crate::weight::{float_values, padding_bytes, CudaWeight, Storage};

/// A row-major f32 matrix in device memory.
pub struct CudaTensor {
    pub(crate) data: CudaSlice<f32>,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    /// The rows rounded to Q8_1 for quantised products, made by the first
    /// one: q, k and v (and gate and up) multiply the same activations.
    pub(crate) q8_1: OnceLock<CudaSlice<u8>>,
}

/// One layer's keys and values, `[capacity, width]` each, in device memory.
pub struct CudaKvCache {
    pub(crate) keys: CudaSlice<f32>,
    pub(crate) values: CudaSlice<f32>,
    pub(crate) capacity: usize,
    pub(crate) width: usize,
}

impl CudaKvCache {
    /// `(capacity, width)`, as `core::checks` takes a cache's dimensions.
    pub(crate) fn dims(&self) -> (usize, usize) {
        (self.capacity, self.width)
    }
}

/// The pool this backend's allocations come from: `cuMemAllocAsync` on our
/// stream takes from the device's current pool.
unsafe fn current_pool(
    ctx: &CudaContext,
) -> std::result::Result<cudarc::driver::sys::CUmemoryPool, cudarc::driver::DriverError> {
    cudarc::driver::result::device::get_mem_pool(ctx.cu_device())
}

/// Every op allocates its output from the stream-ordered pool; by default
/// the pool hands freed memory back to the driver at each synchronisation
/// (threshold 0), so every token would allocate afresh. Keeping it pooled
/// turns a decode step's allocations into reuse. The load-time checks
/// account for what the pool keeps (see [`CudaKernelsBackend::shortfall`]).
pub(crate) fn keep_freed_memory_pooled(
    ctx: &CudaContext,
) -> std::result::Result<(), cudarc::driver::DriverError> {
    use cudarc::driver::{result, sys};
    if !ctx.has_async_alloc() {
        return Ok(());
    }
    let mut threshold = u64::MAX;
    unsafe {
        let pool = current_pool(ctx)?;
        result::mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
    }
}

impl CudaKernelsBackend {
    /// Device memory (free, total) in bytes.
    pub fn memory(&self) -> Result<(usize, usize)> {
        self.ctx.mem_get_info().map_err(cuda_err("memory"))
    }

    /// Device memory in use (by any process), in bytes, as the driver counts
    /// it: what our pool keeps idle is included, since no other process can
    /// have it. None when the driver cannot say.
    pub(crate) fn used_bytes(&self) -> Option<u64> {
        let (free, total) = self.memory().ok()?;
        Some(total.saturating_sub(free) as u64)
    }

    /// Why `bytes` more of device memory do not fit, or `None` when they
    /// do (see [`crate::budget`]). The cheap count (driver free plus the
    /// pool's idle bytes) answers almost every call of a load. Only when it
    /// falls short is every queued free waited for (the pool cannot release
    /// memory whose asynchronous free it has not seen complete) and the pool
    /// trimmed, handing its idle memory back to the driver, before counting
    /// again: a weight is one allocation, which fresh memory from the driver
    /// can always hold but the pool's scattered idle ranges may not.
    pub(crate) fn shortfall(&self, bytes: usize) -> Result<Option<String>> {
        let cheap = self.load_memory(false)?;
        if cheap.shortfall(bytes as u64, &self.device_name).is_none() {
            return Ok(None);
        }
        Ok(self
            .load_memory(true)?
            .shortfall(bytes as u64, &self.device_name))
    }

    /// Device memory as the load-time check counts it; with `trim`, after
    /// waiting for queued frees and trimming the pool (see [`Self::shortfall`]).
    fn load_memory(&self, trim: bool) -> Result<DeviceMemory> {
        use cudarc::driver::{result, sys::CUmemPool_attribute as Attr};
        let err = cuda_err("memory");
        let (mut pool_reserved, mut pool_used) = (0u64, 0u64);
        if self.ctx.has_async_alloc() {
            if trim {
                self.ctx.synchronize().map_err(&err)?;
            }
            unsafe {
                let pool = current_pool(&self.ctx).map_err(&err)?;
                if trim {
                    result::mem_pool::trim_to(pool, 0).map_err(&err)?;
                }
                // Both attributes are cuuint64_t.
                for (attr, value) in [
                    (
                        Attr::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT,
                        &mut pool_reserved,
                    ),
                    (Attr::CU_MEMPOOL_ATTR_USED_MEM_CURRENT, &mut pool_used),
                ] {
                    result::mem_pool::get_attribute(pool, attr, (value as *mut u64).cast())
                        .map_err(&err)?;
                }
            }
        }
        let (free, total) = self.memory()?;
        Ok(DeviceMemory {
            driver_free: free as u64,
            total: total as u64,
            pool_reserved,
            pool_used,
        })
    }

    pub(crate) fn alloc(&self, op: &'static str, len: usize) -> Result<CudaSlice<f32>> {
        // Every kernel writes each output element, so no memset.
        unsafe { self.stream.alloc::<f32>(len.max(1)) }.map_err(cuda_err(op))
    }

    pub(crate) fn tensor(&self, data: CudaSlice<f32>, rows: usize, cols: usize) -> CudaTensor {
        CudaTensor {
            data,
            rows,
            cols,
            q8_1: OnceLock::new(),
        }
    }

    /// `data` as a `[rows, cols]` device tensor.
    pub(crate) fn upload_rows(&self, data: &[f32], rows: usize, cols: usize) -> Result<CudaTensor> {
        checks::upload(data.len(), rows, cols)?;
        let slice = if data.is_empty() {
            self.alloc("upload", 0)?
        } else {
            self.stream.clone_htod(data).map_err(cuda_err("upload"))?
        };
        Ok(self.tensor(slice, rows, cols))
    }

    /// `x`'s values, row-major, on the host.
    pub(crate) fn download_rows(&self, x: &CudaTensor) -> Result<Vec<f32>> {
        let mut out = self
            .stream
            .clone_dtoh(&x.data)
            .map_err(cuda_err("download"))?;
        // An empty tensor still holds one element (see `alloc`).
        out.truncate(x.rows * x.cols);
        Ok(out)
    }

    /// Refuses a weight that does not fit the device memory still
    /// available, saying how much it needs and how much there is.
    fn reserve(&self, name: &str, bytes: usize) -> Result<()> {
        match self.shortfall(bytes)? {
            Some(detail) => Err(BackendError::Weight {
                name: name.to_string(),
                detail,
            }),
            None => Ok(()),
        }
    }

    fn upload_blocks(&self, w: &HostWeight<'_>) -> Result<CudaSlice<u8>> {
        let len = w.data.len() + padding_bytes(w.dtype);
        self.reserve(w.name, len)?;
        let mut blocks = self
            .stream
            .alloc_zeros::<u8>(len)
            .map_err(cuda_err("load_weight"))?;
        self.stream
            .memcpy_htod(w.data, &mut blocks.slice_mut(..w.data.len()))
            .map_err(cuda_err("load_weight"))?;
        Ok(blocks)
    }

    /// A validated weight of a supported type in device memory: quantised
    /// matrices as their blocks, F16/BF16 matrices as their 16-bit values
    /// (half the memory and the bytes read per token of f32), everything
    /// else as f32.
    pub(crate) fn upload_weight(&self, w: &HostWeight<'_>) -> Result<CudaWeight> {
        let (rows, cols) = w.rows_cols();
        let float16_matrix =
            w.shape.len() == 2 && matches!(w.dtype, WeightDType::F16 | WeightDType::BF16);
        let storage = if float16_matrix {
            let mut values = float16::values(w.data);
            self.reserve(w.name, values.len() * 2)?;
            if values.is_empty() {
                values.push(0); // a buffer is never empty (see `alloc`)
            }
            let data = self
                .stream
                .clone_htod(&values)
                .map_err(cuda_err("load_weight"))?;
            Storage::Float16(data)
        } else if w.dtype.is_quantized() {
            let blocks = self.upload_blocks(w)?;
            if w.shape.len() == 1 {
                // Vectors (norm weights) are read as f32 by the kernels.
                let weight = CudaWeight {
                    storage: Storage::Blocks(blocks),
                    dtype: w.dtype,
                    rows,
                    cols,
                };
                Storage::Dense(self.get_rows(&weight, &[0])?)
            } else {
                Storage::Blocks(blocks)
            }
        } else {
            // F32 weights, and F16/BF16 vectors (norm weights: read as f32
            // by the kernels, and small).
            let values = float_values(w)?;
            self.reserve(w.name, values.len() * 4)?;
            let data = if values.is_empty() {
                self.alloc("load_weight", 0)?
            } else {
                self.stream
                    .clone_htod(&values)
                    .map_err(cuda_err("load_weight"))?
            };
            Storage::Dense(data)
        };
        Ok(CudaWeight {
            storage,
            dtype: w.dtype,
            rows,
            cols,
        })
    }

    /// A zeroed `[capacity, width]` KV cache, refused up front when attention
    /// could not hold its rows in shared memory or the device has no room.
    pub(crate) fn alloc_kv_cache(&self, capacity: usize, width: usize) -> Result<CudaKvCache> {
        // The fused attention keeps a row's scores (and the query head) in
        // shared memory. Saturating: a configured context past usize is refused here too.
        let needed = capacity.saturating_add(width).saturating_mul(4);
        if needed > self.attention_shared_bytes {
            return Err(BackendError::Other(format!(
                "a context of {capacity} positions needs {} KiB of shared memory per attention block; \
                 {} allows {} KiB: use a smaller context size",
                needed / 1024,
                self.device_name,
                self.attention_shared_bytes / 1024
            )));
        }
        let values = capacity * width;
        // Keys and values; no overflow: both sizes are bounded by the
        // shared-memory check above.
        let bytes = 2 * values * 4;
        if let Some(detail) = self.shortfall(bytes)? {
            return Err(BackendError::Other(format!(
                "the KV cache of one layer (keys and values, {capacity} positions × {width}) {detail}"
            )));
        }
        let zeros = || {
            self.stream
                .alloc_zeros::<f32>(values.max(1))
                .map_err(cuda_err("kv_cache"))
        };
        Ok(CudaKvCache {
            keys: zeros()?,
            values: zeros()?,
            capacity,
            width,
        })
    }
}
