//! `x · Wᵀ` over output-row bands.
//!
//! Quantised weights: every activation row is rounded to Q8 once per call
//! (not once per band), then each task takes a band of weight rows and, for
//! each of its rows, runs the block dot product against every activation
//! row, eight activation rows per call so each weight block is unpacked
//! once for eight (the 128-row prompt case). A weight row is read from memory once
//! and served from L1 for all activation rows, as in llama.cpp.
//!
//! A band's results come out weight row by weight row (`[rows, m]`) and
//! the thread that computed them copies them into the `[m, n]` result
//! ([`Pool::collect_column_bands`]). Each output value is
//! computed the same way whatever the banding, so the thread count never
//! changes a result; and the same way whatever the other activation rows
//! (the multi-row kernels repeat the one-row kernel's arithmetic for each
//! row), so an output row is bit for bit what that activation row gives
//! alone: with continuous batching, a sequence's results do not depend on
//! the sequences it shares a forward pass with.

use rbees_core::{BackendError, Result, WeightDType};

use crate::pool::{BandOut, Pool};
use crate::quant::{interleave_scales, q4_kx8, q8_k, x8, BlockQ8, BlockQ8K, Q8x4, Scales4};
use crate::quant::{QK, QK_K};
use crate::simd::{KQuantDot, KQuantDot4, KQuantRows, Kernels};
use crate::simd::{QuantDot, QuantDot4, QuantDot8, QuantRows};
use crate::tensor::CpuTensor;
use crate::weight::{CpuWeight, Storage};

/// Tasks per thread: a few, so a thread slowed by a neighbour on a shared
/// machine does not hold the others up.
const TASKS_PER_THREAD: usize = 4;

/// Activations rounded to Q8: `m` rows of `nb` blocks, and the block-by-block
/// scales of each group of four rows (for the four-row kernels).
struct QuantActs {
    q: Vec<BlockQ8>,
    nb: usize,
    groups: Vec<Scales4>,
}

impl QuantActs {
    /// `four_row_scales`: lay out the scales for the four-row kernels of
    /// plain rows (interleaved rows do not use them).
    fn new(k: &Kernels, x: &CpuTensor, four_row_scales: bool) -> Self {
        let (m, kd) = x.dims();
        let nb = kd / QK;
        let mut q = vec![BlockQ8::default(); m * nb];
        if nb > 0 {
            for (xr, qr) in x.data.chunks_exact(kd).zip(q.chunks_exact_mut(nb)) {
                (k.quantize_q8)(xr, qr);
            }
        }
        let mut acts = QuantActs {
            q,
            nb,
            groups: Vec::new(),
        };
        if four_row_scales {
            acts.groups = (0..m / 4)
                .map(|g| interleave_scales(acts.group_rows(g), nb))
                .collect();
        }
        acts
    }

    fn row(&self, i: usize) -> &[BlockQ8] {
        &self.q[i * self.nb..(i + 1) * self.nb]
    }

    fn group_rows(&self, g: usize) -> [&[BlockQ8]; 4] {
        [0, 1, 2, 3].map(|r| self.row(4 * g + r))
    }

    fn group(&self, g: usize) -> Q8x4<'_> {
        let (d, s) = &self.groups[g];
        Q8x4 {
            rows: self.group_rows(g),
            d,
            s,
        }
    }
}

