use crate::{HostWeight, Op, Result, Support, WeightDType};

/// How a backend is created: which device and how many CPU threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendOptions {
    /// `"cpu"`, `"cuda:0"`, ...
    pub device: String,
    /// CPU threads for the backend's own work; `None` means one per core.
    pub threads: Option<usize>,
}

impl Default for BackendOptions {
    fn default() -> Self {
        BackendOptions {
            device: "cpu".to_string(),
            threads: None,
        }
    }
}

/// Which pairs of a head vector RoPE rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeVariant {
    /// Adjacent pairs `(x[2i], x[2i+1])`: GGUF `llama` (ggml "normal" RoPE, candle `rope_i`).
    Interleaved,
    /// Halves `(x[i], x[i + d/2])`: GPT-NeoX style (candle `rope`).
    HalfSplit,
}

/// Head layout of an attention call. Query head `h` reads key/value head
/// `h / (n_heads / n_kv_heads)` (grouped-query attention).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Multiplies `q·k` before the softmax, usually `1/sqrt(head_dim)`.
    pub scale: f32,
}

/// One sequence's rows in a batch: rows `start..start + len` of the batch
/// tensors are its tokens at positions `pos0..pos0 + len` (continuous
/// batching concatenates the rows of several sequences; see
/// [`Backend::attention_batch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqSpan {
    pub start: usize,
    pub len: usize,
    pub pos0: usize,
}

