use ndarray::{s, Array2, Axis};
use rayon::prelude::*;
use rbees_core::{
    AttentionShape, Backend, BackendError, BackendOptions, HostWeight, Op, Result, RopeVariant,
    Support, WeightDType,
};

use crate::attention::{self, NdarrayKvCache};
use crate::elementwise;
use crate::weight::NdarrayWeight;

/// Output rows of a weight dequantised and multiplied as one unit of work.
const MATMUL_ROWS_PER_TASK: usize = 64;

/// The reference backend. Owns the thread pool its matrix products run on,
/// so `threads` really bounds the CPU it uses.
pub struct NdarrayBackend {
    pool: rayon::ThreadPool,
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
            backend: "ndarray".into(),
            device: options.device.clone(),
            reason,
        })?;
        let threads = options.threads.unwrap_or(0); // 0: rayon picks one per core
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("rbees-ndarray-{i}"))
            .build()
            .map_err(|e| BackendError::Other(format!("cannot start thread pool: {e}")))?;
        Ok(NdarrayBackend { pool })
    }

    /// Threads actually used for matrix products.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }
}

/// Why candle-core cannot dequantise `dtype` (so neither can this backend), if it cannot.
fn undequantizable(dtype: WeightDType) -> Option<String> {
    (dtype == WeightDType::Q8K)
        .then(|| format!("candle-core cannot dequantise {dtype} blocks (an activation-only type)"))
}

fn same_shape(op: &'static str, a: &Array2<f32>, b: &Array2<f32>) -> Result<()> {
    if a.dim() != b.dim() {
        return Err(BackendError::shape(
            op,
            format!("operands differ: {:?} vs {:?}", a.dim(), b.dim()),
        ));
    }
    Ok(())
}

fn check_heads(op: &'static str, x: &Array2<f32>, n_heads: usize, head_dim: usize) -> Result<()> {
    if x.ncols() != n_heads * head_dim {
        return Err(BackendError::shape(
            op,
            format!(
                "rows of {} values, expected {n_heads} heads x {head_dim}",
                x.ncols()
            ),
        ));
    }
    Ok(())
}

fn check_attention(
    op: &'static str,
    q_rows: usize,
    cache: &NdarrayKvCache,
    pos0: usize,
    shape: AttentionShape,
) -> Result<()> {
    if shape.n_kv_heads == 0 || shape.n_heads % shape.n_kv_heads != 0 {
        return Err(BackendError::shape(
            op,
            format!(
                "{} query heads cannot be grouped over {} key/value heads",
                shape.n_heads, shape.n_kv_heads
            ),
        ));
    }
    if cache.keys.ncols() != shape.n_kv_heads * shape.head_dim {
        return Err(BackendError::shape(
            op,
            format!(
                "cache rows hold {} values, expected {} kv heads x {}",
                cache.keys.ncols(),
                shape.n_kv_heads,
                shape.head_dim
            ),
        ));
    }
    if pos0
        .checked_add(q_rows)
        .is_none_or(|end| end > cache.keys.nrows())
    {
        return Err(BackendError::shape(
            op,
            format!(
                "positions up to {} exceed the cache capacity {}",
                pos0.saturating_add(q_rows),
                cache.keys.nrows()
            ),
        ));
    }
    Ok(())
}

impl Backend for NdarrayBackend {
    type Tensor = Array2<f32>;
    type Weight = NdarrayWeight;
    type KvCache = NdarrayKvCache;

