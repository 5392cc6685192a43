//! AVX2 kernels for Q4_0, Q4_1, Q8_0 and Q4_K rows interleaved in groups of eight (see
//! [`crate::quant::x8`], [`crate::quant::q4_kx8`]): each 32-bit lane
//! carries one weight row, so one broadcast of four activation bytes feeds
//! eight rows; against one activation row (decode) or four (prompts, the
//! weight nibbles unpacked once for the four).
//!
//! Both are one body, generic over the number of activation rows, whose
//! operations for each row do not depend on that number: a row's result is
//! bit for bit the same in any batch (batch invariance, see
//! [`super::Kernels`]); keep it so.

use std::arch::x86_64::*;

use super::avx2::dot_u8_i8_acc;
use crate::quant::x8::{group_block, ROWS};
use crate::quant::{q4_0, q4_1, q4_kx8, q8_0, BlockQ8, BlockQ8K};
use crate::types::each_group;

/// Bytes of a group block of interleaved Q4_0, Q4_1 and Q8_0 rows.
const Q4_0_GROUP: usize = group_block(q4_0::BLOCK_BYTES);
const Q4_1_GROUP: usize = group_block(q4_1::BLOCK_BYTES);
const Q8_0_GROUP: usize = group_block(q8_0::BLOCK_BYTES);

/// Groups of eight rows (`x.len()` group blocks each) against one row of
/// Q8_0 activations with their block sums; `out` gets eight values per
/// group. Installed by `avx2::kernels()` only after the CPU feature check,
/// as are the other functions here.
pub fn rows_q4_0x8(w: &[u8], x: &[BlockQ8], sums: &[i32], out: &mut [f32]) {
    let nb = x.len().min(sums.len());
    each_group(w, nb * Q4_0_GROUP, out, |g| {
        // SAFETY: AVX2/FMA/F16C are present (see above); the group holds
        // `nb` blocks, as do `x` and `sums`.
        let [acc] = unsafe { group_q4_0::<1>(g.as_ptr(), [x.as_ptr()], [sums.as_ptr()], nb) };
        store8(acc)
    });
}

/// One group of eight rows against four activation rows (prompts): the
/// weight nibbles are unpacked once for all four.
pub fn group4_q4_0x8(group: &[u8], x: [&[BlockQ8]; 4], sums: [&[i32]; 4]) -> [[f32; 8]; 4] {
    let nb = x
        .iter()
        .zip(&sums)
        .map(|(x, s)| x.len().min(s.len()))
        .fold(group.len() / Q4_0_GROUP, usize::min);
    // SAFETY: as in `rows_q4_0x8`, for each of the four rows.
    let acc = unsafe {
        group_q4_0::<4>(
            group.as_ptr(),
            x.map(|r| r.as_ptr()),
            sums.map(|s| s.as_ptr()),
            nb,
        )
    };
    acc.map(store8)
}

fn store8(v: __m256) -> [f32; 8] {
    let mut out = [0f32; 8];
    // SAFETY: `out` has room for the 8 floats stored; AVX is present.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
    out
}

/// One group (eight weight rows, one per lane) against `R` activation rows.
///
/// # Safety
/// AVX2/FMA/F16C must be available; `w` must hold `nb` group blocks and
/// each `x[r]` and `sums[r]` `nb` blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_q4_0<const R: usize>(
    w: *const u8,
    x: [*const BlockQ8; R],
    sums: [*const i32; R],
    nb: usize,
) -> [__m256; R] {
    let mut acc = [_mm256_setzero_ps(); R];
    for i in 0..nb {
        let b = w.add(i * Q4_0_GROUP);
        let d_w = _mm256_cvtph_ps(_mm_loadu_si128(b as *const __m128i));
        let (lo, hi) = nibble_chunks(b.add(2 * ROWS));
        for r in 0..R {
            let y = &*x[r].add(i);
            let s = nibble_dot(&lo, &hi, y.qs.as_ptr());
            // Σ (q - 8) y = Σ q y - 8 Σ y.
            let corr = _mm256_set1_epi32(8 * *sums[r].add(i));
            let d = _mm256_mul_ps(d_w, _mm256_set1_ps(y.d));
            acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(s, corr)), acc[r]);
        }
    }
    acc
}

