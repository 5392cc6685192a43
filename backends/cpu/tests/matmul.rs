//! The backend's matrix products: thread counts, scalar vs SIMD kernels,
//! odd sizes, and the quantised product against the exact f32 one.

use rand::{Rng, SeedableRng};
use rbees_backend_cpu::CpuBackend;
use rbees_core::{Backend, HostWeight, WeightDType};

mod common;
use common::backend;

/// Random bytes of an `[n, k]` weight of `dtype`, with sane f16 scales.
fn weight_bytes(rng: &mut impl Rng, dtype: WeightDType, n: usize, k: usize) -> Vec<u8> {
    let values: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1f32..1.0)).collect();
    match dtype {
        WeightDType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        WeightDType::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        _ => {
            let bb = dtype.block_bytes();
            let mut out: Vec<u8> = (0..n * k / dtype.block_size() * bb)
                .map(|_| rng.random())
                .collect();
            for b in out.chunks_exact_mut(bb) {
                let d = half::f16::from_f32(rng.random_range(0.001f32..0.05));
                b[..2].copy_from_slice(&d.to_le_bytes());
                if matches!(dtype, WeightDType::Q4_1 | WeightDType::Q4K) {
                    let m = half::f16::from_f32(rng.random_range(-0.4f32..0.0));
                    b[2..4].copy_from_slice(&m.to_le_bytes());
                }
                if dtype == WeightDType::Q8_0 {
                    for q in &mut b[2..] {
                        *q = (*q as i8).max(-127) as u8;
                    }
                }
            }
            out
        }
    }
}

fn product(
    b: &CpuBackend,
    dtype: WeightDType,
    bytes: &[u8],
    x: &[f32],
    m: usize,
    n: usize,
    k: usize,
) -> Vec<f32> {
    let shape = [n, k];
    let w = b
        .load_weight(&HostWeight::new("w", dtype, &shape, bytes).expect("valid weight"))
        .expect("loads");
    let x = b.upload(x, m, k).expect("upload");
    b.download(&b.matmul(&x, &w).expect("matmul"))
        .expect("download")
}

const TYPES: [WeightDType; 5] = [
    WeightDType::F32,
    WeightDType::F16,
    WeightDType::Q4_0,
    WeightDType::Q4_1,
    WeightDType::Q8_0,
];

#[test]
fn one_and_two_threads_give_identical_results() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let (one, two) = (backend(1, false), backend(2, false));
    for dtype in TYPES {
        // n = 1536 and 200: Q4_0 rows interleaved in groups of eight (decode
        // bands must hold whole groups; prompts unpack them).
        for (m, n, k) in [
            (1, 1, 32),
            (1, 300, 576),
            (1, 1536, 576),
            (3, 37, 64),
            (128, 200, 576),
        ] {
            let bytes = weight_bytes(&mut rng, dtype, n, k);
            let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-2f32..2.0)).collect();
            let a = product(&one, dtype, &bytes, &x, m, n, k);
            let b = product(&two, dtype, &bytes, &x, m, n, k);
            assert_eq!(a, b, "{dtype} m={m} n={n} k={k}");
        }
    }
}

/// Q4_K: plain rows (37), interleaved groups of eight (decode bands of
/// whole groups, prompts unpacked), four-row prompt kernels and remainders.
#[test]
fn q4_k_products_agree_across_threads_and_kernels() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let (one, two, scalar) = (backend(1, false), backend(2, false), backend(2, true));
    let dtype = WeightDType::Q4K;
    for (m, n, k) in [(1, 37, 256), (1, 1536, 512), (9, 64, 512), (128, 24, 256)] {
        let bytes = weight_bytes(&mut rng, dtype, n, k);
        let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-2f32..2.0)).collect();
        let a = product(&one, dtype, &bytes, &x, m, n, k);
        let b = product(&two, dtype, &bytes, &x, m, n, k);
        assert_eq!(a, b, "m={m} n={n} k={k}");
        let c = product(&scalar, dtype, &bytes, &x, m, n, k);
        for (i, (p, q)) in a.iter().zip(&c).enumerate() {
            assert!(
                (p - q).abs() <= 1e-3 * (1.0 + q.abs()),
                "m={m} n={n} k={k} [{i}]: {p} vs {q}"
            );
        }
    }
}

#[test]
fn simd_backend_matches_scalar_backend() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let (fast, slow) = (backend(2, false), backend(2, true));
    for dtype in TYPES {
        for (m, n, k) in [
            (1, 1, 32),
            (1, 37, 576),
            (1, 1536, 576),
            (2, 65, 96),
            (5, 64, 96),
            (7, 130, 1536),
            (12, 33, 64),
        ] {
            let bytes = weight_bytes(&mut rng, dtype, n, k);
            let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-2f32..2.0)).collect();
            let a = product(&fast, dtype, &bytes, &x, m, n, k);
            let b = product(&slow, dtype, &bytes, &x, m, n, k);
            for (i, (p, q)) in a.iter().zip(&b).enumerate() {
                assert!(
                    (p - q).abs() <= 1e-4 * (1.0 + p.abs()),
                    "{dtype} m={m} n={n} k={k} [{i}]: {p} vs {q}"
                );
            }
        }
    }
}

#[test]
fn quantised_product_is_close_to_the_exact_one() {
    // One Q8_0 weight row equal to the activations' own rounding: the
    // product of x with its Q8 image is Σ x_i · d q_i, within 1% of |x|².
    let b = backend(1, false);
    let k = 64;
    let x: Vec<f32> = (0..k).map(|i| ((i as f32) * 0.37).sin()).collect();
    let mut bytes = Vec::new();
    for block in x.chunks_exact(32) {
        let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        bytes.extend(half::f16::from_f32(d).to_le_bytes());
        bytes.extend(block.iter().map(|v| (v / d).round() as i8 as u8));
    }
    let got = product(&b, WeightDType::Q8_0, &bytes, &x, 1, 1, k)[0];
    let want: f32 = x.iter().map(|v| v * v).sum();
    assert!((got - want).abs() < 0.01 * want, "{got} vs {want}");
}

#[test]
fn unsupported_types_are_refused_with_a_reason() {
    let b = backend(1, false);
    let support = b.supports(rbees_core::Op::MatMul, Some(WeightDType::Q3K));
    match support {
        rbees_core::Support::Unsupported(why) => assert!(why.contains("Q3_K"), "{why}"),
        other => panic!("{other:?}"),
    }
    let bytes = vec![0u8; 110];
    let shape = [1, 256];
    let w = HostWeight::new("w", WeightDType::Q3K, &shape, &bytes).expect("valid");
    let err = b.load_weight(&w).expect_err("refused");
    assert!(err.to_string().contains("no Q3_K kernels"), "{err}");
}
