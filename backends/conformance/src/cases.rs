//! The cases: one op at one shape, runnable on any backend. The one list
//! of case kinds: the criterion benches (`rbees-benches`) time these too.

use rbees_core::{
    rope_tables, AttentionShape, Backend, HostWeight, Op, Result, RopeVariant, SeqSpan, WeightDType,
};

use crate::data::{values, weight_bytes};

/// NMSE limits. Elementwise ops, norms, softmax, RoPE, attention and
/// products with float weights differ only by f32 rounding order (~1e-14
/// seen); 1e-9 still catches any indexing or formula mistake. Quantised
/// products may round activations to Q8 first (candle, llama.cpp: ~2e-5
/// seen), so they get llama.cpp test-backend-ops' 5e-4.
pub const EXACT_LIMIT: f64 = 1e-9;
pub const QUANTIZED_MATMUL_LIMIT: f64 = 5e-4;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Case {
    RmsNorm {
        rows: usize,
        dim: usize,
    },
    Rope {
        seq: usize,
        heads: usize,
        head_dim: usize,
        rope_dim: usize,
        pos0: usize,
        variant: RopeVariant,
    },
    Softmax {
        rows: usize,
        cols: usize,
    },
    Silu {
        rows: usize,
        cols: usize,
    },
    MatMul {
        m: usize,
        n: usize,
        k: usize,
        dtype: WeightDType,
    },
    Embedding {
        vocab: usize,
        dim: usize,
        dtype: WeightDType,
    },
    Add {
        rows: usize,
        cols: usize,
    },
    Mul {
        rows: usize,
        cols: usize,
    },
    AttentionScores {
        seq: usize,
        pos0: usize,
        shape: AttentionShape,
    },
    Attention {
        seq: usize,
        pos0: usize,
        shape: AttentionShape,
    },
    /// Causal probabilities (zero past each row's position) times the
    /// cached values.
    AttentionWeightedSum {
        seq: usize,
        pos0: usize,
        shape: AttentionShape,
    },
    /// Rows `start..start + len` of a `[rows, cols]` tensor.
    Rows {
        rows: usize,
        cols: usize,
        start: usize,
        len: usize,
    },
    /// `pos0` positions appended, then `seq` more; the cache read back
    /// through the scores of random queries (every key) and a weighted sum
    /// with one-hot probabilities (value rows as stored).
    KvAppend {
        seq: usize,
        pos0: usize,
        shape: AttentionShape,
    },
    /// A batch of three sequences appended into their own caches at `pos0`
    /// (over rows an earlier step left there), read back as in `KvAppend`.
    KvAppendBatch {
        seqs: [(usize, usize); 3],
        shape: AttentionShape,
    },
    SwiGlu {
        rows: usize,
        cols: usize,
    },
    /// Three tensors of these row counts stacked.
    ConcatRows {
        rows: [usize; 3],
        cols: usize,
    },
    /// RoPE of a batch of three sequences: `(rows, pos0)` each.
    RopeBatch {
        seqs: [(usize, usize); 3],
        heads: usize,
        head_dim: usize,
        variant: RopeVariant,
    },
    /// KV append then attention of a batch of three sequences, each over
    /// its own cache holding `pos0` earlier positions: `(rows, pos0)` each.
    AttentionBatch {
        seqs: [(usize, usize); 3],
        shape: AttentionShape,
    },
}

/// The spans of a batch of `(rows, pos0)` sequences.
fn spans(seqs: &[(usize, usize)]) -> Vec<SeqSpan> {
    let mut start = 0;
    seqs.iter()
        .map(|&(len, pos0)| {
            let s = SeqSpan { start, len, pos0 };
            start += len;
            s
        })
        .collect()
}

