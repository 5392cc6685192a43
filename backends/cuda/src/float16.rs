//! F16 and BF16 weight matrices stay in their 16-bit type on the device:
//! widened to f32 at load they would take twice the memory and twice the
//! bytes to read per token. This module decides how a product with one
//! runs, and gives the values to upload. Host-only, so it is tested in
//! builds without CUDA.
//!
//! Both paths widen each weight value to f32 exactly and multiply it with
//! the f32 activations in f32, so the results are those of the weight
//! widened at load up to the order of the sums (the conformance suite's
//! 1e-9 limit for float weights). cuBLAS offers no such mixed product:
//! `cublasGemmEx` with `CUBLAS_COMPUTE_32F` takes A and B of one type (16F
//! with 16F, 16BF with 16BF), so it would need the activations rounded to
//! 16 bits, an error of ~1e-3 (BF16) or ~1e-4 (F16) per value, and f16's
//! range (65504) on them.

use std::ops::Range;

use rbees_core::Result;

use crate::index::int;

/// Activation rows the mat-vec kernel takes in one launch
/// (`MATVEC_MAX_ROWS` in kernels/rbees.cu): a decode step of up to 8
/// sequences reads the 16-bit weight once.
pub const MATVEC_MAX_ROWS: usize = 8;

/// f32 values of scratch a widened product fills per band of weight rows
/// (32 MiB): scratch stays bounded whatever the weight's size, and a band
/// fits an H100's or H200's 50 MB L2 cache, where cuBLAS can read it back.
pub const WIDEN_SCRATCH_VALUES: usize = 8 << 20;

/// How `x[m, k] · W[n, k]ᵀ` runs on a 16-bit weight, with its `int` arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Float16Product {
    /// Up to [`MATVEC_MAX_ROWS`] activation rows: `rbees_matvec_{f16,bf16}`
    /// reads the weight in its type (decode, where bandwidth is the cost).
    MatVec { m: i32, n: i32, k: i32 },
    /// More rows (prompts, large batches; compute-bound): bands of
    /// `band_rows` weight rows widened to f32 into scratch by
    /// `rbees_widen_{f16,bf16}`, each multiplied by cuBLAS' `Sgemm` in f32.
    Widened { band_rows: usize },
}

/// The product's path after checking that its sizes fit the kernels' and
/// cuBLAS' `int` arguments (flat indices are formed in 64 bits).
pub fn product(m: usize, n: usize, k: usize) -> Result<Float16Product> {
    let (m32, n32, k32) = (int("matmul", m)?, int("matmul", n)?, int("matmul", k)?);
    if m <= MATVEC_MAX_ROWS {
        return Ok(Float16Product::MatVec {
            m: m32,
            n: n32,
            k: k32,
        });
    }
    Ok(Float16Product::Widened {
        band_rows: (WIDEN_SCRATCH_VALUES / k.max(1)).clamp(1, n.max(1)),
    })
}

/// The weight rows `0..n` in bands of `band_rows` (the last one shorter).
pub fn bands(n: usize, band_rows: usize) -> impl Iterator<Item = Range<usize>> {
    let step = band_rows.max(1);
    (0..n)
        .step_by(step)
        .map(move |start| start..(start + step).min(n))
}

/// The 16-bit values of an F16 or BF16 weight, little-endian as GGUF
/// stores them (the kernels widen them; see kernels/rbees.cu).
pub fn values(data: &[u8]) -> Vec<u16> {
    data.chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_to_eight_rows_read_the_weight_in_its_type() {
        for m in 1..=MATVEC_MAX_ROWS {
            assert_eq!(
                product(m, 49_152, 576).unwrap(),
                Float16Product::MatVec {
                    m: m as i32,
                    n: 49_152,
                    k: 576
                }
            );
        }
        assert!(matches!(
            product(MATVEC_MAX_ROWS + 1, 49_152, 576).unwrap(),
            Float16Product::Widened { .. }
        ));
    }

    #[test]
    fn widened_bands_bound_the_scratch_and_cover_every_row_once() {
        // Llama-2-7B's down projection: 4096 rows of 11008.
        let Float16Product::Widened { band_rows } = product(128, 4096, 11_008).unwrap() else {
            panic!("128 rows take the widened path");
        };
        assert_eq!(band_rows, WIDEN_SCRATCH_VALUES / 11_008);
        assert!(band_rows * 11_008 <= WIDEN_SCRATCH_VALUES);
        let bands: Vec<_> = bands(4096, band_rows).collect();
        assert_eq!(bands.first().unwrap().start, 0);
        assert_eq!(bands.last().unwrap().end, 4096);
        assert!(bands.windows(2).all(|w| w[0].end == w[1].start));
        assert!(bands.iter().all(|b| !b.is_empty() && b.len() <= band_rows));
    }

    #[test]
    fn small_weights_take_one_band_and_huge_rows_one_row_per_band() {
        // SmolLM2's q projection fits whole.
        assert_eq!(
            product(128, 576, 576).unwrap(),
            Float16Product::Widened { band_rows: 576 }
        );
        assert_eq!(bands(576, 576).collect::<Vec<_>>(), vec![0..576]);
        // A row longer than the scratch budget: one row at a time.
        let k = WIDEN_SCRATCH_VALUES + 1;
        assert_eq!(
            product(9, 3, k).unwrap(),
            Float16Product::Widened { band_rows: 1 }
        );
        assert_eq!(bands(3, 1).collect::<Vec<_>>(), vec![0..1, 1..2, 2..3]);
        assert_eq!(bands(0, 5).count(), 0);
        assert_eq!(bands(5, 0).count(), 5, "a zero band size still advances");
    }

    #[test]
    fn sizes_past_the_int_range_are_refused() {
        let past = i32::MAX as usize + 1;
        for (m, n, k) in [(past, 1, 1), (1, past, 1), (1, 1, past), (100, 1, past)] {
            let err = product(m, n, k).unwrap_err().to_string();
            assert!(err.contains("32-bit index range"), "{err}");
        }
    }

    #[test]
    fn values_are_read_little_endian() {
        // f16 1.5 is 0x3e00, -2.0 is 0xc000; bf16 1.0 is 0x3f80.
        assert_eq!(
            values(&[0x00, 0x3e, 0x00, 0xc0, 0x80, 0x3f]),
            vec![0x3e00, 0xc000, 0x3f80]
        );
    }
}
