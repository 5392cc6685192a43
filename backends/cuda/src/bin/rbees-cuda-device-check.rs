//! `rbees-cuda-device-check`: checks of the cuda-kernels backend that need
//! a GPU and that the conformance suite does not make: non-finite keys and
//! values at masked attention positions, F16/BF16 weights kept in their
//! type (both product paths, their band boundaries, the embedding lookup),
//! and the load-time memory check with memory idle in the pool.
//!
//! A binary rather than a cargo test: scripts/gpu-stage.sh builds it in the
//! same cargo invocation as `rbees` (same features, so nothing is compiled
//! twice, candle-kernels' PTX included; a test target would pull in the
//! worker's dev-dependencies), and gpu-check.sh step 7 runs it. It prints
//! one line per check and exits 1 if any fails or there is no device. The
//! checks run one after the other; the memory check, last, fills the device.

use std::process::ExitCode;

use rbees_backend_cuda::CudaKernelsBackend;
use rbees_core::{AttentionShape, Backend, BackendOptions, HostWeight, WeightDType};

type Check = Result<(), String>;
/// A named check.
type Named = (&'static str, fn(&CudaKernelsBackend) -> Check);

fn fail(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Normalised squared error of `got` against `want`.
fn nmse(got: &[f32], want: &[f64]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    let err: f64 = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|w| w * w).sum();
    err / norm.max(f64::MIN_POSITIVE)
}

// ---- masked attention positions -------------------------------------------

/// Causal attention of `q` at positions `pos0..` over `keys`/`vals`
/// (`[positions, n_kv_heads * head_dim]`), in f64, for query rows `rows`.
fn attention_reference(
    q: &[f32],
    keys: &[f32],
    vals: &[f32],
    pos0: usize,
    shape: AttentionShape,
    rows: std::ops::Range<usize>,
) -> Vec<f64> {
    let hd = shape.head_dim;
    let (width, q_width) = (shape.n_kv_heads * hd, shape.n_heads * hd);
    let group = shape.n_heads / shape.n_kv_heads;
    let mut out = Vec::new();
    for i in rows {
        for h in 0..shape.n_heads {
            let kv = h / group;
            let qh = &q[i * q_width + h * hd..][..hd];
            let scores: Vec<f64> = (0..=pos0 + i)
                .map(|j| {
                    let kj = &keys[j * width + kv * hd..][..hd];
                    let dot: f64 = qh.iter().zip(kj).map(|(&a, &b)| a as f64 * b as f64).sum();
                    shape.scale as f64 * dot
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for d in 0..hd {
                let acc: f64 = e
                    .iter()
                    .enumerate()
                    .map(|(j, p)| p * vals[j * width + kv * hd + d] as f64)
                    .sum();
                out.push(acc / sum);
            }
        }
    }
    out
}

/// A non-finite key and value at a position only the chunk's last row may
/// see, and stale non-finite rows past the chunk (as a longer sequence in
/// the same slot would leave them): every other row must equal the
/// reference, on the fused kernel and on the unfused scores -> softmax ->
/// weighted sum path alike (which multiplied them by a zero probability,
/// giving NaN, before it skipped them).
fn masked_positions_never_reach_the_output(b: &CudaKernelsBackend) -> Check {
    let shape = AttentionShape {
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
        scale: 0.25,
    };
    let (pos0, seq) = (5, 4);
    let total = pos0 + seq;
    let width = shape.n_kv_heads * shape.head_dim;
    let mut cache = b.kv_cache(total + 2, width).map_err(fail)?;

    let stale = b
        .upload(&vec![f32::NAN; 2 * width], 2, width)
        .map_err(fail)?;
    b.kv_append(&mut cache, &stale, &stale, total)
        .map_err(fail)?;

    let mut keys = values(total * width, 1);
    let mut vals = values(total * width, 2);
    for x in &mut keys[(total - 1) * width..] {
        *x = f32::INFINITY;
    }
    for x in &mut vals[(total - 1) * width..] {
        *x = f32::NAN;
    }
    let upload = |data: &[f32], rows| b.upload(data, rows, width).map_err(fail);
    let (k0, v0) = (
        upload(&keys[..pos0 * width], pos0)?,
        upload(&vals[..pos0 * width], pos0)?,
    );
    b.kv_append(&mut cache, &k0, &v0, 0).map_err(fail)?;
    let (k1, v1) = (
        upload(&keys[pos0 * width..], seq)?,
        upload(&vals[pos0 * width..], seq)?,
    );
    b.kv_append(&mut cache, &k1, &v1, pos0).map_err(fail)?;

    let q_width = shape.n_heads * shape.head_dim;
    let q_host = values(seq * q_width, 3);
    let q = b.upload(&q_host, seq, q_width).map_err(fail)?;
    let want = attention_reference(&q_host, &keys, &vals, pos0, shape, 0..seq - 1);

    let fused = b.attention(&q, &cache, pos0, shape).map_err(fail)?;
    let scores = b.attention_scores(&q, &cache, pos0, shape).map_err(fail)?;
    let probs = b.softmax(&scores).map_err(fail)?;
    let unfused = b
        .attention_weighted_sum(&probs, &cache, pos0, shape)
        .map_err(fail)?;
    for (path, out) in [("fused", fused), ("unfused", unfused)] {
        let out = b.download(&out).map_err(fail)?;
        let (seen, last) = out.split_at((seq - 1) * q_width);
        if let Some(i) = seen.iter().position(|x| !x.is_finite()) {
            return Err(format!(
                "{path}: row {} is {} though its positions are finite",
                i / q_width,
                seen[i]
            ));
        }
        let e = nmse(seen, &want);
        if e.is_nan() || e >= 1e-9 {
            return Err(format!("{path}: nmse {e:e} against the reference"));
        }
        // The poison is really in the cache: the row that sees it is not finite.
        if last.iter().all(|x| x.is_finite()) {
            return Err(format!("{path}: the poisoned position was not read at all"));
        }
    }
    Ok(())
}

// ---- F16 and BF16 weights ----------------------------------------------------

/// `data` in `dtype` (F16 or BF16) as GGUF stores it, and its values widened back.
fn narrow(data: &[f32], dtype: WeightDType) -> (Vec<u8>, Vec<f32>) {
    let mut bytes = Vec::with_capacity(data.len() * 2);
    let mut widened = Vec::with_capacity(data.len());
    for &v in data {
        let (b, w) = if dtype == WeightDType::BF16 {
            let h = half::bf16::from_f32(v);
            (h.to_le_bytes(), h.to_f32())
        } else {
            let h = half::f16::from_f32(v);
            (h.to_le_bytes(), h.to_f32())
        };
        bytes.extend_from_slice(&b);
        widened.push(w);
    }
    (bytes, widened)
}

/// Every product path of a 16-bit weight against f64 sums of the widened
/// weight: the mat-vec kernel (1..=8 rows; k a multiple of 8 or not, so
/// both of its loads), and the widened cuBLAS path (9+ rows), over one
/// band and over two (k = 4096, 2100 rows: bands of 2048).
fn float16_products_match_the_widened_weight(b: &CudaKernelsBackend) -> Check {
    let mut shapes = Vec::new();
    for m in [1, 2, 5, 8, 9, 40] {
        for (n, k) in [(37, 100), (64, 256)] {
            shapes.push((m, n, k));
        }
    }
    shapes.push((9, 2100, 4096));
    shapes.push((1, 2100, 4096));
    for dtype in [WeightDType::F16, WeightDType::BF16] {
        for (i, &(m, n, k)) in shapes.iter().enumerate() {
            let (bytes, w) = narrow(&values(n * k, 10 + i as u64), dtype);
            let shape = [n, k];
            let host = HostWeight::new("w", dtype, &shape, &bytes).map_err(fail)?;
            let weight = b.load_weight(&host).map_err(fail)?;
            let x_host = values(m * k, 100 + i as u64);
            let x = b.upload(&x_host, m, k).map_err(fail)?;
            let y = b.matmul(&x, &weight).map_err(fail)?;
            let y = b.download(&y).map_err(fail)?;
            let mut want = Vec::with_capacity(m * n);
            for xr in x_host.chunks_exact(k) {
                for wo in w.chunks_exact(k) {
                    want.push(xr.iter().zip(wo).map(|(&a, &c)| a as f64 * c as f64).sum());
                }
            }
            let e = nmse(&y, &want);
            if e.is_nan() || e >= 1e-9 {
                return Err(format!("{dtype} m={m} n={n} k={k}: nmse {e:e}"));
            }
        }
    }
    Ok(())
}

/// Embedding rows of a 16-bit table are its values widened, exactly.
fn float16_embeddings_are_the_widened_rows(b: &CudaKernelsBackend) -> Check {
    let (vocab, dim) = (11, 100);
    for dtype in [WeightDType::F16, WeightDType::BF16] {
        let (bytes, widened) = narrow(&values(vocab * dim, 7), dtype);
        let shape = [vocab, dim];
        let host = HostWeight::new("emb", dtype, &shape, &bytes).map_err(fail)?;
        let table = b.load_weight(&host).map_err(fail)?;
        let ids = [3u32, 0, 10, 3];
        let got = b.embedding(&table, &ids).map_err(fail)?;
        let got = b.download(&got).map_err(fail)?;
        let want: Vec<f32> = ids
            .iter()
            .flat_map(|&id| widened[id as usize * dim..][..dim].to_vec())
            .collect();
        if got != want {
            return Err(format!("{dtype}: rows differ from the widened table"));
        }
    }
    Ok(())
}

// ---- the load-time memory check ------------------------------------------------

/// Memory freed into the pool (which keeps it: release threshold u64::MAX)
/// counts as available: after the device is filled with KV caches and they
/// are dropped, the driver reports almost nothing free, and a cache of the
/// size just freed must still be accepted (the check used to compare with
/// the driver's free memory alone and refuse it).
fn memory_idle_in_the_pool_counts_as_available(b: &CudaKernelsBackend) -> Check {
    let width = 16_384;
    let cache_bytes = |capacity: usize| 2 * capacity * width * 4;
    let big = cache_bytes(16_384); // 2 GiB
                                   // 2 GiB caches, then 128 MiB ones, until less than one more fits.
    let mut caches = Vec::new();
    for capacity in [16_384, 1_024] {
        while caches.len() < 1024 {
            let (free, _) = b.memory().map_err(fail)?;
            if free < cache_bytes(capacity) + (64 << 20) {
                break;
            }
            caches.push(b.kv_cache(capacity, width).map_err(fail)?);
        }
    }
    let filled = caches.len();
    drop(caches);
    let (free, total) = b.memory().map_err(fail)?;
    println!(
        "     {filled} caches dropped: the driver reports {} MiB free of {} MiB; asking for {} MiB",
        free >> 20,
        total >> 20,
        big >> 20
    );
    if free >= big {
        println!("     note: the pool gave its memory back on its own; the check is not stressed");
    }
    b.kv_cache(16_384, width)
        .map(drop)
        .map_err(|e| format!("a cache the pool has room for was refused: {e}"))
}

fn main() -> ExitCode {
    let options = BackendOptions {
        device: std::env::args().nth(1).unwrap_or_else(|| "cuda:0".into()),
        threads: None,
    };
    let b = match CudaKernelsBackend::new(&options) {
        Ok(b) => b,
        Err(e) => {
            println!("FAIL {}: cannot start: {e}", options.device);
            return ExitCode::FAILURE;
        }
    };
    let checks: [Named; 4] = [
        (
            "masked_positions_never_reach_the_output",
            masked_positions_never_reach_the_output,
        ),
        (
            "float16_products_match_the_widened_weight",
            float16_products_match_the_widened_weight,
        ),
        (
            "float16_embeddings_are_the_widened_rows",
            float16_embeddings_are_the_widened_rows,
        ),
        (
            "memory_idle_in_the_pool_counts_as_available",
            memory_idle_in_the_pool_counts_as_available,
        ),
    ];
    let mut failed = 0;
    for (name, check) in checks {
        match check(&b) {
            Ok(()) => println!("ok   {name}"),
            Err(why) => {
                failed += 1;
                println!("FAIL {name}: {why}");
            }
        }
    }
    println!(
        "{} of {} checks passed",
        checks.len() - failed,
        checks.len()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
