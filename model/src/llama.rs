//! The Llama architecture over any [`Backend`].

use rbees_core::{
    rope_tables, AttentionShape, Backend, Op, RopeVariant, SeqSpan, Support, WeightDType,
};

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;

/// A dimension of a block tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockDim {
    /// The embedding width (`dim`).
    Model,
    /// Every query head together (`n_heads * head_dim`).
    Query,
    /// Every key/value head together (`n_kv_heads * head_dim`).
    Kv,
    /// The feed-forward width (`ff_dim`).
    Ffn,
}

/// What a block tensor is for, which fixes its shape and the op that reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockRole {
    /// An RMSNorm weight: `[dim]`.
    Norm,
    /// A matrix product's weight: `[rows, cols]`.
    Matrix { rows: BlockDim, cols: BlockDim },
}

/// One tensor of every transformer block: `blk.{layer}.{name}.weight`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockTensor {
    pub name: &'static str,
    pub role: BlockRole,
}

/// The sizes [`BlockDim`] stands for in one model.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockDims {
    pub model: usize,
    pub query: usize,
    pub kv: usize,
    pub ffn: usize,
}

impl BlockDims {
    fn of(config: &LlamaConfig) -> Self {
        BlockDims {
            model: config.dim,
            query: config.n_heads * config.head_dim,
            kv: config.kv_dim(),
            ffn: config.ff_dim,
        }
    }

    fn get(&self, dim: BlockDim) -> usize {
        match dim {
            BlockDim::Model => self.model,
            BlockDim::Query => self.query,
            BlockDim::Kv => self.kv,
            BlockDim::Ffn => self.ffn,
        }
    }
}

impl BlockTensor {
    /// The tensor's shape in a model of `dims` (`[rows, cols]` for a matrix).
    pub(crate) fn shape(&self, dims: &BlockDims) -> Vec<usize> {
        match self.role {
            BlockRole::Norm => vec![dims.model],
            BlockRole::Matrix { rows, cols } => vec![dims.get(rows), dims.get(cols)],
        }
    }
}

/// The tensors of a transformer block, the one list the loader, the
/// capability check and `rbees synth` read: in llama.cpp's order, which is
/// also the order of [`Block`]'s fields ([`Block::from_weights`]).
pub(crate) const BLOCK_TENSORS: [BlockTensor; 9] = {
    use BlockDim::{Ffn, Kv, Model, Query};
    const fn matrix(name: &'static str, rows: BlockDim, cols: BlockDim) -> BlockTensor {
        BlockTensor {
            name,
            role: BlockRole::Matrix { rows, cols },
        }
    }
    const fn norm(name: &'static str) -> BlockTensor {
        BlockTensor {
            name,
            role: BlockRole::Norm,
        }
    }
    [
        norm("attn_norm"),
        matrix("attn_q", Query, Model),
        matrix("attn_k", Kv, Model),
        matrix("attn_v", Kv, Model),
        matrix("attn_output", Model, Query),
        norm("ffn_norm"),
        matrix("ffn_gate", Ffn, Model),
        matrix("ffn_up", Ffn, Model),
        matrix("ffn_down", Model, Ffn),
    ]
};

/// One transformer block's weights.
struct Block<B: Backend> {
    attn_norm: B::Weight,
    wq: B::Weight,
    wk: B::Weight,
    wv: B::Weight,
    wo: B::Weight,
    ffn_norm: B::Weight,
    w_gate: B::Weight,
    w_up: B::Weight,
    w_down: B::Weight,
}

impl<B: Backend> Block<B> {
    /// The block from its weights in [`BLOCK_TENSORS`] order.
    fn from_weights(weights: [B::Weight; BLOCK_TENSORS.len()]) -> Self {
        let [attn_norm, wq, wk, wv, wo, ffn_norm, w_gate, w_up, w_down] = weights;
        Block {
            attn_norm,
            wq,
            wk,
            wv,
            wo,
            ffn_norm,
            w_gate,
            w_up,
            w_down,
        }
    }
}

/// How each op the model uses will run on the chosen backend (native kernel
/// or default composition), decided once at load time.
#[derive(Debug, Clone)]
pub struct CapabilityReport {
    pub entries: Vec<(Op, Option<WeightDType>, Support)>,
}

