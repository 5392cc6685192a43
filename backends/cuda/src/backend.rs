use std::fmt::Display;
use std::sync::{Arc, OnceLock};

use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};
use rbees_core::{
    checks, AttentionShape, Backend, BackendError, BackendOptions, HostWeight, Op, Result,
    RopeVariant, Support, WeightDType,
};

use crate::device;
use crate::kernels::{Kernels, QuantKernels};
use crate::weight::{float_values, padding_bytes, CudaWeight, Storage, MATRIX_ROW_PADDING};
use crate::NAME;

/// A row-major f32 matrix in device memory.
pub struct CudaTensor {
    pub(crate) data: CudaSlice<f32>,
    rows: usize,
    cols: usize,
    /// The rows rounded to Q8_1 for quantised products, made by the first
    /// one: q, k and v (and gate and up) multiply the same activations.
    q8_1: OnceLock<CudaSlice<u8>>,
}

/// One layer's keys and values, `[capacity, width]` each, in device memory.
pub struct CudaKvCache {
    keys: CudaSlice<f32>,
    values: CudaSlice<f32>,
    capacity: usize,
    width: usize,
}

/// Threads per block of the fused attention kernel (4 warps: one key per warp at a time).
const ATTENTION_THREADS: u32 = 128;
/// Values and bytes of one Q8_1 block (candle-kernels' `block_q8_1`: two halves and 32 i8).
const Q8_1_VALUES: usize = 32;
const Q8_1_BYTES: usize = 36;
/// Threads per block of `quantize_q8_1` (candle's `CUDA_QUANTIZE_BLOCK_SIZE`).
const QUANTIZE_THREADS: usize = 256;
/// Grid y of one `quantize_q8_1` launch is at most this many rows.
const MAX_GRID_Y: usize = 65_535;

pub struct CudaKernelsBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    // Boxed: dozens of function handles, kept out of the model enum's size.
    kernels: Box<Kernels>,
    device_name: String,
    /// Dynamic shared memory one attention block may use, in bytes.
    attention_shared_bytes: usize,
}

fn cuda_err<E: Display>(op: &'static str) -> impl Fn(E) -> BackendError {
    move |e| BackendError::Other(format!("cuda {op}: {e}"))
}

/// `v` as a kernel's `int` argument, or a clear error for sizes past 2^31.
fn int(op: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        BackendError::shape(
            op,
            format!("size {v} is past the kernels' 32-bit index range"),
        )
    })
}

/// The `int` arguments our attention kernels share: rows, heads, key/value
/// heads, head size, and a position (`pos0`, or the key count).
fn attention_ints(
    op: &'static str,
    seq: usize,
    shape: AttentionShape,
    position: usize,
) -> Result<[i32; 5]> {
    Ok([
        int(op, seq)?,
        int(op, shape.n_heads)?,
        int(op, shape.n_kv_heads)?,
        int(op, shape.head_dim)?,
        int(op, position)?,
    ])
}

