//! AVX2 dot products of K-quant rows against Q8_K activations, following
//! ggml's x86 kernels; each is checked against the scalar code of
//! [`crate::quant`] in the tests below.
//!
//! The one-row (decode) and four-row (prompt) kernels are one body, generic
//! over the number of activation rows, whose operations for each row do not
//! depend on that number: a row's result is bit for bit the same in any
//! batch (batch invariance, see [`super::Kernels`]); keep it so.

use std::arch::x86_64::*;

use super::avx2::{f16_at, hsum_ps, rows_extent};
use crate::quant::{q4_k, q6_k, BlockQ8K};

// The safe wrappers are only installed by `avx2::kernels()` after the CPU
// feature check, which makes calling the bodies sound; they bound the block
// count by every slice.

pub fn dot_q4_k(w: &[u8], x: &[BlockQ8K]) -> f32 {
    let nb = x.len().min(w.len() / q4_k::BLOCK_BYTES);
    // SAFETY: see above; `nb` blocks of `w` and `x` are in bounds.
    unsafe { q4_k_body::<1>(w.as_ptr(), [x.as_ptr()], nb)[0] }
}

pub fn dot_q6_k(w: &[u8], x: &[BlockQ8K]) -> f32 {
    let nb = x.len().min(w.len() / q6_k::BLOCK_BYTES);
    // SAFETY: as in `dot_q4_k`.
    unsafe { q6_k_body::<1>(w.as_ptr(), [x.as_ptr()], nb)[0] }
}

/// Blocks every slice of a four-row call has.
fn blocks4(w: &[u8], block_bytes: usize, x: &[&[BlockQ8K]; 4]) -> usize {
    x.iter()
        .map(|r| r.len())
        .fold(w.len() / block_bytes, usize::min)
}

pub fn dot4_q4_k(w: &[u8], x: [&[BlockQ8K]; 4]) -> [f32; 4] {
    let nb = blocks4(w, q4_k::BLOCK_BYTES, &x);
    // SAFETY: as in `dot_q4_k`, for each of the four rows.
    unsafe { q4_k_body::<4>(w.as_ptr(), x.map(|r| r.as_ptr()), nb) }
}

pub fn dot4_q6_k(w: &[u8], x: [&[BlockQ8K]; 4]) -> [f32; 4] {
    let nb = blocks4(w, q6_k::BLOCK_BYTES, &x);
    // SAFETY: as in `dot4_q4_k`.
    unsafe { q6_k_body::<4>(w.as_ptr(), x.map(|r| r.as_ptr()), nb) }
}

pub fn rows_q4_k(w: &[u8], rb: usize, x: &[BlockQ8K], out: &mut [f32]) {
    let (nb, n) = rows_extent(w, rb, q4_k::BLOCK_BYTES, x, out);
    // SAFETY: as in `dot_q4_k`; each of the `n` rows of `w` holds `nb` blocks.
    unsafe { q4_k_rows_body(w.as_ptr(), rb, x.as_ptr(), nb, &mut out[..n]) }
}

pub fn rows_q6_k(w: &[u8], rb: usize, x: &[BlockQ8K], out: &mut [f32]) {
    let (nb, n) = rows_extent(w, rb, q6_k::BLOCK_BYTES, x, out);
    // SAFETY: as in `rows_q4_k`.
    unsafe { q6_k_rows_body(w.as_ptr(), rb, x.as_ptr(), nb, &mut out[..n]) }
}

/// # Safety
/// As [`q4_k_body`] for each of the `out.len()` rows, `rb` bytes apart.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_rows_body(w: *const u8, rb: usize, x: *const BlockQ8K, nb: usize, out: &mut [f32]) {
    for (j, o) in out.iter_mut().enumerate() {
        *o = q4_k_body::<1>(w.add(j * rb), [x], nb)[0];
    }
}

