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

use rbees_core::{BackendError, Result};

use crate::pool::{BandOut, Pool};
use crate::quant::{interleave_scales, q8_k, x8, BlockQ8, BlockQ8K, Q8x4, Scales4};
use crate::quant::{QK, QK_K};
use crate::simd::{F32Dot, HalfDot, Kernels};
use crate::tensor::CpuTensor;
use crate::types::{
    Interleave, Products, Q8Groups, Q8KGroups, Q8KProducts, Q8Products, GROUP_ROWS,
};
use crate::weight::{CpuWeight, Layout};

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

/// `x · Wᵀ`: the activations are rounded to what the weight type's kernels
/// take, then one band loop runs the weight's kernel over output-row bands.
pub fn matmul(pool: &Pool, k: &Kernels, x: &CpuTensor, w: &CpuWeight) -> Result<CpuTensor> {
    let (m, kd) = x.dims();
    let n = w.rows;
    let entry = k
        .of(w.dtype)
        .ok_or_else(|| BackendError::Other(format!("matmul: no kernel for {} weights", w.dtype)))?;
    let plan = Plan::new(k, x, entry.products, w)?;
    // Built once per call, not once per weight row.
    let fours = plan.fours();
    let band = n.div_ceil(pool.threads() * TASKS_PER_THREAD).max(1);
    // Bands of interleaved weights hold whole groups of eight rows.
    let band = if plan.interleaved() {
        band.next_multiple_of(GROUP_ROWS)
    } else {
        band
    };
    let work = m.saturating_mul(n).saturating_mul(kd);
    let out = pool.collect_column_bands(m, n, band, work, |_, out| {
        plan.band(x, &fours, w.row_bytes, out)
    })?;
    Ok(CpuTensor::new(m, n, out))
}

