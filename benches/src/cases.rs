//! The op cases the criterion benches time: every kernel of the Backend
//! trait at SmolLM2-135M and Llama-2-7B shapes. They are cases of the
//! conformance suite ([`Case`]: one list of cases for both); what only
//! timing needs is [`Timed`].

use rbees_conformance::{Case, ModelShape};
use rbees_core::{RopeVariant, WeightDType};

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

/// How a case's speed is counted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Elements(u64),
    Bytes(u64),
}

/// What the benches add to a conformance [`Case`]: its criterion group and
/// how its speed is counted.
pub trait Timed {
    /// Criterion group name: op, model shape and sizes; backends are the
    /// functions inside the group, so its report compares them directly.
    fn group(&self, shape: &ModelShape) -> String;

    /// Matrix-vector products count weight bytes read (they are bound by
    /// memory); everything else counts values produced (or multiply-adds).
    /// `None` for the kinds of case the benches do not time.
    fn amount(&self) -> Option<Amount>;
}

impl Timed for Case {
    fn group(&self, shape: &ModelShape) -> String {
        let detail = match *self {
            Case::Rope {
                seq,
                heads,
                head_dim,
                ..
            } => format!("seq={seq} heads={heads} head_dim={head_dim}"),
            Case::Softmax { rows, cols } => format!("rows={rows} ctx={cols}"),
            _ => self.describe(),
        };
        format!("{}/{}/{detail}", self.op(), shape.name)
    }

    fn amount(&self) -> Option<Amount> {
        let e = |n: usize| Some(Amount::Elements(n as u64));
        match *self {
            Case::RmsNorm { rows, dim } => e(rows * dim),
            Case::Rope {
                seq,
                heads,
                head_dim,
                ..
            } => e(seq * heads * head_dim),
            Case::Softmax { rows, cols } | Case::Silu { rows, cols } => e(rows * cols),
            Case::MatMul { m: 1, n, k, dtype } => {
                Some(Amount::Bytes(dtype.storage_bytes(n * k).unwrap_or(0) as u64))
            }
            Case::MatMul { m, n, k, .. } => e(m * n * k),
            _ => None,
        }
    }
}

/// Every case at `shape`: the five kernels, RoPE at position 0 over whole
/// heads (GGUF `llama`'s interleaved pairs).
pub fn cases(shape: &ModelShape) -> Vec<Case> {
    let (dim, ff) = (shape.dim, shape.ff);
    let mut cases = Vec::new();
    for rows in ROWS {
        cases.push(Case::RmsNorm { rows, dim });
        cases.push(Case::Rope {
            seq: rows,
            heads: shape.n_heads,
            head_dim: shape.head_dim(),
            rope_dim: shape.head_dim(),
            pos0: 0,
            variant: RopeVariant::Interleaved,
        });
        cases.push(Case::Silu { rows, cols: ff });
    }
    for cols in SOFTMAX_CONTEXTS {
        cases.push(Case::Softmax {
            rows: shape.n_heads,
            cols,
        });
    }
    for dtype in MATMUL_DTYPES {
        // The conformance suite's product for the type.
        let (n, k) = shape.ffn_matmul(dtype);
        for m in ROWS {
            cases.push(Case::MatMul { m, n, k, dtype });
        }
    }
    cases
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbees_conformance::{LLAMA2_7B, SMOLLM2_135M};
    use rbees_core::Op;

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
                        .any(|c| matches!(c, Case::MatMul { m: cm, dtype: d, k, .. }
                        if *cm == m && *d == dtype && k % dtype.block_size() == 0)));
                }
            }
        }
        let q4k_smol = cases(&SMOLLM2_135M).into_iter().find(|c| {
            matches!(
                c,
                Case::MatMul {
                    dtype: WeightDType::Q4K,
                    ..
                }
            )
        });
        assert_eq!(
            q4k_smol,
            Some(Case::MatMul {
                m: 1,
                n: 576,
                k: 1536,
                dtype: WeightDType::Q4K
            })
        );
    }

    #[test]
    fn group_names_name_op_shape_and_sizes() {
        let groups: Vec<String> = cases(&SMOLLM2_135M)
            .iter()
            .map(|c| c.group(&SMOLLM2_135M))
            .collect();
        for want in [
            "rms_norm/smollm2-135m/rows=1 dim=576",
            "rope/smollm2-135m/seq=128 heads=9 head_dim=64",
            "silu/smollm2-135m/rows=1 cols=1536",
            "softmax/smollm2-135m/rows=9 ctx=2048",
            "matmul/smollm2-135m/Q4_K m=128 n=576 k=1536",
        ] {
            assert!(groups.iter().any(|g| g == want), "{want} not in {groups:?}");
        }
    }

    #[test]
    fn matrix_vector_products_count_weight_bytes() {
        let c = Case::MatMul {
            m: 1,
            n: 1536,
            k: 576,
            dtype: WeightDType::Q4_1,
        };
        assert_eq!(c.amount(), Some(Amount::Bytes(1536 * 576 / 32 * 20)));
        let c = Case::MatMul {
            m: 128,
            n: 1536,
            k: 576,
            dtype: WeightDType::Q4_1,
        };
        assert_eq!(c.amount(), Some(Amount::Elements(128 * 1536 * 576)));
    }
}