pub fn matmul(pool: &Pool, k: &Kernels, x: &CpuTensor, w: &CpuWeight) -> Result<CpuTensor> {
    let (m, kd) = x.dims();
    let n = w.rows;
    let band = n.div_ceil(pool.threads() * TASKS_PER_THREAD).max(1);
    let work = m.saturating_mul(n).saturating_mul(kd);
    let storage = w.storage.as_ref();
    let rb = w.row_bytes;
    let out = match w.dtype {
        WeightDType::F32 | WeightDType::F16 | WeightDType::BF16 => {
            let half_dot = if w.dtype == WeightDType::F16 {
                k.f16
            } else {
                k.bf16
            };
            let rows = match storage {
                Storage::F32(values) => FloatRows::F32(values),
                Storage::Blocks(bytes) => FloatRows::Half(bytes),
                _ => return Err(layout_error(w)),
            };
            pool.collect_column_bands(m, n, band, work, |_, out| {
                let mut column = vec![0f32; m];
                for j in 0..out.count() {
                    let r = out.first() + j;
                    for (v, xr) in column.iter_mut().zip(x.data.chunks_exact(kd)) {
                        *v = match rows {
                            FloatRows::F32(wv) => (k.f32)(&wv[r * kd..(r + 1) * kd], xr),
                            FloatRows::Half(bytes) => half_dot(&bytes[r * rb..(r + 1) * rb], xr),
                        };
                    }
                    out.set_column(j, &column);
                }
            })?
        }
        WeightDType::Q4K | WeightDType::Q5K | WeightDType::Q6K => {
            let (dot, dot_rows, dot4): (KQuantDot, KQuantRows, KQuantDot4) = match w.dtype {
                WeightDType::Q4K => (k.q4_k, k.q4_k_rows, k.q4_k_x4),
                WeightDType::Q5K => (k.q5_k, k.q5_k_rows, k.q5_k_x4),
                _ => (k.q6_k, k.q6_k_rows, k.q6_k_x4),
            };
            // Activations to Q8_K once per call, as ggml does for K-quants.
            let nb = kd / QK_K;
            let mut acts = vec![BlockQ8K::default(); m * nb];
            if nb > 0 {
                for (xr, qr) in x.data.chunks_exact(kd).zip(acts.chunks_exact_mut(nb)) {
                    q8_k::quantize_row(xr, qr);
                }
            }
            let row = |i: usize| &acts[i * nb..(i + 1) * nb];
            let layout = match storage {
                Storage::Blocks(bytes) => Layout::Rows(bytes),
                Storage::Q4Kx8(packed) => Layout::Groups(packed),
                _ => return Err(layout_error(w)),
            };
            // Bands of interleaved weights hold whole groups of eight rows.
            let band = match layout {
                Layout::Groups(_) => band.next_multiple_of(q4_kx8::ROWS),
                Layout::Rows(_) => band,
            };
            pool.collect_column_bands(m, n, band, work, |_, out| {
                let (first, count) = (out.first(), out.count());
                let bytes: &[u8] = match layout {
                    Layout::Rows(bytes) => &bytes[first * rb..(first + count) * rb],
                    Layout::Groups(packed) => {
                        let group_bytes = nb * q4_kx8::GROUP_BLOCK;
                        let groups = &packed[first / q4_kx8::ROWS * group_bytes..]
                            [..count / q4_kx8::ROWS * group_bytes];
                        interleaved_rows(
                            groups,
                            group_bytes,
                            m,
                            out,
                            |g, i| (k.q4_kx8_x4)(g, [0, 1, 2, 3].map(|t| row(i + t))),
                            |g, i, o| (k.q4_kx8_rows)(g, row(i), o),
                        );
                        return;
                    }
                };
                if m == 1 {
                    // Decode: the whole band in one kernel call.
                    dot_rows(bytes, rb, row(0), out.row(0));
                    return;
                }
                let mut column = vec![0f32; m];
                for j in 0..count {
                    let w = &bytes[j * rb..(j + 1) * rb];
                    // Four activation rows per call (the weight block is
                    // unpacked once for four), then one by one.
                    let mut fours = column.chunks_exact_mut(4);
                    for (g, o4) in (&mut fours).enumerate() {
                        o4.copy_from_slice(&dot4(w, [0, 1, 2, 3].map(|t| row(4 * g + t))));
                    }
                    let done = m - fours.into_remainder().len();
                    for (i, v) in column.iter_mut().enumerate().skip(done) {
                        *v = dot(w, row(i));
                    }
                    out.set_column(j, &column);
                }
            })?
        }
        dtype => {
            let kernels = match dtype {
                WeightDType::Q4_0 => (k.q4_0, k.q4_0_rows, k.q4_0_x4, k.q4_0_x8),
                WeightDType::Q4_1 => (k.q4_1, k.q4_1_rows, k.q4_1_x4, k.q4_1_x8),
                WeightDType::Q5_0 => (k.q5_0, k.q5_0_rows, k.q5_0_x4, k.q5_0_x8),
                WeightDType::Q5_1 => (k.q5_1, k.q5_1_rows, k.q5_1_x4, k.q5_1_x8),
                WeightDType::Q8_0 => (k.q8_0, k.q8_0_rows, k.q8_0_x4, k.q8_0_x8),
                other => {
                    return Err(BackendError::Other(format!(
                        "matmul: no kernel for {other} weights"
                    )))
                }
            };
            let (dot, dot_rows, dot4, dot8): (QuantDot, QuantRows, QuantDot4, QuantDot8) = kernels;
            let layout = match storage {
                Storage::Blocks(bytes) => Layout::Rows(bytes),
                Storage::X8(packed) => Layout::Groups(packed),
                _ => return Err(layout_error(w)),
            };
            let interleaved = matches!(layout, Layout::Groups(_));
            let acts = QuantActs::new(k, x, !interleaved);
            // Bands of interleaved weights hold whole groups of eight rows.
            let band = if interleaved {
                band.next_multiple_of(x8::ROWS)
            } else {
                band
            };
            // The `8 Σ y` correction of interleaved Q4_0 rows, per activation row.
            let nb = kd / QK;
            let sums: Vec<i32> = if interleaved && dtype == WeightDType::Q4_0 {
                (0..m).flat_map(|i| x8::block_sums(acts.row(i))).collect()
            } else {
                Vec::new()
            };
            // (Only Q4_0 rows have an offset to undo with sums.)
            let sums_of = |i: usize| sums.get(i * nb..(i + 1) * nb).unwrap_or(&[]);
            let (x8_rows, x8_four) = match dtype {
                WeightDType::Q4_0 => (k.q4_0x8_rows, k.q4_0x8_x4),
                WeightDType::Q4_1 => (k.q4_1x8_rows, k.q4_1x8_x4),
                WeightDType::Q8_0 => (k.q8_0x8_rows, k.q8_0x8_x4),
                _ if interleaved => return Err(layout_error(w)),
                // Plain rows never read these.
                _ => (k.q4_0x8_rows, k.q4_0x8_x4),
            };
            // Built once per call, not once per weight row.
            let groups: Vec<Q8x4<'_>> = (0..acts.groups.len()).map(|g| acts.group(g)).collect();
            pool.collect_column_bands(m, n, band, work, |_, out| {
                let (first, count) = (out.first(), out.count());
                let bytes: &[u8] = match layout {
                    Layout::Rows(bytes) => &bytes[first * rb..(first + count) * rb],
                    Layout::Groups(packed) => {
                        // Eight weight rows per activation load, one
                        // activation row (decode) or four at a time.
                        interleaved_rows(
                            &packed[first * rb..(first + count) * rb],
                            x8::ROWS * rb,
                            m,
                            out,
                            |g, i| {
                                let rows = [0, 1, 2, 3].map(|t| i + t);
                                x8_four(g, rows.map(|r| acts.row(r)), rows.map(sums_of))
                            },
                            |g, i, o| x8_rows(g, acts.row(i), sums_of(i), o),
                        );
                        return;
                    }
                };
                if m == 1 {
                    // Decode: the whole band in one kernel call.
                    dot_rows(bytes, rb, acts.row(0), out.row(0));
                    return;
                }
                let mut column = vec![0f32; m];
                for j in 0..count {
                    let w = &bytes[j * rb..(j + 1) * rb];
                    quant_row(w, &acts, &groups, &mut column, (dot, dot4, dot8));
                    out.set_column(j, &column);
                }
            })?
        }
    };
    Ok(CpuTensor::new(m, n, out))
}

