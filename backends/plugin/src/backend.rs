//! `PluginBackend`: the `Backend` trait over a loaded plugin library.

use std::collections::HashSet;
use std::ffi::CString;
use std::sync::{Arc, Mutex};

use rbees_core::plugin_abi::{
    Context, CreateOptions, RopeParams, UnaryFn, OP_MATMUL, OP_RMS_NORM, OP_ROPE, OP_SILU,
    OP_SOFTMAX, ROPE_HALF_SPLIT, ROPE_INTERLEAVED, SUPPORT_NATIVE,
};
use rbees_core::{
    checks, AttentionShape, Backend, BackendError, BackendOptions, HostWeight, Op, Result,
    RopeVariant, Support, WeightDType,
};
use rbees_host_ops::attention;
use rbees_host_ops::dequant::{dequantize_rows, undequantizable};

use crate::call::{checked, f32_mut};
use crate::glue;
use crate::library::WeightPlan;
use crate::tensor::{PluginKvCache, PluginTensor, PluginWeight, WeightData};
use crate::PluginLibrary;

/// Where an op of a plugin backend runs ("which path ran", for
/// `rbees backends` and the docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// A kernel of the plugin, through the C ABI.
    Plugin,
    /// Host-side in `rbees-backend-plugin`, on f32 vectors.
    Host,
    /// The `Backend` trait's default composition of the ops above.
    Composed,
}

pub fn op_placement(op: Op) -> Placement {
    match op {
        Op::RmsNorm | Op::Rope | Op::Softmax | Op::Silu | Op::MatMul => Placement::Plugin,
        // Stacking rows is host glue; the other batch ops compose it with
        // the single-sequence ops.
        Op::ConcatRows => Placement::Host,
        op if op.has_default() => Placement::Composed,
        _ => Placement::Host,
    }
}

/// A backend whose kernels live in a plugin library.
///
/// Holds an `Arc` to its library (never unloaded anyway, see
/// [`crate::library`]) and the plugin instance it created; dropping the
/// backend destroys the instance.
pub struct PluginBackend {
    lib: Arc<PluginLibrary>,
    ctx: Context,
    device: String,
    /// Source types already reported as converted (logged once each).
    converted: Mutex<HashSet<WeightDType>>,
}

// SAFETY: the ABI requires a plugin instance's functions to be callable from
// any thread, concurrently (docs/plugin-abi.md, "Threading"); the host never
// touches the instance itself.
unsafe impl Send for PluginBackend {}
unsafe impl Sync for PluginBackend {}

impl Drop for PluginBackend {
    fn drop(&mut self) {
        // SAFETY: created by this plugin's `create`, destroyed exactly once.
        unsafe { (self.lib.functions.destroy)(self.ctx) };
    }
}

impl PluginBackend {
    /// Creates an instance of the plugin on `options.device`, after asking
    /// the plugin whether it can run there.
    pub fn new(lib: Arc<PluginLibrary>, options: &BackendOptions) -> Result<Self> {
        lib.probe(&options.device)
            .map_err(|reason| BackendError::Device {
                backend: format!("{} (plugin {})", lib.name(), lib.path().display()),
                device: options.device.clone(),
                reason,
            })?;
        let device = CString::new(options.device.as_str())
            .map_err(|_| BackendError::Other("the device name contains a NUL byte".into()))?;
        let create_options = CreateOptions {
            device: device.as_ptr(),
            threads: options.threads.unwrap_or(0),
        };
        let mut ctx: Context = std::ptr::null_mut();
        checked(&lib, "create", |err| unsafe {
            (lib.functions.create)(&create_options, &mut ctx, err)
        })?;
        if ctx.is_null() {
            return Err(BackendError::Other(format!(
                "plugin '{}' ({}): create returned no instance",
                lib.name(),
                lib.path().display()
            )));
        }
        Ok(PluginBackend {
            lib,
            ctx,
            device: options.device.clone(),
            converted: Mutex::new(HashSet::new()),
        })
    }

    pub fn library(&self) -> &Arc<PluginLibrary> {
        &self.lib
    }

    /// The type the plugin receives weights of `dtype` in, or why none.
    fn effective_dtype(&self, dtype: WeightDType) -> std::result::Result<WeightDType, String> {
        match self.lib.weight_plan(dtype) {
            WeightPlan::Native => Ok(dtype),
            WeightPlan::ConvertToF32 => Ok(WeightDType::F32),
            WeightPlan::Unsupported => Err(format!(
                "plugin '{}' ({}) takes no {dtype} weights{}",
                self.lib.name(),
                self.lib.path().display(),
                if undequantizable(dtype).is_none() {
                    ""
                } else {
                    " (and the host cannot convert them to F32)"
                }
            )),
        }
    }

