//! AVX2 + FMA + F16C dot products, ggml's x86 tricks:
//! * nibbles unpacked with a shift and `_mm256_and_si256` (low nibbles are
//!   elements 0..16 of a block, high nibbles 16..32);
//! * `_mm256_maddubs_epi16` multiplies u8 by i8; for i8 by i8 the sign of
//!   one operand moves to the other first (`_mm256_sign_epi8`);
//! * `_mm256_madd_epi16` with ones widens the pair sums to i32, which are
//!   converted to f32 and accumulated with one FMA by the block's scale.
//!
//! `maddubs` saturates at i16, which cannot happen here: Q4 nibbles (<= 15)
//! times |q8| <= 127, or |q8| <= 127 times |q8| <= 127, summed in pairs,
//! stay below 32767.

use std::arch::x86_64::*;

use rbees_core::WeightDType;

use super::{avx2_k, avx2_q5, avx2_x8, Kernels};
use crate::quant::{q4_0, q4_1, q8_0, BlockQ8, Q8x4, QK};
use crate::types::{Products, Q8Groups, Q8KGroups, Q8KProducts, Q8Products};

/// The AVX2 kernels, if this CPU has AVX2, FMA and F16C: the portable
/// table with the entries that have AVX2 code overridden. Q5_K and BF16
/// keep the portable code, which the compiler vectorises.
pub fn kernels() -> Option<Kernels> {
    let ok = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    if !ok {
        return None;
    }
    let mut k = Kernels {
        name: "avx2",
        quantize_q8,
        f32: dot_f32,
        ..Kernels::scalar()
    };
    k.set_products(WeightDType::F32, Products::F32(dot_f32));
    k.set_products(WeightDType::F16, Products::Half(dot_f16));
    k.set_products(
        WeightDType::Q4_0,
        Products::Q8(Q8Products {
            one: dot_q4_0,
            rows: rows_q4_0,
            four: dot4_q4_0,
            eight: dot8_q4_0,
            groups: Some(Q8Groups {
                rows: avx2_x8::rows_q4_0x8,
                four: avx2_x8::group4_q4_0x8,
            }),
        }),
    );
    k.set_products(
        WeightDType::Q4_1,
        Products::Q8(Q8Products {
            one: dot_q4_1,
            rows: rows_q4_1,
            four: dot4_q4_1,
            eight: dot8_q4_1,
            groups: Some(Q8Groups {
                rows: avx2_x8::rows_q4_1x8,
                four: avx2_x8::group4_q4_1x8,
            }),
        }),
    );
    k.set_products(
        WeightDType::Q5_0,
        Products::Q8(Q8Products {
            one: avx2_q5::dot_q5_0,
            rows: avx2_q5::rows_q5_0,
            four: avx2_q5::dot4_q5_0,
            eight: avx2_q5::dot8_q5_0,
            groups: None,
        }),
    );
    k.set_products(
        WeightDType::Q5_1,
        Products::Q8(Q8Products {
            one: avx2_q5::dot_q5_1,
            rows: avx2_q5::rows_q5_1,
            four: avx2_q5::dot4_q5_1,
            eight: avx2_q5::dot8_q5_1,
            groups: None,
        }),
    );
    k.set_products(
        WeightDType::Q8_0,
        Products::Q8(Q8Products {
            one: dot_q8_0,
            rows: rows_q8_0,
            four: dot4_q8_0,
            eight: dot8_q8_0,
            groups: Some(Q8Groups {
                rows: avx2_x8::rows_q8_0x8,
                four: avx2_x8::group4_q8_0x8,
            }),
        }),
    );
    k.set_products(
        WeightDType::Q4K,
        Products::Q8K(Q8KProducts {
            one: avx2_k::dot_q4_k,
            rows: avx2_k::rows_q4_k,
            four: avx2_k::dot4_q4_k,
            groups: Some(Q8KGroups {
                rows: avx2_x8::rows_q4_kx8,
                four: avx2_x8::group4_q4_kx8,
            }),
        }),
    );
    k.set_products(
        WeightDType::Q6K,
        Products::Q8K(Q8KProducts {
            one: avx2_k::dot_q6_k,
            rows: avx2_k::rows_q6_k,
            four: avx2_k::dot4_q6_k,
            groups: None,
        }),
    );
    Some(k)
}

// The safe wrappers below are only ever installed by `kernels()` after the
// feature check, which is what makes calling the `unsafe` bodies sound; each
// also checks the slice lengths the bodies rely on.