impl Case {
    pub fn op(&self) -> Op {
        match self {
            Case::RmsNorm { .. } => Op::RmsNorm,
            Case::Rope { .. } => Op::Rope,
            Case::Softmax { .. } => Op::Softmax,
            Case::Silu { .. } => Op::Silu,
            Case::MatMul { .. } => Op::MatMul,
            Case::Embedding { .. } => Op::Embedding,
            Case::Add { .. } => Op::Add,
            Case::Mul { .. } => Op::Mul,
            Case::AttentionScores { .. } => Op::AttentionScores,
            Case::Attention { .. } => Op::Attention,
            Case::AttentionWeightedSum { .. } => Op::AttentionWeightedSum,
            Case::Rows { .. } => Op::Rows,
            Case::KvAppend { .. } => Op::KvAppend,
            Case::KvAppendBatch { .. } => Op::KvAppendBatch,
            Case::SwiGlu { .. } => Op::SwiGlu,
            Case::ConcatRows { .. } => Op::ConcatRows,
            Case::RopeBatch { .. } => Op::RopeBatch,
            Case::AttentionBatch { .. } => Op::AttentionBatch,
        }
    }

    pub fn dtype(&self) -> Option<WeightDType> {
        match self {
            Case::MatMul { dtype, .. } | Case::Embedding { dtype, .. } => Some(*dtype),
            Case::RmsNorm { .. } => Some(WeightDType::F32),
            _ => None,
        }
    }

    pub fn limit(&self) -> f64 {
        match self {
            Case::MatMul { dtype, .. } if dtype.is_quantized() => QUANTIZED_MATMUL_LIMIT,
            _ => EXACT_LIMIT,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Case::RmsNorm { rows, dim } => format!("rows={rows} dim={dim}"),
            Case::Rope {
                seq,
                heads,
                head_dim,
                rope_dim,
                pos0,
                variant,
            } => format!(
                "seq={seq} heads={heads} head_dim={head_dim} rot={rope_dim} pos0={pos0} {variant:?}"
            ),
            Case::Softmax { rows, cols }
            | Case::Silu { rows, cols }
            | Case::Add { rows, cols }
            | Case::Mul { rows, cols }
            | Case::SwiGlu { rows, cols } => {
                format!("rows={rows} cols={cols}")
            }
            Case::MatMul { m, n, k, dtype } => format!("{dtype} m={m} n={n} k={k}"),
            Case::Embedding { vocab, dim, dtype } => format!("{dtype} vocab={vocab} dim={dim}"),
            Case::Rows {
                rows,
                cols,
                start,
                len,
            } => format!("rows={rows} cols={cols} start={start} len={len}"),
            Case::KvAppendBatch { seqs, shape } => format!(
                "seqs(rows, pos0)={seqs:?} heads={}/{} head_dim={}",
                shape.n_heads, shape.n_kv_heads, shape.head_dim
            ),
            Case::AttentionScores { seq, pos0, shape }
            | Case::Attention { seq, pos0, shape }
            | Case::AttentionWeightedSum { seq, pos0, shape }
            | Case::KvAppend { seq, pos0, shape } => {
                format!(
                    "seq={seq} pos0={pos0} heads={}/{} head_dim={}",
                    shape.n_heads, shape.n_kv_heads, shape.head_dim
                )
            }
            Case::ConcatRows { rows, cols } => format!("rows={rows:?} cols={cols}"),
            Case::RopeBatch {
                seqs,
                heads,
                head_dim,
                variant,
            } => format!("(rows, pos0)={seqs:?} heads={heads} head_dim={head_dim} {variant:?}"),
            Case::AttentionBatch { seqs, shape } => format!(
                "(rows, pos0)={seqs:?} heads={}/{} head_dim={}",
                shape.n_heads, shape.n_kv_heads, shape.head_dim
            ),
        }
    }

    /// Runs the case on `b`; the same seeds give the same inputs on every backend.
    pub fn run<B: Backend>(&self, b: &B) -> Result<Vec<f32>> {
        let call = self.prepare(b)?;
        b.download(&call()?)
    }

