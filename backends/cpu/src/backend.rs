//! The `Backend` implementation: shape checks, then the kernels.

use rbees_core::{
    checks, AttentionShape, Backend, BackendError, BackendOptions, BuiltInBackend, HostWeight, Op,
    Result, RopeVariant, SeqSpan, Support, WeightDType,
};

use crate::matmul;
use crate::ops::{attention, elementwise, norm, rope, softmax};
use crate::pool::Pool;
use crate::simd::Kernels;
use crate::tensor::{CpuKvCache, CpuTensor};
use crate::types::unsupported_reason;
use crate::weight::CpuWeight;

/// rbees' own CPU backend. Owns its thread pool (sized by `threads`) and the
/// dot-product kernels chosen for this CPU.
pub struct CpuBackend {
    pool: Pool,
    kernels: Kernels,
}

/// The registry's usability check: the CPU is always there.
pub(crate) fn probe(device: &str) -> std::result::Result<(), String> {
    if device == "cpu" {
        Ok(())
    } else {
        Err(format!(
            "the cpu backend runs only on 'cpu', not '{device}'"
        ))
    }
}

impl CpuBackend {
    pub fn new(options: &BackendOptions) -> Result<Self> {
        Self::with_kernels(options, Kernels::detect())
    }

    /// Like [`CpuBackend::new`] with the portable scalar kernels (what a CPU
    /// without AVX2 runs; the tests compare the two).
    pub fn scalar(options: &BackendOptions) -> Result<Self> {
        Self::with_kernels(options, Kernels::scalar())
    }

    fn with_kernels(options: &BackendOptions, kernels: Kernels) -> Result<Self> {
        probe(&options.device).map_err(|reason| BackendError::Device {
            backend: Self::NAME.into(),
            device: options.device.clone(),
            reason,
        })?;
        Ok(CpuBackend {
            pool: Pool::new(options.threads)?,
            kernels,
        })
    }

