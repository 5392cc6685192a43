//! `x · Wᵀ` over output-row bands.
//!
//! Quantised weights: every activation row is rounded to Q8 once per call
//! (not once per band), then each task takes a band of weight rows and runs
//! the block dot product of each of its rows against every activation row,
//! so a weight row is read from memory once and then served from L1 for all
//! activation rows (the 128-row prompt case), as llama.cpp does.
//!
//! Results are written transposed (`[n, m]`: a band is one contiguous
//! chunk) and transposed back at the end when `m > 1`. Each output value is
//! one dot product computed the same way whatever the banding, so the
//! thread count never changes a result.

use rbees_core::{BackendError, Result, WeightDType};

use crate::pool::Pool;
use crate::quant::{quantize_row, BlockQ8, QK};
use crate::simd::Kernels;
use crate::tensor::CpuTensor;
use crate::weight::{CpuWeight, Storage};

/// Tasks per thread: a few, so a thread slowed by a neighbour on a shared
/// machine does not hold the others up.
const TASKS_PER_THREAD: usize = 4;

pub fn matmul(pool: &Pool, k: &Kernels, x: &CpuTensor, w: &CpuWeight) -> Result<CpuTensor> {
    let (m, kd) = x.dims();
    let n = w.rows;
    let mut out_t = vec![0f32; n * m];
    let band = n.div_ceil(pool.threads() * TASKS_PER_THREAD).max(1);
    let work = m.saturating_mul(n).saturating_mul(kd);
    let run = |out_t: &mut [f32], dot: &(dyn Fn(usize, usize) -> f32 + Sync)| {
        pool.for_chunks(out_t, band * m, work, |b, chunk| {
            for (j, o) in chunk.chunks_mut(m).enumerate() {
                let r = b * band + j;
                for (i, v) in o.iter_mut().enumerate() {
                    *v = dot(r, i);
                }
            }
        })
    };
    match (&w.storage, w.dtype) {
        (Storage::F32(wv), _) => run(&mut out_t, &|r, i| {
            (k.f32)(&wv[r * kd..(r + 1) * kd], x.row(i))
        }),
        (Storage::Blocks(bytes), WeightDType::F16 | WeightDType::BF16) => {
            let dot = if w.dtype == WeightDType::F16 {
                k.f16
            } else {
                k.bf16
            };
            let rb = w.row_bytes;
            run(&mut out_t, &|r, i| {
                dot(&bytes[r * rb..(r + 1) * rb], x.row(i))
            })
        }
        (Storage::Blocks(bytes), dtype) => {
            let dot = match dtype {
                WeightDType::Q4_0 => k.q4_0,
                WeightDType::Q4_1 => k.q4_1,
                WeightDType::Q8_0 => k.q8_0,
                other => {
                    return Err(BackendError::Other(format!(
                        "matmul: no kernel for {other} weights"
                    )))
                }
            };
            let nb = kd / QK;
            let mut q = vec![BlockQ8::default(); m * nb];
            for (i, qrow) in q.chunks_exact_mut(nb.max(1)).enumerate().take(m) {
                quantize_row(x.row(i), qrow);
            }
            let rb = w.row_bytes;
            let q = &q;
            run(&mut out_t, &|r, i| {
                dot(&bytes[r * rb..(r + 1) * rb], &q[i * nb..(i + 1) * nb])
            })
        }
    }
    if m == 1 {
        return Ok(CpuTensor::new(1, n, out_t));
    }
    let mut out = vec![0f32; m * n];
    for (r, col) in out_t.chunks_exact(m).enumerate() {
        for (i, &v) in col.iter().enumerate() {
            out[i * n + r] = v;
        }
    }
    Ok(CpuTensor::new(m, n, out))
}