/// # Safety
/// As [`q6_k_body`] for each of the `out.len()` rows, `rb` bytes apart.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_rows_body(w: *const u8, rb: usize, x: *const BlockQ8K, nb: usize, out: &mut [f32]) {
    for (j, o) in out.iter_mut().enumerate() {
        *o = q6_k_body::<1>(w.add(j * rb), [x], nb)[0];
    }
}

/// The eight 6-bit scales and eight minimums of a Q4_K/Q5_K block as
/// bytes (scales first), from the 12 packed bytes (ggml's `utmp` unpacking).
///
/// # Safety
/// `s` must point to 12 readable bytes.
#[inline]
unsafe fn scales_and_mins(s: *const u8) -> [u32; 4] {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let r = |i: usize| std::ptr::read_unaligned(s.add(4 * i) as *const u32);
    let (u0, u1, u2) = (r(0), r(1), r(2));
    [
        u0 & KMASK1,
        (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4),
        u1 & KMASK1,
        ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4),
    ]
}

/// One weight row against `R` activation rows: the weight block's
/// nibbles and scales are unpacked once for all `R`.
///
/// # Safety
/// AVX2/FMA/F16C must be available; `w` must hold `nb` Q4_K blocks and
/// each `x[r]` `nb` blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_body<const R: usize>(w: *const u8, x: [*const BlockQ8K; R], nb: usize) -> [f32; R] {
    let m4 = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut acc_m = [_mm_setzero_ps(); R];
    for i in 0..nb {
        let b = w.add(i * q4_k::BLOCK_BYTES);
        let (d_w, dmin_w) = (f16_at(b), f16_at(b.add(2)));
        let u = scales_and_mins(b.add(4));
        // 16 i16: the eight scales, then the eight minimums.
        let mins_and_scales = _mm256_cvtepu8_epi16(_mm_set_epi32(
            u[3] as i32,
            u[2] as i32,
            u[1] as i32,
            u[0] as i32,
        ));
        let mins = _mm256_extracti128_si256::<1>(mins_and_scales);
        let sc128 = _mm256_castsi256_si128(mins_and_scales);
        let scales = _mm256_set_m128i(sc128, sc128);
        // Per 64 values: low and high nibbles, and the i16 scale of each
        // half broadcast (sub-blocks 2j and 2j + 1).
        let mut q4l = [_mm256_setzero_si256(); 4];
        let mut q4h = [_mm256_setzero_si256(); 4];
        let mut scale_l = [_mm256_setzero_si256(); 4];
        let mut scale_h = [_mm256_setzero_si256(); 4];
        for j in 0..4 {
            let q4bits = _mm256_loadu_si256(b.add(16 + 32 * j) as *const __m256i);
            q4l[j] = _mm256_and_si256(q4bits, m4);
            q4h[j] = _mm256_and_si256(_mm256_srli_epi16::<4>(q4bits), m4);
            let lo = (4 * j) as i16;
            scale_l[j] = _mm256_shuffle_epi8(scales, _mm256_set1_epi16(((lo + 1) << 8) | lo));
            let hi = lo + 2;
            scale_h[j] = _mm256_shuffle_epi8(scales, _mm256_set1_epi16(((hi + 1) << 8) | hi));
        }
        for r in 0..R {
            let y = &*x[r].add(i);
            // Minimums times the sums of each 32 activations (pairs of bsums).
            let q8sums = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
            let q8s = _mm_hadd_epi16(
                _mm256_castsi256_si128(q8sums),
                _mm256_extracti128_si256::<1>(q8sums),
            );
            let prod = _mm_madd_epi16(mins, q8s);
            acc_m[r] = _mm_fmadd_ps(_mm_set1_ps(-y.d * dmin_w), _mm_cvtepi32_ps(prod), acc_m[r]);
            let q8 = y.qs.as_ptr();
            let mut sumi = _mm256_setzero_si256();
            for j in 0..4 {
                let q8l = _mm256_loadu_si256(q8.add(64 * j) as *const __m256i);
                let q8h = _mm256_loadu_si256(q8.add(64 * j + 32) as *const __m256i);
                let p16l = _mm256_madd_epi16(scale_l[j], _mm256_maddubs_epi16(q4l[j], q8l));
                let p16h = _mm256_madd_epi16(scale_h[j], _mm256_maddubs_epi16(q4h[j], q8h));
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16l, p16h));
            }
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(y.d * d_w), _mm256_cvtepi32_ps(sumi), acc[r]);
        }
    }
    let mut out = [0f32; R];
    for r in 0..R {
        let m = _mm_add_ps(acc_m[r], _mm_movehl_ps(acc_m[r], acc_m[r]));
        let m = _mm_add_ss(m, _mm_movehdup_ps(m));
        out[r] = hsum_ps(acc[r]) + _mm_cvtss_f32(m);
    }
    out
}

