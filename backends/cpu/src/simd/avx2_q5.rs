//! AVX2 Q5_0 and Q5_1 products against Q8 activations (SmolLM2's Q4_K_M
//! files are mostly Q5_0: ggml's quantiser falls back to it for rows whose
//! width is not a multiple of 256).
//!
//! A block's fifth bits (`qh`, 32 bits) become 32 byte masks: each byte
//! gets the `qh` byte that holds its bit, then is OR-ed with a byte that
//! has every bit set except that one, so it is all ones exactly when the
//! bit is set. Q5_0 stores `q - 16`: nibble OR `0xF0` where the bit is
//! clear is `nibble - 16` as i8, and the nibble where it is set. Q5_1's
//! `q` is the nibble OR `0x10` where the bit is set, unsigned.
//!
//! The four- and eight-row kernels unpack each weight block once for all
//! their activation rows and give each row exactly the one-row kernel's
//! operations, so a row's result never depends on the rows beside it
//! (batch invariance).

use std::arch::x86_64::*;

use super::avx2::{f16_at, hsum_ps, mul_sum_i8, mul_sum_u8_i8, nibbles, rows_extent};
use crate::quant::{q5_0, q5_1, BlockQ8, Q8x4};

// The safe wrappers are only installed by `avx2::kernels()` after the CPU
// feature check, which makes calling the `unsafe` bodies sound; each
// checks the slice lengths the bodies rely on.

pub fn dot_q5_0(w: &[u8], x: &[BlockQ8]) -> f32 {
    let nb = x.len().min(w.len() / q5_0::BLOCK_BYTES);
    // SAFETY: installed only when AVX2/FMA/F16C are present; `nb` blocks
    // of `w` and `x` are in bounds.
    unsafe { q5_0_body(w.as_ptr(), x.as_ptr(), nb) }
}

pub fn dot_q5_1(w: &[u8], x: &[BlockQ8]) -> f32 {
    let nb = x.len().min(w.len() / q5_1::BLOCK_BYTES);
    // SAFETY: as in `dot_q5_0`.
    unsafe { q5_1_body(w.as_ptr(), x.as_ptr(), nb) }
}

pub fn rows_q5_0(w: &[u8], rb: usize, x: &[BlockQ8], out: &mut [f32]) {
    let (nb, n) = rows_extent(w, rb, q5_0::BLOCK_BYTES, x, out);
    for (j, o) in out[..n].iter_mut().enumerate() {
        // SAFETY: as in `dot_q5_0`; row `j < n` of `w` holds `nb` blocks.
        *o = unsafe { q5_0_body(w.as_ptr().add(j * rb), x.as_ptr(), nb) };
    }
}

pub fn rows_q5_1(w: &[u8], rb: usize, x: &[BlockQ8], out: &mut [f32]) {
    let (nb, n) = rows_extent(w, rb, q5_1::BLOCK_BYTES, x, out);
    for (j, o) in out[..n].iter_mut().enumerate() {
        // SAFETY: as in `rows_q5_0`.
        *o = unsafe { q5_1_body(w.as_ptr().add(j * rb), x.as_ptr(), nb) };
    }
}

/// Blocks of `w` and of every row (all rows of a product have the same
/// length, so each row gets the one-row kernel's block count).
fn blocks(w: &[u8], block_bytes: usize, rows: &[&[BlockQ8]]) -> usize {
    rows.iter()
        .map(|r| r.len())
        .fold(w.len() / block_bytes, usize::min)
}

/// The eight rows of two groups of four.
fn eight_rows<'a>(x: &Q8x4<'a>, y: &Q8x4<'a>) -> [&'a [BlockQ8]; 8] {
    std::array::from_fn(|r| if r < 4 { x.rows[r] } else { y.rows[r - 4] })
}

pub fn dot4_q5_0(w: &[u8], x: &Q8x4<'_>) -> [f32; 4] {
    let nb = blocks(w, q5_0::BLOCK_BYTES, &x.rows);
    // SAFETY: as in `dot_q5_0`; `nb` blocks of `w` and of every row are in bounds.
    unsafe { q5_0_multi_body(w.as_ptr(), x.rows.map(|r| r.as_ptr()), nb) }
}

pub fn dot4_q5_1(w: &[u8], x: &Q8x4<'_>) -> [f32; 4] {
    let nb = blocks(w, q5_1::BLOCK_BYTES, &x.rows);
    // SAFETY: as in `dot4_q5_0`.
    unsafe { q5_1_multi_body(w.as_ptr(), x.rows.map(|r| r.as_ptr()), nb) }
}