/// Rows of a float weight matrix.
#[derive(Clone, Copy)]
enum FloatRows<'a> {
    F32(&'a [f32]),
    /// F16 or BF16 bytes.
    Half(&'a [u8]),
}

/// Rows of a quantised weight matrix: plain GGUF block rows, or groups of
/// eight interleaved rows.
#[derive(Clone, Copy)]
enum Layout<'a> {
    Rows(&'a [u8]),
    Groups(&'a [u8]),
}

/// A weight whose storage does not fit its type: `CpuWeight::from_host`
/// never builds one, so this is a bug, reported rather than computed.
fn layout_error(w: &CpuWeight) -> BackendError {
    BackendError::Other(format!(
        "matmul: {} weight stored in a layout its kernels do not read",
        w.dtype
    ))
}

/// Activation rows per pass over a band of interleaved groups: a pass's
/// rows (64 x 1536 values rounded to Q8 are ~100 KiB) and the band stay in
/// L2 while every group of the band runs against them. Without the tiling a
/// 1024-row step (eight 128-token prompts) streamed all its activations
/// from L3 once per group.
const ACT_TILE: usize = 64;

/// A band of interleaved groups of eight weight rows against every
/// activation row, four activation rows per call while four are left, then
/// one by one, straight into the band's columns of the result. `one(group
/// bytes, row, out)` may also take the whole band's groups at once
/// (decode: one call).
fn interleaved_rows(
    groups: &[u8],
    group_bytes: usize,
    m: usize,
    out: &mut BandOut<'_>,
    four: impl Fn(&[u8], usize) -> [[f32; 8]; 4],
    one: impl Fn(&[u8], usize, &mut [f32]),
) {
    if m == 1 {
        one(groups, 0, out.row(0));
        return;
    }
    let groups = || groups.chunks_exact(group_bytes.max(1)).enumerate();
    for tile in (0..m).step_by(ACT_TILE) {
        let end = (tile + ACT_TILE).min(m);
        for (g, group) in groups() {
            let lanes = 8 * g..8 * g + 8;
            let mut i = tile;
            while i + 4 <= end {
                for (t, values) in four(group, i).iter().enumerate() {
                    out.row(i + t)[lanes.clone()].copy_from_slice(values);
                }
                i += 4;
            }
            for i in i..end {
                one(group, i, &mut out.row(i)[lanes.clone()]);
            }
        }
    }
}

/// One weight row against every activation row: eight rows per call (two
/// groups) while eight are left, then a group of four, then one by one.
fn quant_row(
    w: &[u8],
    acts: &QuantActs,
    groups: &[Q8x4<'_>],
    out: &mut [f32],
    (dot, dot4, dot8): (QuantDot, QuantDot4, QuantDot8),
) {
    let mut pairs = groups.chunks_exact(2);
    for (pair, o) in (&mut pairs).zip(out.chunks_exact_mut(8)) {
        o.copy_from_slice(&dot8(w, &pair[0], &pair[1]));
    }
    if let [last] = pairs.remainder() {
        let g = groups.len() - 1;
        out[4 * g..4 * g + 4].copy_from_slice(&dot4(w, last));
    }
    for (i, o) in out.iter_mut().enumerate().skip(4 * groups.len()) {
        *o = dot(w, acts.row(i));
    }
}