/// The low and high nibbles of a Q4 group block's four 32-byte chunks
/// (at `at`): eight weight rows' 32 elements, one row per 32-bit lane.
///
/// # Safety
/// AVX2 must be available; `at` must point to 128 readable bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn nibble_chunks(at: *const u8) -> ([__m256i; 4], [__m256i; 4]) {
    let m4 = _mm256_set1_epi8(0x0F);
    let mut lo = [_mm256_setzero_si256(); 4];
    let mut hi = [_mm256_setzero_si256(); 4];
    for c in 0..4 {
        let v = _mm256_loadu_si256(at.add(32 * c) as *const __m256i);
        lo[c] = _mm256_and_si256(v, m4);
        hi[c] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
    }
    (lo, hi)
}

/// `Σ q y` of the eight rows (one per lane) whose nibbles are `lo`/`hi`,
/// against activation bytes `yq`: exact integers.
///
/// Without VNNI, the eight `maddubs` products are summed in i16 and widened
/// once (one `madd` instead of eight): a pair sum is at most 2 · 15 · 127 =
/// 3810, eight of them 30480, below i16's 32767 (Q8 activations are within
/// ±127).
///
/// # Safety
/// AVX2 must be available; `yq` must point to 32 readable bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn nibble_dot(lo: &[__m256i; 4], hi: &[__m256i; 4], yq: *const i8) -> __m256i {
    let y = |at: usize| _mm256_set1_epi32(std::ptr::read_unaligned(yq.add(at) as *const i32));
    #[cfg(not(all(target_feature = "avx512vnni", target_feature = "avx512vl")))]
    {
        let mut s16 = _mm256_setzero_si256();
        for c in 0..4 {
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(lo[c], y(4 * c)));
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(hi[c], y(16 + 4 * c)));
        }
        _mm256_madd_epi16(s16, _mm256_set1_epi16(1))
    }
    #[cfg(all(target_feature = "avx512vnni", target_feature = "avx512vl"))]
    {
        let mut s = _mm256_setzero_si256();
        for c in 0..4 {
            s = dot_u8_i8_acc(s, lo[c], y(4 * c));
            s = dot_u8_i8_acc(s, hi[c], y(16 + 4 * c));
        }
        s
    }
}

/// Groups of eight interleaved Q4_1 rows against one row of Q8_1
/// activations (`sums` unused: `s` of each activation block carries them).
pub fn rows_q4_1x8(w: &[u8], x: &[BlockQ8], _sums: &[i32], out: &mut [f32]) {
    let nb = x.len();
    each_group(w, nb * Q4_1_GROUP, out, |g| {
        // SAFETY: as in `rows_q4_0x8`.
        let [acc] = unsafe { group_q4_1::<1>(g.as_ptr(), [x.as_ptr()], nb) };
        store8(acc)
    });
}

/// One group of eight Q4_1 rows against four activation rows (prompts).
pub fn group4_q4_1x8(group: &[u8], x: [&[BlockQ8]; 4], _sums: [&[i32]; 4]) -> [[f32; 8]; 4] {
    let nb = x
        .iter()
        .map(|x| x.len())
        .fold(group.len() / Q4_1_GROUP, usize::min);
    // SAFETY: as in `rows_q4_0x8`, for each of the four rows.
    let acc = unsafe { group_q4_1::<4>(group.as_ptr(), x.map(|r| r.as_ptr()), nb) };
    acc.map(store8)
}