/// A grid-stride launch over `n` elements (our kernels and candle's loop over the rest).
fn elementwise(n: usize) -> LaunchConfig {
    const THREADS: usize = 256;
    LaunchConfig {
        grid_dim: (n.div_ceil(THREADS).clamp(1, 65_535) as u32, 1, 1),
        block_dim: (THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Every op allocates its output from the stream-ordered pool; by default
/// the pool hands freed memory back to the driver at each synchronisation
/// (threshold 0), so every token would allocate afresh. Keeping it pooled
/// turns a decode step's allocations into reuse.
fn keep_freed_memory_pooled(
    ctx: &CudaContext,
) -> std::result::Result<(), cudarc::driver::DriverError> {
    use cudarc::driver::{result, sys};
    if !ctx.has_async_alloc() {
        return Ok(());
    }
    let mut threshold = u64::MAX;
    unsafe {
        let pool = result::device::get_default_mem_pool(ctx.cu_device())?;
        result::mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
    }
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

    /// Device memory (free, total) in bytes.
    pub fn memory(&self) -> Result<(usize, usize)> {
        self.ctx.mem_get_info().map_err(cuda_err("memory"))
    }

    fn alloc(&self, op: &'static str, len: usize) -> Result<CudaSlice<f32>> {
        // Every kernel below writes each output element, so no memset.
        unsafe { self.stream.alloc::<f32>(len.max(1)) }.map_err(cuda_err(op))
    }

    fn tensor(&self, data: CudaSlice<f32>, rows: usize, cols: usize) -> CudaTensor {
        CudaTensor {
            data,
            rows,
            cols,
            q8_1: OnceLock::new(),
        }
    }

    /// Refuses a weight that does not fit the free device memory, saying how much it needs.
    fn reserve(&self, name: &str, bytes: usize) -> Result<()> {
        let (free, total) = self.memory()?;
        if bytes > free {
            let mib = |b: usize| b as f64 / (1 << 20) as f64;
            return Err(BackendError::Weight {
                name: name.to_string(),
                detail: format!(
                    "needs {:.1} MiB of device memory but {} has {:.1} MiB free of {:.1} MiB",
                    mib(bytes),
                    self.device_name,
                    mib(free),
                    mib(total)
                ),
            });
        }
        Ok(())
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

    /// Rows `ids` of a `[rows, cols]` weight as f32 `[ids.len(), cols]`.
    fn get_rows(&self, w: &CudaWeight, ids: &[u32]) -> Result<CudaSlice<f32>> {
        let cols = w.cols;
        let mut out = self.alloc("embedding", ids.len() * cols)?;
        if ids.is_empty() {
            return Ok(out);
        }
        let ids_dev = self.stream.clone_htod(ids).map_err(cuda_err("embedding"))?;
        let ne00 = cols as i64;
        // Bytes per stored row (get_rows_f32 ignores it: its rows are `cols` floats).
        let row_bytes = match &w.storage {
            Storage::Dense(_) => cols * 4,
            Storage::Blocks(_) => w.dtype.storage_bytes(cols).unwrap_or(0),
        };
        let grid_x = ids.len() as u32;
        let (func, cfg) = match &w.storage {
            Storage::Dense(_) => (
                &self.kernels.get_rows_f32,
                LaunchConfig {
                    grid_dim: (grid_x, cols.div_ceil(256).clamp(1, 65_535) as u32, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                },
            ),
            Storage::Blocks(_) => {
                let q = self.quant(w.dtype, "embedding")?;
                let cfg = if w.dtype.block_size() == 256 {
                    // One block per super-block; Q4_K's dequantiser uses 32 threads, the others 64.
                    let threads = if w.dtype == WeightDType::Q4K { 32 } else { 64 };
                    let blocks = cols / 256;
                    if blocks > MAX_GRID_Y {
                        return Err(BackendError::shape(
                            "embedding",
                            format!("rows of {cols} values are past the kernel's grid limit"),
                        ));
                    }
                    LaunchConfig {
                        grid_dim: (grid_x, blocks as u32, 1),
                        block_dim: (threads, 1, 1),
                        shared_mem_bytes: 0,
                    }
                } else {
                    LaunchConfig {
                        grid_dim: (grid_x, cols.div_ceil(512).clamp(1, 65_535) as u32, 1),
                        block_dim: (256, 1, 1),
                        shared_mem_bytes: 0,
                    }
                };
                (&q.get_rows, cfg)
            }
        };
        let mut launch = self.stream.launch_builder(func);
        match &w.storage {
            Storage::Dense(d) => launch.arg(d),
            Storage::Blocks(b) => launch.arg(b),
        };
        launch
            .arg(&ids_dev)
            .arg(&mut out)
            .arg(&ne00)
            .arg(&row_bytes);
        unsafe { launch.launch(cfg) }.map_err(cuda_err("embedding"))?;
        Ok(out)
    }

    fn quant(&self, dtype: WeightDType, op: &'static str) -> Result<&QuantKernels> {
        self.kernels
            .quantized
            .get(&dtype)
            .ok_or_else(|| BackendError::Unsupported {
                backend: NAME.into(),
                op: if op == "embedding" {
                    Op::Embedding
                } else {
                    Op::MatMul
                },
                dtype,
                reason: "no candle-kernels kernel for this type".into(),
            })
    }

    /// `x` rounded to Q8_1 blocks, each row padded with zeros to `k_padded` values.
    fn quantize_q8_1(&self, x: &CudaTensor, k_padded: usize) -> Result<CudaSlice<u8>> {
        let (m, k) = (x.rows, x.cols);
        let row_bytes = k_padded / Q8_1_VALUES * Q8_1_BYTES;
        let mut out =
            unsafe { self.stream.alloc::<u8>(m * row_bytes) }.map_err(cuda_err("matmul"))?;
        let (kx, kx_padded) = (int("matmul", k)?, int("matmul", k_padded)?);
        let mut row = 0;
        while row < m {
            let rows = (m - row).min(MAX_GRID_Y);
            let src = x.data.slice(row * k..(row + rows) * k);
            let mut dst = out.slice_mut(row * row_bytes..(row + rows) * row_bytes);
            let cfg = LaunchConfig {
                grid_dim: (k_padded.div_ceil(QUANTIZE_THREADS) as u32, rows as u32, 1),
                block_dim: (QUANTIZE_THREADS as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut launch = self.stream.launch_builder(&self.kernels.quantize_q8_1);
            launch.arg(&src).arg(&mut dst).arg(&kx).arg(&kx_padded);
            unsafe { launch.launch(cfg) }.map_err(cuda_err("matmul"))?;
            row += rows;
        }
        Ok(out)
    }

    /// `x · Wᵀ` on GGUF blocks: activations to Q8_1, then candle-kernels'
    /// matrix-vector kernel (up to 8 rows) or tiled matrix kernel.
    fn quantized_matmul(
        &self,
        x: &CudaTensor,
        blocks: &CudaSlice<u8>,
        dtype: WeightDType,
        n: usize,
    ) -> Result<CudaSlice<f32>> {
        let q = self.quant(dtype, "matmul")?;
        let (m, k) = (x.rows, x.cols);
        let k_padded = k.next_multiple_of(MATRIX_ROW_PADDING);
        let xq = match x.q8_1.get() {
            Some(xq) => xq,
            None => {
                let xq = self.quantize_q8_1(x, k_padded)?;
                x.q8_1.get_or_init(|| xq)
            }
        };
        let (ncols_x, nrows_x) = (int("matmul", k)?, int("matmul", n)?);
        let (rows_y, cols_y) = (int("matmul", k_padded)?, int("matmul", m)?);
        // The matrix-vector kernel computes two weight rows per block from 2
        // activation rows on, without a bounds check on the second: with an
        // odd row count it would read past the weight and write into the
        // next output row. Those shapes take the tiled kernel.
        if m == 1 || (m <= 8 && n.is_multiple_of(2)) {
            // It writes every output, so no memset.
            let mut y = self.alloc("matmul", m * n)?;
            // candle-core's launch shape for mul_mat_vec_*_q8_1_cuda{m}.
            let (blocks_x, warps) = match m {
                1 => (n, 4),
                2..=4 => (n.div_ceil(2), 4),
                _ => (n.div_ceil(2), 2),
            };
            let cfg = LaunchConfig {
                grid_dim: (blocks_x as u32, 1, 1),
                block_dim: (32, warps, 1),
                shared_mem_bytes: 0,
            };
            let mut launch = self.stream.launch_builder(&q.mat_vec[m - 1]);
            launch.arg(blocks).arg(xq).arg(&mut y);
            launch
                .arg(&ncols_x)
                .arg(&nrows_x)
                .arg(&rows_y)
                .arg(&nrows_x);
            unsafe { launch.launch(cfg) }.map_err(cuda_err("matmul"))?;
            Ok(y)
        } else {
            let mut y = self
                .stream
                .alloc_zeros::<f32>(m * n)
                .map_err(cuda_err("matmul"))?;
            let cfg = LaunchConfig {
                grid_dim: (
                    n.div_ceil(q.mat_mat_rows as usize) as u32,
                    m.div_ceil(q.mat_mat_cols as usize) as u32,
                    1,
                ),
                block_dim: (32, 4, 1),
                shared_mem_bytes: 0,
            };
            let mut launch = self.stream.launch_builder(&q.mat_mat);
            launch.arg(blocks).arg(xq).arg(&mut y);
            launch
                .arg(&ncols_x)
                .arg(&nrows_x)
                .arg(&cols_y)
                .arg(&rows_y)
                .arg(&nrows_x);
            unsafe { launch.launch(cfg) }.map_err(cuda_err("matmul"))?;
            Ok(y)
        }
    }

    /// `x · Wᵀ` with an f32 weight, by cuBLAS in f32. Column-major, that is
    /// `Yᵀ[n, m] = W[n, k] · Xᵀ[k, m]`: W is read transposed, X as it is.
    fn dense_matmul(&self, x: &CudaTensor, w: &CudaSlice<f32>, n: usize) -> Result<CudaSlice<f32>> {
        let (m, k) = (x.rows, x.cols);
        let mut y = self.alloc("matmul", m * n)?;
        let cfg = GemmConfig {
            transa: cublasOperation_t::CUBLAS_OP_T,
            transb: cublasOperation_t::CUBLAS_OP_N,
            m: int("matmul", n)?,
            n: int("matmul", m)?,
            k: int("matmul", k)?,
            alpha: 1.0f32,
            lda: int("matmul", k)?,
            ldb: int("matmul", k)?,
            beta: 0.0f32,
            ldc: int("matmul", n)?,
        };
        unsafe { self.blas.gemm(cfg, w, &x.data, &mut y) }.map_err(cuda_err("matmul"))?;
        Ok(y)
    }

    /// A binary elementwise candle kernel (`badd_f32`, `bmul_f32`) on contiguous inputs.
    fn binary(
        &self,
        op: &'static str,
        f: &CudaFunction,
        a: &CudaTensor,
        b: &CudaTensor,
    ) -> Result<CudaTensor> {
        checks::same(op, (a.rows, a.cols), (b.rows, b.cols))?;
        let n = a.rows * a.cols;
        int(op, n)?;
        let mut out = self.alloc(op, n)?;
        // (numel, num_dims, dims_and_strides = null: contiguous, lhs, rhs, out)
        let (numel, dims, no_layout) = (n, 2usize, 0u64);
        let mut launch = self.stream.launch_builder(f);
        launch.arg(&numel).arg(&dims).arg(&no_layout);
        launch.arg(&a.data).arg(&b.data).arg(&mut out);
        unsafe { launch.launch(elementwise(n)) }.map_err(cuda_err(op))?;
        Ok(self.tensor(out, a.rows, a.cols))
    }

    fn cache_dims(cache: &CudaKvCache) -> (usize, usize) {
        (cache.capacity, cache.width)
    }
}

impl Backend for CudaKernelsBackend {
    type Tensor = CudaTensor;
    type Weight = CudaWeight;
    type KvCache = CudaKvCache;

    fn name(&self) -> &'static str {
        NAME
    }

    fn device(&self) -> String {
        self.device_name.clone()
    }

    fn device_memory_used(&self) -> Option<u64> {
        let (free, total) = self.memory().ok()?;
        Some(total.saturating_sub(free) as u64)
    }

    fn supports(&self, op: Op, dtype: Option<WeightDType>) -> Support {
        match (op, dtype) {
            (Op::MatMul | Op::Embedding, Some(WeightDType::Q8K)) => Support::Unsupported(
                "Q8_K is an activation type with no CUDA product or lookup kernel; GGUF weights never use it"
                    .into(),
            ),
            // Batches: the single-sequence kernels on each sequence's rows,
            // stacked with device copies.
            (op, _) if op.has_default() && !matches!(op, Op::Attention | Op::SwiGlu | Op::ConcatRows) => {
                Support::Composed
            }
            _ => Support::Native,
        }
    }

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<CudaTensor> {
        checks::upload(data.len(), rows, cols)?;
        let slice = if data.is_empty() {
            self.alloc("upload", 0)?
        } else {
            self.stream.clone_htod(data).map_err(cuda_err("upload"))?
        };
        Ok(self.tensor(slice, rows, cols))
    }

    fn download(&self, x: &CudaTensor) -> Result<Vec<f32>> {
        let mut out = self
            .stream
            .clone_dtoh(&x.data)
            .map_err(cuda_err("download"))?;
        out.truncate(x.rows * x.cols);
        Ok(out)
    }

    fn dims(&self, x: &CudaTensor) -> (usize, usize) {
        (x.rows, x.cols)
    }

    fn load_weight(&self, w: &HostWeight<'_>) -> Result<CudaWeight> {
        w.validate()?;
        if let Support::Unsupported(reason) = self.supports(Op::MatMul, Some(w.dtype)) {
            return Err(BackendError::Weight {
                name: w.name.to_string(),
                detail: reason,
            });
        }
        let (rows, cols) = w.rows_cols();
        let storage = if w.dtype.is_quantized() {
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

    fn weight_dims(&self, w: &CudaWeight) -> (usize, usize) {
        (w.rows, w.cols)
    }

    fn rms_norm(&self, x: &CudaTensor, weight: &CudaWeight, eps: f32) -> Result<CudaTensor> {
        checks::rms_norm((x.rows, x.cols), (weight.rows, weight.cols))?;
        let Storage::Dense(alpha) = &weight.storage else {
            return Err(BackendError::shape(
                "rms_norm",
                "the weight must be a vector",
            ));
        };
        let n_cols = int("rms_norm", x.cols)?;
        int("rms_norm", x.rows * x.cols)?;
        let mut out = self.alloc("rms_norm", x.rows * x.cols)?;
        if x.rows == 0 {
            return Ok(self.tensor(out, 0, x.cols));
        }
        // candle-nn's launch: one block per row, 32 threads below 1024 columns, else 1024.
        let block: i32 = if x.cols < 1024 { 32 } else { 1024 };
        let cfg = LaunchConfig {
            grid_dim: (x.rows as u32, 1, 1),
            block_dim: (block as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = self.stream.launch_builder(&self.kernels.rms_norm);
        launch.arg(&x.data).arg(&mut out).arg(alpha);
        launch.arg(&n_cols).arg(&block).arg(&eps);
        unsafe { launch.launch(cfg) }.map_err(cuda_err("rms_norm"))?;
        Ok(self.tensor(out, x.rows, x.cols))
    }

    fn rope(
        &self,
        x: &CudaTensor,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
        cos: &CudaTensor,
        sin: &CudaTensor,
        variant: RopeVariant,
    ) -> Result<CudaTensor> {
        checks::rope(
            (x.rows, x.cols),
            n_heads,
            head_dim,
            pos0,
            (cos.rows, cos.cols),
            (sin.rows, sin.cols),
        )?;
        let mut out = self.alloc("rope", x.rows * x.cols)?;
        let args = [
            int("rope", x.rows)?,
            int("rope", n_heads)?,
            int("rope", head_dim)?,
            int("rope", cos.cols)?,
            int("rope", pos0)?,
            i32::from(variant == RopeVariant::Interleaved),
        ];
        let pairs = x.rows * n_heads * head_dim.div_ceil(2);
        let mut launch = self.stream.launch_builder(&self.kernels.rope);
        launch
            .arg(&x.data)
            .arg(&mut out)
            .arg(&cos.data)
            .arg(&sin.data);
        for a in &args {
            launch.arg(a);
        }
        unsafe { launch.launch(elementwise(pairs)) }.map_err(cuda_err("rope"))?;
        Ok(self.tensor(out, x.rows, x.cols))
    }

    fn softmax(&self, x: &CudaTensor) -> Result<CudaTensor> {
        let n_cols = int("softmax", x.cols)?;
        int("softmax", x.rows * x.cols)?;
        let mut out = self.alloc("softmax", x.rows * x.cols)?;
        if x.rows == 0 || x.cols == 0 {
            return Ok(self.tensor(out, x.rows, x.cols));
        }
        // candle-nn's launch: one row per block, 32 threads along the row.
        let cfg = LaunchConfig {
            grid_dim: (x.rows as u32, 1, 1),
            block_dim: (1, 32, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = self.stream.launch_builder(&self.kernels.softmax);
        launch.arg(&x.data).arg(&mut out).arg(&n_cols);
        unsafe { launch.launch(cfg) }.map_err(cuda_err("softmax"))?;
        Ok(self.tensor(out, x.rows, x.cols))
    }

    fn silu(&self, x: &CudaTensor) -> Result<CudaTensor> {
        let n = x.rows * x.cols;
        int("silu", n)?;
        let mut out = self.alloc("silu", n)?;
        // (numel, num_dims, info = null: contiguous, in, out)
        let (numel, dims, no_layout) = (n, 2usize, 0u64);
        let mut launch = self.stream.launch_builder(&self.kernels.silu);
        launch
            .arg(&numel)
            .arg(&dims)
            .arg(&no_layout)
            .arg(&x.data)
            .arg(&mut out);
        unsafe { launch.launch(elementwise(n)) }.map_err(cuda_err("silu"))?;
        Ok(self.tensor(out, x.rows, x.cols))
    }

    fn matmul(&self, x: &CudaTensor, w: &CudaWeight) -> Result<CudaTensor> {
        checks::matmul((x.rows, x.cols), (w.rows, w.cols))?;
        let n = w.rows;
        if x.rows == 0 {
            return Ok(self.tensor(self.alloc("matmul", 0)?, 0, n));
        }
        let y = match &w.storage {
            Storage::Dense(d) => self.dense_matmul(x, d, n)?,
            Storage::Blocks(b) => self.quantized_matmul(x, b, w.dtype, n)?,
        };
        Ok(self.tensor(y, x.rows, n))
    }

    fn embedding(&self, table: &CudaWeight, ids: &[u32]) -> Result<CudaTensor> {
        checks::embedding(ids, (table.rows, table.cols))?;
        let out = self.get_rows(table, ids)?;
        Ok(self.tensor(out, ids.len(), table.cols))
    }

    fn add(&self, a: &CudaTensor, b: &CudaTensor) -> Result<CudaTensor> {
        self.binary("add", &self.kernels.add, a, b)
    }

    fn mul(&self, a: &CudaTensor, b: &CudaTensor) -> Result<CudaTensor> {
        self.binary("mul", &self.kernels.mul, a, b)
    }

    fn rows(&self, x: &CudaTensor, start: usize, len: usize) -> Result<CudaTensor> {
        checks::rows((x.rows, x.cols), start, len)?;
        let mut out = self.alloc("rows", len * x.cols)?;
        if len * x.cols > 0 {
            let src = x.data.slice(start * x.cols..(start + len) * x.cols);
            self.stream
                .memcpy_dtod(&src, &mut out)
                .map_err(cuda_err("rows"))?;
        }
        Ok(self.tensor(out, len, x.cols))
    }

    fn concat_rows(&self, parts: &[&CudaTensor]) -> Result<CudaTensor> {
        let cols = parts.first().map_or(0, |p| p.cols);
        for p in parts {
            checks::same("concat_rows", (p.rows, cols), (p.rows, p.cols))?;
        }
        let rows: usize = parts.iter().map(|p| p.rows).sum();
        let mut out = self.alloc("concat_rows", rows * cols)?;
        let mut at = 0;
        for p in parts {
            let len = p.rows * cols;
            if len > 0 {
                let src = p.data.slice(0..len);
                self.stream
                    .memcpy_dtod(&src, &mut out.slice_mut(at..at + len))
                    .map_err(cuda_err("concat_rows"))?;
            }
            at += len;
        }
        Ok(self.tensor(out, rows, cols))
    }

    fn kv_cache(&self, capacity: usize, width: usize) -> Result<CudaKvCache> {
        // The fused attention keeps a row's scores (and the query head) in shared memory.
        let needed = (capacity + width) * 4;
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
        let bytes = 2 * values * 4;
        let (free, _) = self.memory()?;
        if bytes > free {
            return Err(BackendError::Other(format!(
                "the KV cache needs {} MiB of device memory per layer; {} has {} MiB free",
                bytes >> 20,
                self.device_name,
                free >> 20
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

    fn kv_append(
        &self,
        cache: &mut CudaKvCache,
        k: &CudaTensor,
        v: &CudaTensor,
        pos0: usize,
    ) -> Result<()> {
        checks::kv_append(
            Self::cache_dims(cache),
            (k.rows, k.cols),
            (v.rows, v.cols),
            pos0,
        )?;
        let range = pos0 * cache.width..(pos0 + k.rows) * cache.width;
        if range.is_empty() {
            return Ok(());
        }
        let stream = &self.stream;
        stream
            .memcpy_dtod(&k.data, &mut cache.keys.slice_mut(range.clone()))
            .map_err(cuda_err("kv_append"))?;
        stream
            .memcpy_dtod(&v.data, &mut cache.values.slice_mut(range))
            .map_err(cuda_err("kv_append"))
    }

    fn attention_scores(
        &self,
        q: &CudaTensor,
        cache: &CudaKvCache,
        pos0: usize,
        shape: AttentionShape,
    ) -> Result<CudaTensor> {
        checks::attention_scores((q.rows, q.cols), Self::cache_dims(cache), pos0, shape)?;
        let (seq, total) = (q.rows, pos0 + q.rows);
        let n = shape.n_heads * seq * total;
        int("attention_scores", n)?;
        let mut out = self.alloc("attention_scores", n)?;
        let ints = attention_ints("attention_scores", seq, shape, pos0)?;
        let mut launch = self.stream.launch_builder(&self.kernels.attention_scores);
        launch.arg(&q.data).arg(&cache.keys).arg(&mut out);
        for a in &ints {
            launch.arg(a);
        }
        launch.arg(&shape.scale);
        unsafe { launch.launch(elementwise(n)) }.map_err(cuda_err("attention_scores"))?;
        Ok(self.tensor(out, shape.n_heads * seq, total))
    }

    fn attention_weighted_sum(
        &self,
        probs: &CudaTensor,
        cache: &CudaKvCache,
        pos0: usize,
        shape: AttentionShape,
    ) -> Result<CudaTensor> {
        let seq = checks::attention_weighted_sum(
            (probs.rows, probs.cols),
            Self::cache_dims(cache),
            pos0,
            shape,
        )?;
        let width = shape.n_heads * shape.head_dim;
        let n = seq * width;
        int("attention_weighted_sum", n)?;
        let mut out = self.alloc("attention_weighted_sum", n)?;
        let ints = attention_ints("attention_weighted_sum", seq, shape, pos0 + seq)?;
        let mut launch = self
            .stream
            .launch_builder(&self.kernels.attention_weighted_sum);
        launch.arg(&probs.data).arg(&cache.values).arg(&mut out);
        for a in &ints {
            launch.arg(a);
        }
        unsafe { launch.launch(elementwise(n)) }.map_err(cuda_err("attention_weighted_sum"))?;
        Ok(self.tensor(out, seq, width))
    }

    fn attention(
        &self,
        q: &CudaTensor,
        cache: &CudaKvCache,
        pos0: usize,
        shape: AttentionShape,
    ) -> Result<CudaTensor> {
        checks::attention_scores((q.rows, q.cols), Self::cache_dims(cache), pos0, shape)?;
        let seq = q.rows;
        let shared = (shape.head_dim + pos0 + seq) * 4;
        if shared > self.attention_shared_bytes {
            return Err(BackendError::shape(
                "attention",
                format!(
                    "{} positions need {shared} bytes of shared memory; the device allows {}",
                    pos0 + seq,
                    self.attention_shared_bytes
                ),
            ));
        }
        if shape.n_heads > MAX_GRID_Y {
            return Err(BackendError::shape("attention", "more than 65535 heads"));
        }
        let width = shape.n_heads * shape.head_dim;
        int("attention", seq * width)?;
        let mut out = self.alloc("attention", seq * width)?;
        let ints = attention_ints("attention", seq, shape, pos0)?;
        let cfg = LaunchConfig {
            grid_dim: (seq as u32, shape.n_heads as u32, 1),
            block_dim: (ATTENTION_THREADS, 1, 1),
            shared_mem_bytes: shared as u32,
        };
        let mut launch = self.stream.launch_builder(&self.kernels.attention);
        launch
            .arg(&q.data)
            .arg(&cache.keys)
            .arg(&cache.values)
            .arg(&mut out);
        for a in &ints {
            launch.arg(a);
        }
        launch.arg(&shape.scale);
        unsafe { launch.launch(cfg) }.map_err(cuda_err("attention"))?;
        Ok(self.tensor(out, seq, width))
    }

    fn swiglu(&self, gate: &CudaTensor, up: &CudaTensor) -> Result<CudaTensor> {
        checks::same("swiglu", (gate.rows, gate.cols), (up.rows, up.cols))?;
        let n = gate.rows * gate.cols;
        let mut out = self.alloc("swiglu", n)?;
        let count = n as i64;
        let mut launch = self.stream.launch_builder(&self.kernels.swiglu);
        launch
            .arg(&gate.data)
            .arg(&up.data)
            .arg(&mut out)
            .arg(&count);
        unsafe { launch.launch(elementwise(n)) }.map_err(cuda_err("swiglu"))?;
        Ok(self.tensor(out, gate.rows, gate.cols))
    }
}
