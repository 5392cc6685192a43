use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::{s, Array2, Axis};
use rayon::prelude::*;
use rbees_core::{
    checks, AttentionShape, Backend, BackendError, BackendOptions, BuiltInBackend, HostWeight, Op,
    Result, RopeVariant, Support, WeightDType,
};
use rbees_host_ops::dequant::undequantizable;

use crate::attention::{self, NdarrayKvCache};
use crate::elementwise;
use crate::weight::NdarrayWeight;

/// Output rows of a weight dequantised and multiplied as one unit of work.
const MATMUL_ROWS_PER_TASK: usize = 64;

/// `x · bandᵀ` for a band of weight rows: every output is [`dot`] of one
/// weight row and one activation row, whatever the number of rows, so a
/// row's result does not depend on what else is in the batch (continuous
/// batching must give a sequence the same tokens alone or with others).
/// Weight rows are the outer loop: each is read from memory once and
/// served from L1 for every activation row.
fn band_product(
    x: &Array2<f32>,
    band: &ndarray::CowArray<'_, f32, ndarray::Ix2>,
) -> Result<Array2<f32>> {
    let contiguous = |what: &str| BackendError::Other(format!("matmul: {what} is not contiguous"));
    let w = band
        .as_slice()
        .ok_or_else(|| contiguous("the weight band"))?;
    let xs = x.as_slice().ok_or_else(|| contiguous("x"))?;
    let (m, k) = x.dim();
    let n = band.nrows();
    let mut out = Array2::zeros((m, n));
    for (r, w_row) in w.chunks_exact(k.max(1)).enumerate().take(n) {
        for (i, x_row) in xs.chunks_exact(k.max(1)).enumerate().take(m) {
            out[[i, r]] = dot(w_row, x_row);
        }
    }
    Ok(out)
}

/// `a · b` in a fixed order: 32 running sums, one per lane, added up pairwise
/// at the end (enough independent sums for the compiler to fill the vector
/// units; the same arithmetic for any caller).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 32;
    let (a_blocks, a_tail) = a.as_chunks::<LANES>();
    let (b_blocks, b_tail) = b.as_chunks::<LANES>();
    let mut acc = [0f32; LANES];
    for (x, y) in a_blocks.iter().zip(b_blocks) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            acc[l] += acc[l + width];
        }
    }
    acc[0] + a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum::<f32>()
}

/// f32 bytes of quantised weights dequantised once at load, per backend.
///
/// Dense weights make decode about twice as fast (it is otherwise bound by
/// dequantising every weight for every token) at 4 bytes per parameter;
/// past the budget, weights keep their GGUF blocks, so memory stays bounded
/// for large models (a 7B model's first ~1B parameters go dense).
pub const DEFAULT_DENSE_BUDGET_BYTES: usize = 4 << 30;

/// The reference backend. Owns the thread pool its matrix products run on,
/// so `threads` really bounds the CPU it uses.
pub struct NdarrayBackend {
    pool: rayon::ThreadPool,
    /// What is left of the dense budget, in bytes.
    dense_budget: AtomicUsize,
}

/// The registry's usability check: the CPU is always there.
pub(crate) fn probe(device: &str) -> std::result::Result<(), String> {
    if device == "cpu" {
        Ok(())
    } else {
        Err(format!(
            "the ndarray backend runs only on 'cpu', not '{device}'"
        ))
    }
}

