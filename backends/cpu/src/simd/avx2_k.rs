//! AVX2 dot products of K-quant rows against Q8_K activations, following
//! ggml's x86 kernels; each is checked against the scalar code of
//! [`crate::quant`] in the tests below.

use std::arch::x86_64::*;

use crate::quant::{q4_k, q6_k, BlockQ8K};

// The safe wrappers are only installed by `avx2::kernels()` after the CPU
// feature check, which makes calling the bodies sound; they bound the block
// count by both slices.

pub fn dot_q4_k(w: &[u8], x: &[BlockQ8K]) -> f32 {
    let nb = x.len().min(w.len() / q4_k::BLOCK_BYTES);
    // SAFETY: see above; `nb` blocks of `w` and `x` are in bounds.
    unsafe { q4_k_body(w.as_ptr(), x.as_ptr(), nb) }
}

pub fn dot_q6_k(w: &[u8], x: &[BlockQ8K]) -> f32 {
    let nb = x.len().min(w.len() / q6_k::BLOCK_BYTES);
    // SAFETY: as in `dot_q4_k`.
    unsafe { q6_k_body(w.as_ptr(), x.as_ptr(), nb) }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// # Safety
/// `p` must point to 2 readable bytes; F16C must be available.
#[inline]
#[target_feature(enable = "f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    let h = i32::from(std::ptr::read_unaligned(p as *const u16));
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)))
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

/// # Safety
/// AVX2/FMA/F16C must be available; `w` must hold `nb` Q4_K blocks and `x` `nb` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_body(w: *const u8, x: *const BlockQ8K, nb: usize) -> f32 {
    let m4 = _mm256_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for i in 0..nb {
        let b = w.add(i * q4_k::BLOCK_BYTES);
        let y = &*x.add(i);
        let d = y.d * f16_at(b);
        let dmin = -y.d * f16_at(b.add(2));
        let u = scales_and_mins(b.add(4));
        // 16 i16: the eight scales, then the eight minimums.
        let mins_and_scales = _mm256_cvtepu8_epi16(_mm_set_epi32(
            u[3] as i32,
            u[2] as i32,
            u[1] as i32,
            u[0] as i32,
        ));
        // Minimums times the sums of each 32 activations (pairs of bsums).
        let q8sums = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
        let q8s = _mm_hadd_epi16(
            _mm256_castsi256_si128(q8sums),
            _mm256_extracti128_si256::<1>(q8sums),
        );
        let prod = _mm_madd_epi16(_mm256_extracti128_si256::<1>(mins_and_scales), q8s);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);

        let sc128 = _mm256_castsi256_si128(mins_and_scales);
        let scales = _mm256_set_m128i(sc128, sc128);
        let mut sumi = _mm256_setzero_si256();
        let mut q4 = b.add(16);
        let mut q8 = y.qs.as_ptr();
        for j in 0..4 {
            // Broadcast the i16 scale of sub-blocks 2j and 2j + 1.
            let lo = (4 * j) as i16;
            let scale_l = _mm256_shuffle_epi8(scales, _mm256_set1_epi16(((lo + 1) << 8) | lo));
            let hi = lo + 2;
            let scale_h = _mm256_shuffle_epi8(scales, _mm256_set1_epi16(((hi + 1) << 8) | hi));
            let q4bits = _mm256_loadu_si256(q4 as *const __m256i);
            q4 = q4.add(32);
            let q4l = _mm256_and_si256(q4bits, m4);
            let q4h = _mm256_and_si256(_mm256_srli_epi16::<4>(q4bits), m4);
            let q8l = _mm256_loadu_si256(q8 as *const __m256i);
            let p16l = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(q4l, q8l));
            let q8h = _mm256_loadu_si256(q8.add(32) as *const __m256i);
            let p16h = _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(q4h, q8h));
            q8 = q8.add(64);
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16l, p16h));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    let acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    let acc_m = _mm_add_ss(acc_m, _mm_movehdup_ps(acc_m));
    hsum_ps(acc) + _mm_cvtss_f32(acc_m)
}