pub fn dot8_q5_0(w: &[u8], x: &Q8x4<'_>, y: &Q8x4<'_>) -> [f32; 8] {
    let rows = eight_rows(x, y);
    let nb = blocks(w, q5_0::BLOCK_BYTES, &rows);
    // SAFETY: as in `dot4_q5_0`.
    unsafe { q5_0_multi_body(w.as_ptr(), rows.map(|r| r.as_ptr()), nb) }
}

pub fn dot8_q5_1(w: &[u8], x: &Q8x4<'_>, y: &Q8x4<'_>) -> [f32; 8] {
    let rows = eight_rows(x, y);
    let nb = blocks(w, q5_1::BLOCK_BYTES, &rows);
    // SAFETY: as in `dot4_q5_0`.
    unsafe { q5_1_multi_body(w.as_ptr(), rows.map(|r| r.as_ptr()), nb) }
}

/// The 32 fifth bits at `p` as 32 bytes, each all ones where its bit is set.
///
/// # Safety
/// AVX2 must be available; `p` must point to 4 readable bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn bit_masks(p: *const u8) -> __m256i {
    let bits = std::ptr::read_unaligned(p as *const i32);
    // Byte k takes qh byte k / 8 (the shuffle indexes within each 128-bit
    // lane, and every lane holds all four bytes).
    let which = _mm256_setr_epi64x(
        0x0000_0000_0000_0000,
        0x0101_0101_0101_0101,
        0x0202_0202_0202_0202,
        0x0303_0303_0303_0303,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(bits), which);
    // Every bit but bit k % 8 of byte k.
    let others = _mm256_set1_epi64x(0x7FBF_DFEF_F7FB_FDFE_u64 as i64);
    _mm256_cmpeq_epi8(_mm256_or_si256(bytes, others), _mm256_set1_epi8(-1))
}

/// # Safety
/// AVX2/FMA/F16C must be available; `w` must hold `nb` Q5_0 blocks and `x` `nb` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_0_body(w: *const u8, x: *const BlockQ8, nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let high = _mm256_set1_epi8(0xF0_u8 as i8);
    for i in 0..nb {
        let b = w.add(i * q5_0::BLOCK_BYTES);
        let y = &*x.add(i);
        let d = _mm256_set1_ps(f16_at(b) * y.d);
        let clear = _mm256_andnot_si256(bit_masks(b.add(2)), high);
        let qw = _mm256_or_si256(nibbles(b.add(6)), clear);
        let qy = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
        acc = _mm256_fmadd_ps(d, mul_sum_i8(qw, qy), acc);
    }
    hsum_ps(acc)
}

/// # Safety
/// AVX2/FMA/F16C must be available; `w` must hold `nb` Q5_1 blocks and `x` `nb` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_1_body(w: *const u8, x: *const BlockQ8, nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = 0f32;
    let fifth = _mm256_set1_epi8(0x10);
    for i in 0..nb {
        let b = w.add(i * q5_1::BLOCK_BYTES);
        let y = &*x.add(i);
        let d = _mm256_set1_ps(f16_at(b) * y.d);
        acc_m += f16_at(b.add(2)) * y.s;
        let set = _mm256_and_si256(bit_masks(b.add(4)), fifth);
        let qw = _mm256_or_si256(nibbles(b.add(8)), set);
        let qy = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
        acc = _mm256_fmadd_ps(d, mul_sum_u8_i8(qw, qy), acc);
    }
    hsum_ps(acc) + acc_m
}

/// [`q5_0_body`] for `N` activation rows, each weight block unpacked once
/// for all of them. Each row gets exactly the one-row kernel's operations (its
/// own accumulator, the same scale product, one FMA per block, the same
/// horizontal sum), so its result is bit for bit the one-row result.
///
/// # Safety
/// As [`q5_0_body`], for each of the `N` rows.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_0_multi_body<const N: usize>(
    w: *const u8,
    x: [*const BlockQ8; N],
    nb: usize,
) -> [f32; N] {
    let mut acc = [_mm256_setzero_ps(); N];
    let high = _mm256_set1_epi8(0xF0_u8 as i8);
    for i in 0..nb {
        let b = w.add(i * q5_0::BLOCK_BYTES);
        let dw = f16_at(b);
        let clear = _mm256_andnot_si256(bit_masks(b.add(2)), high);
        let qw = _mm256_or_si256(nibbles(b.add(6)), clear);
        for r in 0..N {
            let y = &*x[r].add(i);
            let d = _mm256_set1_ps(dw * y.d);
            let qy = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
            acc[r] = _mm256_fmadd_ps(d, mul_sum_i8(qw, qy), acc[r]);
        }
    }
    let mut out = [0f32; N];
    for r in 0..N {
        out[r] = hsum_ps(acc[r]);
    }
    out
}