fn dot_q4_0(w: &[u8], x: &[BlockQ8]) -> f32 {
    let nb = x.len().min(w.len() / q4_0::BLOCK_BYTES);
    // SAFETY: `kernels()` installs this only when AVX2/FMA/F16C are present;
    // `nb` blocks of `w` and `x` are in bounds.
    unsafe { q4_0_body(w.as_ptr(), x.as_ptr(), nb) }
}

fn dot_q4_1(w: &[u8], x: &[BlockQ8]) -> f32 {
    let nb = x.len().min(w.len() / q4_1::BLOCK_BYTES);
    // SAFETY: as in `dot_q4_0`.
    unsafe { q4_1_body(w.as_ptr(), x.as_ptr(), nb) }
}

fn dot_q8_0(w: &[u8], x: &[BlockQ8]) -> f32 {
    let nb = x.len().min(w.len() / q8_0::BLOCK_BYTES);
    // SAFETY: as in `dot_q4_0`.
    unsafe { q8_0_body(w.as_ptr(), x.as_ptr(), nb) }
}

/// `(blocks per row, rows)` that `w`, `x` and `out` all have room for.
pub(super) fn rows_extent<B>(
    w: &[u8],
    rb: usize,
    block_bytes: usize,
    x: &[B],
    out: &[f32],
) -> (usize, usize) {
    let nb = x.len().min(rb / block_bytes);
    (nb, out.len().min(w.len() / rb.max(1)))
}

fn rows_q4_0(w: &[u8], rb: usize, x: &[BlockQ8], out: &mut [f32]) {
    let (nb, n) = rows_extent(w, rb, q4_0::BLOCK_BYTES, x, out);
    for (j, o) in out[..n].iter_mut().enumerate() {
        // SAFETY: as in `dot_q4_0`; row `j < n` of `w` holds `nb` blocks.
        *o = unsafe { q4_0_body(w.as_ptr().add(j * rb), x.as_ptr(), nb) };
    }
}

fn rows_q4_1(w: &[u8], rb: usize, x: &[BlockQ8], out: &mut [f32]) {
    let (nb, n) = rows_extent(w, rb, q4_1::BLOCK_BYTES, x, out);
    // SAFETY: as in `dot_q4_0`; each of the `n` rows of `w` holds `nb` blocks.
    unsafe { q4_1_rows_body(w.as_ptr(), rb, x.as_ptr(), nb, &mut out[..n]) }
}

fn rows_q8_0(w: &[u8], rb: usize, x: &[BlockQ8], out: &mut [f32]) {
    let (nb, n) = rows_extent(w, rb, q8_0::BLOCK_BYTES, x, out);
    // SAFETY: as in `rows_q4_1`.
    unsafe { q8_0_rows_body(w.as_ptr(), rb, x.as_ptr(), nb, &mut out[..n]) }
}

/// # Safety
/// As [`q4_1_body`] for each of the `out.len()` rows, `rb` bytes apart.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_1_rows_body(w: *const u8, rb: usize, x: *const BlockQ8, nb: usize, out: &mut [f32]) {
    for (j, o) in out.iter_mut().enumerate() {
        *o = q4_1_body(w.add(j * rb), x, nb);
    }
}

/// # Safety
/// As [`q8_0_body`] for each of the `out.len()` rows, `rb` bytes apart.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_rows_body(w: *const u8, rb: usize, x: *const BlockQ8, nb: usize, out: &mut [f32]) {
    for (j, o) in out.iter_mut().enumerate() {
        *o = q8_0_body(w.add(j * rb), x, nb);
    }
}

/// Blocks every slice of a four-row call has.
fn blocks4(w: &[u8], block_bytes: usize, x: &Q8x4<'_>) -> usize {
    x.rows
        .iter()
        .map(|r| r.len())
        .fold(w.len() / block_bytes, usize::min)
        .min(x.d.len())
        .min(x.s.len())
}

fn dot4_q4_0(w: &[u8], x: &Q8x4<'_>) -> [f32; 4] {
    let nb = blocks4(w, q4_0::BLOCK_BYTES, x);
    // SAFETY: as in `dot_q4_0`; `nb` blocks of `w`, of every row and of the
    // scale arrays are in bounds.
    let [r] = unsafe { signed_x4_body::<true, 1>(w.as_ptr(), q4_0::BLOCK_BYTES, [x], nb) };
    r
}

