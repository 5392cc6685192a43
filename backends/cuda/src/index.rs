//! The kernels take sizes as C `int` and index with `int` arithmetic: every
//! size, and every flat index a kernel forms from them, is checked to fit
//! an i32 here, so a shape too large is a clear error instead of a kernel
//! reading or writing out of bounds.

use rbees_core::{AttentionShape, BackendError, Result};

/// candle-kernels' quantised products read whole 512-value tiles of a row,
/// so a block buffer ends with this many zeroed values of padding (candle's
/// `MATRIX_ROW_PADDING`); activations are padded to it as well.
pub const MATRIX_ROW_PADDING: usize = 512;

/// `v` as a kernel's `int` argument, or a clear error for sizes past 2^31.
pub fn int(op: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        BackendError::shape(
            op,
            format!("size {v} is past the kernels' 32-bit index range"),
        )
    })
}

/// The `int` arguments our attention kernels share: rows, heads, key/value
/// heads, head size, and a position (`pos0`, or the key count).
pub fn attention_ints(
    op: &'static str,
    seq: usize,
    shape: AttentionShape,
    position: usize,
) -> Result<[i32; 5]> {
    Ok([
        int(op, seq)?,
        int(op, shape.n_heads)?,
        int(op, shape.n_kv_heads)?,
        int(op, shape.head_dim)?,
        int(op, position)?,
    ])
}

/// `x[m, k] · W[n, k]ᵀ` on a quantised weight, as the `int` arguments of
/// candle-kernels' `quantize_q8_1`, `mul_mat_vec_*` and `mul_mat_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantizedProduct {
    /// Activation rows.
    pub m: i32,
    /// Weight rows (output columns).
    pub n: i32,
    /// Values per row of both.
    pub k: i32,
    /// `k` rounded up to whole [`MATRIX_ROW_PADDING`] tiles: the length of
    /// an activation row rounded to Q8_1.
    pub k_padded: i32,
}

impl QuantizedProduct {
    /// [`Self::k_padded`] as a length (it is never negative).
    pub fn padded_len(self) -> usize {
        self.k_padded as usize
    }
}

/// The quantised product's shape after checking the flat indices the
/// kernels form with `int`: output element `row * n + col` (so `m·n`
/// values), Q8_1 activation value `row * k_padded + i` (so `m·k_padded`),
/// and weight block `row * (k / block_size) + i`.
pub fn quantized_product(
    m: usize,
    n: usize,
    k: usize,
    block_size: usize,
) -> Result<QuantizedProduct> {
    let shape = || format!("x [{m}, {k}] · W [{n}, {k}]ᵀ");
    let past = |what: String, fix: &str| {
        BackendError::shape(
            "matmul",
            format!(
                "{}: {what} is past the quantised kernels' 32-bit index range ({} values); {fix}",
                shape(),
                i32::MAX
            ),
        )
    };
    let fewer_rows = "run fewer rows at once (a smaller batch or prompt chunk)";
    let k_padded = k
        .checked_next_multiple_of(MATRIX_ROW_PADDING)
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| {
            past(
                format!("a row of {k} values padded to {MATRIX_ROW_PADDING}"),
                "this backend cannot multiply rows that long",
            )
        })?;
    let fits = |a: usize, b: usize| a.checked_mul(b).is_some_and(|v| v <= i32::MAX as usize);
    if !fits(m, n) {
        return Err(past(format!("the output's {m}×{n} values"), fewer_rows));
    }
    if !fits(m, k_padded as usize) {
        return Err(past(
            format!("the activations rounded to Q8_1 ({m}×{k_padded} values)"),
            fewer_rows,
        ));
    }
    if !fits(n, k / block_size.max(1)) {
        return Err(past(
            format!("the weight's {n} rows of {} blocks", k / block_size.max(1)),
            "this backend cannot multiply a weight that large",
        ));
    }
    Ok(QuantizedProduct {
        m: int("matmul", m)?,
        n: int("matmul", n)?,
        k: int("matmul", k)?,
        k_padded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = i32::MAX as usize;

    #[test]
    fn llama_shapes_pass_with_k_padded_to_whole_tiles() {
        let p = quantized_product(512, 128_256, 4096, 32).unwrap();
        assert_eq!((p.m, p.n, p.k, p.k_padded), (512, 128_256, 4096, 4096));
        let p = quantized_product(1, 49_152, 576, 32).unwrap();
        assert_eq!((p.k_padded, p.padded_len()), (1024, 1024));
    }

    #[test]
    fn the_output_past_i32_is_refused_with_the_shape_and_the_fix() {
        // 16_744 × 128_256 = 2_147_518_464 > i32::MAX; one row fewer fits.
        assert!(quantized_product(16_743, 128_256, 4096, 32).is_ok());
        let err = quantized_product(16_744, 128_256, 4096, 32)
            .unwrap_err()
            .to_string();
        assert!(err.contains("x [16744, 4096] · W [128256, 4096]ᵀ"), "{err}");
        assert!(err.contains("output's 16744×128256 values"), "{err}");
        assert!(err.contains("run fewer rows at once"), "{err}");
    }

    #[test]
    fn the_q8_1_activations_past_i32_are_refused() {
        // The output fits (n = 1); the padded activations do not.
        let m = MAX / 1024 + 1;
        let err = quantized_product(m, 1, 1000, 32).unwrap_err().to_string();
        assert!(err.contains(&format!("({m}×1024 values)")), "{err}");
        assert!(quantized_product(MAX / 1024, 1, 1000, 32).is_ok());
    }

    #[test]
    fn weights_past_i32_blocks_and_rows_past_i32_are_refused() {
        let err = quantized_product(1, MAX / 2 + 1, 64, 32).unwrap_err();
        assert!(err.to_string().contains("a weight that large"), "{err}");
        let err = quantized_product(1, 1, MAX, 32).unwrap_err();
        assert!(err.to_string().contains("rows that long"), "{err}");
        let err = quantized_product(1, 1, usize::MAX, 32).unwrap_err();
        assert!(err.to_string().contains("rows that long"), "{err}");
    }

    #[test]
    fn usize_overflow_in_the_products_is_refused_not_wrapped() {
        assert!(quantized_product(usize::MAX, usize::MAX, 32, 32).is_err());
    }

    #[test]
    fn int_arguments() {
        assert_eq!(int("rope", 7).unwrap(), 7);
        let err = int("rope", MAX + 1).unwrap_err().to_string();
        assert!(err.contains("32-bit index range"), "{err}");
    }
}
