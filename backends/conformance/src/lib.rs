//! One conformance suite for every backend: each op at SmolLM2-135M and
//! Llama-2-7B shapes (plus odd sizes) against the ndarray reference, with a
//! normalised-error limit per op and weight type (see [`cases`]). Ops or
//! types a backend declares unsupported are reported as such, not passed.
//!
//! `rbees conformance` and the cargo tests both call [`run`].

pub mod cases;
mod compare;
pub mod data;

use std::fmt;

use rbees_backend_ndarray::NdarrayBackend;
use rbees_core::{AttentionShape, Backend, BackendOptions, Op, RopeVariant, Support, WeightDType};

pub use cases::Case;
pub use compare::nmse;

/// The dimensions of a Llama model that the op shapes follow.
#[derive(Debug, Clone, Copy)]
pub struct ModelShape {
    pub name: &'static str,
    pub dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub ff: usize,
    pub vocab: usize,
}

pub const SMOLLM2_135M: ModelShape = ModelShape {
    name: "smollm2-135m",
    dim: 576,
    n_heads: 9,
    n_kv_heads: 3,
    ff: 1536,
    vocab: 49152,
};

pub const LLAMA2_7B: ModelShape = ModelShape {
    name: "llama2-7b",
    dim: 4096,
    n_heads: 32,
    n_kv_heads: 32,
    ff: 11008,
    vocab: 32000,
};

impl ModelShape {
    pub fn head_dim(&self) -> usize {
        self.dim / self.n_heads
    }

    /// `(n, k)` of the feed-forward product a `dtype` weight is taken at:
    /// ffn_up (`[ff, dim]`) where rows of `dim` are whole blocks, else
    /// ffn_down (`[dim, ff]`): SmolLM2's 576 is not a multiple of the
    /// K-quants' 256, so its K-quant files use them on ffn_down only.
    pub fn ffn_matmul(&self, dtype: WeightDType) -> (usize, usize) {
        if self.dim.is_multiple_of(dtype.block_size()) {
            (self.ff, self.dim)
        } else {
            (self.dim, self.ff)
        }
    }

    fn attention(&self) -> AttentionShape {
        AttentionShape {
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim(),
            scale: 1.0 / (self.head_dim() as f32).sqrt(),
        }
    }
}

/// Weight types every backend is asked about, in ggml order.
pub const MATMUL_DTYPES: [WeightDType; 14] = WeightDType::ALL;

/// Which cases to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Skip the Llama-2-7B matrix products (the slowest cases).
    pub quick: bool,
}

/// Every case of the suite.
pub fn all_cases(options: &Options) -> Vec<Case> {
    let mut cases = Vec::new();
    for shape in [SMOLLM2_135M, LLAMA2_7B] {
        let (dim, hd) = (shape.dim, shape.head_dim());
        let att = shape.attention();
        for rows in [1, 7, 128] {
            cases.push(Case::RmsNorm { rows, dim });
            cases.push(Case::Silu {
                rows,
                cols: shape.ff,
            });
            cases.push(Case::SwiGlu {
                rows,
                cols: shape.ff,
            });
            cases.push(Case::Add { rows, cols: dim });
            cases.push(Case::Mul { rows, cols: dim });
        }
        for (seq, pos0) in [(1, 0), (1, 300), (17, 0), (16, 40)] {
            for variant in [RopeVariant::Interleaved, RopeVariant::HalfSplit] {
                let heads = shape.n_heads;
                cases.push(Case::Rope {
                    seq,
                    heads,
                    head_dim: hd,
                    rope_dim: hd,
                    pos0,
                    variant,
                });
            }
            cases.push(Case::AttentionScores {
                seq,
                pos0,
                shape: att,
            });
            cases.push(Case::Attention {
                seq,
                pos0,
                shape: att,
            });
            cases.push(Case::AttentionWeightedSum {
                seq,
                pos0,
                shape: att,
            });
            cases.push(Case::KvAppend {
                seq,
                pos0,
                shape: att,
            });
        }
        // Batches of sequences: a decode row, a prompt chunk at 0 and one
        // past earlier positions.
        let seqs = [(1, 300), (17, 0), (16, 40)];
        for variant in [RopeVariant::Interleaved, RopeVariant::HalfSplit] {
            cases.push(Case::RopeBatch {
                seqs,
                heads: shape.n_heads,
                head_dim: hd,
                variant,
            });
        }
        cases.push(Case::AttentionBatch { seqs, shape: att });
        cases.push(Case::KvAppendBatch { seqs, shape: att });
        cases.push(Case::Rows {
            rows: 34,
            cols: dim,
            start: 17,
            len: 16,
        });
        cases.push(Case::ConcatRows {
            rows: [1, 17, 16],
            cols: dim,
        });
        // Attention rows at several context lengths; output logits rows.
        for cols in [7, 512, 4096, shape.vocab] {
            cases.push(Case::Softmax { rows: 4, cols });
        }
        if shape.name == LLAMA2_7B.name && options.quick {
            continue;
        }
        for dtype in MATMUL_DTYPES {
            let (n, k) = shape.ffn_matmul(dtype);
            for m in [1, 128] {
                cases.push(Case::MatMul { m, n, k, dtype });
            }
        }
        for dtype in [
            WeightDType::F32,
            WeightDType::Q8_0,
            WeightDType::Q4K,
            WeightDType::Q6K,
        ] {
            if dim % dtype.block_size() == 0 {
                let vocab = shape.vocab;
                cases.push(Case::Embedding { vocab, dim, dtype });
            }
        }
    }
    // Odd sizes: one row, widths that are not a multiple of 32, long rows,
    // partial rotary dimensions, GQA with large groups.
    cases.push(Case::RmsNorm { rows: 3, dim: 100 });
    cases.push(Case::Softmax {
        rows: 1,
        cols: 32_768,
    });
    cases.push(Case::Softmax { rows: 3, cols: 33 });
    cases.push(Case::Silu { rows: 1, cols: 45 });
    for dtype in [WeightDType::F32, WeightDType::F16, WeightDType::BF16] {
        cases.push(Case::MatMul {
            m: 3,
            n: 37,
            k: 100,
            dtype,
        });
    }
    cases.push(Case::MatMul {
        m: 1,
        n: 1,
        k: 64,
        dtype: WeightDType::Q4_0,
    });
    cases.push(Case::Rope {
        seq: 5,
        heads: 4,
        head_dim: 64,
        rope_dim: 32,
        pos0: 3,
        variant: RopeVariant::Interleaved,
    });
    let gqa = AttentionShape {
        n_heads: 8,
        n_kv_heads: 1,
        head_dim: 16,
        scale: 0.25,
    };
    cases.push(Case::Attention {
        seq: 5,
        pos0: 2,
        shape: gqa,
    });
    cases
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass {
        nmse: f64,
    },
    Fail {
        nmse: f64,
    },
    /// The backend declares it cannot run this (op, dtype).
    Unsupported(String),
    /// The backend claimed support but returned an error.
    Error(String),
    /// The reference itself cannot run it, so there is nothing to compare.
    NoReference(String),
}