impl CapabilityReport {
    /// Fused ops that run as the trait's default composition.
    pub fn composed_ops(&self) -> Vec<Op> {
        self.entries
            .iter()
            .filter(|(_, _, s)| *s == Support::Composed)
            .map(|(op, _, _)| *op)
            .collect()
    }
}

/// Observer of intermediate activations, for checkpoint tests and debugging;
/// it gets the backend too, to download them.
pub type Trace<'t, B> = &'t mut dyn FnMut(&B, &str, &<B as Backend>::Tensor);

/// One sequence's part of a batched step: `ids` at positions `pos0..` of
/// the sequence whose KV cache is `slot`.
#[derive(Debug, Clone, Copy)]
pub struct SeqChunk<'a> {
    pub slot: usize,
    pub pos0: usize,
    pub ids: &'a [u32],
    /// How many of the chunk's last positions get logits: 1 for a sequence
    /// about to sample, 0 for a prompt chunk that is not the prompt's last
    /// (it skips the output projection), more for scoring text
    /// (perplexity). At most `ids.len()`.
    pub logits: usize,
}

/// A Llama-architecture model loaded on backend `B`, with one KV cache per
/// sequence slot.
pub struct Llama<B: Backend> {
    backend: B,
    config: LlamaConfig,
    context: usize,
    token_embd: B::Weight,
    blocks: Vec<Block<B>>,
    output_norm: B::Weight,
    /// `None` when the file ties the output projection to the embedding.
    output: Option<B::Weight>,
    rope_cos: B::Tensor,
    rope_sin: B::Tensor,
    /// `caches[layer][slot]`.
    caches: Vec<Vec<B::KvCache>>,
    vocab_size: usize,
    capabilities: CapabilityReport,
}

/// Load settings that are not in the model file.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// KV cache size in tokens, per slot; `None`: the trained context, at
    /// most [`DEFAULT_MAX_CONTEXT`].
    pub context: Option<usize>,
    /// Sequences that can be in flight at once, each with its own KV cache
    /// of `context` tokens (0 is taken as 1).
    pub slots: usize,
}

/// Most KV cache slots one may ask for.
pub const MAX_SLOTS: usize = 1024;

/// Default cap on the KV cache, as llama.cpp's tools default to 4096.
pub const DEFAULT_MAX_CONTEXT: usize = 4096;

/// Largest KV cache one may ask for, whatever the model claims it was
/// trained for: the cache and RoPE tables are allocated at once, and an
/// absurd size would abort the process instead of failing cleanly.
pub const MAX_CONTEXT: usize = 1 << 20;

/// The architecture name used for metadata keys in messages.
fn config_arch(gguf: &GgufFile) -> String {
    crate::config::architecture(gguf.metadata()).unwrap_or_else(|_| "llama".into())
}

/// The file's name of tensor `name` of block `l`.
pub(crate) fn block_tensor(l: usize, name: &str) -> String {
    format!("blk.{l}.{name}.weight")
}

