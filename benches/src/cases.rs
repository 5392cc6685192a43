//! The op cases the criterion benches time: every kernel of the Backend
//! trait at SmolLM2-135M and Llama-2-7B shapes.

use rbees_conformance::ModelShape;
use rbees_core::{Op, WeightDType};

/// Weight types of the matrix-product benches.
pub const MATMUL_DTYPES: [WeightDType; 6] = [
    WeightDType::F32,
    WeightDType::F16,
    WeightDType::Q4_0,
    WeightDType::Q4_1,
    WeightDType::Q8_0,
    WeightDType::Q4K,
];

/// Context lengths of the attention-softmax benches (one query row per head).
pub const SOFTMAX_CONTEXTS: [usize; 3] = [128, 512, 2048];

/// Rows: 1 is a decode step, 128 a prompt batch.
pub const ROWS: [usize; 2] = [1, 128];

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OpCase {
    RmsNorm {
        rows: usize,
        dim: usize,
    },
    Rope {
        seq: usize,
        n_heads: usize,
        head_dim: usize,
    },
    Softmax {
        rows: usize,
        cols: usize,
    },
    Silu {
        rows: usize,
        cols: usize,
    },
    /// `[m, k] · [n, k]ᵀ` with the weight stored as `dtype`.
    MatMul {
        m: usize,
        n: usize,
        k: usize,
        dtype: WeightDType,
    },
}

/// How a case's speed is counted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Elements(u64),
    Bytes(u64),
}

impl OpCase {
    pub fn op(&self) -> Op {
        match self {
            OpCase::RmsNorm { .. } => Op::RmsNorm,
            OpCase::Rope { .. } => Op::Rope,
            OpCase::Softmax { .. } => Op::Softmax,
            OpCase::Silu { .. } => Op::Silu,
            OpCase::MatMul { .. } => Op::MatMul,
        }
    }

    pub fn dtype(&self) -> Option<WeightDType> {
        match self {
            OpCase::MatMul { dtype, .. } => Some(*dtype),
            OpCase::RmsNorm { .. } => Some(WeightDType::F32),
            _ => None,
        }
    }

    /// Criterion group name: op, model shape and sizes; backends are the
    /// functions inside the group, so its report compares them directly.
    pub fn group(&self, shape: &ModelShape) -> String {
        let detail = match self {
            OpCase::RmsNorm { rows, dim } => format!("rows={rows} dim={dim}"),
            OpCase::Rope {
                seq,
                n_heads,
                head_dim,
            } => {
                format!("seq={seq} heads={n_heads} head_dim={head_dim}")
            }
            OpCase::Softmax { rows, cols } => format!("rows={rows} ctx={cols}"),
            OpCase::Silu { rows, cols } => format!("rows={rows} cols={cols}"),
            OpCase::MatMul { m, n, k, dtype } => format!("{dtype} m={m} n={n} k={k}"),
        };
        format!("{}/{}/{detail}", self.op(), shape.name)
    }

    /// Matrix-vector products count weight bytes read (they are bound by
    /// memory); everything else counts values produced (or multiply-adds).
    pub fn amount(&self) -> Amount {
        let e = |n: usize| Amount::Elements(n as u64);
        match *self {
            OpCase::RmsNorm { rows, dim } => e(rows * dim),
            OpCase::Rope {
                seq,
                n_heads,
                head_dim,
            } => e(seq * n_heads * head_dim),
            OpCase::Softmax { rows, cols } | OpCase::Silu { rows, cols } => e(rows * cols),
            OpCase::MatMul { m: 1, n, k, dtype } => {
                Amount::Bytes(dtype.storage_bytes(n * k).unwrap_or(0) as u64)
            }
            OpCase::MatMul { m, n, k, .. } => e(m * n * k),
        }
    }
}

/// Every case at `shape`.
pub fn cases(shape: &ModelShape) -> Vec<OpCase> {
    let (dim, ff) = (shape.dim, shape.ff);
    let mut cases = Vec::new();
    for rows in ROWS {
        cases.push(OpCase::RmsNorm { rows, dim });
        cases.push(OpCase::Rope {
            seq: rows,
            n_heads: shape.n_heads,
            head_dim: shape.head_dim(),
        });
        cases.push(OpCase::Silu { rows, cols: ff });
    }
    for cols in SOFTMAX_CONTEXTS {
        cases.push(OpCase::Softmax {
            rows: shape.n_heads,
            cols,
        });
    }
    for dtype in MATMUL_DTYPES {
        // ffn_up ([ff, dim]) where rows of `dim` are whole blocks, else
        // ffn_down ([dim, ff]), as the conformance suite does (SmolLM2's 576
        // is not a multiple of the K-quants' 256).
        let (n, k) = if dim % dtype.block_size() == 0 {
            (ff, dim)
        } else {
            (dim, ff)
        };
        for m in ROWS {
            cases.push(OpCase::MatMul { m, n, k, dtype });
        }
    }
    cases
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbees_conformance::{LLAMA2_7B, SMOLLM2_135M};

    #[test]
    fn every_kernel_and_listed_type_is_covered_at_both_shapes() {
        for shape in [SMOLLM2_135M, LLAMA2_7B] {
            let cases = cases(&shape);
            for op in [Op::RmsNorm, Op::Rope, Op::Softmax, Op::Silu, Op::MatMul] {
                assert!(cases.iter().any(|c| c.op() == op), "{op} at {}", shape.name);
            }
            for dtype in MATMUL_DTYPES {
                for m in ROWS {
                    assert!(cases
                        .iter()
                        .any(|c| matches!(c, OpCase::MatMul { m: cm, dtype: d, k, .. }
                        if *cm == m && *d == dtype && k % dtype.block_size() == 0)));
                }
            }
        }
        let q4k_smol = cases(&SMOLLM2_135M).into_iter().find(|c| {
            matches!(
                c,
                OpCase::MatMul {
                    dtype: WeightDType::Q4K,
                    ..
                }
            )
        });
        assert_eq!(
            q4k_smol,
            Some(OpCase::MatMul {
                m: 1,
                n: 576,
                k: 1536,
                dtype: WeightDType::Q4K
            })
        );
    }

    #[test]
    fn matrix_vector_products_count_weight_bytes() {
        let c = OpCase::MatMul {
            m: 1,
            n: 1536,
            k: 576,
            dtype: WeightDType::Q4_1,
        };
        assert_eq!(c.amount(), Amount::Bytes(1536 * 576 / 32 * 20));
        let c = OpCase::MatMul {
            m: 128,
            n: 1536,
            k: 576,
            dtype: WeightDType::Q4_1,
        };
        assert_eq!(c.amount(), Amount::Elements(128 * 1536 * 576));
    }
}