fn dot4_q4_1(w: &[u8], x: &Q8x4<'_>) -> [f32; 4] {
    let nb = blocks4(w, q4_1::BLOCK_BYTES, x);
    // SAFETY: as in `dot4_q4_0`.
    let [r] = unsafe { q4_1_x4_body::<1>(w.as_ptr(), [x], nb) };
    r
}

fn dot4_q8_0(w: &[u8], x: &Q8x4<'_>) -> [f32; 4] {
    let nb = blocks4(w, q8_0::BLOCK_BYTES, x);
    // SAFETY: as in `dot4_q4_0`.
    let [r] = unsafe { signed_x4_body::<false, 1>(w.as_ptr(), q8_0::BLOCK_BYTES, [x], nb) };
    r
}

/// Joins the results of two groups of four rows.
fn join8([a, b]: [[f32; 4]; 2]) -> [f32; 8] {
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
}

fn dot8_q4_0(w: &[u8], x: &Q8x4<'_>, y: &Q8x4<'_>) -> [f32; 8] {
    let nb = blocks4(w, q4_0::BLOCK_BYTES, x).min(blocks4(w, q4_0::BLOCK_BYTES, y));
    // SAFETY: as in `dot4_q4_0`, for both groups.
    join8(unsafe { signed_x4_body::<true, 2>(w.as_ptr(), q4_0::BLOCK_BYTES, [x, y], nb) })
}

fn dot8_q4_1(w: &[u8], x: &Q8x4<'_>, y: &Q8x4<'_>) -> [f32; 8] {
    let nb = blocks4(w, q4_1::BLOCK_BYTES, x).min(blocks4(w, q4_1::BLOCK_BYTES, y));
    // SAFETY: as in `dot4_q4_0`, for both groups.
    join8(unsafe { q4_1_x4_body::<2>(w.as_ptr(), [x, y], nb) })
}

fn dot8_q8_0(w: &[u8], x: &Q8x4<'_>, y: &Q8x4<'_>) -> [f32; 8] {
    let nb = blocks4(w, q8_0::BLOCK_BYTES, x).min(blocks4(w, q8_0::BLOCK_BYTES, y));
    // SAFETY: as in `dot4_q4_0`, for both groups.
    join8(unsafe { signed_x4_body::<false, 2>(w.as_ptr(), q8_0::BLOCK_BYTES, [x, y], nb) })
}

fn quantize_q8(x: &[f32], out: &mut [BlockQ8]) {
    let nb = out.len().min(x.len() / QK);
    // SAFETY: as in `dot_q4_0`; `nb` blocks of `x` and `out` are in bounds.
    unsafe { quantize_q8_body(x.as_ptr(), out.as_mut_ptr(), nb) }
}

fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    // SAFETY: as in `dot_q4_0`; `n` elements of both are in bounds.
    unsafe { f32_body(w.as_ptr(), x.as_ptr(), n) }
}

fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
    let n = x.len().min(w.len() / 2);
    // SAFETY: as in `dot_q4_0`; `n` f16 values of `w` and `n` of `x` are in bounds.
    unsafe { f16_body(w.as_ptr(), x.as_ptr(), n) }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// 16 bytes of nibbles -> 32 bytes 0..=15 in element order.
///
/// # Safety
/// `p` must point to 16 readable bytes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn nibbles(p: *const u8) -> __m256i {
    let tmp = _mm_loadu_si128(p as *const __m128i);
    let both = _mm256_set_m128i(_mm_srli_epi16::<4>(tmp), tmp);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// Σ of the products of 32 signed bytes, as 8 f32 partial sums.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn mul_sum_i8(a: __m256i, b: __m256i) -> __m256 {
    let ax = _mm256_sign_epi8(a, a);
    let sy = _mm256_sign_epi8(b, a);
    mul_sum_u8_i8(ax, sy)
}

/// Σ of the products of 32 unsigned by 32 signed bytes, as 8 f32 partial sums.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn mul_sum_u8_i8(a: __m256i, b: __m256i) -> __m256 {
    _mm256_cvtepi32_ps(dot_u8_i8(a, b))
}

/// Σ of the products of each 4 unsigned by 4 signed bytes, as 8 i32.
#[inline]
#[target_feature(enable = "avx2")]
fn dot_u8_i8(a: __m256i, b: __m256i) -> __m256i {
    dot_u8_i8_acc(_mm256_setzero_si256(), a, b)
}