/// A kernel backend: the math of a Llama block on one device.
///
/// # Data model
/// * `Tensor` is a device-resident, contiguous, row-major **2-D f32** matrix
///   `[rows, cols]`. Rows are tokens; a row of `n_heads * head_dim` values
///   holds the heads one after the other.
/// * `Weight` is a device-resident weight that may stay quantised; a matrix
///   is `[out, in]` (see [`HostWeight`]), a vector is `[n]`.
/// * `KvCache` is one layer's keys and values, preallocated for `capacity`
///   positions of `n_kv_heads * head_dim` values each.
///
/// # Precision contract
/// Activations are f32 and every reduction accumulates in f32. Each backend
/// documents in its crate docs how it treats activations inside quantised
/// matmul (the reference backend dequantises the weight to f32 and multiplies
/// in f32; llama.cpp's CPU path quantises activations to Q8 instead), and the
/// conformance tolerances follow from that.
///
/// # Errors
/// Every method returns a [`Result`]. Shape mismatches are errors, never
/// panics. An op a backend cannot run must be reported by [`Backend::supports`]
/// so that the model refuses to load rather than failing mid-request.
pub trait Backend: Send + Sync + Sized + 'static {
    type Tensor: Send + Sync;
    type Weight: Send + Sync;
    type KvCache: Send + Sync;

    /// Registry name, e.g. `"ndarray"`.
    fn name(&self) -> &'static str;
    /// The device in use, e.g. `"cpu"`.
    fn device(&self) -> String;
    /// Bytes of device memory in use on a GPU device, as its driver counts
    /// them (the whole device, every process); `None` for host memory,
    /// which the process's resident size measures.
    fn device_memory_used(&self) -> Option<u64> {
        None
    }
    /// Can this backend run `op` (on weights of `dtype`, for ops that take a
    /// weight)? Fused ops answer [`Support::Composed`] unless overridden.
    fn supports(&self, op: Op, dtype: Option<WeightDType>) -> Support;

    // ---- transfers -------------------------------------------------------
    /// Copies a host `[rows, cols]` row-major matrix to the device.
    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<Self::Tensor>;
    /// Copies a tensor back to the host, row-major.
    fn download(&self, x: &Self::Tensor) -> Result<Vec<f32>>;
    /// `(rows, cols)` of a tensor.
    fn dims(&self, x: &Self::Tensor) -> (usize, usize);
    /// Places a weight on the device, keeping its storage type where the
    /// backend can (checks the shape against the data first).
    fn load_weight(&self, w: &HostWeight<'_>) -> Result<Self::Weight>;
    /// `(rows, cols)` of a weight; a vector is one row.
    fn weight_dims(&self, w: &Self::Weight) -> (usize, usize);

    // ---- the five kernels -------------------------------------------------
    /// `y[r] = x[r] / sqrt(mean(x[r]²) + eps) * weight` for every row; `weight` is `[cols]`.
    fn rms_norm(&self, x: &Self::Tensor, weight: &Self::Weight, eps: f32) -> Result<Self::Tensor>;

    /// Rotary position embedding of `x: [seq, n_heads * head_dim]`, row `i`
    /// at position `pos0 + i`. `cos`/`sin` are `[max_positions, rot/2]` tables
    /// (`rot <= head_dim`; dimensions past `rot` pass through unchanged).
    #[allow(clippy::too_many_arguments)]
    fn rope(
        &self,
        x: &Self::Tensor,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
        cos: &Self::Tensor,
        sin: &Self::Tensor,
        variant: RopeVariant,
    ) -> Result<Self::Tensor>;

    /// Softmax over each row; `-inf` entries get probability 0.
    fn softmax(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// `x * sigmoid(x)`, elementwise.
    fn silu(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// `x · Wᵀ`: `x: [m, k]`, `w: [n, k]` -> `[m, n]`.
    fn matmul(&self, x: &Self::Tensor, w: &Self::Weight) -> Result<Self::Tensor>;

    // ---- glue ------------------------------------------------------------
    /// Rows `ids` of an embedding table `[vocab, dim]` -> `[ids.len(), dim]`.
    fn embedding(&self, table: &Self::Weight, ids: &[u32]) -> Result<Self::Tensor>;
    /// Elementwise `a + b` (same shape).
    fn add(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    /// Elementwise `a * b` (same shape).
    fn mul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    /// Rows `start..start + len` of `x` (the model uses it to keep only the
    /// last position before the output projection).
    fn rows(&self, x: &Self::Tensor, start: usize, len: usize) -> Result<Self::Tensor>;

    /// A zeroed cache for `capacity` positions of `width` values (keys and values each).
    fn kv_cache(&self, capacity: usize, width: usize) -> Result<Self::KvCache>;
    /// Writes `k`, `v` (`[seq, width]`) at positions `pos0..pos0 + seq`.
    fn kv_append(
        &self,
        cache: &mut Self::KvCache,
        k: &Self::Tensor,
        v: &Self::Tensor,
        pos0: usize,
    ) -> Result<()>;
    /// Scaled, causally masked scores of `q: [seq, n_heads * head_dim]` at
    /// positions `pos0..` against cached keys `0..pos0 + seq`: a
    /// `[n_heads * seq, pos0 + seq]` tensor whose row `h * seq + i` holds
    /// `scale * q[i, h] · k[j, h / group]` for `j <= pos0 + i` and `-inf` after.
    fn attention_scores(
        &self,
        q: &Self::Tensor,
        cache: &Self::KvCache,
        pos0: usize,
        shape: AttentionShape,
    ) -> Result<Self::Tensor>;
    /// Inverse layout of [`Backend::attention_scores`]: `probs` rows
    /// (`[n_heads * seq, pos0 + seq]`) times cached values -> `[seq, n_heads * head_dim]`.
    fn attention_weighted_sum(
        &self,
        probs: &Self::Tensor,
        cache: &Self::KvCache,
        pos0: usize,
        shape: AttentionShape,
    ) -> Result<Self::Tensor>;

    // ---- fused ops with default compositions -------------------------------
    /// Causal grouped-query attention over the cache: scores, softmax, weighted sum.
    fn attention(
        &self,
        q: &Self::Tensor,
        cache: &Self::KvCache,
        pos0: usize,
        shape: AttentionShape,
    ) -> Result<Self::Tensor> {
        let scores = self.attention_scores(q, cache, pos0, shape)?;
        let probs = self.softmax(&scores)?;
        self.attention_weighted_sum(&probs, cache, pos0, shape)
    }

    /// `silu(gate) * up`, the Llama feed-forward activation.
    fn swiglu(&self, gate: &Self::Tensor, up: &Self::Tensor) -> Result<Self::Tensor> {
        let activated = self.silu(gate)?;
        self.mul(&activated, up)
    }

    // ---- batches of sequences (continuous batching) -------------------------
    // A batch is one tensor whose rows are the tokens of several sequences,
    // one [`SeqSpan`] each, in order (checked by `checks::spans`). Products
    // and elementwise ops take the whole batch; these ops follow each
    // sequence's own positions and cache. The defaults run the
    // single-sequence op on each span's rows and concatenate, so a backend
    // overrides them only for speed; every override must give each row
    // exactly what the single-sequence op gives it.

    /// The rows of `parts`, one after the other (all with the same columns).
    /// The default goes through host memory.
    fn concat_rows(&self, parts: &[&Self::Tensor]) -> Result<Self::Tensor> {
        let cols = parts.first().map_or(0, |p| self.dims(p).1);
        let mut data = Vec::new();
        let mut rows = 0;
        for p in parts {
            let (r, c) = self.dims(p);
            crate::checks::same("concat_rows", (r, cols), (r, c))?;
            data.extend(self.download(p)?);
            rows += r;
        }
        self.upload(&data, rows, cols)
    }

    /// [`Backend::rope`] of every span at its own positions.
    #[allow(clippy::too_many_arguments)]
    fn rope_batch(
        &self,
        x: &Self::Tensor,
        n_heads: usize,
        head_dim: usize,
        spans: &[SeqSpan],
        cos: &Self::Tensor,
        sin: &Self::Tensor,
        variant: RopeVariant,
    ) -> Result<Self::Tensor> {
        crate::checks::spans("rope_batch", self.dims(x).0, spans, spans.len())?;
        if let [one] = spans {
            return self.rope(x, n_heads, head_dim, one.pos0, cos, sin, variant);
        }
        let parts = spans
            .iter()
            .map(|s| {
                let rows = self.rows(x, s.start, s.len)?;
                self.rope(&rows, n_heads, head_dim, s.pos0, cos, sin, variant)
            })
            .collect::<Result<Vec<_>>>()?;
        self.concat_rows(&parts.iter().collect::<Vec<_>>())
    }

    /// [`Backend::kv_append`] of every span's rows of `k`, `v` into its own
    /// cache (`caches[i]` for `spans[i]`) at its own positions.
    fn kv_append_batch(
        &self,
        caches: &mut [&mut Self::KvCache],
        k: &Self::Tensor,
        v: &Self::Tensor,
        spans: &[SeqSpan],
    ) -> Result<()> {
        crate::checks::spans("kv_append_batch", self.dims(k).0, spans, caches.len())?;
        if let ([one], [cache]) = (spans, &mut *caches) {
            return self.kv_append(cache, k, v, one.pos0);
        }
        for (s, cache) in spans.iter().zip(caches.iter_mut()) {
            let (ks, vs) = (self.rows(k, s.start, s.len)?, self.rows(v, s.start, s.len)?);
            self.kv_append(cache, &ks, &vs, s.pos0)?;
        }
        Ok(())
    }

    /// [`Backend::attention`] of every span's query rows over its own cache
    /// (`caches[i]` for `spans[i]`, already holding the span's keys).
    fn attention_batch(
        &self,
        q: &Self::Tensor,
        caches: &[&Self::KvCache],
        spans: &[SeqSpan],
        shape: AttentionShape,
    ) -> Result<Self::Tensor> {
        crate::checks::spans("attention_batch", self.dims(q).0, spans, caches.len())?;
        if let ([one], [cache]) = (spans, caches) {
            return self.attention(q, cache, one.pos0, shape);
        }
        let parts = spans
            .iter()
            .zip(caches)
            .map(|(s, cache)| {
                let rows = self.rows(q, s.start, s.len)?;
                self.attention(&rows, cache, s.pos0, shape)
            })
            .collect::<Result<Vec<_>>>()?;
        self.concat_rows(&parts.iter().collect::<Vec<_>>())
    }
}