    fn name(&self) -> &'static str {
        "ndarray"
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
            Op::Attention | Op::SwiGlu => Support::Composed,
            _ => Support::Native,
        }
    }

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<Array2<f32>> {
        Array2::from_shape_vec((rows, cols), data.to_vec()).map_err(|_| {
            BackendError::shape(
                "upload",
                format!("{} values cannot form [{rows}, {cols}]", data.len()),
            )
        })
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
        NdarrayWeight::from_host(w)
    }

    fn weight_dims(&self, w: &NdarrayWeight) -> (usize, usize) {
        w.dims()
    }

    fn rms_norm(&self, x: &Array2<f32>, weight: &NdarrayWeight, eps: f32) -> Result<Array2<f32>> {
        let (rows, cols) = weight.dims();
        if rows != 1 || cols != x.ncols() {
            return Err(BackendError::shape(
                "rms_norm",
                format!("weight {rows}x{cols} for rows of {}", x.ncols()),
            ));
        }
        let w = weight.dense_rows(0, 1)?;
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
        check_heads("rope", x, n_heads, head_dim)?;
        if cos.dim() != sin.dim() || 2 * cos.ncols() > head_dim || head_dim % 2 != 0 {
            return Err(BackendError::shape(
                "rope",
                format!(
                    "cos {:?} / sin {:?} tables do not fit heads of {head_dim}",
                    cos.dim(),
                    sin.dim()
                ),
            ));
        }
        if pos0
            .checked_add(x.nrows())
            .is_none_or(|end| end > cos.nrows())
        {
            return Err(BackendError::shape(
                "rope",
                format!(
                    "position {} is past the {} positions of the tables",
                    pos0.saturating_add(x.nrows()) - 1,
                    cos.nrows()
                ),
            ));
        }
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
        let (n, k) = w.dims();
        if x.ncols() != k {
            return Err(BackendError::shape(
                "matmul",
                format!("x is {:?}, weight is [{n}, {k}]", x.dim()),
            ));
        }
        // Each task dequantises a band of weight rows and fills the matching
        // output columns; bands are independent, so they run in parallel.
        let bands: Vec<(usize, usize)> = (0..n)
            .step_by(MATMUL_ROWS_PER_TASK)
            .map(|start| (start, MATMUL_ROWS_PER_TASK.min(n - start)))
            .collect();
        let products: Vec<Result<Array2<f32>>> = self.pool.install(|| {
            bands
                .par_iter()
                .map(|&(start, len)| Ok(x.dot(&w.dense_rows(start, len)?.t())))
                .collect()
        });
        let mut out = Array2::zeros((x.nrows(), n));
        for (&(start, len), product) in bands.iter().zip(products) {
            out.slice_mut(s![.., start..start + len]).assign(&product?);
        }
        Ok(out)
    }

    fn embedding(&self, table: &NdarrayWeight, ids: &[u32]) -> Result<Array2<f32>> {
        let (vocab, dim) = table.dims();
        let mut out = Array2::zeros((ids.len(), dim));
        for (row, &id) in out.axis_iter_mut(Axis(0)).zip(ids) {
            if id as usize >= vocab {
                return Err(BackendError::shape(
                    "embedding",
                    format!("token id {id} is outside the vocabulary of {vocab}"),
                ));
            }
            let mut row = row;
            row.assign(&table.dense_rows(id as usize, 1)?.row(0));
        }
        Ok(out)
    }

    fn add(&self, a: &Array2<f32>, b: &Array2<f32>) -> Result<Array2<f32>> {
        same_shape("add", a, b)?;
        Ok(a + b)
    }

    fn mul(&self, a: &Array2<f32>, b: &Array2<f32>) -> Result<Array2<f32>> {
        same_shape("mul", a, b)?;
        Ok(a * b)
    }

    fn rows(&self, x: &Array2<f32>, start: usize, len: usize) -> Result<Array2<f32>> {
        if start.checked_add(len).is_none_or(|end| end > x.nrows()) {
            return Err(BackendError::shape(
                "rows",
                format!(
                    "rows {start}..{} of {}",
                    start.saturating_add(len),
                    x.nrows()
                ),
            ));
        }
        Ok(x.slice(s![start..start + len, ..]).to_owned())
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
        same_shape("kv_append", k, v)?;
        let (capacity, width) = cache.keys.dim();
        if k.ncols() != width || pos0.checked_add(k.nrows()).is_none_or(|end| end > capacity) {
            return Err(BackendError::shape(
                "kv_append",
                format!(
                    "{:?} at position {pos0} into a cache of [{capacity}, {width}]",
                    k.dim()
                ),
            ));
        }
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
        check_attention("attention_scores", q.nrows(), cache, pos0, shape)?;
        check_heads("attention_scores", q, shape.n_heads, shape.head_dim)?;
        Ok(attention::scores(q.view(), cache.keys.view(), pos0, shape))
    }

    fn attention_weighted_sum(
        &self,
        probs: &Array2<f32>,
        cache: &NdarrayKvCache,
        pos0: usize,
        shape: AttentionShape,
    ) -> Result<Array2<f32>> {
        let seq = probs.nrows() / shape.n_heads.max(1);
        check_attention("attention_weighted_sum", seq, cache, pos0, shape)?;
        if probs.nrows() != shape.n_heads * seq || probs.ncols() != pos0 + seq {
            return Err(BackendError::shape(
                "attention_weighted_sum",
                format!(
                    "probabilities {:?} do not match {} heads at position {pos0}",
                    probs.dim(),
                    shape.n_heads
                ),
            ));
        }
        Ok(attention::weighted_sum(
            probs.view(),
            cache.values.view(),
            seq,
            shape,
        ))
    }
}