    /// Threads of the backend's pool.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// `"avx2"` or `"scalar"`: which dot products run.
    pub fn kernels_name(&self) -> &'static str {
        self.kernels.name
    }
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;
    type Weight = CpuWeight;
    type KvCache = CpuKvCache;

    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn device(&self) -> String {
        "cpu".into()
    }

    fn supports(&self, _op: Op, dtype: Option<WeightDType>) -> Support {
        // Every op is native (attention and SwiGLU fused); weight types are
        // the same for matmul, embedding and norms: the ones with kernels.
        match dtype.and_then(unsupported_reason) {
            Some(reason) => Support::Unsupported(reason),
            None => Support::Native,
        }
    }

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<CpuTensor> {
        checks::upload(data.len(), rows, cols)?;
        Ok(CpuTensor::new(rows, cols, data.to_vec()))
    }

    fn download(&self, x: &CpuTensor) -> Result<Vec<f32>> {
        Ok(x.data.clone())
    }

    fn dims(&self, x: &CpuTensor) -> (usize, usize) {
        x.dims()
    }

    fn load_weight(&self, w: &HostWeight<'_>) -> Result<CpuWeight> {
        CpuWeight::from_host(w)
    }

    fn weight_dims(&self, w: &CpuWeight) -> (usize, usize) {
        w.dims()
    }

    fn rms_norm(&self, x: &CpuTensor, weight: &CpuWeight, eps: f32) -> Result<CpuTensor> {
        checks::rms_norm(x.dims(), weight.dims())?;
        let w = match weight.layout.as_ref() {
            crate::weight::Layout::F32(v) => std::borrow::Cow::Borrowed(v.as_slice()),
            _ => std::borrow::Cow::Owned(weight.vector()?),
        };
        Ok(norm::rms_norm(x, &w, eps))
    }

    fn rope(
        &self,
        x: &CpuTensor,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
        cos: &CpuTensor,
        sin: &CpuTensor,
        variant: RopeVariant,
    ) -> Result<CpuTensor> {
        checks::rope(x.dims(), n_heads, head_dim, pos0, cos.dims(), sin.dims())?;
        Ok(rope::rope(
            x,
            n_heads,
            head_dim,
            |i| pos0 + i,
            cos,
            sin,
            variant,
        ))
    }

    fn softmax(&self, x: &CpuTensor) -> Result<CpuTensor> {
        let mut out = x.clone();
        for row in out.data.chunks_exact_mut(x.cols.max(1)) {
            softmax::softmax_in_place(row);
        }
        Ok(out)
    }

    fn silu(&self, x: &CpuTensor) -> Result<CpuTensor> {
        let data = x.data.iter().map(|&v| elementwise::silu(v)).collect();
        Ok(CpuTensor::new(x.rows, x.cols, data))
    }

    fn matmul(&self, x: &CpuTensor, w: &CpuWeight) -> Result<CpuTensor> {
        checks::matmul(x.dims(), w.dims())?;
        matmul::matmul(&self.pool, &self.kernels, x, w)
    }

    fn embedding(&self, table: &CpuWeight, ids: &[u32]) -> Result<CpuTensor> {
        checks::embedding(ids, table.dims())?;
        let mut out = CpuTensor::zeros(ids.len(), table.cols);
        for (row, &id) in out.data.chunks_exact_mut(table.cols.max(1)).zip(ids) {
            table.dequantize_row_into(id as usize, row)?;
        }
        Ok(out)
    }

    fn add(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        checks::same("add", a.dims(), b.dims())?;
        Ok(CpuTensor::new(
            a.rows,
            a.cols,
            elementwise::add(&a.data, &b.data),
        ))
    }

    fn mul(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        checks::same("mul", a.dims(), b.dims())?;
        Ok(CpuTensor::new(
            a.rows,
            a.cols,
            elementwise::mul(&a.data, &b.data),
        ))
    }

    fn rows(&self, x: &CpuTensor, start: usize, len: usize) -> Result<CpuTensor> {
        checks::rows(x.dims(), start, len)?;
        let data = x.data[start * x.cols..(start + len) * x.cols].to_vec();
        Ok(CpuTensor::new(len, x.cols, data))
    }

    fn kv_cache(&self, capacity: usize, width: usize) -> Result<CpuKvCache> {
        capacity
            .checked_mul(width)
            .ok_or_else(|| BackendError::shape("kv_cache", format!("[{capacity}, {width}]")))?;
        Ok(CpuKvCache::new(capacity, width))
    }

    fn kv_append(
        &self,
        cache: &mut CpuKvCache,
        k: &CpuTensor,
        v: &CpuTensor,
        pos0: usize,
    ) -> Result<()> {
        checks::kv_append(cache.dims(), k.dims(), v.dims(), pos0)?;
        let at = pos0 * cache.width;
        let len = k.data.len();
        cache.keys[at..at + len].copy_from_slice(&k.data);
        cache.values[at..at + len].copy_from_slice(&v.data);
        Ok(())
    }

    fn attention_scores(
        &self,
        q: &CpuTensor,
        cache: &CpuKvCache,
        pos0: usize,
        shape: AttentionShape,
    ) -> Result<CpuTensor> {
        checks::attention_scores(q.dims(), cache.dims(), pos0, shape)?;
        Ok(attention::scores(&self.kernels, q, cache, pos0, shape))
    }

    fn attention_weighted_sum(
        &self,
        probs: &CpuTensor,
        cache: &CpuKvCache,
        pos0: usize,
        shape: AttentionShape,
    ) -> Result<CpuTensor> {
        let seq = checks::attention_weighted_sum(probs.dims(), cache.dims(), pos0, shape)?;
        Ok(attention::weighted_sum(probs, cache, seq, shape))
    }

    fn attention(
        &self,
        q: &CpuTensor,
        cache: &CpuKvCache,
        pos0: usize,
        shape: AttentionShape,
    ) -> Result<CpuTensor> {
        checks::attention_scores(q.dims(), cache.dims(), pos0, shape)?;
        let caches = [cache];
        let place = attention::RowPlace::sequence(&caches, pos0, q.rows);
        attention::attention(&self.pool, &self.kernels, q, place, shape)
    }

    fn concat_rows(&self, parts: &[&CpuTensor]) -> Result<CpuTensor> {
        let cols = parts.first().map_or(0, |p| p.cols);
        let mut data = Vec::with_capacity(parts.iter().map(|p| p.data.len()).sum());
        for p in parts {
            checks::same("concat_rows", (p.rows, cols), p.dims())?;
            data.extend_from_slice(&p.data);
        }
        Ok(CpuTensor::new(data.len() / cols.max(1), cols, data))
    }

    fn rope_batch(
        &self,
        x: &CpuTensor,
        n_heads: usize,
        head_dim: usize,
        spans: &[SeqSpan],
        cos: &CpuTensor,
        sin: &CpuTensor,
        variant: RopeVariant,
    ) -> Result<CpuTensor> {
        checks::spans("rope_batch", x.rows, spans, spans.len())?;
        let mut positions = Vec::with_capacity(x.rows);
        for s in spans {
            checks::rope(
                (s.len, x.cols),
                n_heads,
                head_dim,
                s.pos0,
                cos.dims(),
                sin.dims(),
            )?;
            positions.extend(s.pos0..s.pos0 + s.len);
        }
        Ok(rope::rope(
            x,
            n_heads,
            head_dim,
            |i| positions[i],
            cos,
            sin,
            variant,
        ))
    }

    fn kv_append_batch(
        &self,
        caches: &mut [&mut CpuKvCache],
        k: &CpuTensor,
        v: &CpuTensor,
        spans: &[SeqSpan],
    ) -> Result<()> {
        checks::spans("kv_append_batch", k.rows, spans, caches.len())?;
        checks::same("kv_append_batch", k.dims(), v.dims())?;
        for (s, cache) in spans.iter().zip(caches.iter_mut()) {
            checks::kv_append(cache.dims(), (s.len, k.cols), (s.len, v.cols), s.pos0)?;
            let (from, at) = (s.start * k.cols, s.pos0 * cache.width);
            let len = s.len * k.cols;
            cache.keys[at..at + len].copy_from_slice(&k.data[from..from + len]);
            cache.values[at..at + len].copy_from_slice(&v.data[from..from + len]);
        }
        Ok(())
    }

    fn attention_batch(
        &self,
        q: &CpuTensor,
        caches: &[&CpuKvCache],
        spans: &[SeqSpan],
        shape: AttentionShape,
    ) -> Result<CpuTensor> {
        checks::spans("attention_batch", q.rows, spans, caches.len())?;
        for (s, cache) in spans.iter().zip(caches) {
            checks::attention_scores((s.len, q.cols), cache.dims(), s.pos0, shape)?;
        }
        let place = attention::RowPlace::batch(caches, spans);
        attention::attention(&self.pool, &self.kernels, q, place, shape)
    }

    fn swiglu(&self, gate: &CpuTensor, up: &CpuTensor) -> Result<CpuTensor> {
        checks::same("swiglu", gate.dims(), up.dims())?;
        let data = elementwise::swiglu(&gate.data, &up.data);
        Ok(CpuTensor::new(gate.rows, gate.cols, data))
    }
}

impl BuiltInBackend for CpuBackend {
    const NAME: &'static str = "cpu";

    fn start(options: &BackendOptions) -> Result<Self> {
        Self::new(options)
    }
}
