use candle_core::{Device, Module, Tensor};
use rbees_core::{
    checks, AttentionShape, Backend, BackendError, BackendOptions, BuiltInBackend, HostWeight, Op,
    Result, RopeVariant, Support, WeightDType,
};

use crate::attention::{self, CandleKvCache};
use crate::device;
use crate::weight::CandleWeight;

/// Maps a candle error to a backend error that names the op.
pub(crate) fn candle_err(op: &'static str) -> impl Fn(candle_core::Error) -> BackendError {
    move |e| BackendError::Other(format!("candle {op}: {e}"))
}

pub struct CandleBackend {
    device: Device,
    device_name: String,
}

impl CandleBackend {
    pub fn new(options: &BackendOptions) -> Result<Self> {
        let device_err = |reason: String| BackendError::Device {
            backend: Self::NAME.into(),
            device: options.device.clone(),
            reason,
        };
        let device = device::open(&options.device).map_err(device_err)?;
        if device.is_cpu() {
            device::set_cpu_threads(options.threads).map_err(device_err)?;
        }
        Ok(CandleBackend {
            device,
            device_name: options.device.clone(),
        })
    }

    pub fn candle_device(&self) -> &Device {
        &self.device
    }
}

fn dims(x: &Tensor) -> (usize, usize) {
    x.dims2().unwrap_or((0, 0))
}

/// Applies RoPE to the first `2 * half` values of each head; the rest pass through.
fn rope_heads(
    x: &Tensor,
    n_heads: usize,
    head_dim: usize,
    cos: &Tensor,
    sin: &Tensor,
    variant: RopeVariant,
) -> candle_core::Result<Tensor> {
    let seq = x.dim(0)?;
    let rot = 2 * cos.dim(1)?;
    // [seq, heads*hd] -> [1, heads, seq, hd], the layout candle-nn's rope kernels take.
    let heads = attention::split_heads(x, n_heads, head_dim)?.unsqueeze(0)?;
    let rotate = |t: &Tensor| match variant {
        RopeVariant::Interleaved => candle_nn::rotary_emb::rope_i(t, cos, sin),
        RopeVariant::HalfSplit => candle_nn::rotary_emb::rope(t, cos, sin),
    };
    let rotated = if rot == head_dim {
        rotate(&heads)?
    } else {
        let head = rotate(&heads.narrow(3, 0, rot)?.contiguous()?)?;
        let tail = heads.narrow(3, rot, head_dim - rot)?;
        Tensor::cat(&[&head, &tail], 3)?
    };
    rotated
        .squeeze(0)?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((seq, n_heads * head_dim))
}

impl Backend for CandleBackend {
    type Tensor = Tensor;
    type Weight = CandleWeight;
    type KvCache = CandleKvCache;

    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn device(&self) -> String {
        self.device_name.clone()
    }

    fn device_memory_used(&self) -> Option<u64> {
        match &self.device {
            #[cfg(feature = "cuda")]
            Device::Cuda(d) => {
                let (free, total) = d.cuda_stream().context().mem_get_info().ok()?;
                Some(total.saturating_sub(free) as u64)
            }
            _ => None,
        }
    }

    fn supports(&self, op: Op, dtype: Option<WeightDType>) -> Support {
        if dtype == Some(WeightDType::Q8K) {
            return Support::Unsupported(
                "Q8_K is candle's activation type; GGUF weights never use it".into(),
            );
        }
        match op {
            Op::ConcatRows => Support::Native,
            op if op.has_default() => Support::Composed,
            _ => Support::Native,
        }
    }

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<Tensor> {
        checks::upload(data.len(), rows, cols)?;
        Tensor::from_slice(data, (rows, cols), &self.device).map_err(candle_err("upload"))
    }

    fn download(&self, x: &Tensor) -> Result<Vec<f32>> {
        x.flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(candle_err("download"))
    }

    fn dims(&self, x: &Tensor) -> (usize, usize) {
        dims(x)
    }

    fn load_weight(&self, w: &HostWeight<'_>) -> Result<CandleWeight> {
        if let Support::Unsupported(reason) = self.supports(Op::MatMul, Some(w.dtype)) {
            return Err(BackendError::Weight {
                name: w.name.to_string(),
                detail: reason,
            });
        }
        CandleWeight::from_host(w, &self.device)
    }

    fn weight_dims(&self, w: &CandleWeight) -> (usize, usize) {
        (w.rows, w.cols)
    }