impl NdarrayBackend {
    pub fn new(options: &BackendOptions) -> Result<Self> {
        probe(&options.device).map_err(|reason| BackendError::Device {
            backend: Self::NAME.into(),
            device: options.device.clone(),
            reason,
        })?;
        let threads = options.threads.unwrap_or(0); // 0: rayon picks one per core
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("rbees-ndarray-{i}"))
            .build()
            .map_err(|e| BackendError::Other(format!("cannot start thread pool: {e}")))?;
        Ok(NdarrayBackend {
            pool,
            dense_budget: AtomicUsize::new(DEFAULT_DENSE_BUDGET_BYTES),
        })
    }

    /// Like [`NdarrayBackend::new`] with another dense budget (0: quantised
    /// weights always stay in blocks).
    pub fn with_dense_budget(options: &BackendOptions, bytes: usize) -> Result<Self> {
        let backend = Self::new(options)?;
        backend.dense_budget.store(bytes, Ordering::Relaxed);
        Ok(backend)
    }

    /// Takes `bytes` from the dense budget if they fit.
    fn take_dense_budget(&self, bytes: usize) -> bool {
        self.dense_budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(bytes)
            })
            .is_ok()
    }

    /// Threads actually used for matrix products.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }
}

impl Backend for NdarrayBackend {
    type Tensor = Array2<f32>;
    type Weight = NdarrayWeight;
    type KvCache = NdarrayKvCache;

    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn device(&self) -> String {
        "cpu".into()
    }

    fn supports(&self, op: Op, dtype: Option<WeightDType>) -> Support {
        // Every GGUF type candle can dequantise works for every op.
        if let Some(reason) = dtype.and_then(undequantizable) {
            return Support::Unsupported(reason);
        }
        match op {
            Op::ConcatRows => Support::Native,
            // The reference runs the trait's compositions.
            op if op.has_default() => Support::Composed,
            _ => Support::Native,
        }
    }

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<Array2<f32>> {
        checks::upload(data.len(), rows, cols)?;
        Array2::from_shape_vec((rows, cols), data.to_vec())
            .map_err(|e| BackendError::Other(format!("upload: {e}")))
    }

    fn download(&self, x: &Array2<f32>) -> Result<Vec<f32>> {
        Ok(x.iter().copied().collect())
    }

    fn dims(&self, x: &Array2<f32>) -> (usize, usize) {
        x.dim()
    }

    fn load_weight(&self, w: &HostWeight<'_>) -> Result<NdarrayWeight> {
        if let Some(reason) = undequantizable(w.dtype) {
            return Err(BackendError::Weight {
                name: w.name.to_string(),
                detail: reason,
            });
        }
        let f32_bytes = w
            .elements()
            .and_then(|n| n.checked_mul(4))
            .unwrap_or(usize::MAX);
        let dense = w.dtype.is_quantized() && self.take_dense_budget(f32_bytes);
        NdarrayWeight::from_host(w, dense)
    }

    fn weight_dims(&self, w: &NdarrayWeight) -> (usize, usize) {
        w.dims()
    }

    fn rms_norm(&self, x: &Array2<f32>, weight: &NdarrayWeight, eps: f32) -> Result<Array2<f32>> {
        checks::rms_norm(x.dim(), weight.dims())?;
        let w = weight.rows_f32(0, 1)?;
        Ok(elementwise::rms_norm(x.view(), w.row(0), eps))
    }

    fn rope(
        &self,
        x: &Array2<f32>,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
        cos: &Array2<f32>,
        sin: &Array2<f32>,
        variant: RopeVariant,
    ) -> Result<Array2<f32>> {
        checks::rope(x.dim(), n_heads, head_dim, pos0, cos.dim(), sin.dim())?;
        Ok(elementwise::rope(
            x.view(),
            n_heads,
            head_dim,
            pos0,
            cos.view(),
            sin.view(),
            variant,
        ))
    }

    fn softmax(&self, x: &Array2<f32>) -> Result<Array2<f32>> {
        Ok(elementwise::softmax(x.view()))
    }

    fn silu(&self, x: &Array2<f32>) -> Result<Array2<f32>> {
        Ok(elementwise::silu(x.view()))
    }

