//! Batch invariance of `x · Wᵀ`: with continuous batching the rows of
//! several sequences share one product, so each output row must be bit for
//! bit what that activation row gives alone (decode, `m = 1`), whatever
//! else is in the batch and wherever the row sits in it. Checked for every
//! weight type, both kernel sets and one or two threads; the shapes cover
//! interleaved groups of eight rows (`n` a multiple of 8: Q4_0, Q4_1, Q8_0 and
//! Q4_K), plain rows (`n = 37`), bands, the four- and eight-row prompt
//! kernels and their remainders.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rbees_backend_cpu::CpuBackend;
use rbees_core::{Backend, HostWeight, WeightDType};

mod common;
use common::backend;

/// Every weight type the backend multiplies, with candle's equivalent
/// (which quantises the random test weights).
const TYPES: [(WeightDType, GgmlDType); 11] = [
    (WeightDType::F32, GgmlDType::F32),
    (WeightDType::F16, GgmlDType::F16),
    (WeightDType::BF16, GgmlDType::BF16),
    (WeightDType::Q4_0, GgmlDType::Q4_0),
    (WeightDType::Q4_1, GgmlDType::Q4_1),
    (WeightDType::Q5_0, GgmlDType::Q5_0),
    (WeightDType::Q5_1, GgmlDType::Q5_1),
    (WeightDType::Q8_0, GgmlDType::Q8_0),
    (WeightDType::Q4K, GgmlDType::Q4K),
    (WeightDType::Q5K, GgmlDType::Q5K),
    (WeightDType::Q6K, GgmlDType::Q6K),
];

/// Batch sizes: every remainder of the four- and eight-row kernels, and
/// a few larger batches.
const BATCHES: [usize; 15] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 17, 33];

/// Activation rows available to the batches (the largest batch plus the
/// largest offset below).
const ROWS: usize = 36;

/// `[n, k]` random weights in `dtype`'s GGUF bytes (quantised by candle).
fn weight_bytes(rng: &mut impl Rng, dtype: GgmlDType, n: usize, k: usize) -> Vec<u8> {
    let values: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1f32..1.0)).collect();
    let t = Tensor::from_vec(values, (n, k), &Device::Cpu).expect("tensor");
    QTensor::quantize(&t, dtype)
        .expect("quantise")
        .data()
        .expect("bytes")
        .to_vec()
}

/// `(n, k)` shapes for `dtype`: K-quants need whole 256-value blocks,
/// the others also run SmolLM2's k = 576.
fn shapes(dtype: WeightDType) -> &'static [(usize, usize)] {
    if dtype.block_size() == 256 {
        &[(72, 512), (37, 256), (64, 256)]
    } else {
        &[(72, 512), (37, 256), (64, 576)]
    }
}

fn matmul(b: &CpuBackend, w: &rbees_backend_cpu::CpuWeight, x: &[f32], k: usize) -> Vec<f32> {
    let x = b.upload(x, x.len() / k, k).expect("upload");
    b.download(&b.matmul(&x, w).expect("matmul"))
        .expect("download")
}

#[test]
fn every_row_of_a_batch_equals_that_row_alone() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let backends = [
        ("avx2 1 thread", backend(1, false)),
        ("avx2 2 threads", backend(2, false)),
        ("scalar 1 thread", backend(1, true)),
        ("scalar 2 threads", backend(2, true)),
    ];
    let mut failures = Vec::new();
    for (dtype, candle) in TYPES {
        for &(n, k) in shapes(dtype) {
            let bytes = weight_bytes(&mut rng, candle, n, k);
            let x: Vec<f32> = (0..ROWS * k)
                .map(|_| rng.random_range(-2f32..2.0))
                .collect();
            for (name, b) in &backends {
                let shape = [n, k];
                let host = HostWeight::new("w", dtype, &shape, &bytes).expect("valid weight");
                let w = b.load_weight(&host).expect("loads");
                let alone: Vec<Vec<f32>> = x.chunks_exact(k).map(|r| matmul(b, &w, r, k)).collect();
                let mut bad = 0;
                for m in BATCHES {
                    // The same rows at different positions in the batch.
                    for first in [0, 3].into_iter().filter(|f| f + m <= ROWS) {
                        let out = matmul(b, &w, &x[first * k..(first + m) * k], k);
                        for (i, got) in out.chunks_exact(n).enumerate() {
                            let want = &alone[first + i];
                            let same = got
                                .iter()
                                .zip(want)
                                .all(|(a, b)| a.to_bits() == b.to_bits());
                            if !same {
                                bad += 1;
                            }
                        }
                    }
                }
                if bad > 0 {
                    failures.push(format!("{dtype} n={n} k={k} {name}: {bad} rows differ"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "not batch invariant:\n{}",
        failures.join("\n")
    );
}