    fn rms_norm(&self, x: &Tensor, weight: &CandleWeight, eps: f32) -> Result<Tensor> {
        checks::rms_norm(dims(x), self.weight_dims(weight))?;
        let alpha = weight
            .dense()?
            .flatten_all()
            .map_err(candle_err("rms_norm"))?;
        candle_nn::ops::rms_norm(x, &alpha, eps).map_err(candle_err("rms_norm"))
    }

    fn rope(
        &self,
        x: &Tensor,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
        cos: &Tensor,
        sin: &Tensor,
        variant: RopeVariant,
    ) -> Result<Tensor> {
        checks::rope(dims(x), n_heads, head_dim, pos0, dims(cos), dims(sin))?;
        let seq = dims(x).0;
        let window = |t: &Tensor| t.narrow(0, pos0, seq).and_then(|t| t.contiguous());
        let (cos, sin) = (
            window(cos).map_err(candle_err("rope"))?,
            window(sin).map_err(candle_err("rope"))?,
        );
        rope_heads(x, n_heads, head_dim, &cos, &sin, variant).map_err(candle_err("rope"))
    }

    fn softmax(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::softmax_last_dim(x).map_err(candle_err("softmax"))
    }

    fn silu(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::silu(x).map_err(candle_err("silu"))
    }

    fn matmul(&self, x: &Tensor, w: &CandleWeight) -> Result<Tensor> {
        checks::matmul(dims(x), self.weight_dims(w))?;
        w.qmatmul()?.forward(x).map_err(candle_err("matmul"))
    }

    fn embedding(&self, table: &CandleWeight, ids: &[u32]) -> Result<Tensor> {
        checks::embedding(ids, self.weight_dims(table))?;
        table.rows(ids)
    }

    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        checks::same("add", dims(a), dims(b))?;
        a.add(b).map_err(candle_err("add"))
    }

    fn mul(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        checks::same("mul", dims(a), dims(b))?;
        a.mul(b).map_err(candle_err("mul"))
    }

    fn rows(&self, x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
        checks::rows(dims(x), start, len)?;
        x.narrow(0, start, len)
            .and_then(|t| t.contiguous())
            .map_err(candle_err("rows"))
    }

    fn concat_rows(&self, parts: &[&Tensor]) -> Result<Tensor> {
        let cols = parts.first().map_or(0, |p| dims(p).1);
        for p in parts {
            checks::same("concat_rows", (dims(p).0, cols), dims(p))?;
        }
        if parts.is_empty() {
            return self.upload(&[], 0, 0);
        }
        Tensor::cat(parts, 0).map_err(candle_err("concat_rows"))
    }

    fn kv_cache(&self, capacity: usize, width: usize) -> Result<CandleKvCache> {
        attention::zeros(capacity, width, &self.device).map_err(candle_err("kv_cache"))
    }

    fn kv_append(
        &self,
        cache: &mut CandleKvCache,
        k: &Tensor,
        v: &Tensor,
        pos0: usize,
    ) -> Result<()> {
        checks::kv_append(dims(&cache.keys), dims(k), dims(v), pos0)?;
        let write = |dst: &Tensor, src: &Tensor| dst.slice_set(&src.contiguous()?, 0, pos0);
        write(&cache.keys, k).map_err(candle_err("kv_append"))?;
        write(&cache.values, v).map_err(candle_err("kv_append"))
    }

    fn attention_scores(
        &self,
        q: &Tensor,
        cache: &CandleKvCache,
        pos0: usize,
        shape: AttentionShape,
    ) -> Result<Tensor> {
        checks::attention_scores(dims(q), dims(&cache.keys), pos0, shape)?;
        attention::scores(q, &cache.keys, pos0, shape).map_err(candle_err("attention_scores"))
    }

    fn attention_weighted_sum(
        &self,
        probs: &Tensor,
        cache: &CandleKvCache,
        pos0: usize,
        shape: AttentionShape,
    ) -> Result<Tensor> {
        let seq = checks::attention_weighted_sum(dims(probs), dims(&cache.values), pos0, shape)?;
        attention::weighted_sum(probs, &cache.values, seq, shape)
            .map_err(candle_err("attention_weighted_sum"))
    }
}

impl BuiltInBackend for CandleBackend {
    const NAME: &'static str = "candle";

    fn start(options: &BackendOptions) -> Result<Self> {
        Self::new(options)
    }
}