/// # Safety
/// AVX2/FMA/F16C must be available; `w` must hold `nb` Q6_K blocks and `x` `nb` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_body(w: *const u8, x: *const BlockQ8K, nb: usize) -> f32 {
    let m4 = _mm256_set1_epi8(0x0F);
    let m2 = _mm256_set1_epi8(0x30);
    let m32s = _mm256_set1_epi8(32);
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        let b = w.add(i * q6_k::BLOCK_BYTES);
        let y = &*x.add(i);
        let d = y.d * f16_at(b.add(208));
        let mut ql = b;
        let mut qh = b.add(128);
        let mut q8 = y.qs.as_ptr();
        // The 16 i8 scales, one per 16 values in order.
        let scales = _mm_loadu_si128(b.add(192) as *const __m128i);
        let mut sumi = _mm256_setzero_si256();
        for half in 0..2 {
            let q4bits1 = _mm256_loadu_si256(ql as *const __m256i);
            let q4bits2 = _mm256_loadu_si256(ql.add(32) as *const __m256i);
            let q4bits_h = _mm256_loadu_si256(qh as *const __m256i);
            ql = ql.add(64);
            qh = qh.add(32);

            let q4h0 = _mm256_and_si256(_mm256_slli_epi16::<4>(q4bits_h), m2);
            let q4h1 = _mm256_and_si256(_mm256_slli_epi16::<2>(q4bits_h), m2);
            let q4h2 = _mm256_and_si256(q4bits_h, m2);
            let q4h3 = _mm256_and_si256(_mm256_srli_epi16::<2>(q4bits_h), m2);

            let q4_0 = _mm256_or_si256(_mm256_and_si256(q4bits1, m4), q4h0);
            let q4_1 = _mm256_or_si256(_mm256_and_si256(q4bits2, m4), q4h1);
            let q4_2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(q4bits1), m4), q4h2);
            let q4_3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(q4bits2), m4), q4h3);

            let q8_0 = _mm256_loadu_si256(q8 as *const __m256i);
            let q8_1 = _mm256_loadu_si256(q8.add(32) as *const __m256i);
            let q8_2 = _mm256_loadu_si256(q8.add(64) as *const __m256i);
            let q8_3 = _mm256_loadu_si256(q8.add(96) as *const __m256i);
            q8 = q8.add(128);

            // (q - 32) · q8 = q · q8 - 32 · q8, with q unsigned for maddubs.
            let q8s_0 = _mm256_maddubs_epi16(m32s, q8_0);
            let q8s_1 = _mm256_maddubs_epi16(m32s, q8_1);
            let q8s_2 = _mm256_maddubs_epi16(m32s, q8_2);
            let q8s_3 = _mm256_maddubs_epi16(m32s, q8_3);
            let p16_0 = _mm256_sub_epi16(_mm256_maddubs_epi16(q4_0, q8_0), q8s_0);
            let p16_1 = _mm256_sub_epi16(_mm256_maddubs_epi16(q4_1, q8_1), q8s_1);
            let p16_2 = _mm256_sub_epi16(_mm256_maddubs_epi16(q4_2, q8_2), q8s_2);
            let p16_3 = _mm256_sub_epi16(_mm256_maddubs_epi16(q4_3, q8_3), q8s_3);

            // Each 32-value vector spans two 16-value groups: scales 2k, 2k + 1
            // of this half (groups are in order, 8 per half).
            let group_scales = |k: i32| {
                let g0 = (8 * half + 2 * k) as i8;
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
                _mm256_cvtepi8_epi16(pair)
            };
            let p0 = _mm256_madd_epi16(group_scales(0), p16_0);
            let p1 = _mm256_madd_epi16(group_scales(1), p16_1);
            let p2 = _mm256_madd_epi16(group_scales(2), p16_2);
            let p3 = _mm256_madd_epi16(group_scales(3), p16_3);
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p2, p3));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
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
}