/// `acc` plus the sums of the products of each 4 unsigned by 4 signed bytes.
#[inline]
#[target_feature(enable = "avx2")]
#[cfg(not(all(target_feature = "avx512vnni", target_feature = "avx512vl")))]
pub(super) fn dot_u8_i8_acc(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    let pairs = _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1));
    _mm256_add_epi32(acc, pairs)
}

/// As above in one instruction (`vpdpbusd`), when the build targets a CPU
/// with AVX-512 VNNI (`-C target-cpu=native` on one): TinyLlama-shaped Q4_0
/// decode, 2 threads, 27.7 -> 40.1 tokens/s.
#[inline]
#[target_feature(enable = "avx2")]
#[cfg(all(target_feature = "avx512vnni", target_feature = "avx512vl"))]
pub(super) fn dot_u8_i8_acc(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    // SAFETY: this version is only compiled for a target CPU with AVX-512
    // VNNI and VL (the cfg above), so every CPU the binary may run on has them.
    unsafe { _mm256_dpbusd_epi32(acc, a, b) }
}

/// The f16 at `p` as f32.
///
/// # Safety
/// `p` must point to 2 readable bytes.
#[inline]
#[target_feature(enable = "f16c")]
pub(super) unsafe fn f16_at(p: *const u8) -> f32 {
    let h = i32::from(std::ptr::read_unaligned(p as *const u16));
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)))
}

/// # Safety
/// AVX2/FMA/F16C must be available; `w` must hold `nb` Q4_0 blocks and `x` `nb` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0_body(w: *const u8, x: *const BlockQ8, nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let eight = _mm256_set1_epi8(8);
    for i in 0..nb {
        let b = w.add(i * q4_0::BLOCK_BYTES);
        let y = &*x.add(i);
        let d = _mm256_set1_ps(f16_at(b) * y.d);
        let qw = _mm256_sub_epi8(nibbles(b.add(2)), eight);
        let qy = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
        acc = _mm256_fmadd_ps(d, mul_sum_i8(qw, qy), acc);
    }
    hsum_ps(acc)
}

/// # Safety
/// AVX2/FMA/F16C must be available; `w` must hold `nb` Q4_1 blocks and `x` `nb` blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_1_body(w: *const u8, x: *const BlockQ8, nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    // Lane 1 collects Σ m_w·s_x (lane 0 is scratch).
    let mut acc_m = _mm_setzero_ps();
    for i in 0..nb {
        let b = w.add(i * q4_1::BLOCK_BYTES);
        let y = &*x.add(i);
        // [d_w, m_w] from the block's two f16s, times [d_x, s_x].
        let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(b as *const i32)));
        // `d` and `s` are the first 8 bytes of the `repr(C)` block.
        let ds = _mm_castsi128_ps(_mm_cvtsi64_si128(std::ptr::read_unaligned(
            x.add(i) as *const i64
        )));
        let prod = _mm_mul_ps(dm, ds);
        acc_m = _mm_add_ps(acc_m, prod);
        let qw = nibbles(b.add(4));
        let qy = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
        acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(prod), mul_sum_u8_i8(qw, qy), acc);
    }
    hsum_ps(acc) + _mm_cvtss_f32(_mm_shuffle_ps::<1>(acc_m, acc_m))
}

/// # Safety
/// AVX2/FMA/F16C must be available; `w` must hold `nb` Q8_0 blocks and `x` `nb` blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_body(w: *const u8, x: *const BlockQ8, nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        let b = w.add(i * q8_0::BLOCK_BYTES);
        let y = &*x.add(i);
        let d = _mm256_set1_ps(f16_at(b) * y.d);
        let qw = _mm256_loadu_si256(b.add(2) as *const __m256i);
        let qy = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
        acc = _mm256_fmadd_ps(d, mul_sum_i8(qw, qy), acc);
    }
    hsum_ps(acc)
}

/// `d_w` (broadcast) times the `d` of block `i` of the four rows of `x`:
/// the four products, in both halves, each the `d_w · d_x` a one-row
/// kernel forms.
///
/// # Safety
/// AVX2 must be available; `x.d` must hold `i + 1` entries.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn scales_x4(d_w: __m256, x: &Q8x4<'_>, i: usize) -> __m256 {
    _mm256_mul_ps(
        d_w,
        _mm256_broadcast_ps(&*(x.d.as_ptr().add(i) as *const __m128)),
    )
}