    /// Uploads the case's inputs to `b` and returns the call that runs its
    /// op on them (for the read-back cases, what follows the appends): what
    /// [`Case::run`] checks and what the benches time, apart from set-up.
    pub fn prepare<'a, B: Backend>(&self, b: &'a B) -> Result<Call<'a, B>> {
        let act = |rows: usize, cols: usize, seed: u64| {
            b.upload(&values(rows * cols, seed, 1.0), rows, cols)
        };
        Ok(match *self {
            Case::RmsNorm { rows, dim } => {
                let bytes = weight_bytes(WeightDType::F32, 1, dim, 2).map_err(other)?;
                let w =
                    b.load_weight(&HostWeight::new("norm", WeightDType::F32, &[dim], &bytes)?)?;
                let x = act(rows, dim, 1)?;
                Box::new(move || b.rms_norm(&x, &w, 1e-5))
            }
            Case::Rope {
                seq,
                heads,
                head_dim,
                rope_dim,
                pos0,
                variant,
            } => {
                let (cos, sin) = rope_inputs(b, pos0 + seq, rope_dim)?;
                let x = act(seq, heads * head_dim, 3)?;
                Box::new(move || b.rope(&x, heads, head_dim, pos0, &cos, &sin, variant))
            }
            Case::Softmax { rows, cols } => {
                // Wide logits, as attention scores and output logits are.
                let x = b.upload(&values(rows * cols, 4, 8.0), rows, cols)?;
                Box::new(move || b.softmax(&x))
            }
            Case::Silu { rows, cols } => {
                let x = b.upload(&values(rows * cols, 5, 4.0), rows, cols)?;
                Box::new(move || b.silu(&x))
            }
            Case::MatMul { m, n, k, dtype } => {
                let bytes = weight_bytes(dtype, n, k, 6).map_err(other)?;
                let w = b.load_weight(&HostWeight::new("w", dtype, &[n, k], &bytes)?)?;
                let x = act(m, k, 7)?;
                Box::new(move || b.matmul(&x, &w))
            }
            Case::Embedding { vocab, dim, dtype } => {
                let bytes = weight_bytes(dtype, vocab, dim, 8).map_err(other)?;
                let table =
                    b.load_weight(&HostWeight::new("embd", dtype, &[vocab, dim], &bytes)?)?;
                let last = vocab as u32 - 1;
                Box::new(move || b.embedding(&table, &[0, last, 1, last / 2, 0]))
            }
            Case::Add { rows, cols } => {
                let (x, y) = (act(rows, cols, 9)?, act(rows, cols, 10)?);
                Box::new(move || b.add(&x, &y))
            }
            Case::Mul { rows, cols } => {
                let (x, y) = (act(rows, cols, 11)?, act(rows, cols, 12)?);
                Box::new(move || b.mul(&x, &y))
            }
            Case::SwiGlu { rows, cols } => {
                let (gate, up) = (act(rows, cols, 13)?, act(rows, cols, 14)?);
                Box::new(move || b.swiglu(&gate, &up))
            }
            Case::AttentionScores { seq, pos0, shape } => {
                let (q, cache) = attention_inputs(b, seq, pos0, shape)?;
                Box::new(move || b.attention_scores(&q, &cache, pos0, shape))
            }
            Case::Attention { seq, pos0, shape } => {
                let (q, cache) = attention_inputs(b, seq, pos0, shape)?;
                Box::new(move || b.attention(&q, &cache, pos0, shape))
            }
            Case::AttentionWeightedSum { seq, pos0, shape } => {
                let (_, cache) = attention_inputs(b, seq, pos0, shape)?;
                let probs = causal_probs(b, seq, pos0, shape)?;
                Box::new(move || b.attention_weighted_sum(&probs, &cache, pos0, shape))
            }
            Case::Rows {
                rows,
                cols,
                start,
                len,
            } => {
                let x = act(rows, cols, 26)?;
                Box::new(move || b.rows(&x, start, len))
            }
            Case::KvAppend { seq, pos0, shape } => {
                let (q, cache) = attention_inputs(b, seq, pos0, shape)?;
                Box::new(move || read_back(b, &q, &cache, seq, pos0, shape))
            }
            Case::KvAppendBatch { seqs, shape } => {
                let (q, caches, spans) = batch_appended(b, &seqs, shape, [40, 27, 28, 29])?;
                Box::new(move || {
                    let mut parts = Vec::new();
                    for (s, cache) in spans.iter().zip(&caches) {
                        let q = b.rows(&q, s.start, s.len)?;
                        parts.push(read_back(b, &q, cache, s.len, s.pos0, shape)?);
                    }
                    b.concat_rows(&parts.iter().collect::<Vec<_>>())
                })
            }
            Case::ConcatRows { rows, cols } => {
                let parts = [
                    act(rows[0], cols, 18)?,
                    act(rows[1], cols, 19)?,
                    act(rows[2], cols, 20)?,
                ];
                Box::new(move || b.concat_rows(&parts.iter().collect::<Vec<_>>()))
            }
            Case::RopeBatch {
                seqs,
                heads,
                head_dim,
                variant,
            } => {
                let positions = seqs.iter().map(|(n, p)| n + p).max().unwrap_or(1);
                let (cos, sin) = rope_inputs(b, positions, head_dim)?;
                let rows = seqs.iter().map(|(n, _)| n).sum();
                let x = act(rows, heads * head_dim, 21)?;
                let spans = spans(&seqs);
                Box::new(move || b.rope_batch(&x, heads, head_dim, &spans, &cos, &sin, variant))
            }
            Case::AttentionBatch { seqs, shape } => {
                let (q, caches, spans) = batch_appended(b, &seqs, shape, [30, 22, 23, 24])?;
                Box::new(move || {
                    let refs: Vec<&B::KvCache> = caches.iter().collect();
                    b.attention_batch(&q, &refs, &spans, shape)
                })
            }
        })
    }
}