#[derive(Debug, Clone)]
pub struct CaseResult {
    pub op: Op,
    pub case: String,
    pub limit: f64,
    pub support: Support,
    pub outcome: Outcome,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub backend: String,
    pub device: String,
    pub results: Vec<CaseResult>,
}

impl Report {
    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.results.iter().filter(|r| f(&r.outcome)).count()
    }

    pub fn passed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Pass { .. }))
    }

    /// Failures and errors: what makes the suite red.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Fail { .. } | Outcome::Error(_)))
    }

    pub fn unsupported(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Unsupported(_) | Outcome::NoReference(_)))
    }

    pub fn is_ok(&self) -> bool {
        self.failed() == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "conformance of backend '{}' on {} against ndarray",
            self.backend, self.device
        )?;
        for r in &self.results {
            let path = match r.support {
                Support::Composed => " [composed]",
                _ => "",
            };
            let verdict = match &r.outcome {
                Outcome::Pass { nmse } => format!("OK (nmse {nmse:.2e} <= {:.0e})", r.limit),
                Outcome::Fail { nmse } => format!("FAIL (nmse {nmse:.2e} > {:.0e})", r.limit),
                Outcome::Unsupported(why) => format!("not supported: {why}"),
                Outcome::Error(e) => format!("ERROR: {e}"),
                Outcome::NoReference(why) => format!("not supported by the reference: {why}"),
            };
            writeln!(f, "  {}({}){path}: {verdict}", r.op, r.case)?;
        }
        write!(
            f,
            "{} passed, {} failed, {} not supported, of {} cases",
            self.passed(),
            self.failed(),
            self.unsupported(),
            self.results.len()
        )
    }
}

/// Runs every case on `backend` and on the reference, and compares.
pub fn run<B: Backend>(backend: &B, options: &Options) -> Report {
    let reference = NdarrayBackend::new(&BackendOptions::default());
    let results = all_cases(options)
        .iter()
        .map(|case| {
            let support = backend.supports(case.op(), case.dtype());
            let outcome = match (&support, &reference) {
                (Support::Unsupported(why), _) => Outcome::Unsupported(why.clone()),
                (_, Err(e)) => Outcome::NoReference(e.to_string()),
                (_, Ok(reference)) => compare_case(case, backend, reference),
            };
            CaseResult {
                op: case.op(),
                case: case.describe(),
                limit: case.limit(),
                support,
                outcome,
            }
        })
        .collect();
    Report {
        backend: backend.name().to_string(),
        device: backend.device(),
        results,
    }
}

fn compare_case<B: Backend>(case: &Case, backend: &B, reference: &NdarrayBackend) -> Outcome {
    if let Support::Unsupported(why) = reference.supports(case.op(), case.dtype()) {
        return Outcome::NoReference(why);
    }
    let want = match case.run(reference) {
        Ok(v) => v,
        Err(e) => return Outcome::NoReference(e.to_string()),
    };
    match case.run(backend) {
        Ok(got) => {
            let nmse = nmse(&got, &want);
            if nmse <= case.limit() {
                Outcome::Pass { nmse }
            } else {
                Outcome::Fail { nmse }
            }
        }
        Err(e) => Outcome::Error(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_of_the_trait_has_a_case() {
        for quick in [false, true] {
            let cases = all_cases(&Options { quick });
            for op in Op::ALL {
                assert!(
                    cases.iter().any(|c| c.op() == op),
                    "no conformance case for {op} (quick: {quick})"
                );
            }
        }
    }
}