/// Lane `R` of each half of `v`, in every lane: one in-lane shuffle per row
/// (cheaper than a cross-lane broadcast).
#[inline]
#[target_feature(enable = "avx2")]
fn lane<const R: i32>(v: __m256) -> __m256 {
    match R {
        0 => _mm256_permute_ps::<0x00>(v),
        1 => _mm256_permute_ps::<0x55>(v),
        2 => _mm256_permute_ps::<0xAA>(v),
        _ => _mm256_permute_ps::<0xFF>(v),
    }
}

/// Q4_0 (`Q4 = true`: nibbles minus 8) or Q8_0 weights against `G` groups
/// of four rows: each weight block is unpacked once for all of them.
///
/// Batch invariance: every row gets exactly the floating-point operations
/// of the one-row kernel ([`q4_0_body`], [`q8_0_body`]), which decode and
/// the rows left over from groups of four run: its own 8-lane accumulator,
/// the same scale `d_w · d_x` (formed for four rows in one multiply), one
/// FMA per block and the same horizontal sum. So a row's result is bit for
/// bit the same whatever other rows share the call (continuous batching).
/// (Gathering four rows' integer sums into one vector, one conversion and
/// FMA for four, is cheaper but sums in another order.)
///
/// # Safety
/// AVX2/FMA/F16C must be available; `w` must hold `nb` blocks of
/// `block_bytes`, and `x` `nb` blocks per row and `nb` scales.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn signed_x4_body<const Q4: bool, const G: usize>(
    w: *const u8,
    block_bytes: usize,
    x: [&Q8x4<'_>; G],
    nb: usize,
) -> [[f32; 4]; G] {
    let mut acc = [[_mm256_setzero_ps(); 4]; G];
    for i in 0..nb {
        let b = w.add(i * block_bytes);
        let qw = if Q4 {
            _mm256_sub_epi8(nibbles(b.add(2)), _mm256_set1_epi8(8))
        } else {
            _mm256_loadu_si256(b.add(2) as *const __m256i)
        };
        let aw = _mm256_sign_epi8(qw, qw);
        // Broadcast, then converted: through `f16_at` the compiler inserted
        // the f16 into a live register (here an accumulator), a false
        // dependency on the previous block (~20% slower). Same value.
        let d_w = _mm256_cvtph_ps(_mm_set1_epi16(std::ptr::read_unaligned(b as *const i16)));
        for g in 0..G {
            let scales = scales_x4(d_w, x[g], i);
            let row = |r: usize| {
                let y = &*x[g].rows[r].as_ptr().add(i);
                let qy = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
                mul_sum_u8_i8(aw, _mm256_sign_epi8(qy, qw))
            };
            acc[g][0] = _mm256_fmadd_ps(lane::<0>(scales), row(0), acc[g][0]);
            acc[g][1] = _mm256_fmadd_ps(lane::<1>(scales), row(1), acc[g][1]);
            acc[g][2] = _mm256_fmadd_ps(lane::<2>(scales), row(2), acc[g][2]);
            acc[g][3] = _mm256_fmadd_ps(lane::<3>(scales), row(3), acc[g][3]);
        }
    }
    acc.map(|a| a.map(|a| hsum_ps(a)))
}

/// Q4_1 weights against `G` groups of four rows, each weight block
/// unpacked once for all of them; every row gets exactly the operations of
/// [`q4_1_body`] (batch invariance, as in [`signed_x4_body`]).
///
/// # Safety
/// AVX2/FMA/F16C must be available; `w` must hold `nb` Q4_1 blocks, and `x`
/// `nb` blocks per row and `nb` scales and sums.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_1_x4_body<const G: usize>(
    w: *const u8,
    x: [&Q8x4<'_>; G],
    nb: usize,
) -> [[f32; 4]; G] {
    let mut acc = [[_mm256_setzero_ps(); 4]; G];
    // Lane r collects Σ m_w·s_x of row r: the products and sums of lane 1
    // of `q4_1_body`'s `acc_m`, in the same order.
    let mut acc_m = [_mm_setzero_ps(); G];
    for i in 0..nb {
        let b = w.add(i * q4_1::BLOCK_BYTES);
        // [d_w, m_w, d_w, m_w], broadcast then converted (see `signed_x4_body`).
        let dm = _mm_cvtph_ps(_mm_set1_epi32(std::ptr::read_unaligned(b as *const i32)));
        let (d_w, m_w) = (_mm256_broadcastss_ps(dm), _mm_movehdup_ps(dm));
        let qw = nibbles(b.add(4));
        for g in 0..G {
            let s4 = _mm_loadu_ps(x[g].s.as_ptr().add(i) as *const f32);
            acc_m[g] = _mm_add_ps(acc_m[g], _mm_mul_ps(m_w, s4));
            let scales = scales_x4(d_w, x[g], i);
            let row = |r: usize| {
                let y = &*x[g].rows[r].as_ptr().add(i);
                mul_sum_u8_i8(qw, _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i))
            };
            acc[g][0] = _mm256_fmadd_ps(lane::<0>(scales), row(0), acc[g][0]);
            acc[g][1] = _mm256_fmadd_ps(lane::<1>(scales), row(1), acc[g][1]);
            acc[g][2] = _mm256_fmadd_ps(lane::<2>(scales), row(2), acc[g][2]);
            acc[g][3] = _mm256_fmadd_ps(lane::<3>(scales), row(3), acc[g][3]);
        }
    }
    let mut out = [[0f32; 4]; G];
    for g in 0..G {
        let mut m = [0f32; 4];
        _mm_storeu_ps(m.as_mut_ptr(), acc_m[g]);
        for r in 0..4 {
            out[g][r] = hsum_ps(acc[g][r]) + m[r];
        }
    }
    out
}

