//! Float weights (F32, F16, BF16) multiply f32 activations in f32.

use half::{bf16, f16};

/// `Σ w·x` for f32 rows; four partial sums so the compiler can vectorise.
pub fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (wc, xc) = (w.chunks_exact(8), x.chunks_exact(8));
    let tail: f32 = wc
        .remainder()
        .iter()
        .zip(xc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in wc.zip(xc) {
        for i in 0..8 {
            acc[i] += a[i] * b[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ w·x` with `w` little-endian f16 bytes.
pub fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(2)
        .zip(x)
        .map(|(b, &v)| f16::from_le_bytes([b[0], b[1]]).to_f32() * v)
        .sum()
}

/// `Σ w·x` with `w` little-endian bf16 bytes.
pub fn dot_bf16(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(2)
        .zip(x)
        .map(|(b, &v)| bf16::from_le_bytes([b[0], b[1]]).to_f32() * v)
        .sum()
}

pub fn dequantize_f32(w: &[u8], out: &mut [f32]) {
    for (b, o) in w.chunks_exact(4).zip(out) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

pub fn dequantize_f16(w: &[u8], out: &mut [f32]) {
    for (b, o) in w.chunks_exact(2).zip(out) {
        *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}

pub fn dequantize_bf16(w: &[u8], out: &mut [f32]) {
    for (b, o) in w.chunks_exact(2).zip(out) {
        *o = bf16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}
