//! A SmolLM2-135M-shaped forward pass on random Q4_1 weights (Q8_0 output
//! head), with no model file and no dependency beyond this crate: for
//! profiling the kernels under `valgrind --tool=callgrind` (build it with
//! `RUSTFLAGS="-C target-cpu=x86-64-v3"`, valgrind does not know AVX-512).
//!
//! `cargo run --release -p rbees-backend-cpu --example decode_step -- [tokens] [threads] [prompt]`

use std::time::Instant;

use rbees_backend_cpu::{CpuBackend, CpuWeight};
use rbees_core::{
    rope_tables, AttentionShape, Backend, BackendOptions, HostWeight, RopeVariant, WeightDType,
};

const DIM: usize = 576;
const FF: usize = 1536;
const HEADS: usize = 9;
const KV_HEADS: usize = 3;
const HD: usize = 64;
const LAYERS: usize = 30;
const VOCAB: usize = 49152;

/// Deterministic bytes for a `[rows, cols]` weight with small f16 scales.
fn weight(b: &CpuBackend, dtype: WeightDType, rows: usize, cols: usize, seed: u32) -> CpuWeight {
    let len = dtype.storage_bytes(rows * cols).unwrap_or(0);
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    let mut bytes: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    let bb = dtype.block_bytes();
    if dtype.is_quantized() {
        for blk in bytes.chunks_exact_mut(bb) {
            blk[..2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
            if dtype == WeightDType::Q4_1 {
                blk[2..4].copy_from_slice(&half::f16::from_f32(-0.08).to_le_bytes());
            }
        }
    } else {
        bytes = (0..rows * cols).flat_map(|_| 1f32.to_le_bytes()).collect();
    }
    let shape = [rows, cols];
    let shape: &[usize] = if rows == 1 { &shape[1..] } else { &shape };
    let host = HostWeight::new("w", dtype, shape, &bytes).expect("valid");
    b.load_weight(&host).expect("loads")
}

fn main() -> rbees_core::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let tokens = args.first().copied().unwrap_or(8);
    let threads = args.get(1).copied().unwrap_or(1);
    let prompt = args.get(2).copied().unwrap_or(1);
    let b = CpuBackend::new(&BackendOptions {
        device: "cpu".into(),
        threads: Some(threads),
    })?;
    let q41 = WeightDType::Q4_1;
    let layers: Vec<[CpuWeight; 9]> = (0..LAYERS as u32)
        .map(|l| {
            [
                weight(&b, WeightDType::F32, 1, DIM, 0),
                weight(&b, q41, DIM, DIM, 10 * l + 1),
                weight(&b, q41, KV_HEADS * HD, DIM, 10 * l + 2),
                weight(&b, q41, KV_HEADS * HD, DIM, 10 * l + 3),
                weight(&b, q41, DIM, DIM, 10 * l + 4),
                weight(&b, WeightDType::F32, 1, DIM, 0),
                weight(&b, q41, FF, DIM, 10 * l + 5),
                weight(&b, q41, FF, DIM, 10 * l + 6),
                weight(&b, q41, DIM, FF, 10 * l + 7),
            ]
        })
        .collect();
    let head = weight(&b, WeightDType::Q8_0, VOCAB, DIM, 99);
    let norm = weight(&b, WeightDType::F32, 1, DIM, 0);
    let ctx = prompt + tokens + 1;
    let (cos, sin) = rope_tables(ctx, HD, 10000.0);
    let (cos, sin) = (b.upload(&cos, ctx, HD / 2)?, b.upload(&sin, ctx, HD / 2)?);
    let mut caches: Vec<_> = (0..LAYERS)
        .map(|_| b.kv_cache(ctx, KV_HEADS * HD))
        .collect::<rbees_core::Result<_>>()?;
    let shape = AttentionShape {
        n_heads: HEADS,
        n_kv_heads: KV_HEADS,
        head_dim: HD,
        scale: 0.125,
    };
    let start = Instant::now();
    let mut pos = 0;
    for step in 0..=tokens {
        let seq = if step == 0 { prompt } else { 1 };
        let ids: Vec<u32> = (0..seq as u32)
            .map(|i| (i * 31 + step as u32) % VOCAB as u32)
            .collect();
        let mut x = b.embedding(&head, &ids)?;
        for (l, w) in layers.iter().enumerate() {
            let h = b.rms_norm(&x, &w[0], 1e-5)?;
            let q = b.rope(
                &b.matmul(&h, &w[1])?,
                HEADS,
                HD,
                pos,
                &cos,
                &sin,
                RopeVariant::Interleaved,
            )?;
            let k = b.rope(
                &b.matmul(&h, &w[2])?,
                KV_HEADS,
                HD,
                pos,
                &cos,
                &sin,
                RopeVariant::Interleaved,
            )?;
            let v = b.matmul(&h, &w[3])?;
            b.kv_append(&mut caches[l], &k, &v, pos)?;
            let a = b.attention(&q, &caches[l], pos, shape)?;
            x = b.add(&x, &b.matmul(&a, &w[4])?)?;
            let h = b.rms_norm(&x, &w[5], 1e-5)?;
            let act = b.swiglu(&b.matmul(&h, &w[6])?, &b.matmul(&h, &w[7])?)?;
            x = b.add(&x, &b.matmul(&act, &w[8])?)?;
        }
        let last = b.rows(&x, seq - 1, 1)?;
        let logits = b.matmul(&b.rms_norm(&last, &norm, 1e-5)?, &head)?;
        std::hint::black_box(b.download(&logits)?);
        if step == 0 {
            let t = start.elapsed().as_secs_f64();
            println!("prompt {prompt}: {:.1} tokens/s", prompt as f64 / t);
        }
        pos += seq;
    }
    let t = start.elapsed().as_secs_f64();
    println!("{tokens} decode steps + prompt in {t:.3} s");
    Ok(())
}