/// One Q4_1 group (eight weight rows, one per lane) against `R` activation
/// rows: per block, `d_w d_x Σ q y` then `m_w s_x` into the row's lanes.
///
/// # Safety
/// AVX2/FMA/F16C must be available; `w` must hold `nb` group blocks and
/// each `x[r]` `nb` blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_q4_1<const R: usize>(
    w: *const u8,
    x: [*const BlockQ8; R],
    nb: usize,
) -> [__m256; R] {
    let mut acc = [_mm256_setzero_ps(); R];
    for i in 0..nb {
        let b = w.add(i * Q4_1_GROUP);
        let d_w = _mm256_cvtph_ps(_mm_loadu_si128(b as *const __m128i));
        let m_w = _mm256_cvtph_ps(_mm_loadu_si128(b.add(2 * ROWS) as *const __m128i));
        let (lo, hi) = nibble_chunks(b.add(4 * ROWS));
        for r in 0..R {
            let y = &*x[r].add(i);
            let s = nibble_dot(&lo, &hi, y.qs.as_ptr());
            let d = _mm256_mul_ps(d_w, _mm256_set1_ps(y.d));
            acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc[r]);
            acc[r] = _mm256_fmadd_ps(m_w, _mm256_set1_ps(y.s), acc[r]);
        }
    }
    acc
}

/// Groups of eight interleaved Q8_0 rows against one row of Q8_0
/// activations (`sums` unused: the weights are signed, no offset to undo).
pub fn rows_q8_0x8(w: &[u8], x: &[BlockQ8], _sums: &[i32], out: &mut [f32]) {
    let nb = x.len();
    each_group(w, nb * Q8_0_GROUP, out, |g| {
        // SAFETY: as in `rows_q4_0x8`.
        let [acc] = unsafe { group_q8_0::<1>(g.as_ptr(), [x.as_ptr()], nb) };
        store8(acc)
    });
}

/// One group of eight Q8_0 rows against four activation rows (prompts).
pub fn group4_q8_0x8(group: &[u8], x: [&[BlockQ8]; 4], _sums: [&[i32]; 4]) -> [[f32; 8]; 4] {
    let nb = x
        .iter()
        .map(|x| x.len())
        .fold(group.len() / Q8_0_GROUP, usize::min);
    // SAFETY: as in `rows_q4_0x8`, for each of the four rows.
    let acc = unsafe { group_q8_0::<4>(group.as_ptr(), x.map(|r| r.as_ptr()), nb) };
    acc.map(store8)
}

/// One Q8_0 group (eight weight rows, one per lane) against `R` activation
/// rows: `|w|` times `y` with `w`'s sign, as `maddubs` needs one operand
/// unsigned (ggml's Q8_0 weights are in -127..=127).
///
/// # Safety
/// AVX2/FMA/F16C must be available; `w` must hold `nb` group blocks and
/// each `x[r]` `nb` blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_q8_0<const R: usize>(
    w: *const u8,
    x: [*const BlockQ8; R],
    nb: usize,
) -> [__m256; R] {
    let mut acc = [_mm256_setzero_ps(); R];
    for i in 0..nb {
        let b = w.add(i * Q8_0_GROUP);
        let d_w = _mm256_cvtph_ps(_mm_loadu_si128(b as *const __m128i));
        let mut s = [_mm256_setzero_si256(); R];
        for c in 0..8 {
            let v = _mm256_loadu_si256(b.add(2 * ROWS + 32 * c) as *const __m256i);
            let abs = _mm256_sign_epi8(v, v);
            for r in 0..R {
                let yq = (*x[r].add(i)).qs.as_ptr();
                let yb = _mm256_set1_epi32(std::ptr::read_unaligned(yq.add(4 * c) as *const i32));
                s[r] = dot_u8_i8_acc(s[r], abs, _mm256_sign_epi8(yb, v));
            }
        }
        for r in 0..R {
            let d = _mm256_mul_ps(d_w, _mm256_set1_ps((*x[r].add(i)).d));
            acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s[r]), acc[r]);
        }
    }
    acc
}