/// A prepared case: runs its op on `B`, on inputs already uploaded.
pub type Call<'a, B> = Box<dyn Fn() -> Result<<B as Backend>::Tensor> + 'a>;

/// cos/sin tables of `positions` positions for `rope_dim` rotated values
/// (Llama-2's base), uploaded to `b`.
fn rope_inputs<B: Backend>(
    b: &B,
    positions: usize,
    rope_dim: usize,
) -> Result<(B::Tensor, B::Tensor)> {
    let (cos, sin) = rope_tables(positions, rope_dim, 10_000.0);
    let cos = b.upload(&cos, positions, rope_dim / 2)?;
    let sin = b.upload(&sin, positions, rope_dim / 2)?;
    Ok((cos, sin))
}

fn other(e: String) -> rbees_core::BackendError {
    rbees_core::BackendError::Other(e)
}

/// A batch of `(rows, pos0)` sequences appended into their own caches: each
/// cache holds `pos0 + rows` positions as earlier steps left them (seeds from
/// `seeds[0]`), then the batch's keys and values (`seeds[1]`, `seeds[2]`)
/// are appended over the last `rows`. Returns the batch's queries
/// (`seeds[3]`), the caches and the spans.
#[allow(clippy::type_complexity)]
fn batch_appended<B: Backend>(
    b: &B,
    seqs: &[(usize, usize)],
    shape: AttentionShape,
    seeds: [u64; 4],
) -> Result<(B::Tensor, Vec<B::KvCache>, Vec<SeqSpan>)> {
    let mut caches = Vec::new();
    for (i, &(len, pos0)) in seqs.iter().enumerate() {
        let (_, cache) = attention_inputs_seeded(b, len, pos0, shape, seeds[0] + 3 * i as u64)?;
        caches.push(cache);
    }
    let rows: usize = seqs.iter().map(|(n, _)| n).sum();
    let width = shape.n_kv_heads * shape.head_dim;
    let act = |cols: usize, seed: u64| b.upload(&values(rows * cols, seed, 1.0), rows, cols);
    let (k, v) = (act(width, seeds[1])?, act(width, seeds[2])?);
    let q = act(shape.n_heads * shape.head_dim, seeds[3])?;
    let spans = spans(seqs);
    let mut refs: Vec<&mut B::KvCache> = caches.iter_mut().collect();
    b.kv_append_batch(&mut refs, &k, &v, &spans)?;
    Ok((q, caches, spans))
}