    fn weight_support(&self, kernel: u32, op: Op, dtype: Option<WeightDType>) -> Support {
        let dtype = dtype.unwrap_or(WeightDType::F32);
        match self.effective_dtype(dtype) {
            Ok(eff) if self.lib.answer(kernel, Some(eff)) == SUPPORT_NATIVE => Support::Native,
            Ok(eff) => Support::Unsupported(format!(
                "plugin '{}' does not implement {op} on {eff} weights",
                self.lib.name()
            )),
            Err(why) => Support::Unsupported(why),
        }
    }

    fn kernel_support(&self, kernel: u32, op: Op) -> Support {
        if self.lib.has_kernel(kernel) {
            Support::Native
        } else {
            Support::Unsupported(format!(
                "plugin '{}' does not implement {op}",
                self.lib.name()
            ))
        }
    }

    /// Refuses an op the plugin declared unsupported (the model checks at
    /// load; this keeps a direct caller from reaching the plugin with it).
    fn require(&self, support: Support) -> Result<()> {
        match support {
            Support::Unsupported(why) => Err(BackendError::Other(why)),
            _ => Ok(()),
        }
    }

    /// Runs a unary kernel (`softmax`, `silu`) into a new tensor.
    fn unary(&self, op: Op, kernel: u32, f: UnaryFn, x: &PluginTensor) -> Result<PluginTensor> {
        self.require(self.kernel_support(kernel, op))?;
        let mut out = PluginTensor::zeros(x.rows, x.cols)?;
        let out_buf = f32_mut(&mut out.data, x.rows, x.cols);
        let x_buf = x.as_ref();
        checked(&self.lib, &op.to_string(), |err| unsafe {
            f(self.ctx, &x_buf, &out_buf, err)
        })?;
        Ok(out)
    }

    fn note_conversion(&self, w: &HostWeight<'_>) {
        let mut seen = self.converted.lock().unwrap_or_else(|e| e.into_inner());
        if seen.insert(w.dtype) {
            tracing::info!(
                plugin = self.lib.name(),
                file = %self.lib.path().display(),
                "converting {} weights to F32 at load, as the plugin declared (first: {})",
                w.dtype,
                w.name
            );
        }
    }
}

impl Backend for PluginBackend {
    type Tensor = PluginTensor;
    type Weight = PluginWeight;
    type KvCache = PluginKvCache;