/// Groups of eight interleaved Q4_K rows (see [`crate::quant::q4_kx8`])
/// against one row of Q8_K activations; eight results per group.
pub fn rows_q4_kx8(w: &[u8], x: &[BlockQ8K], out: &mut [f32]) {
    let nb = x.len();
    each_group(w, nb * q4_kx8::GROUP_BLOCK, out, |g| {
        // SAFETY: as in `rows_q4_0x8`.
        let [acc] = unsafe { group_q4_k::<1>(g.as_ptr(), [x.as_ptr()], nb) };
        store8(acc)
    });
}

/// One group of eight Q4_K rows against four activation rows (prompts).
pub fn group4_q4_kx8(group: &[u8], x: [&[BlockQ8K]; 4]) -> [[f32; 8]; 4] {
    let nb = x
        .iter()
        .map(|x| x.len())
        .fold(group.len() / q4_kx8::GROUP_BLOCK, usize::min);
    // SAFETY: as in `rows_q4_0x8`, for each of the four rows.
    let acc = unsafe { group_q4_k::<4>(group.as_ptr(), x.map(|r| r.as_ptr()), nb) };
    acc.map(store8)
}

/// Eight u8 at `p` as eight f32 lanes.
///
/// # Safety
/// `p` must point to 8 readable bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn bytes_f32(p: *const u8) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i)))
}