    fn matmul(&self, x: &Array2<f32>, w: &NdarrayWeight) -> Result<Array2<f32>> {
        checks::matmul(x.dim(), w.dims())?;
        let n = w.dims().0;
        // Each task dequantises a band of weight rows and fills the matching
        // output columns; bands are independent, so they run in parallel.
        let bands: Vec<(usize, usize)> = (0..n)
            .step_by(MATMUL_ROWS_PER_TASK)
            .map(|start| (start, MATMUL_ROWS_PER_TASK.min(n - start)))
            .collect();
        let products: Vec<Result<Array2<f32>>> = self.pool.install(|| {
            bands
                .par_iter()
                .map(|&(start, len)| band_product(x, &w.rows_f32(start, len)?))
                .collect()
        });
        let mut out = Array2::zeros((x.nrows(), n));
        for (&(start, len), product) in bands.iter().zip(products) {
            out.slice_mut(s![.., start..start + len]).assign(&product?);
        }
        Ok(out)
    }

    fn embedding(&self, table: &NdarrayWeight, ids: &[u32]) -> Result<Array2<f32>> {
        checks::embedding(ids, table.dims())?;
        let mut out = Array2::zeros((ids.len(), table.dims().1));
        for (mut row, &id) in out.axis_iter_mut(Axis(0)).zip(ids) {
            row.assign(&table.rows_f32(id as usize, 1)?.row(0));
        }
        Ok(out)
    }

    fn add(&self, a: &Array2<f32>, b: &Array2<f32>) -> Result<Array2<f32>> {
        checks::same("add", a.dim(), b.dim())?;
        Ok(a + b)
    }

    fn mul(&self, a: &Array2<f32>, b: &Array2<f32>) -> Result<Array2<f32>> {
        checks::same("mul", a.dim(), b.dim())?;
        Ok(a * b)
    }

    fn rows(&self, x: &Array2<f32>, start: usize, len: usize) -> Result<Array2<f32>> {
        checks::rows(x.dim(), start, len)?;
        Ok(x.slice(s![start..start + len, ..]).to_owned())
    }

    fn concat_rows(&self, parts: &[&Array2<f32>]) -> Result<Array2<f32>> {
        let cols = parts.first().map_or(0, |p| p.ncols());
        for p in parts {
            checks::same("concat_rows", (p.nrows(), cols), p.dim())?;
        }
        if parts.is_empty() {
            return Ok(Array2::zeros((0, 0)));
        }
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        ndarray::concatenate(Axis(0), &views)
            .map_err(|e| BackendError::Other(format!("concat_rows: {e}")))
    }

    fn kv_cache(&self, capacity: usize, width: usize) -> Result<NdarrayKvCache> {
        Ok(NdarrayKvCache {
            keys: Array2::zeros((capacity, width)),
            values: Array2::zeros((capacity, width)),
        })
    }

    fn kv_append(
        &self,
        cache: &mut NdarrayKvCache,
        k: &Array2<f32>,
        v: &Array2<f32>,
        pos0: usize,
    ) -> Result<()> {
        checks::kv_append(cache.keys.dim(), k.dim(), v.dim(), pos0)?;
        let rows = s![pos0..pos0 + k.nrows(), ..];
        cache.keys.slice_mut(rows).assign(k);
        cache.values.slice_mut(rows).assign(v);
        Ok(())
    }

    fn attention_scores(
        &self,
        q: &Array2<f32>,
        cache: &NdarrayKvCache,
        pos0: usize,
        shape: AttentionShape,
    ) -> Result<Array2<f32>> {
        checks::attention_scores(q.dim(), cache.keys.dim(), pos0, shape)?;
        attention::scores(q, &cache.keys, pos0, shape)
    }

    fn attention_weighted_sum(
        &self,
        probs: &Array2<f32>,
        cache: &NdarrayKvCache,
        pos0: usize,
        shape: AttentionShape,
    ) -> Result<Array2<f32>> {
        let seq = checks::attention_weighted_sum(probs.dim(), cache.values.dim(), pos0, shape)?;
        attention::weighted_sum(probs, &cache.values, seq, shape)
    }
}

impl BuiltInBackend for NdarrayBackend {
    const NAME: &'static str = "ndarray";

    fn start(options: &BackendOptions) -> Result<Self> {
        Self::new(options)
    }
}
