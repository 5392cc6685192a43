//! AVX2 decode kernel for Q4_0 rows interleaved in groups of eight (see
//! [`crate::quant::q4_0x8`]): each 32-bit lane carries one row, so one
//! broadcast of four activation bytes feeds eight rows.

use std::arch::x86_64::*;

use super::avx2::dot_u8_i8_acc;
use crate::quant::q4_0x8::{GROUP_BLOCK, ROWS};
use crate::quant::{q4_kx8, BlockQ8, BlockQ8K};

/// Groups of eight rows (`x.len()` group blocks each) against one row of
/// Q8_0 activations with their block sums; `out` gets eight values per
/// group. Installed by `avx2::kernels()` only after the CPU feature check.
pub fn rows_q4_0x8(w: &[u8], x: &[BlockQ8], sums: &[i32], out: &mut [f32]) {
    let nb = x.len().min(sums.len());
    let groups = (out.len() / ROWS).min(w.len() / (nb * GROUP_BLOCK).max(1));
    // SAFETY: AVX2/FMA/F16C are present (see above); `groups` groups of
    // `nb` blocks of `w`, `nb` blocks of `x` and `sums`, and `8 * groups`
    // values of `out` are in bounds.
    unsafe {
        body(
            w.as_ptr(),
            x.as_ptr(),
            sums.as_ptr(),
            nb,
            groups,
            out.as_mut_ptr(),
        )
    }
}

/// # Safety
/// As [`rows_q4_0x8`] states.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn body(
    w: *const u8,
    x: *const BlockQ8,
    sums: *const i32,
    nb: usize,
    groups: usize,
    out: *mut f32,
) {
    let m4 = _mm256_set1_epi8(0x0F);
    for g in 0..groups {
        let gw = w.add(g * nb * GROUP_BLOCK);
        let mut acc = _mm256_setzero_ps();
        for i in 0..nb {
            let b = gw.add(i * GROUP_BLOCK);
            let y = &*x.add(i);
            // The eight rows' scales times the activation block's.
            let d = _mm256_mul_ps(
                _mm256_cvtph_ps(_mm_loadu_si128(b as *const __m128i)),
                _mm256_set1_ps(y.d),
            );
            let yq = y.qs.as_ptr();
            let mut s = _mm256_setzero_si256();
            for c in 0..4 {
                let v = _mm256_loadu_si256(b.add(2 * ROWS + 32 * c) as *const __m256i);
                let lo = _mm256_and_si256(v, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
                let y_lo = _mm256_set1_epi32(std::ptr::read_unaligned(yq.add(4 * c) as *const i32));
                let y_hi =
                    _mm256_set1_epi32(std::ptr::read_unaligned(yq.add(16 + 4 * c) as *const i32));
                s = dot_u8_i8_acc(s, lo, y_lo);
                s = dot_u8_i8_acc(s, hi, y_hi);
            }
            // Σ (q - 8) y = Σ q y - 8 Σ y.
            let corr = _mm256_set1_epi32(8 * *sums.add(i));
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(s, corr)), acc);
        }
        _mm256_storeu_ps(out.add(ROWS * g), acc);
    }
}

