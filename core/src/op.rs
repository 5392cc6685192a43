use std::fmt;

/// Every operation the model may ask a backend for. The first five are the
/// kernels; the rest are glue and fused ops (which have default compositions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    RmsNorm,
    Rope,
    Softmax,
    Silu,
    /// Activation times weight (`x · Wᵀ`), the weight in the queried dtype.
    MatMul,
    /// Row lookup in an embedding table of the queried dtype.
    Embedding,
    Add,
    Mul,
    /// Selecting a range of rows.
    Rows,
    KvAppend,
    AttentionScores,
    AttentionWeightedSum,
    /// Fused: scores, softmax and weighted sum in one call.
    Attention,
    /// Fused: `silu(gate) * up`.
    SwiGlu,
    /// Stacking the rows of several tensors (batches of sequences).
    ConcatRows,
    /// RoPE of a batch, each sequence at its own positions.
    RopeBatch,
    /// KV append of a batch, each sequence into its own cache.
    KvAppendBatch,
    /// Attention of a batch, each sequence over its own cache.
    AttentionBatch,
}

impl Op {
    pub const ALL: [Op; 18] = [
        Op::RmsNorm,
        Op::Rope,
        Op::Softmax,
        Op::Silu,
        Op::MatMul,
        Op::Embedding,
        Op::Add,
        Op::Mul,
        Op::Rows,
        Op::KvAppend,
        Op::AttentionScores,
        Op::AttentionWeightedSum,
        Op::Attention,
        Op::SwiGlu,
        Op::ConcatRows,
        Op::RopeBatch,
        Op::KvAppendBatch,
        Op::AttentionBatch,
    ];

    /// Ops whose trait method has a default composition (a backend that
    /// does not override them answers [`Support::Composed`]).
    pub fn has_default(self) -> bool {
        matches!(
            self,
            Op::Attention
                | Op::SwiGlu
                | Op::ConcatRows
                | Op::RopeBatch
                | Op::KvAppendBatch
                | Op::AttentionBatch
        )
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Op::RmsNorm => "rms_norm",
            Op::Rope => "rope",
            Op::Softmax => "softmax",
            Op::Silu => "silu",
            Op::MatMul => "matmul",
            Op::Embedding => "embedding",
            Op::Add => "add",
            Op::Mul => "mul",
            Op::Rows => "rows",
            Op::KvAppend => "kv_append",
            Op::AttentionScores => "attention_scores",
            Op::AttentionWeightedSum => "attention_weighted_sum",
            Op::Attention => "attention",
            Op::SwiGlu => "swiglu",
            Op::ConcatRows => "concat_rows",
            Op::RopeBatch => "rope_batch",
            Op::KvAppendBatch => "kv_append_batch",
            Op::AttentionBatch => "attention_batch",
        };
        f.write_str(s)
    }
}

/// Answer of [`crate::Backend::supports`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// The backend has its own implementation.
    Native,
    /// Runs through the trait's default composition of basic ops (ops with
    /// [`Op::has_default`] only).
    Composed,
    /// Cannot run; the reason is shown to the user at load time.
    Unsupported(String),
}

impl Support {
    pub fn is_supported(&self) -> bool {
        !matches!(self, Support::Unsupported(_))
    }
}
