//! Block formats added after the first three (Q5_0, Q5_1, Q4_K, Q5_K,
//! Q6_K): dequantisation equals candle-core's (an independent
//! implementation of ggml's layouts), and the integer dot products against
//! Q8 activations equal the f32 dot of the dequantised weights and the
//! dequantised activations.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rbees_backend_cpu::quant::{q4_k, q5_0, q5_1, q5_k, q6_k, q8_k, BlockQ8K, QK_K};
use rbees_backend_cpu::quant::{quantize_row, BlockQ8, QK};
use rbees_backend_cpu::types;
use rbees_core::WeightDType;

const BLOCKS: usize = 6;

/// `BLOCKS * 256` values quantised by candle, with its dequantisation.
fn candle_blocks(dtype: GgmlDType, seed: u64) -> (Vec<u8>, Vec<f32>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let values: Vec<f32> = (0..BLOCKS * QK_K)
        .map(|i| rng.random_range(-1f32..1.0) * (1.0 + (i / 32) as f32 * 0.3))
        .collect();
    let t = Tensor::from_vec(values, (1, BLOCKS * QK_K), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&t, dtype).unwrap();
    let want = q
        .dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    (q.data().unwrap().to_vec(), want)
}

/// Q8_0/Q8_1 activations and their dequantised values.
fn activations_q8(seed: u64) -> (Vec<BlockQ8>, Vec<f32>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let x: Vec<f32> = (0..BLOCKS * QK_K)
        .map(|_| rng.random_range(-2f32..2.0))
        .collect();
    let mut q = vec![BlockQ8::default(); BLOCKS * QK_K / QK];
    quantize_row(&x, &mut q);
    let dequantised = q
        .iter()
        .flat_map(|b| b.qs.iter().map(move |&v| b.d * f32::from(v)))
        .collect();
    (q, dequantised)
}

fn activations(seed: u64) -> (Vec<BlockQ8K>, Vec<f32>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let x: Vec<f32> = (0..BLOCKS * QK_K)
        .map(|_| rng.random_range(-2f32..2.0))
        .collect();
    let mut q = vec![BlockQ8K::default(); BLOCKS];
    q8_k::quantize_row(&x, &mut q);
    let dequantised = q
        .iter()
        .flat_map(|b| b.qs.iter().map(move |&v| b.d * f32::from(v)))
        .collect();
    (q, dequantised)
}

/// Checks dequantisation against candle and `dot` against the f32 dot of
/// the dequantised operands, within `tolerance` of `Σ|w·x|`.
fn check<A>(
    dtype: WeightDType,
    candle: GgmlDType,
    dot: fn(&[u8], &[A]) -> f32,
    acts: fn(u64) -> (Vec<A>, Vec<f32>),
    tolerance: f64,
) {
    for seed in 0..4 {
        let (bytes, want) = candle_blocks(candle, seed);
        let mut got = vec![0f32; want.len()];
        assert!(types::dequantize_row(dtype, &bytes, &mut got));
        assert_eq!(got, want, "{dtype} dequantisation, seed {seed}");

        let (xq, xd) = acts(seed + 100);
        let exact: f64 = got.iter().zip(&xd).map(|(&w, &x)| f64::from(w * x)).sum();
        let scale: f64 = got
            .iter()
            .zip(&xd)
            .map(|(&w, &x)| f64::from((w * x).abs()))
            .sum();
        let d = f64::from(dot(&bytes, &xq));
        assert!(
            (d - exact).abs() <= tolerance * scale,
            "{dtype} dot {d} vs {exact} (scale {scale}), seed {seed}"
        );
    }
}

/// Integer sums are exact; only the final f32 scaling differs.
const K_TOLERANCE: f64 = 1e-5;

#[test]
fn q5_0_blocks() {
    check(
        WeightDType::Q5_0,
        GgmlDType::Q5_0,
        q5_0::dot,
        activations_q8,
        K_TOLERANCE,
    );
}

/// Q5_1's minimum multiplies `s = d Σq` stored as f16 (as in ggml), not the
/// exact sum: relative error up to 2^-11 on that term.
#[test]
fn q5_1_blocks() {
    check(
        WeightDType::Q5_1,
        GgmlDType::Q5_1,
        q5_1::dot,
        activations_q8,
        1e-3,
    );
}

#[test]
fn q4_k_blocks() {
    check(
        WeightDType::Q4K,
        GgmlDType::Q4K,
        q4_k::dot,
        activations,
        K_TOLERANCE,
    );
}

#[test]
fn q5_k_blocks() {
    check(
        WeightDType::Q5K,
        GgmlDType::Q5K,
        q5_k::dot,
        activations,
        K_TOLERANCE,
    );
}

#[test]
fn q6_k_blocks() {
    check(
        WeightDType::Q6K,
        GgmlDType::Q6K,
        q6_k::dot,
        activations,
        K_TOLERANCE,
    );
}