/// One weight row against `R` activation rows: the 6-bit values and the
/// scales of each weight block are unpacked once for all `R`.
///
/// # Safety
/// AVX2/FMA/F16C must be available; `w` must hold `nb` Q6_K blocks and
/// each `x[r]` `nb` blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_body<const R: usize>(w: *const u8, x: [*const BlockQ8K; R], nb: usize) -> [f32; R] {
    let m4 = _mm256_set1_epi8(0x0F);
    let m2 = _mm256_set1_epi8(0x30);
    let m32s = _mm256_set1_epi8(32);
    let mut acc = [_mm256_setzero_ps(); R];
    for i in 0..nb {
        let b = w.add(i * q6_k::BLOCK_BYTES);
        let d_w = f16_at(b.add(208));
        // The 16 i8 scales, one per 16 values in order.
        let scales = _mm_loadu_si128(b.add(192) as *const __m128i);
        // Values 32k..32k + 32 as unsigned 6-bit (q + 32), and the i16
        // scales of their two 16-value groups.
        let mut q = [_mm256_setzero_si256(); 8];
        let mut sc = [_mm256_setzero_si256(); 8];
        for half in 0..2 {
            let ql = b.add(64 * half);
            let q4bits1 = _mm256_loadu_si256(ql as *const __m256i);
            let q4bits2 = _mm256_loadu_si256(ql.add(32) as *const __m256i);
            let q4bits_h = _mm256_loadu_si256(b.add(128 + 32 * half) as *const __m256i);
            let q4h0 = _mm256_and_si256(_mm256_slli_epi16::<4>(q4bits_h), m2);
            let q4h1 = _mm256_and_si256(_mm256_slli_epi16::<2>(q4bits_h), m2);
            let q4h2 = _mm256_and_si256(q4bits_h, m2);
            let q4h3 = _mm256_and_si256(_mm256_srli_epi16::<2>(q4bits_h), m2);
            let k = 4 * half;
            q[k] = _mm256_or_si256(_mm256_and_si256(q4bits1, m4), q4h0);
            q[k + 1] = _mm256_or_si256(_mm256_and_si256(q4bits2, m4), q4h1);
            q[k + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(q4bits1), m4), q4h2);
            q[k + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(q4bits2), m4), q4h3);
        }
        for (v, s) in sc.iter_mut().enumerate() {
            let g0 = (2 * v) as i8;
            let pair = _mm_shuffle_epi8(
                scales,
                _mm_set_epi8(
                    g0 + 1,
                    g0 + 1,
                    g0 + 1,
                    g0 + 1,
                    g0 + 1,
                    g0 + 1,
                    g0 + 1,
                    g0 + 1,
                    g0,
                    g0,
                    g0,
                    g0,
                    g0,
                    g0,
                    g0,
                    g0,
                ),
            );
            *s = _mm256_cvtepi8_epi16(pair);
        }
        for r in 0..R {
            let y = &*x[r].add(i);
            let q8 = y.qs.as_ptr();
            let mut sumi = _mm256_setzero_si256();
            for v in 0..8 {
                let q8v = _mm256_loadu_si256(q8.add(32 * v) as *const __m256i);
                // (q - 32) · q8 = q · q8 - 32 · q8, with q unsigned for maddubs.
                let p16 = _mm256_sub_epi16(
                    _mm256_maddubs_epi16(q[v], q8v),
                    _mm256_maddubs_epi16(m32s, q8v),
                );
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(sc[v], p16));
            }
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(y.d * d_w), _mm256_cvtepi32_ps(sumi), acc[r]);
        }
    }
    acc.map(|a| hsum_ps(a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{q8_k, QK_K};
    use rand::{Rng, SeedableRng};

    fn available() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }

    /// Random blocks with sane f16 scales at `scale_at` offsets.
    fn blocks(rng: &mut impl Rng, nb: usize, bytes: usize, scale_at: &[usize]) -> Vec<u8> {
        let mut w: Vec<u8> = (0..nb * bytes).map(|_| rng.random()).collect();
        for b in w.chunks_exact_mut(bytes) {
            for &at in scale_at {
                let v = half::f16::from_f32(rng.random_range(0.001f32..0.05));
                b[at..at + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        w
    }

    fn acts(rng: &mut impl Rng, nb: usize) -> Vec<BlockQ8K> {
        let x: Vec<f32> = (0..nb * QK_K)
            .map(|_| rng.random_range(-3f32..3.0))
            .collect();
        let mut q = vec![BlockQ8K::default(); nb];
        q8_k::quantize_row(&x, &mut q);
        q
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() <= 1e-4 * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn k_quant_kernels_equal_the_scalar_code() {
        if !available() {
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for nb in [1, 2, 7] {
            let x = acts(&mut rng, nb);
            let w = blocks(&mut rng, nb, q4_k::BLOCK_BYTES, &[0, 2]);
            let (s, v) = (q4_k::dot(&w, &x), dot_q4_k(&w, &x));
            assert!(close(s, v), "q4_k nb={nb}: scalar {s} avx2 {v}");
            let w = blocks(&mut rng, nb, q6_k::BLOCK_BYTES, &[208]);
            let (s, v) = (q6_k::dot(&w, &x), dot_q6_k(&w, &x));
            assert!(close(s, v), "q6_k nb={nb}: scalar {s} avx2 {v}");
        }
    }

    #[test]
    fn four_row_and_band_kernels_equal_one_row_at_a_time() {
        if !available() {
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let nb = 3;
        let x: Vec<Vec<BlockQ8K>> = (0..4).map(|_| acts(&mut rng, nb)).collect();
        let xs = [&x[0][..], &x[1][..], &x[2][..], &x[3][..]];
        type Set = (
            fn(&[u8], &[BlockQ8K]) -> f32,
            fn(&[u8], [&[BlockQ8K]; 4]) -> [f32; 4],
        );
        type Rows = fn(&[u8], usize, &[BlockQ8K], &mut [f32]);
        let sets: [(&str, usize, usize, Set, Rows); 2] = [
            (
                "q4_k",
                q4_k::BLOCK_BYTES,
                0,
                (dot_q4_k, dot4_q4_k),
                rows_q4_k,
            ),
            (
                "q6_k",
                q6_k::BLOCK_BYTES,
                208,
                (dot_q6_k, dot4_q6_k),
                rows_q6_k,
            ),
        ];
        for (name, bytes, scale_at, (one, four), rows) in sets {
            let scale_at: &[usize] = if scale_at == 0 { &[0, 2] } else { &[208] };
            let w = blocks(&mut rng, 5 * nb, bytes, scale_at);
            let rb = nb * bytes;
            let row = &w[..rb];
            let want = xs.map(|x| one(row, x));
            assert_eq!(four(row, xs), want, "{name} four rows");
            let mut band = vec![0f32; 5];
            rows(&w, rb, &x[1], &mut band);
            for (j, v) in band.iter().enumerate() {
                assert_eq!(
                    *v,
                    one(&w[j * rb..(j + 1) * rb], &x[1]),
                    "{name} band row {j}"
                );
            }
        }
    }
}