/// A weight type's products paired with the layout of one weight and the
/// activations rounded to what those products take (once per call, not
/// once per band, as ggml does).
enum Plan<'w> {
    F32(F32Dot, &'w [f32]),
    Half(HalfDot, &'w [u8]),
    Q8Rows(Q8Products, &'w [u8], QuantActs),
    /// With each activation row's block sums where the format needs them.
    Q8Groups(Q8Groups, &'w [u8], QuantActs, Vec<i32>),
    Q8KRows(Q8KProducts, &'w [u8], Q8KActs),
    /// The group kernels, the bytes of one group and the activations.
    Q8KGroups(Q8KGroups, usize, &'w [u8], Q8KActs),
}

impl<'w> Plan<'w> {
    /// The plan for `w`'s layout; a layout its type's products do not read
    /// is an error (`CpuWeight::from_host` never builds one).
    fn new(k: &Kernels, x: &CpuTensor, products: Products, w: &'w CpuWeight) -> Result<Self> {
        Ok(match (products, w.layout.as_ref()) {
            (Products::F32(dot), Layout::F32(values)) => Plan::F32(dot, values),
            (Products::Half(dot), Layout::Rows(bytes)) => Plan::Half(dot, bytes),
            (Products::Q8(p), Layout::Rows(bytes)) => {
                Plan::Q8Rows(p, bytes, QuantActs::new(k, x, true))
            }
            (
                Products::Q8(Q8Products {
                    groups: Some(g), ..
                }),
                Layout::Interleaved(Interleave::X8(format), packed),
            ) => {
                let acts = QuantActs::new(k, x, false);
                let sums = if format.block_sums {
                    (0..x.dims().0)
                        .flat_map(|i| x8::block_sums(acts.row(i)))
                        .collect()
                } else {
                    Vec::new()
                };
                Plan::Q8Groups(g, packed, acts, sums)
            }
            (Products::Q8K(p), Layout::Rows(bytes)) => Plan::Q8KRows(p, bytes, Q8KActs::new(x)),
            (
                Products::Q8K(Q8KProducts {
                    groups: Some(g), ..
                }),
                Layout::Interleaved(interleave @ Interleave::Q4K, packed),
            ) => Plan::Q8KGroups(
                g,
                interleave.group_bytes(w.cols, w.row_bytes),
                packed,
                Q8KActs::new(x),
            ),
            _ => {
                return Err(BackendError::Other(format!(
                    "matmul: {} weight stored in a layout its kernels do not read",
                    w.dtype
                )))
            }
        })
    }

    fn interleaved(&self) -> bool {
        matches!(self, Plan::Q8Groups(..) | Plan::Q8KGroups(..))
    }

    /// The four-row groups of the activations, for plain Q8 rows.
    fn fours(&self) -> Vec<Q8x4<'_>> {
        match self {
            Plan::Q8Rows(_, _, acts) => (0..acts.groups.len()).map(|g| acts.group(g)).collect(),
            _ => Vec::new(),
        }
    }

    /// One band of weight rows against every activation row, into `out`.
    fn band(&self, x: &CpuTensor, fours: &[Q8x4<'_>], rb: usize, out: &mut BandOut<'_>) {
        let (m, kd) = x.dims();
        let (first, count) = (out.first(), out.count());
        let rows = |bytes: &'w [u8]| &bytes[first * rb..(first + count) * rb];
        match self {
            Plan::F32(dot, values) => {
                float_band(x, out, |r, xr| dot(&values[r * kd..(r + 1) * kd], xr))
            }
            Plan::Half(dot, bytes) => {
                float_band(x, out, |r, xr| dot(&bytes[r * rb..(r + 1) * rb], xr))
            }
            Plan::Q8Rows(p, bytes, acts) => {
                let bytes = rows(bytes);
                if m == 1 {
                    // Decode: the whole band in one kernel call.
                    (p.rows)(bytes, rb, acts.row(0), out.row(0));
                    return;
                }
                let mut column = vec![0f32; m];
                for j in 0..count {
                    let w = &bytes[j * rb..(j + 1) * rb];
                    q8_row(w, acts, fours, &mut column, p);
                    out.set_column(j, &column);
                }
            }
            Plan::Q8Groups(g, packed, acts, sums) => {
                // Eight weight rows per activation load, one activation row
                // (decode) or four at a time. Formats without sums get none.
                let sums_of = |i: usize| sums.get(i * acts.nb..(i + 1) * acts.nb).unwrap_or(&[]);
                interleaved_rows(
                    rows(packed),
                    GROUP_ROWS * rb,
                    m,
                    out,
                    |group, i| {
                        let r = [0, 1, 2, 3].map(|t| i + t);
                        (g.four)(group, r.map(|r| acts.row(r)), r.map(sums_of))
                    },
                    |group, i, o| (g.rows)(group, acts.row(i), sums_of(i), o),
                );
            }
            Plan::Q8KRows(p, bytes, acts) => {
                let bytes = rows(bytes);
                if m == 1 {
                    (p.rows)(bytes, rb, acts.row(0), out.row(0));
                    return;
                }
                let mut column = vec![0f32; m];
                for j in 0..count {
                    let w = &bytes[j * rb..(j + 1) * rb];
                    // Four activation rows per call (the weight block is
                    // unpacked once for four), then one by one.
                    let mut four = column.chunks_exact_mut(4);
                    for (g, o4) in (&mut four).enumerate() {
                        o4.copy_from_slice(&(p.four)(w, [0, 1, 2, 3].map(|t| acts.row(4 * g + t))));
                    }
                    let done = m - four.into_remainder().len();
                    for (i, v) in column.iter_mut().enumerate().skip(done) {
                        *v = (p.one)(w, acts.row(i));
                    }
                    out.set_column(j, &column);
                }
            }
            Plan::Q8KGroups(g, group_bytes, packed, acts) => {
                let groups =
                    &packed[first / GROUP_ROWS * group_bytes..][..count / GROUP_ROWS * group_bytes];
                interleaved_rows(
                    groups,
                    *group_bytes,
                    m,
                    out,
                    |group, i| (g.four)(group, [0, 1, 2, 3].map(|t| acts.row(i + t))),
                    |group, i, o| (g.rows)(group, acts.row(i), o),
                );
            }
        }
    }
}

/// A band of a float weight: each weight row against every activation row.
fn float_band(x: &CpuTensor, out: &mut BandOut<'_>, dot: impl Fn(usize, &[f32]) -> f32) {
    let (m, kd) = x.dims();
    let mut column = vec![0f32; m];
    for j in 0..out.count() {
        let r = out.first() + j;
        for (v, xr) in column.iter_mut().zip(x.data.chunks_exact(kd)) {
            *v = dot(r, xr);
        }
        out.set_column(j, &column);
    }
}

/// Activations rounded to Q8_K for the K-quants: `m` rows of `nb` blocks.
struct Q8KActs {
    q: Vec<BlockQ8K>,
    nb: usize,
}

impl Q8KActs {
    fn new(x: &CpuTensor) -> Self {
        let (m, kd) = x.dims();
        let nb = kd / QK_K;
        let mut q = vec![BlockQ8K::default(); m * nb];
        if nb > 0 {
            for (xr, qr) in x.data.chunks_exact(kd).zip(q.chunks_exact_mut(nb)) {
                q8_k::quantize_row(xr, qr);
            }
        }
        Q8KActs { q, nb }
    }

    fn row(&self, i: usize) -> &[BlockQ8K] {
        &self.q[i * self.nb..(i + 1) * self.nb]
    }
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
fn q8_row(w: &[u8], acts: &QuantActs, fours: &[Q8x4<'_>], out: &mut [f32], p: &Q8Products) {
    let mut pairs = fours.chunks_exact(2);
    for (pair, o) in (&mut pairs).zip(out.chunks_exact_mut(8)) {
        o.copy_from_slice(&(p.eight)(w, &pair[0], &pair[1]));
    }
    if let [last] = pairs.remainder() {
        let g = fours.len() - 1;
        out[4 * g..4 * g + 4].copy_from_slice(&(p.four)(w, last));
    }
    for (i, o) in out.iter_mut().enumerate().skip(4 * fours.len()) {
        *o = (p.one)(w, acts.row(i));
    }
}