impl<B: Backend> Llama<B> {
    /// Reads the model from `gguf` onto `backend`. `progress(done, total)` is
    /// called after each block.
    pub fn load(
        backend: B,
        gguf: &GgufFile,
        options: &LoadOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let config = LlamaConfig::from_metadata(gguf.metadata())?;
        let context = match options.context {
            Some(0) => {
                return Err(ModelError::Context(
                    "the context size must be at least 1 token".into(),
                ))
            }
            // No RoPE scaling here: positions past the trained context would
            // give silently degraded output, and an absurd size would only
            // fail when the KV cache allocation aborts the process.
            Some(n) if n > config.train_context => {
                return Err(ModelError::Context(format!(
                    "{n} tokens is more than the {} the model was trained for",
                    config.train_context
                )))
            }
            Some(n) if n > MAX_CONTEXT => {
                return Err(ModelError::Context(format!(
                    "{n} tokens is more than rbees supports ({MAX_CONTEXT})"
                )))
            }
            Some(n) => n,
            None => config.train_context.min(DEFAULT_MAX_CONTEXT),
        };
        // The block count is a claim of the metadata: check the file holds
        // that many blocks before anything is sized from it.
        let last = config.n_layers - 1;
        // A block is there when its first tensor is.
        let first = BLOCK_TENSORS[0].name;
        if !gguf.has_tensor(&block_tensor(last, first)) {
            let present = (0..config.n_layers)
                .take_while(|&l| gguf.has_tensor(&block_tensor(l, first)))
                .count();
            return Err(ModelError::Metadata {
                key: format!("{}.block_count", config_arch(gguf)),
                detail: format!(
                    "{} blocks claimed but the file has {present} ({} is missing)",
                    config.n_layers,
                    block_tensor(present, first)
                ),
            });
        }
        let vocab_size = expect_matrix(gguf, "token_embd.weight", None, Some(config.dim))?.0;
        let tied = !gguf.has_tensor("output.weight");
        let capabilities = check_capabilities(&backend, gguf, &config, tied)?;

        let load = |name: &str, rows: Option<usize>, cols: usize| -> Result<B::Weight> {
            match rows {
                Some(_) => {
                    expect_matrix(gguf, name, rows, Some(cols))?;
                }
                None => expect_vector(gguf, name, cols)?,
            }
            let host = gguf.weight(name)?;
            let weight = backend.load_weight(&host)?;
            gguf.release(&host);
            Ok(weight)
        };
        let token_embd = load("token_embd.weight", Some(vocab_size), config.dim)?;
        let dims = BlockDims::of(&config);
        let mut blocks = Vec::with_capacity(config.n_layers);
        for l in 0..config.n_layers {
            let weights = BLOCK_TENSORS
                .iter()
                .map(|t| {
                    let name = block_tensor(l, t.name);
                    match t.role {
                        BlockRole::Norm => load(&name, None, dims.model),
                        BlockRole::Matrix { rows, cols } => {
                            load(&name, Some(dims.get(rows)), dims.get(cols))
                        }
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            let Ok(weights) = weights.try_into() else {
                unreachable!("one weight per entry of BLOCK_TENSORS")
            };
            blocks.push(Block::from_weights(weights));
            progress(l + 1, config.n_layers);
        }
        let output_norm = load("output_norm.weight", None, config.dim)?;
        let output = if tied {
            None
        } else {
            Some(load("output.weight", Some(vocab_size), config.dim)?)
        };
        let (cos, sin) = rope_tables(context, config.rope_dim, config.rope_base);
        let half = config.rope_dim / 2;
        let rope_cos = backend.upload(&cos, context, half)?;
        let rope_sin = backend.upload(&sin, context, half)?;
        let slots = options.slots.max(1);
        if slots > MAX_SLOTS {
            return Err(ModelError::Context(format!(
                "{slots} sequence slots is more than rbees supports ({MAX_SLOTS})"
            )));
        }
        let caches = (0..config.n_layers)
            .map(|_| {
                (0..slots)
                    .map(|_| backend.kv_cache(context, dims.kv))
                    .collect::<std::result::Result<Vec<_>, _>>()
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Llama {
            backend,
            config,
            context,
            token_embd,
            blocks,
            output_norm,
            output,
            rope_cos,
            rope_sin,
            caches,
            vocab_size,
            capabilities,
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Tokens each slot's KV cache holds.
    pub fn context(&self) -> usize {
        self.context
    }

    /// KV cache slots: sequences a [`Llama::step`] can run together.
    pub fn slots(&self) -> usize {
        self.caches.first().map_or(1, Vec::len)
    }

    /// Bytes of one slot's KV cache (keys and values of every layer, f32).
    pub fn kv_bytes_per_slot(&self) -> usize {
        2 * self.config.n_layers * self.context * self.config.kv_dim() * 4
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn capabilities(&self) -> &CapabilityReport {
        &self.capabilities
    }

    /// Runs `ids` at positions `pos0..`, storing their keys and values in the
    /// cache, and returns the logits of the last position.
    ///
    /// Positions `0..pos0` must already be in the cache (from earlier calls);
    /// anything cached after `pos0` is overwritten.
    pub fn forward(&mut self, ids: &[u32], pos0: usize) -> Result<Vec<f32>> {
        let chunk = SeqChunk {
            slot: 0,
            pos0,
            ids,
            logits: 1,
        };
        let mut logits = self.forward_impl(&[chunk], None)?;
        Ok(logits.pop().flatten().unwrap_or_default())
    }

    /// Runs `ids` at positions `pos0..` like [`Llama::forward`] and returns
    /// the logits of the last `n` positions, row after row (`n × vocab`):
    /// what scoring a text needs.
    pub fn forward_last(&mut self, ids: &[u32], pos0: usize, n: usize) -> Result<Vec<f32>> {
        let chunk = SeqChunk {
            slot: 0,
            pos0,
            ids,
            logits: n,
        };
        let mut logits = self.forward_impl(&[chunk], None)?;
        Ok(logits.pop().flatten().unwrap_or_default())
    }

    /// One forward pass over several sequences at once (continuous
    /// batching): the rows of every chunk go through each matrix product
    /// together; RoPE, the KV cache and attention follow each chunk's own
    /// slot and positions. Returns, for each chunk, the logits of its last
    /// position if it asked for them.
    ///
    /// Each slot appears at most once; positions `0..pos0` of a chunk's slot
    /// must hold that sequence's earlier tokens (anything cached after
    /// `pos0` is overwritten).
    pub fn step(&mut self, chunks: &[SeqChunk<'_>]) -> Result<Vec<Option<Vec<f32>>>> {
        self.forward_impl(chunks, None)
    }

    /// Like [`Llama::forward`], reporting each intermediate activation to
    /// `trace` (names as in llama.cpp's graph: `attn_norm.0`, `q_rope.0`, ...)
    /// and returning the logits of **every** position, row after row.
    pub fn forward_traced(
        &mut self,
        ids: &[u32],
        pos0: usize,
        trace: Trace<'_, B>,
    ) -> Result<Vec<f32>> {
        let chunk = SeqChunk {
            slot: 0,
            pos0,
            ids,
            logits: ids.len(),
        };
        let mut logits = self.forward_impl(&[chunk], Some(trace))?;
        Ok(logits.pop().flatten().unwrap_or_default())
    }

    /// The chunks' rows as spans of one batch, after checking every chunk.
    fn batch_spans(&self, chunks: &[SeqChunk<'_>]) -> Result<Vec<SeqSpan>> {
        if chunks.is_empty() {
            return Err(ModelError::Batch("no sequences to run".into()));
        }
        let slots = self.slots();
        let mut used = vec![false; slots];
        let mut spans = Vec::with_capacity(chunks.len());
        let mut start = 0;
        for c in chunks {
            if c.ids.is_empty() {
                return Err(ModelError::EmptyPrompt);
            }
            if c.logits > c.ids.len() {
                return Err(ModelError::Batch(format!(
                    "logits of {} positions asked for a chunk of {}",
                    c.logits,
                    c.ids.len()
                )));
            }
            match used.get_mut(c.slot) {
                None => {
                    return Err(ModelError::Batch(format!(
                        "slot {} does not exist (the model has {slots})",
                        c.slot
                    )))
                }
                Some(true) => {
                    return Err(ModelError::Batch(format!(
                        "slot {} appears twice in one step",
                        c.slot
                    )))
                }
                Some(u) => *u = true,
            }
            let end = c.pos0.checked_add(c.ids.len());
            if end.is_none_or(|end| end > self.context) {
                return Err(ModelError::PromptTooLong {
                    prompt_tokens: end.unwrap_or(usize::MAX),
                    context: self.context,
                });
            }
            if let Some(&id) = c.ids.iter().find(|&&id| id as usize >= self.vocab_size) {
                return Err(ModelError::TokenOutOfRange {
                    id,
                    vocab: self.vocab_size,
                });
            }
            spans.push(SeqSpan {
                start,
                len: c.ids.len(),
                pos0: c.pos0,
            });
            start += c.ids.len();
        }
        Ok(spans)
    }

    fn forward_impl(
        &mut self,
        chunks: &[SeqChunk<'_>],
        mut trace: Option<Trace<'_, B>>,
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let spans = self.batch_spans(chunks)?;
        let slots: Vec<usize> = chunks.iter().map(|c| c.slot).collect();
        let ids: Vec<u32> = chunks.iter().flat_map(|c| c.ids.iter().copied()).collect();
        let seq = ids.len();
        if trace.is_some() && chunks.len() > 1 {
            return Err(ModelError::Batch("a traced pass runs one sequence".into()));
        }
        let b = &self.backend;
        let c = &self.config;
        let tracing = trace.is_some();
        // Names are only built when someone listens: this runs on every token.
        let mut emit = |stem: &str, layer: Option<usize>, t: &B::Tensor| {
            if let Some(f) = trace.as_mut() {
                let name = layer.map_or_else(|| stem.to_string(), |l| format!("{stem}.{l}"));
                f(b, &name, t)
            }
        };
        let shape = AttentionShape {
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
            scale: 1.0 / (c.head_dim as f32).sqrt(),
        };
        let mut x = b.embedding(&self.token_embd, &ids)?;
        emit("embd", None, &x);
        for (l, (blk, layer)) in self.blocks.iter().zip(self.caches.iter_mut()).enumerate() {
            let h = b.rms_norm(&x, &blk.attn_norm, c.rms_eps)?;
            emit("attn_norm", Some(l), &h);
            let q = b.matmul(&h, &blk.wq)?;
            let k = b.matmul(&h, &blk.wk)?;
            let v = b.matmul(&h, &blk.wv)?;
            emit("q", Some(l), &q);
            emit("k", Some(l), &k);
            emit("v", Some(l), &v);
            let rope = |t: &B::Tensor, heads: usize| {
                b.rope_batch(
                    t,
                    heads,
                    c.head_dim,
                    &spans,
                    &self.rope_cos,
                    &self.rope_sin,
                    RopeVariant::Interleaved,
                )
            };
            let q = rope(&q, c.n_heads)?;
            let k = rope(&k, c.n_kv_heads)?;
            emit("q_rope", Some(l), &q);
            emit("k_rope", Some(l), &k);
            let mut caches = slot_caches(layer, &slots)?;
            b.kv_append_batch(&mut caches, &k, &v, &spans)?;
            let caches: Vec<&B::KvCache> = caches.into_iter().map(|c| &*c).collect();
            if tracing {
                // Observed only: the pass below runs the same fused
                // attention as production; the probabilities it never
                // materialises are computed on the side for the trace.
                let (cache, pos0) = (caches[0], spans[0].pos0);
                let scores = b.attention_scores(&q, cache, pos0, shape)?;
                emit("kq_softmax", Some(l), &b.softmax(&scores)?);
            }
            let attn = b.attention_batch(&q, &caches, &spans, shape)?;
            emit("attn_out", Some(l), &attn);
            let attn = b.matmul(&attn, &blk.wo)?;
            x = b.add(&x, &attn)?;
            emit("ffn_inp", Some(l), &x);
            let h = b.rms_norm(&x, &blk.ffn_norm, c.rms_eps)?;
            emit("ffn_norm", Some(l), &h);
            let gate = b.matmul(&h, &blk.w_gate)?;
            let up = b.matmul(&h, &blk.w_up)?;
            let act = b.swiglu(&gate, &up)?;
            emit("swiglu", Some(l), &act);
            let down = b.matmul(&act, &blk.w_down)?;
            x = b.add(&x, &down)?;
            emit("l_out", Some(l), &x);
        }
        // Only the last position of each chunk that samples needs logits;
        // traced runs keep every position so they can be compared row by row.
        if tracing {
            let normed = b.rms_norm(&x, &self.output_norm, c.rms_eps)?;
            emit("result_norm", None, &normed);
            let head = self.output.as_ref().unwrap_or(&self.token_embd);
            let logits = b.download(&b.matmul(&normed, head)?)?;
            return Ok(vec![Some(logits)]);
        }
        // Each chunk's last `logits` rows, as (first row, count) runs.
        let wanted: Vec<(usize, usize)> = spans
            .iter()
            .zip(chunks)
            .filter(|(_, ch)| ch.logits > 0)
            .map(|(s, ch)| (s.start + s.len - ch.logits, ch.logits))
            .collect();
        let mut out = vec![None; chunks.len()];
        let rows_wanted: usize = wanted.iter().map(|w| w.1).sum();
        if rows_wanted == 0 {
            return Ok(out);
        }
        let last = match wanted[..] {
            _ if rows_wanted == seq => x,
            [(row, n)] => b.rows(&x, row, n)?,
            _ => {
                let rows = wanted
                    .iter()
                    .map(|&(r, n)| b.rows(&x, r, n))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                b.concat_rows(&rows.iter().collect::<Vec<_>>())?
            }
        };
        let normed = b.rms_norm(&last, &self.output_norm, c.rms_eps)?;
        let head = self.output.as_ref().unwrap_or(&self.token_embd);
        let logits = b.download(&b.matmul(&normed, head)?)?;
        let vocab = self.vocab_size;
        let mut rest = logits.as_slice();
        for (slot, ch) in out.iter_mut().zip(chunks) {
            if ch.logits > 0 {
                let (rows, tail) = rest.split_at((ch.logits * vocab).min(rest.len()));
                *slot = Some(rows.to_vec());
                rest = tail;
            }
        }
        Ok(out)
    }
}

/// The caches of `slots` (distinct, checked by `batch_spans`) in one layer,
/// in the order given.
fn slot_caches<'c, C>(layer: &'c mut [C], slots: &[usize]) -> Result<Vec<&'c mut C>> {
    let mut by_slot: Vec<Option<&mut C>> = layer.iter_mut().map(Some).collect();
    slots
        .iter()
        .map(|&s| {
            by_slot
                .get_mut(s)
                .and_then(Option::take)
                .ok_or_else(|| ModelError::Batch(format!("slot {s} is not available")))
        })
        .collect()
}

fn expect_matrix(
    gguf: &GgufFile,
    name: &str,
    rows: Option<usize>,
    cols: Option<usize>,
) -> Result<(usize, usize)> {
    let (_, shape) = gguf.tensor_meta(name)?;
    let ok = match shape {
        [r, c] => rows.is_none_or(|x| x == *r) && cols.is_none_or(|x| x == *c),
        _ => false,
    };
    if !ok || shape.contains(&0) {
        return Err(ModelError::Tensor {
            name: name.into(),
            detail: format!(
                "shape {shape:?} does not match the metadata (expected [{}, {}])",
                rows.map_or("vocab".to_string(), |r| r.to_string()),
                cols.map_or("?".to_string(), |c| c.to_string())
            ),
        });
    }
    Ok((shape[0], shape[1]))
}

fn expect_vector(gguf: &GgufFile, name: &str, len: usize) -> Result<()> {
    let (_, shape) = gguf.tensor_meta(name)?;
    if shape != [len] {
        return Err(ModelError::Tensor {
            name: name.into(),
            detail: format!("shape {shape:?} does not match the metadata (expected [{len}])"),
        });
    }
    Ok(())
}

/// Asks the backend, before any weight is read, for every op and weight type
/// the forward pass will use; the first gap is an error naming both.
fn check_capabilities<B: Backend>(
    backend: &B,
    gguf: &GgufFile,
    config: &LlamaConfig,
    tied: bool,
) -> Result<CapabilityReport> {
    let mut needs: Vec<(Op, Option<WeightDType>)> = Vec::new();
    let mut need = |op, dtype| {
        if !needs.contains(&(op, dtype)) {
            needs.push((op, dtype));
        }
    };
    need(
        Op::Embedding,
        Some(gguf.tensor_meta("token_embd.weight")?.0),
    );
    for l in 0..config.n_layers {
        // Norms first, then matrices: the order the checks are reported in.
        for norms in [true, false] {
            for t in BLOCK_TENSORS
                .iter()
                .filter(|t| (t.role == BlockRole::Norm) == norms)
            {
                let op = match t.role {
                    BlockRole::Norm => Op::RmsNorm,
                    BlockRole::Matrix { .. } => Op::MatMul,
                };
                need(op, Some(gguf.tensor_meta(&block_tensor(l, t.name))?.0));
            }
        }
    }
    need(Op::RmsNorm, Some(gguf.tensor_meta("output_norm.weight")?.0));
    let head = if tied {
        "token_embd.weight"
    } else {
        "output.weight"
    };
    need(Op::MatMul, Some(gguf.tensor_meta(head)?.0));
    // Every op without a weight operand.
    let weightless = |op: &Op| !matches!(op, Op::MatMul | Op::Embedding | Op::RmsNorm);
    for op in Op::ALL.into_iter().filter(weightless) {
        need(op, None);
    }
    let mut entries = Vec::with_capacity(needs.len());
    for (op, dtype) in needs {
        let support = backend.supports(op, dtype);
        if let Support::Unsupported(reason) = &support {
            return Err(ModelError::Capability {
                backend: backend.name().to_string(),
                op: op.to_string(),
                dtype: dtype.map_or("activations".to_string(), |d| d.to_string()),
                reason: reason.clone(),
            });
        }
        entries.push((op, dtype, support));
    }
    Ok(CapabilityReport { entries })
}