/// One Q4_K group (eight weight rows, one per lane) against `R` activation rows.
///
/// # Safety
/// AVX2/FMA/F16C must be available; `w` must hold `nb` group blocks and
/// each `x[r]` `nb` blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_q4_k<const R: usize>(
    w: *const u8,
    x: [*const BlockQ8K; R],
    nb: usize,
) -> [__m256; R] {
    const SCALES: usize = 32;
    const MINS: usize = 96;
    const QS: usize = 160;
    let m4 = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); R];
    for i in 0..nb {
        let b = w.add(i * q4_kx8::GROUP_BLOCK);
        let y: [&BlockQ8K; R] = std::array::from_fn(|r| &*x[r].add(i));
        // Σ_j sc_rj S_rj and Σ_j m_rj bsum_j, one lane per weight row.
        let mut blk = [_mm256_setzero_ps(); R];
        let mut mins = [_mm256_setzero_ps(); R];
        for p in 0..4 {
            let mut s_lo = [_mm256_setzero_si256(); R];
            let mut s_hi = [_mm256_setzero_si256(); R];
            for t in 0..8 {
                let v = _mm256_loadu_si256(b.add(QS + 32 * (8 * p + t)) as *const __m256i);
                let lo = _mm256_and_si256(v, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
                let at = 64 * p + 4 * t;
                for r in 0..R {
                    let yq = y[r].qs.as_ptr();
                    let y_lo =
                        _mm256_set1_epi32(std::ptr::read_unaligned(yq.add(at) as *const i32));
                    let y_hi =
                        _mm256_set1_epi32(std::ptr::read_unaligned(yq.add(at + 32) as *const i32));
                    s_lo[r] = dot_u8_i8_acc(s_lo[r], lo, y_lo);
                    s_hi[r] = dot_u8_i8_acc(s_hi[r], hi, y_hi);
                }
            }
            let (j_lo, j_hi) = (2 * p, 2 * p + 1);
            let (sc_lo, sc_hi) = (
                bytes_f32(b.add(SCALES + 8 * j_lo)),
                bytes_f32(b.add(SCALES + 8 * j_hi)),
            );
            let (m_lo, m_hi) = (
                bytes_f32(b.add(MINS + 8 * j_lo)),
                bytes_f32(b.add(MINS + 8 * j_hi)),
            );
            for r in 0..R {
                blk[r] = _mm256_fmadd_ps(sc_lo, _mm256_cvtepi32_ps(s_lo[r]), blk[r]);
                blk[r] = _mm256_fmadd_ps(sc_hi, _mm256_cvtepi32_ps(s_hi[r]), blk[r]);
                let bsum =
                    |j: usize| f32::from(y[r].bsums[2 * j]) + f32::from(y[r].bsums[2 * j + 1]);
                mins[r] = _mm256_fmadd_ps(m_lo, _mm256_set1_ps(bsum(j_lo)), mins[r]);
                mins[r] = _mm256_fmadd_ps(m_hi, _mm256_set1_ps(bsum(j_hi)), mins[r]);
            }
        }
        let d_w = _mm256_cvtph_ps(_mm_loadu_si128(b as *const __m128i));
        let dmin_w = _mm256_cvtph_ps(_mm_loadu_si128(b.add(16) as *const __m128i));
        for r in 0..R {
            let yd = _mm256_set1_ps(y[r].d);
            acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(d_w, yd), blk[r], acc[r]);
            acc[r] = _mm256_fnmadd_ps(_mm256_mul_ps(dmin_w, yd), mins[r], acc[r]);
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{quantize_row, x8, QK};
    use rand::{Rng, SeedableRng};

    #[test]
    fn q4_k_groups_equal_the_portable_group_product() {
        if !(is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c"))
        {
            return;
        }
        use crate::quant::{q4_k, q8_k, QK_K};
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let (rows, nb) = (16, 3);
        let mut data: Vec<u8> = (0..rows * nb * q4_k::BLOCK_BYTES)
            .map(|_| rng.random())
            .collect();
        for b in data.chunks_exact_mut(q4_k::BLOCK_BYTES) {
            for at in [0, 2] {
                let v = half::f16::from_f32(rng.random_range(0.001f32..0.05));
                b[at..at + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        let packed = q4_kx8::pack(&data, rows, nb);
        let xf: Vec<f32> = (0..nb * QK_K)
            .map(|_| rng.random_range(-3f32..3.0))
            .collect();
        let mut x = vec![BlockQ8K::default(); nb];
        q8_k::quantize_row(&xf, &mut x);
        let mut got = vec![0f32; rows];
        rows_q4_kx8(&packed, &x, &mut got);
        let group = &packed[..nb * q4_kx8::GROUP_BLOCK];
        let four = group4_q4_kx8(group, [&x[..], &x[..], &x[..], &x[..]]);
        assert!(
            four.iter().all(|r| r[..] == got[..ROWS]),
            "{four:?} vs {got:?}"
        );
        for (g, group) in packed.chunks_exact(nb * q4_kx8::GROUP_BLOCK).enumerate() {
            let want = q4_kx8::dot_group(group, &x);
            for r in 0..ROWS {
                let (a, b) = (got[ROWS * g + r], want[r]);
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "group {g} row {r}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn q8_0_groups_equal_the_portable_group_product() {
        if !(is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c"))
        {
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let (rows, nb) = (16, 4);
        let mut data: Vec<u8> = (0..rows * nb * q8_0::BLOCK_BYTES)
            .map(|_| rng.random())
            .collect();
        for b in data.chunks_exact_mut(q8_0::BLOCK_BYTES) {
            let d = half::f16::from_f32(rng.random_range(0.001f32..0.05));
            b[..2].copy_from_slice(&d.to_le_bytes());
            for q in &mut b[2..] {
                *q = (*q as i8).max(-127) as u8;
            }
        }
        let packed = x8::pack(&data, rows, nb, x8::Q8_0);
        let xf: Vec<f32> = (0..nb * QK).map(|_| rng.random_range(-3f32..3.0)).collect();
        let mut x = vec![BlockQ8::default(); nb];
        quantize_row(&xf, &mut x);
        let mut got = vec![0f32; rows];
        rows_q8_0x8(&packed, &x, &[], &mut got);
        let four = group4_q8_0x8(&packed[..nb * Q8_0_GROUP], [&x[..]; 4], [&[][..]; 4]);
        assert!(
            four.iter().all(|r| r[..] == got[..ROWS]),
            "{four:?} vs {got:?}"
        );
        for (g, group) in packed.chunks_exact(nb * Q8_0_GROUP).enumerate() {
            let want = x8::dot_group_q8_0(group, &x);
            for r in 0..ROWS {
                let (a, b) = (got[ROWS * g + r], want[r]);
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "group {g} row {r}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn equals_the_portable_group_product() {
        if !(is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c"))
        {
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let (rows, nb) = (24, 5);
        let mut data: Vec<u8> = (0..rows * nb * q4_0::BLOCK_BYTES)
            .map(|_| rng.random())
            .collect();
        for b in data.chunks_exact_mut(q4_0::BLOCK_BYTES) {
            let d = half::f16::from_f32(rng.random_range(0.001f32..0.05));
            b[..2].copy_from_slice(&d.to_le_bytes());
        }
        let packed = x8::pack(&data, rows, nb, x8::Q4_0);
        let xf: Vec<f32> = (0..nb * QK).map(|_| rng.random_range(-3f32..3.0)).collect();
        let mut x = vec![BlockQ8::default(); nb];
        quantize_row(&xf, &mut x);
        let sums = x8::block_sums(&x);
        let mut got = vec![0f32; rows];
        rows_q4_0x8(&packed, &x, &sums, &mut got);
        let group = &packed[..nb * Q4_0_GROUP];
        let four = group4_q4_0x8(group, [&x[..]; 4], [&sums[..]; 4]);
        assert!(
            four.iter().all(|r| r[..] == got[..ROWS]),
            "{four:?} vs {got:?}"
        );
        for (g, group) in packed.chunks_exact(nb * Q4_0_GROUP).enumerate() {
            let want = x8::dot_group_q4_0(group, &x, &sums);
            for r in 0..ROWS {
                let (a, b) = (got[ROWS * g + r], want[r]);
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "group {g} row {r}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn q4_1_groups_equal_the_portable_group_product() {
        if !(is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c"))
        {
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let (rows, nb) = (24, 5);
        let mut data: Vec<u8> = (0..rows * nb * q4_1::BLOCK_BYTES)
            .map(|_| rng.random())
            .collect();
        for b in data.chunks_exact_mut(q4_1::BLOCK_BYTES) {
            let d = half::f16::from_f32(rng.random_range(0.001f32..0.05));
            let m = half::f16::from_f32(rng.random_range(-0.2f32..0.0));
            b[..2].copy_from_slice(&d.to_le_bytes());
            b[2..4].copy_from_slice(&m.to_le_bytes());
        }
        let packed = x8::pack(&data, rows, nb, x8::Q4_1);
        let rows_x: Vec<Vec<BlockQ8>> = (0..4)
            .map(|_| {
                let xf: Vec<f32> = (0..nb * QK).map(|_| rng.random_range(-3f32..3.0)).collect();
                let mut x = vec![BlockQ8::default(); nb];
                quantize_row(&xf, &mut x);
                x
            })
            .collect();
        let group = &packed[..nb * Q4_1_GROUP];
        let four = group4_q4_1x8(group, std::array::from_fn(|r| &rows_x[r][..]), [&[][..]; 4]);
        for (r, x) in rows_x.iter().enumerate() {
            let mut got = vec![0f32; rows];
            rows_q4_1x8(&packed, x, &[], &mut got);
            // A row's values do not depend on the rows beside it.
            assert_eq!(four[r][..], got[..ROWS], "activation row {r}");
            for (g, group) in packed.chunks_exact(nb * Q4_1_GROUP).enumerate() {
                let want = x8::dot_group_q4_1(group, x);
                for lane in 0..ROWS {
                    let (a, b) = (got[ROWS * g + lane], want[lane]);
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "group {g} row {lane}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