/// [`crate::quant::quantize_row`] eight values at a time, with the same
/// bits: the max is exact in any order, `x · (1/d)` is the same product,
/// and rounding half away from zero is `trunc` plus one step away from zero
/// when the (exact) remainder is at least one half.
///
/// # Safety
/// AVX2/FMA/F16C must be available; `x` must hold `nb * 32` values and
/// `out` `nb` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8_body(x: *const f32, out: *mut BlockQ8, nb: usize) {
    let sign = _mm256_set1_ps(-0.0);
    let (half, one) = (_mm256_set1_ps(0.5), _mm256_set1_ps(1.0));
    // `packs` interleaves the 128-bit halves; this puts the values back in order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for b in 0..nb {
        let p = x.add(b * QK);
        let v = [0, 1, 2, 3].map(|k| _mm256_loadu_ps(p.add(8 * k)));
        let a = v.map(|v| _mm256_andnot_ps(sign, v));
        let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        let d = amax / 127.0;
        let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
        let q = v.map(|v| {
            let s = _mm256_mul_ps(v, id);
            let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(s);
            let rest = _mm256_andnot_ps(sign, _mm256_sub_ps(s, t));
            let away = _mm256_cmp_ps::<_CMP_GE_OQ>(rest, half);
            let step = _mm256_and_ps(away, _mm256_or_ps(one, _mm256_and_ps(sign, s)));
            _mm256_cvttps_epi32(_mm256_add_ps(t, step))
        });
        let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let sum = _mm_add_epi32(
            _mm256_castsi256_si128(sum),
            _mm256_extracti128_si256::<1>(sum),
        );
        let sum = _mm_add_epi32(sum, _mm_unpackhi_epi64(sum, sum));
        let sum = _mm_cvtsi128_si32(_mm_add_epi32(sum, _mm_shuffle_epi32::<1>(sum)));
        let bytes = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        let block = &mut *out.add(b);
        _mm256_storeu_si256(
            block.qs.as_mut_ptr() as *mut __m256i,
            _mm256_permutevar8x32_epi32(bytes, order),
        );
        block.d = half::f16::from_f32(d).to_f32();
        block.s = half::f16::from_f32(d * sum as f32).to_f32();
    }
}

/// # Safety
/// AVX2/FMA must be available; `w` and `x` must hold `n` values each.
#[target_feature(enable = "avx2,fma")]
unsafe fn f32_body(w: *const f32, x: *const f32, n: usize) -> f32 {
    let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= n {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w.add(i)), _mm256_loadu_ps(x.add(i)), a0);
        a1 = _mm256_fmadd_ps(
            _mm256_loadu_ps(w.add(i + 8)),
            _mm256_loadu_ps(x.add(i + 8)),
            a1,
        );
        i += 16;
    }
    let mut sum = hsum_ps(_mm256_add_ps(a0, a1));
    while i < n {
        sum += *w.add(i) * *x.add(i);
        i += 1;
    }
    sum
}