/// Groups of eight interleaved Q4_K rows (see [`crate::quant::q4_kx8`])
/// against one row of Q8_K activations; eight results per group.
pub fn rows_q4_kx8(w: &[u8], x: &[BlockQ8K], out: &mut [f32]) {
    let nb = x.len();
    let groups = (out.len() / ROWS).min(w.len() / (nb * q4_kx8::GROUP_BLOCK).max(1));
    // SAFETY: as in `rows_q4_0x8`.
    unsafe { k_body(w.as_ptr(), x.as_ptr(), nb, groups, out.as_mut_ptr()) }
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

/// # Safety
/// As [`rows_q4_kx8`] states.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k_body(w: *const u8, x: *const BlockQ8K, nb: usize, groups: usize, out: *mut f32) {
    const SCALES: usize = 32;
    const MINS: usize = 96;
    const QS: usize = 160;
    let m4 = _mm256_set1_epi8(0x0F);
    for g in 0..groups {
        let gw = w.add(g * nb * q4_kx8::GROUP_BLOCK);
        let mut acc = _mm256_setzero_ps();
        for i in 0..nb {
            let b = gw.add(i * q4_kx8::GROUP_BLOCK);
            let y = &*x.add(i);
            let yq = y.qs.as_ptr();
            // Σ_j sc_rj S_rj and Σ_j m_rj bsum_j, one lane per row.
            let mut blk = _mm256_setzero_ps();
            let mut mins = _mm256_setzero_ps();
            for p in 0..4 {
                let mut s_lo = _mm256_setzero_si256();
                let mut s_hi = _mm256_setzero_si256();
                for t in 0..8 {
                    let v = _mm256_loadu_si256(b.add(QS + 32 * (8 * p + t)) as *const __m256i);
                    let lo = _mm256_and_si256(v, m4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
                    let at = 64 * p + 4 * t;
                    let y_lo =
                        _mm256_set1_epi32(std::ptr::read_unaligned(yq.add(at) as *const i32));
                    let y_hi =
                        _mm256_set1_epi32(std::ptr::read_unaligned(yq.add(at + 32) as *const i32));
                    s_lo = dot_u8_i8_acc(s_lo, lo, y_lo);
                    s_hi = dot_u8_i8_acc(s_hi, hi, y_hi);
                }
                let (j_lo, j_hi) = (2 * p, 2 * p + 1);
                blk = _mm256_fmadd_ps(
                    bytes_f32(b.add(SCALES + 8 * j_lo)),
                    _mm256_cvtepi32_ps(s_lo),
                    blk,
                );
                blk = _mm256_fmadd_ps(
                    bytes_f32(b.add(SCALES + 8 * j_hi)),
                    _mm256_cvtepi32_ps(s_hi),
                    blk,
                );
                let bsum = |j: usize| f32::from(y.bsums[2 * j]) + f32::from(y.bsums[2 * j + 1]);
                mins = _mm256_fmadd_ps(
                    bytes_f32(b.add(MINS + 8 * j_lo)),
                    _mm256_set1_ps(bsum(j_lo)),
                    mins,
                );
                mins = _mm256_fmadd_ps(
                    bytes_f32(b.add(MINS + 8 * j_hi)),
                    _mm256_set1_ps(bsum(j_hi)),
                    mins,
                );
            }
            let yd = _mm256_set1_ps(y.d);
            let d = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(b as *const __m128i)), yd);
            let dmin = _mm256_mul_ps(
                _mm256_cvtph_ps(_mm_loadu_si128(b.add(16) as *const __m128i)),
                yd,
            );
            acc = _mm256_fmadd_ps(d, blk, acc);
            acc = _mm256_fnmadd_ps(dmin, mins, acc);
        }
        _mm256_storeu_ps(out.add(ROWS * g), acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{q4_0, q4_0x8, quantize_row, QK};
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
        let packed = q4_0x8::pack(&data, rows, nb);
        let xf: Vec<f32> = (0..nb * QK).map(|_| rng.random_range(-3f32..3.0)).collect();
        let mut x = vec![BlockQ8::default(); nb];
        quantize_row(&xf, &mut x);
        let sums = q4_0x8::block_sums(&x);
        let mut got = vec![0f32; rows];
        rows_q4_0x8(&packed, &x, &sums, &mut got);
        for (g, group) in packed.chunks_exact(nb * GROUP_BLOCK).enumerate() {
            let want = q4_0x8::dot_group(group, &x, &sums);
            for r in 0..ROWS {
                let (a, b) = (got[ROWS * g + r], want[r]);
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "group {g} row {r}: {a} vs {b}"
                );
            }
        }
    }
}