/// `[n_heads * seq, pos0 + seq]` probabilities as a causal softmax leaves
/// them: positive up to each row's position, zero after it.
fn causal_probs<B: Backend>(
    b: &B,
    seq: usize,
    pos0: usize,
    shape: AttentionShape,
) -> Result<B::Tensor> {
    let total = pos0 + seq;
    let mut probs = values(shape.n_heads * seq * total, 25, 1.0);
    for (r, row) in probs.chunks_exact_mut(total).enumerate() {
        let i = r % seq.max(1);
        for (j, p) in row.iter_mut().enumerate() {
            *p = if j <= pos0 + i { p.abs() } else { 0.0 };
        }
    }
    b.upload(&probs, shape.n_heads * seq, total)
}

/// A cache of `pos0 + seq` positions read back: the scores of the `seq`
/// queries `q` (every key up to each row's position), then a weighted sum
/// with one-hot probabilities, row `r` picking position `r % (pos0 + seq)`
/// (value rows as stored), stacked.
fn read_back<B: Backend>(
    b: &B,
    q: &B::Tensor,
    cache: &B::KvCache,
    seq: usize,
    pos0: usize,
    shape: AttentionShape,
) -> Result<B::Tensor> {
    let total = pos0 + seq;
    let scores = b.attention_scores(q, cache, pos0, shape)?;
    let rows = shape.n_heads * seq;
    let mut one_hot = vec![0f32; rows * total];
    for (r, row) in one_hot.chunks_exact_mut(total).enumerate() {
        row[r % total] = 1.0;
    }
    let values = b.attention_weighted_sum(&b.upload(&one_hot, rows, total)?, cache, pos0, shape)?;
    // Scores are [rows, total]; values [seq, n_heads * head_dim]: stack
    // them as one [.., 1] column.
    let scores = b.download(&scores)?;
    let values = b.download(&values)?;
    let all: Vec<f32> = scores.into_iter().chain(values).collect();
    let n = all.len();
    b.upload(&all, n, 1)
}

/// A query block and a cache holding `pos0` earlier positions plus the block's own.
fn attention_inputs<B: Backend>(
    b: &B,
    seq: usize,
    pos0: usize,
    shape: AttentionShape,
) -> Result<(B::Tensor, B::KvCache)> {
    attention_inputs_seeded(b, seq, pos0, shape, 15)
}

fn attention_inputs_seeded<B: Backend>(
    b: &B,
    seq: usize,
    pos0: usize,
    shape: AttentionShape,
    seed: u64,
) -> Result<(B::Tensor, B::KvCache)> {
    let width = shape.n_kv_heads * shape.head_dim;
    let total = pos0 + seq;
    let mut cache = b.kv_cache(total + 3, width)?;
    let k = b.upload(&values(total * width, seed, 1.0), total, width)?;
    let v = b.upload(&values(total * width, seed + 1, 1.0), total, width)?;
    // Two appends, as a prompt then a decode step would do.
    if pos0 > 0 {
        b.kv_append(&mut cache, &b.rows(&k, 0, pos0)?, &b.rows(&v, 0, pos0)?, 0)?;
    }
    b.kv_append(
        &mut cache,
        &b.rows(&k, pos0, seq)?,
        &b.rows(&v, pos0, seq)?,
        pos0,
    )?;
    let q = b.upload(
        &values(seq * shape.n_heads * shape.head_dim, seed + 2, 1.0),
        seq,
        shape.n_heads * shape.head_dim,
    )?;
    Ok((q, cache))
}