/// # Safety
/// AVX2/FMA/F16C must be available; `w` must hold `n` f16 values, `x` `n` f32s.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_body(w: *const u8, x: *const f32, n: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        let wv = _mm256_cvtph_ps(_mm_loadu_si128(w.add(2 * i) as *const __m128i));
        acc = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x.add(i)), acc);
        i += 8;
    }
    let mut sum = hsum_ps(acc);
    while i < n {
        sum += f16_at(w.add(2 * i)) * *x.add(i);
        i += 1;
    }
    sum
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::quant::{self, quantize_row, QK};
    use rand::{Rng, SeedableRng};

    pub(in crate::simd) fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    /// Random weight bytes of `nb` blocks of `block_bytes`, with a sane f16
    /// scale (and min) at the front of each block.
    pub(in crate::simd) fn random_blocks(
        rng: &mut impl Rng,
        nb: usize,
        block_bytes: usize,
        scales: usize,
    ) -> Vec<u8> {
        let mut w: Vec<u8> = (0..nb * block_bytes).map(|_| rng.random()).collect();
        for b in w.chunks_exact_mut(block_bytes) {
            for s in 0..scales {
                let v = half::f16::from_f32(rng.random_range(-0.1f32..0.1));
                b[2 * s..2 * s + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        w
    }

    pub(in crate::simd) fn random_q8(rng: &mut impl Rng, nb: usize) -> Vec<BlockQ8> {
        let x: Vec<f32> = (0..nb * QK).map(|_| rng.random_range(-3f32..3.0)).collect();
        let mut q = vec![BlockQ8::default(); nb];
        quantize_row(&x, &mut q);
        q
    }

    /// The Q8 products of `dtype`'s entry.
    fn q8(k: &Kernels, dtype: WeightDType) -> Q8Products {
        match k.of(dtype).map(|t| t.products) {
            Some(Products::Q8(p)) => p,
            _ => panic!("{dtype} has no Q8 products"),
        }
    }

    pub(in crate::simd) fn close(a: f32, b: f32) -> bool {
        (a - b).abs() <= 1e-4 * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn row_kernels_equal_the_single_row_kernel_exactly() {
        let Some(k) = kernels() else {
            eprintln!("no AVX2 here: nothing to compare");
            return;
        };
        let mut rng = rng();
        // Odd and even row counts: pairs plus a last single row.
        for (nb, rows) in [(1, 1), (18, 2), (18, 5), (48, 7)] {
            let x = random_q8(&mut rng, nb);
            // (block bytes, f16 scales in a block, kernels)
            for (bb, scales, p) in [
                (q4_1::BLOCK_BYTES, 2, q8(&k, WeightDType::Q4_1)),
                (q8_0::BLOCK_BYTES, 1, q8(&k, WeightDType::Q8_0)),
            ] {
                let w = random_blocks(&mut rng, nb * rows, bb, scales);
                let rb = nb * bb;
                let mut out = vec![0.0; rows];
                (p.rows)(&w, rb, &x, &mut out);
                for (j, o) in out.iter().enumerate() {
                    let one = (p.one)(&w[j * rb..(j + 1) * rb], &x);
                    assert_eq!(
                        o.to_bits(),
                        one.to_bits(),
                        "block bytes {bb}, nb={nb} row {j}/{rows}"
                    );
                }
            }
        }
    }

    #[test]
    fn quantised_dots_match_scalar_and_multi_row_equal_one_row() {
        let Some(k) = kernels() else {
            eprintln!("no AVX2 here: nothing to compare");
            return;
        };
        let mut rng = rng();
        for nb in [1, 2, 18, 48] {
            let x = random_q8(&mut rng, nb);
            let w = random_blocks(&mut rng, nb, q4_0::BLOCK_BYTES, 1);
            let (s, v) = (
                quant::q4_0::dot(&w, &x),
                (q8(&k, WeightDType::Q4_0).one)(&w, &x),
            );
            assert!(close(s, v), "q4_0 nb={nb}: {s} vs {v}");
            let w = random_blocks(&mut rng, nb, q4_1::BLOCK_BYTES, 2);
            let (s, v) = (
                quant::q4_1::dot(&w, &x),
                (q8(&k, WeightDType::Q4_1).one)(&w, &x),
            );
            assert!(close(s, v), "q4_1 nb={nb}: {s} vs {v}");
            let mut w = random_blocks(&mut rng, nb, q8_0::BLOCK_BYTES, 1);
            // ggml's Q8_0 weights never hold -128 (they are rounded like the activations).
            for b in w.chunks_exact_mut(q8_0::BLOCK_BYTES) {
                for q in &mut b[2..] {
                    if *q == 0x80 {
                        *q = 0x81;
                    }
                }
            }
            let (s, v) = (
                quant::q8_0::dot(&w, &x),
                (q8(&k, WeightDType::Q8_0).one)(&w, &x),
            );
            assert!(close(s, v), "q8_0 nb={nb}: {s} vs {v}");
            // Four and eight rows at once give each row's one-row result,
            // bit for bit (batch invariance).
            let rows: Vec<Vec<BlockQ8>> = (0..8).map(|_| random_q8(&mut rng, nb)).collect();
            let group =
                |g: usize| -> [&[BlockQ8]; 4] { std::array::from_fn(|r| &rows[4 * g + r][..]) };
            let scales = [0, 1].map(|g| quant::interleave_scales(group(g), nb));
            let x4 = [0, 1].map(|g| Q8x4 {
                rows: group(g),
                d: &scales[g].0,
                s: &scales[g].1,
            });
            let w0 = random_blocks(&mut rng, nb, q4_0::BLOCK_BYTES, 1);
            let w1 = random_blocks(&mut rng, nb, q4_1::BLOCK_BYTES, 2);
            let cases: [(&str, &[u8], Q8Products); 3] = [
                ("q4_0", &w0, q8(&k, WeightDType::Q4_0)),
                ("q4_1", &w1, q8(&k, WeightDType::Q4_1)),
                ("q8_0", &w, q8(&k, WeightDType::Q8_0)),
            ];
            for (name, wb, p) in cases {
                let (one, four, eight) = (p.one, p.four, p.eight);
                let got8 = eight(wb, &x4[0], &x4[1]);
                let got4 = four(wb, &x4[1]);
                for (r, row) in rows.iter().enumerate() {
                    let want = one(wb, row).to_bits();
                    assert_eq!(got8[r].to_bits(), want, "{name} x8 nb={nb} row {r}");
                    if r >= 4 {
                        assert_eq!(got4[r - 4].to_bits(), want, "{name} x4 nb={nb} row {r}");
                    }
                }
            }
        }
    }

    #[test]
    fn quantisation_gives_the_portable_bits() {
        let Some(k) = kernels() else {
            return;
        };
        let mut rng = rng();
        for nb in [1, 2, 18, 48] {
            // Random rows, rows of exact ties (multiples of d/2 with d = 1),
            // all-zero blocks and tiny values.
            let random: Vec<f32> = (0..nb * QK).map(|_| rng.random_range(-3f32..3.0)).collect();
            let ties: Vec<f32> = (0..nb * QK)
                .map(|j| {
                    if j % QK == 0 {
                        127.0
                    } else {
                        (j % 255) as f32 / 2.0 - 63.5
                    }
                })
                .collect();
            let zeros = vec![0f32; nb * QK];
            let tiny: Vec<f32> = random.iter().map(|v| v * 1e-30).collect();
            for x in [random, ties, zeros, tiny] {
                let mut want = vec![BlockQ8::default(); nb];
                let mut got = vec![BlockQ8::default(); nb];
                quantize_row(&x, &mut want);
                (k.quantize_q8)(&x, &mut got);
                for (b, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(g.qs, w.qs, "nb={nb} block {b}");
                    assert_eq!(g.d.to_bits(), w.d.to_bits(), "nb={nb} block {b}");
                    assert_eq!(g.s.to_bits(), w.s.to_bits(), "nb={nb} block {b}");
                }
            }
        }
    }

    #[test]
    fn float_dots_match_scalar_including_tails() {
        let Some(k) = kernels() else {
            return;
        };
        let mut rng = rng();
        for n in [1, 7, 8, 15, 16, 17, 100, 576] {
            let x: Vec<f32> = (0..n).map(|_| rng.random_range(-1f32..1.0)).collect();
            let w: Vec<f32> = (0..n).map(|_| rng.random_range(-1f32..1.0)).collect();
            let (s, v) = (quant::float::dot_f32(&w, &x), (k.f32)(&w, &x));
            assert!(close(s, v), "f32 n={n}: {s} vs {v}");
            let h: Vec<u8> = w
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect();
            let (s, v) = (quant::float::dot_f16(&h, &x), {
                let Some(Products::Half(dot)) = k.of(WeightDType::F16).map(|t| t.products) else {
                    panic!("F16 has no half-precision products");
                };
                dot(&h, &x)
            });
            assert!(close(s, v), "f16 n={n}: {s} vs {v}");
        }
    }
}
