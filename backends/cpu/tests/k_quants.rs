//! K-quant blocks (Q4_K, Q5_K, Q6_K): dequantisation equals candle-core's
//! (an independent implementation of ggml's layouts), and the integer dot
//! products against Q8_K equal the f32 dot of the dequantised weights and
//! the dequantised activations.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rbees_backend_cpu::quant::{self, q4_k, q5_k, q6_k, q8_k, BlockQ8K, QK_K};
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

fn check(dtype: WeightDType, candle: GgmlDType, dot: fn(&[u8], &[BlockQ8K]) -> f32) {
    for seed in 0..4 {
        let (bytes, want) = candle_blocks(candle, seed);
        let mut got = vec![0f32; want.len()];
        assert!(quant::dequantize_row(dtype, &bytes, &mut got));
        assert_eq!(got, want, "{dtype} dequantisation, seed {seed}");

        let (xq, xd) = activations(seed + 100);
        let exact: f64 = got.iter().zip(&xd).map(|(&w, &x)| f64::from(w * x)).sum();
        let scale: f64 = got
            .iter()
            .zip(&xd)
            .map(|(&w, &x)| f64::from((w * x).abs()))
            .sum();
        let d = f64::from(dot(&bytes, &xq));
        assert!(
            (d - exact).abs() <= 1e-5 * scale,
            "{dtype} dot {d} vs {exact} (scale {scale}), seed {seed}"
        );
    }
}

#[test]
fn q4_k_blocks() {
    check(WeightDType::Q4K, GgmlDType::Q4K, q4_k::dot);
}

#[test]
fn q5_k_blocks() {
    check(WeightDType::Q5K, GgmlDType::Q5K, q5_k::dot);
}

#[test]
fn q6_k_blocks() {
    check(WeightDType::Q6K, GgmlDType::Q6K, q6_k::dot);
}
