//! `x · Wᵀ` over output-row bands.
//!
//! Quantised weights: every activation row is rounded to Q8 once per call
//! (not once per band), then each task takes a band of weight rows and, for
//! each of its rows, runs the block dot product against every activation
//! row, four activation rows per call so each weight block is unpacked once
//! for four (the 128-row prompt case). A weight row is read from memory once
//! and served from L1 for all activation rows, as in llama.cpp.
//!
//! Results are written transposed (`[n, m]`: a band is one contiguous
//! chunk) and transposed back at the end when `m > 1`. Each output value is
//! computed the same way whatever the banding, so the thread count never
//! changes a result.

use rbees_core::{BackendError, Result, WeightDType};

use crate::pool::Pool;
use crate::quant::{interleave_scales, quantize_row, BlockQ8, Q8x4, QK};
use crate::simd::{Kernels, QuantDot, QuantDot4, QuantRows};
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
    match (&w.storage, w.dtype) {
        (Storage::F32(wv), _) => pool.for_chunks(&mut out_t, band * m, work, |b, chunk| {
            for (j, o) in chunk.chunks_mut(m).enumerate() {
                let r = b * band + j;
                let wr = &wv[r * kd..(r + 1) * kd];
                for (v, xr) in o.iter_mut().zip(x.data.chunks_exact(kd)) {
                    *v = (k.f32)(wr, xr);
                }
            }
        }),
        (Storage::Blocks(bytes), WeightDType::F16 | WeightDType::BF16) => {
            let dot = if w.dtype == WeightDType::F16 {
                k.f16
            } else {
                k.bf16
            };
            let rb = w.row_bytes;
            pool.for_chunks(&mut out_t, band * m, work, |b, chunk| {
                for (j, o) in chunk.chunks_mut(m).enumerate() {
                    let r = b * band + j;
                    let wr = &bytes[r * rb..(r + 1) * rb];
                    for (v, xr) in o.iter_mut().zip(x.data.chunks_exact(kd)) {
                        *v = dot(wr, xr);
                    }
                }
            })
        }
        (Storage::Blocks(bytes), dtype) => {
            let (dot, dot_rows, dot4): (QuantDot, QuantRows, QuantDot4) = match dtype {
                WeightDType::Q4_0 => (k.q4_0, k.q4_0_rows, k.q4_0_x4),
                WeightDType::Q4_1 => (k.q4_1, k.q4_1_rows, k.q4_1_x4),
                WeightDType::Q8_0 => (k.q8_0, k.q8_0_rows, k.q8_0_x4),
                other => {
                    return Err(BackendError::Other(format!(
                        "matmul: no kernel for {other} weights"
                    )))
                }
            };
            let nb = kd / QK;
            let mut q = vec![BlockQ8::default(); m * nb];
            if nb > 0 {
                for (xr, qr) in x.data.chunks_exact(kd).zip(q.chunks_exact_mut(nb)) {
                    quantize_row(xr, qr);
                }
            }
            let q = &q;
            let row = |i: usize| &q[i * nb..(i + 1) * nb];
            // Scales of each group of four rows, block by block.
            let groups: Vec<_> = (0..m / 4)
                .map(|g| {
                    let rows = [row(4 * g), row(4 * g + 1), row(4 * g + 2), row(4 * g + 3)];
                    (rows, interleave_scales(rows, nb))
                })
                .collect();
            let groups: Vec<Q8x4<'_>> = groups
                .iter()
                .map(|(rows, (d, s))| Q8x4 { rows: *rows, d, s })
                .collect();
            let rb = w.row_bytes;
            pool.for_chunks(&mut out_t, band * m, work, |b, chunk| {
                let first = b * band;
                if m == 1 {
                    // Decode: the whole band in one kernel call.
                    let rows = &bytes[first * rb..(first + chunk.len()) * rb];
                    dot_rows(rows, rb, q, chunk);
                    return;
                }
                for (j, o) in chunk.chunks_mut(m).enumerate() {
                    let r = first + j;
                    quant_row(&bytes[r * rb..(r + 1) * rb], &groups, row, o, dot, dot4);
                }
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

/// One weight row against every activation row: four rows per call (the
/// `groups`) while four are left, then one by one (`row(i)`).
fn quant_row<'a>(
    w: &[u8],
    groups: &[Q8x4<'a>],
    row: impl Fn(usize) -> &'a [BlockQ8],
    out: &mut [f32],
    dot: QuantDot,
    dot4: QuantDot4,
) {
    let grouped = 4 * groups.len();
    for (o, g) in out.chunks_exact_mut(4).zip(groups) {
        o.copy_from_slice(&dot4(w, g));
    }
    for (i, o) in out.iter_mut().enumerate().skip(grouped) {
        *o = dot(w, row(i));
    }
}