    fn name(&self) -> &'static str {
        self.lib.name()
    }

    fn device(&self) -> String {
        self.device.clone()
    }

    fn supports(&self, op: Op, dtype: Option<WeightDType>) -> Support {
        match op {
            Op::RmsNorm => self.weight_support(OP_RMS_NORM, op, dtype),
            Op::MatMul => self.weight_support(OP_MATMUL, op, dtype),
            Op::Rope => self.kernel_support(OP_ROPE, op),
            Op::Softmax => self.kernel_support(OP_SOFTMAX, op),
            Op::Silu => self.kernel_support(OP_SILU, op),
            // Host-side: a table the plugin takes is F32 or raw blocks the
            // host can dequantise row by row.
            Op::Embedding => match dtype.map(|d| self.effective_dtype(d)) {
                Some(Err(why)) => Support::Unsupported(why),
                Some(Ok(eff)) if eff != WeightDType::F32 && undequantizable(eff).is_some() => {
                    Support::Unsupported(format!("the plugin host cannot read {eff} rows"))
                }
                _ => Support::Native,
            },
            Op::Attention => match self.kernel_support(OP_SOFTMAX, op) {
                Support::Native => Support::Composed,
                other => other,
            },
            Op::SwiGlu => match self.kernel_support(OP_SILU, op) {
                Support::Native => Support::Composed,
                other => other,
            },
            Op::RopeBatch => match self.kernel_support(OP_ROPE, op) {
                Support::Native => Support::Composed,
                other => other,
            },
            Op::AttentionBatch => self.supports(Op::Attention, None),
            Op::KvAppendBatch => Support::Composed,
            Op::Add | Op::Mul | Op::Rows | Op::KvAppend | Op::AttentionScores => Support::Native,
            Op::ConcatRows => Support::Native,
            Op::AttentionWeightedSum => Support::Native,
        }
    }

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<PluginTensor> {
        PluginTensor::new(data.to_vec(), rows, cols)
    }

    fn download(&self, x: &PluginTensor) -> Result<Vec<f32>> {
        Ok(x.data.clone())
    }

    fn dims(&self, x: &PluginTensor) -> (usize, usize) {
        x.dims()
    }

    fn load_weight(&self, w: &HostWeight<'_>) -> Result<PluginWeight> {
        w.validate()?;
        let (rows, cols) = w.rows_cols();
        let unsupported = |reason: String| BackendError::Unsupported {
            backend: self.lib.name().to_string(),
            op: Op::MatMul,
            dtype: w.dtype,
            reason,
        };
        let data = match self.lib.weight_plan(w.dtype) {
            WeightPlan::Native if w.dtype == WeightDType::F32 => {
                WeightData::F32(dequantize_rows(w.dtype, w.data, rows, cols)?)
            }
            WeightPlan::Native => WeightData::Raw {
                dtype: w.dtype,
                bytes: w.data.to_vec(),
            },
            WeightPlan::ConvertToF32 => {
                self.note_conversion(w);
                WeightData::F32(dequantize_rows(w.dtype, w.data, rows, cols)?)
            }
            WeightPlan::Unsupported => {
                return Err(unsupported(
                    self.effective_dtype(w.dtype).err().unwrap_or_default(),
                ))
            }
        };
        Ok(PluginWeight {
            data,
            rows,
            cols,
            source: w.dtype,
        })
    }

    fn weight_dims(&self, w: &PluginWeight) -> (usize, usize) {
        w.dims()
    }

    fn rms_norm(&self, x: &PluginTensor, weight: &PluginWeight, eps: f32) -> Result<PluginTensor> {
        checks::rms_norm(x.dims(), weight.dims())?;
        self.require(self.weight_support(OP_RMS_NORM, Op::RmsNorm, Some(weight.source)))?;
        let mut out = PluginTensor::zeros(x.rows, x.cols)?;
        let out_buf = f32_mut(&mut out.data, x.rows, x.cols);
        let (x_buf, w_buf) = (x.as_ref(), weight.as_ref());
        let f = self.lib.functions.rms_norm;
        checked(&self.lib, "rms_norm", |err| unsafe {
            f(self.ctx, &x_buf, &w_buf, eps, &out_buf, err)
        })?;
        Ok(out)
    }

    fn rope(
        &self,
        x: &PluginTensor,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
        cos: &PluginTensor,
        sin: &PluginTensor,
        variant: RopeVariant,
    ) -> Result<PluginTensor> {
        checks::rope(x.dims(), n_heads, head_dim, pos0, cos.dims(), sin.dims())?;
        self.require(self.kernel_support(OP_ROPE, Op::Rope))?;
        let params = RopeParams {
            n_heads,
            head_dim,
            pos0,
            variant: match variant {
                RopeVariant::Interleaved => ROPE_INTERLEAVED,
                RopeVariant::HalfSplit => ROPE_HALF_SPLIT,
            },
        };
        let mut out = PluginTensor::zeros(x.rows, x.cols)?;
        let out_buf = f32_mut(&mut out.data, x.rows, x.cols);
        let (x_buf, cos_buf, sin_buf) = (x.as_ref(), cos.as_ref(), sin.as_ref());
        let f = self.lib.functions.rope;
        checked(&self.lib, "rope", |err| unsafe {
            f(self.ctx, &x_buf, &cos_buf, &sin_buf, &params, &out_buf, err)
        })?;
        Ok(out)
    }

    fn softmax(&self, x: &PluginTensor) -> Result<PluginTensor> {
        self.unary(Op::Softmax, OP_SOFTMAX, self.lib.functions.softmax, x)
    }

    fn silu(&self, x: &PluginTensor) -> Result<PluginTensor> {
        self.unary(Op::Silu, OP_SILU, self.lib.functions.silu, x)
    }

    fn matmul(&self, x: &PluginTensor, w: &PluginWeight) -> Result<PluginTensor> {
        checks::matmul(x.dims(), w.dims())?;
        self.require(self.weight_support(OP_MATMUL, Op::MatMul, Some(w.source)))?;
        let mut out = PluginTensor::zeros(x.rows, w.rows)?;
        let out_buf = f32_mut(&mut out.data, x.rows, w.rows);
        let (x_buf, w_buf) = (x.as_ref(), w.as_ref());
        let f = self.lib.functions.matmul;
        checked(&self.lib, "matmul", |err| unsafe {
            f(self.ctx, &x_buf, &w_buf, &out_buf, err)
        })?;
        Ok(out)
    }

    fn embedding(&self, table: &PluginWeight, ids: &[u32]) -> Result<PluginTensor> {
        checks::embedding(ids, table.dims())?;
        let dim = table.cols;
        let mut out = Vec::with_capacity(ids.len() * dim);
        for &id in ids {
            let id = id as usize;
            match &table.data {
                WeightData::F32(v) => out.extend_from_slice(&v[id * dim..(id + 1) * dim]),
                WeightData::Raw { dtype, bytes } => {
                    let row_bytes = bytes.len() / table.rows.max(1);
                    let row = &bytes[id * row_bytes..(id + 1) * row_bytes];
                    out.extend(dequantize_rows(*dtype, row, 1, dim)?);
                }
            }
        }
        PluginTensor::new(out, ids.len(), dim)
    }

    fn add(&self, a: &PluginTensor, b: &PluginTensor) -> Result<PluginTensor> {
        checks::same("add", a.dims(), b.dims())?;
        PluginTensor::new(
            glue::zip_map(&a.data, &b.data, |x, y| x + y),
            a.rows,
            a.cols,
        )
    }

    fn mul(&self, a: &PluginTensor, b: &PluginTensor) -> Result<PluginTensor> {
        checks::same("mul", a.dims(), b.dims())?;
        PluginTensor::new(
            glue::zip_map(&a.data, &b.data, |x, y| x * y),
            a.rows,
            a.cols,
        )
    }

    fn rows(&self, x: &PluginTensor, start: usize, len: usize) -> Result<PluginTensor> {
        checks::rows(x.dims(), start, len)?;
        let data = x.data[start * x.cols..(start + len) * x.cols].to_vec();
        PluginTensor::new(data, len, x.cols)
    }

    fn concat_rows(&self, parts: &[&PluginTensor]) -> Result<PluginTensor> {
        let cols = parts.first().map_or(0, |p| p.cols);
        let mut data = Vec::with_capacity(parts.iter().map(|p| p.data.len()).sum());
        for p in parts {
            checks::same("concat_rows", (p.rows, cols), p.dims())?;
            data.extend_from_slice(&p.data);
        }
        let rows = parts.iter().map(|p| p.rows).sum();
        PluginTensor::new(data, rows, cols)
    }

    fn kv_cache(&self, capacity: usize, width: usize) -> Result<PluginKvCache> {
        let keys = PluginTensor::zeros(capacity, width)?.data;
        Ok(PluginKvCache {
            values: keys.clone(),
            keys,
            capacity,
            width,
        })
    }

    fn kv_append(
        &self,
        cache: &mut PluginKvCache,
        k: &PluginTensor,
        v: &PluginTensor,
        pos0: usize,
    ) -> Result<()> {
        checks::kv_append(cache.dims(), k.dims(), v.dims(), pos0)?;
        let range = pos0 * cache.width..(pos0 + k.rows) * cache.width;
        cache.keys[range.clone()].copy_from_slice(&k.data);
        cache.values[range].copy_from_slice(&v.data);
        Ok(())
    }

    fn attention_scores(
        &self,
        q: &PluginTensor,
        cache: &PluginKvCache,
        pos0: usize,
        shape: AttentionShape,
    ) -> Result<PluginTensor> {
        checks::attention_scores(q.dims(), cache.dims(), pos0, shape)?;
        let scores = attention::scores(
            &q.data,
            q.rows,
            &cache.keys,
            pos0,
            shape,
            attention::dot_in_order,
        );
        PluginTensor::new(scores, shape.n_heads * q.rows, pos0 + q.rows)
    }

    fn attention_weighted_sum(
        &self,
        probs: &PluginTensor,
        cache: &PluginKvCache,
        pos0: usize,
        shape: AttentionShape,
    ) -> Result<PluginTensor> {
        let seq = checks::attention_weighted_sum(probs.dims(), cache.dims(), pos0, shape)?;
        let out = attention::weighted_sum_by_rows(
            &probs.data,
            probs.cols,
            seq,
            &cache.values,
            shape,
            attention::axpy,
        );
        PluginTensor::new(out, seq, shape.n_heads * shape.head_dim)
    }
}