/// [`q5_1_body`] for `N` activation rows, likewise.
///
/// # Safety
/// As [`q5_1_body`], for each of the `N` rows.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_1_multi_body<const N: usize>(
    w: *const u8,
    x: [*const BlockQ8; N],
    nb: usize,
) -> [f32; N] {
    let mut acc = [_mm256_setzero_ps(); N];
    let mut acc_m = [0f32; N];
    let fifth = _mm256_set1_epi8(0x10);
    for i in 0..nb {
        let b = w.add(i * q5_1::BLOCK_BYTES);
        let (dw, mw) = (f16_at(b), f16_at(b.add(2)));
        let set = _mm256_and_si256(bit_masks(b.add(4)), fifth);
        let qw = _mm256_or_si256(nibbles(b.add(8)), set);
        for r in 0..N {
            let y = &*x[r].add(i);
            let d = _mm256_set1_ps(dw * y.d);
            acc_m[r] += mw * y.s;
            let qy = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
            acc[r] = _mm256_fmadd_ps(d, mul_sum_u8_i8(qw, qy), acc[r]);
        }
    }
    let mut out = [0f32; N];
    for r in 0..N {
        out[r] = hsum_ps(acc[r]) + acc_m[r];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::avx2::tests::{close, random_blocks, random_q8, rng};
    use super::*;

    #[test]
    fn q5_dots_match_the_portable_code_and_multi_row_equals_one_row() {
        if super::super::avx2::kernels().is_none() {
            eprintln!("no AVX2 here: nothing to compare");
            return;
        }
        let mut rng = rng();
        for nb in [1, 2, 18, 48] {
            let x = random_q8(&mut rng, nb);
            let w0 = random_blocks(&mut rng, nb, q5_0::BLOCK_BYTES, 1);
            let (s, v) = (q5_0::dot(&w0, &x), dot_q5_0(&w0, &x));
            assert!(close(s, v), "q5_0 nb={nb}: {s} vs {v}");
            let w1 = random_blocks(&mut rng, nb, q5_1::BLOCK_BYTES, 2);
            let (s, v) = (q5_1::dot(&w1, &x), dot_q5_1(&w1, &x));
            assert!(close(s, v), "q5_1 nb={nb}: {s} vs {v}");
            // Every bit pattern of the fifth bits reaches both branches.
            let mut patterned = random_blocks(&mut rng, nb, q5_0::BLOCK_BYTES, 1);
            for (k, b) in patterned.chunks_exact_mut(q5_0::BLOCK_BYTES).enumerate() {
                let pattern = [0xFF, 0x00, 0xAA, 0x0F];
                let qh: [u8; 4] = std::array::from_fn(|i| pattern[(i + k) % 4]);
                b[2..6].copy_from_slice(&qh);
            }
            let (s, v) = (q5_0::dot(&patterned, &x), dot_q5_0(&patterned, &x));
            assert!(close(s, v), "q5_0 patterned nb={nb}: {s} vs {v}");
            // Four and eight rows at once give each row its one-row bits.
            let rows: Vec<Vec<BlockQ8>> = (0..8).map(|_| random_q8(&mut rng, nb)).collect();
            let group =
                |g: usize| -> [&[BlockQ8]; 4] { std::array::from_fn(|r| &rows[4 * g + r][..]) };
            let scales = [0, 1].map(|g| crate::quant::interleave_scales(group(g), nb));
            let x4 = [0, 1].map(|g| Q8x4 {
                rows: group(g),
                d: &scales[g].0,
                s: &scales[g].1,
            });
            type One = fn(&[u8], &[BlockQ8]) -> f32;
            type Four = fn(&[u8], &Q8x4<'_>) -> [f32; 4];
            type Eight = fn(&[u8], &Q8x4<'_>, &Q8x4<'_>) -> [f32; 8];
            let cases: [(&str, &[u8], One, Four, Eight); 2] = [
                ("q5_0", &patterned, dot_q5_0, dot4_q5_0, dot8_q5_0),
                ("q5_1", &w1, dot_q5_1, dot4_q5_1, dot8_q5_1),
            ];
            for (name, wb, one, four, eight) in cases {
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
}
