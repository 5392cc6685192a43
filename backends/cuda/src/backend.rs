//! The `Backend` trait on the GPU: each op checks its shapes, then launches
//! its kernel on the backend's stream (memory, launch shapes, products and
//! lookups live in their own modules).

use cudarc::driver::{CudaFunction, PushKernelArg};
use rbees_core::{
    checks, AttentionShape, Backend, BackendError, HostWeight, Op, Result, RopeVariant, Support,
    WeightDType,
};

use crate::index::{attention_ints, int};
use crate::launch::{self, elementwise};
use crate::memory::{CudaKvCache, CudaTensor};
use crate::setup::{cuda_err, CudaKernelsBackend};
use crate::weight::{CudaWeight, Storage};
use crate::weight_types::weight_support;
use crate::NAME;

impl CudaKernelsBackend {
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
        self.used_bytes()
    }

    fn supports(&self, op: Op, dtype: Option<WeightDType>) -> Support {
        match (op, dtype) {
            (Op::MatMul | Op::Embedding, Some(dtype)) => match weight_support(dtype) {
                Ok(()) => Support::Native,
                Err(reason) => Support::Unsupported(reason),
            },
            // Batches: the single-sequence kernels on each sequence's rows,
            // stacked with device copies.
            (op, _)
                if op.has_default()
                    && !matches!(op, Op::Attention | Op::SwiGlu | Op::ConcatRows) =>
            {
                Support::Composed
            }
            _ => Support::Native,
        }
    }

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<CudaTensor> {
        self.upload_rows(data, rows, cols)
    }

    fn download(&self, x: &CudaTensor) -> Result<Vec<f32>> {
        self.download_rows(x)
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
        self.upload_weight(w)
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
        let (cfg, block) = launch::rms_norm(x.rows, x.cols);
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
        let mut launch = self.stream.launch_builder(&self.kernels.softmax);
        launch.arg(&x.data).arg(&mut out).arg(&n_cols);
        unsafe { launch.launch(launch::softmax(x.rows)) }.map_err(cuda_err("softmax"))?;
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
            Storage::Float16(h) => self.float16_matmul(x, h, w.dtype, n)?,
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
        self.alloc_kv_cache(capacity, width)
    }

    fn kv_append(
        &self,
        cache: &mut CudaKvCache,
        k: &CudaTensor,
        v: &CudaTensor,
        pos0: usize,
    ) -> Result<()> {
        checks::kv_append(cache.dims(), (k.rows, k.cols), (v.rows, v.cols), pos0)?;
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
        checks::attention_scores((q.rows, q.cols), cache.dims(), pos0, shape)?;
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
        let seq =
            checks::attention_weighted_sum((probs.rows, probs.cols), cache.dims(), pos0, shape)?;
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
        checks::attention_scores((q.rows, q.cols), cache.dims(), pos0, shape)?;
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
        let cfg = launch::attention(seq, shape.n_heads, shared)?;
        let width = shape.n_heads * shape.head_dim;
        int("attention", seq * width)?;
        let mut out = self.alloc("attention", seq * width)?;
        let ints = attention_ints("attention", seq, shape, pos0)?;
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
