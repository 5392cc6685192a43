//! Deterministic inputs: random activations and weights in any GGUF type.

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rbees_core::WeightDType;

/// Roughly normal values (sum of uniforms), scaled, from a seed.
pub fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let s: f32 = (0..4).map(|_| rng.random::<f32>() - 0.5).sum();
            s * scale * 1.732
        })
        .collect()
}

/// GGUF bytes of a random `[rows, cols]` weight stored as `dtype`
/// (quantised by candle-core, as a GGUF writer would).
pub fn weight_bytes(
    dtype: WeightDType,
    rows: usize,
    cols: usize,
    seed: u64,
) -> Result<Vec<u8>, String> {
    let dense = values(rows * cols, seed, 0.5);
    if dtype == WeightDType::F32 {
        return Ok(dense.iter().flat_map(|v| v.to_le_bytes()).collect());
    }
    let shape: &[usize] = if rows == 1 { &[cols] } else { &[rows, cols] };
    let tensor = Tensor::from_vec(dense, shape, &Device::Cpu).map_err(|e| e.to_string())?;
    let q = QTensor::quantize(&tensor, dtype.to_candle()).map_err(|e| e.to_string())?;
    q.data().map(|d| d.into_owned()).map_err(|e| e.to_string())
}
