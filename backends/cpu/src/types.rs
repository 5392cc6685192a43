//! The weight-type table, after ggml-cpu's per-type traits: one entry per
//! weight type this backend runs, holding everything the backend does with
//! that type (the activations it multiplies, its dot, row, multi-row and
//! interleaved kernels, how it is packed at load, how it is dequantised).
//!
//! The table is the one list of supported types: [`supported_matmul_dtypes`],
//! the load-time refusal ([`unsupported_reason`]), `supports`,
//! dequantisation and the matrix product all read it. The portable entries
//! are [`crate::simd::Kernels::scalar`]; SIMD code overrides the kernels of
//! the same entries ([`crate::simd::Kernels::detect`]).

use rbees_core::WeightDType;

use crate::quant::{self, q4_kx8, x8, QK, QK_K};
use crate::simd::{
    F32Dot, HalfDot, Q8Dot, Q8Dot4, Q8Dot8, Q8GroupFour, Q8GroupRows, Q8KDot, Q8KDot4,
    Q8KGroupFour, Q8KGroupRows, Q8KRows, Q8Rows,
};

/// Everything the backend does with one weight type.
#[derive(Clone, Copy)]
pub struct TypeKernels {
    pub dtype: WeightDType,
    /// One row of blocks (exactly that row's bytes) to f32.
    pub dequantize: fn(&[u8], &mut [f32]),
    /// How matrices of whole groups of eight rows are interleaved at load,
    /// for the types whose products have group kernels.
    pub interleave: Option<Interleave>,
    pub products: Products,
}

/// An interleaved layout of groups of [`GROUP_ROWS`] rows.
#[derive(Debug, Clone, Copy)]
pub enum Interleave {
    /// A 32-value block type (see [`x8`]).
    X8(x8::Format),
    /// Q4_K (see [`q4_kx8`]).
    Q4K,
}

/// How a weight type is multiplied: which activations it takes and with
/// which kernels. Each variant carries every kernel its matrix product
/// calls, so a product cannot reach a kernel its type lacks.
#[derive(Clone, Copy)]
pub enum Products {
    /// F32 weights, kept as f32, against f32 activations.
    F32(F32Dot),
    /// F16 or BF16 weights, kept in their bytes, against f32 activations.
    Half(HalfDot),
    /// 32-value blocks against activations rounded to Q8 blocks (Q8_0, or
    /// Q8_1 with the block sums, carried by the same [`crate::quant::BlockQ8`]).
    Q8(Q8Products),
    /// 256-value K-quant super-blocks against Q8_K activations.
    Q8K(Q8KProducts),
}

/// Products of a 32-value block type. Batch invariance: `four` and `eight`
/// give each activation row bit for bit what `one` gives it alone.
#[derive(Clone, Copy)]
pub struct Q8Products {
    /// One weight row against one activation row.
    pub one: Q8Dot,
    /// Consecutive weight rows against one activation row (decode).
    pub rows: Q8Rows,
    /// One weight row against four activation rows.
    pub four: Q8Dot4,
    /// One weight row against eight activation rows.
    pub eight: Q8Dot8,
    /// Matrices of whole groups of eight rows are interleaved at load and
    /// multiplied with these, for the types that have them.
    pub groups: Option<Q8Groups>,
}

/// The interleaved kernels of a 32-value block type (see [`x8`]); they
/// take the activation blocks' sums where the format needs them
/// ([`x8::Format::block_sums`]).
#[derive(Clone, Copy)]
pub struct Q8Groups {
    /// Groups against one activation row.
    pub rows: Q8GroupRows,
    /// One group against four activation rows.
    pub four: Q8GroupFour,
}

/// Products of a K-quant type.
#[derive(Clone, Copy)]
pub struct Q8KProducts {
    pub one: Q8KDot,
    pub rows: Q8KRows,
    pub four: Q8KDot4,
    pub groups: Option<Q8KGroups>,
}

/// The interleaved kernels of a K-quant type (see [`q4_kx8`]).
#[derive(Clone, Copy)]
pub struct Q8KGroups {
    /// Groups against one activation row.
    pub rows: Q8KGroupRows,
    /// One group against four activation rows.
    pub four: Q8KGroupFour,
}

/// Rows in one interleaved group, for every interleaved type.
pub const GROUP_ROWS: usize = 8;
const _: () = assert!(x8::ROWS == GROUP_ROWS && q4_kx8::ROWS == GROUP_ROWS);

impl TypeKernels {
    /// The layout a `[rows, cols]` weight of this type takes at load:
    /// interleaved for matrices of whole groups of eight rows of a type
    /// that has group kernels, else plain rows.
    pub fn interleave_for(&self, rows: usize, matrix: bool) -> Option<Interleave> {
        self.interleave
            .filter(|_| matrix && rows >= GROUP_ROWS && rows.is_multiple_of(GROUP_ROWS))
    }
}

impl Interleave {
    /// Interleaves `rows` (a multiple of eight) rows of `cols` values.
    pub fn pack(self, data: &[u8], rows: usize, cols: usize) -> Vec<u8> {
        match self {
            Interleave::X8(format) => x8::pack(data, rows, cols / QK, format),
            Interleave::Q4K => q4_kx8::pack(data, rows, cols / QK_K),
        }
    }

    /// Bytes of one group of rows of `cols` values and `row_bytes` bytes.
    pub fn group_bytes(self, cols: usize, row_bytes: usize) -> usize {
        match self {
            Interleave::X8(_) => GROUP_ROWS * row_bytes,
            Interleave::Q4K => cols / QK_K * q4_kx8::GROUP_BLOCK,
        }
    }

    /// Row `r` of an interleaved `group`, back in plain blocks.
    pub fn unpack_row(self, group: &[u8], r: usize, out: &mut [u8]) {
        match self {
            Interleave::X8(format) => x8::unpack_row(group, r, format, out),
            Interleave::Q4K => q4_kx8::unpack_row(group, r, out),
        }
    }
}

/// The portable products of a 32-value block type, from its module's
/// one-row `dot` (the multi-row kernels repeat it row by row).
macro_rules! q8_products {
    ($m:ident, $groups:expr) => {
        Q8Products {
            one: quant::$m::dot,
            rows: |w, rb, x, out| rows_with(quant::$m::dot, w, rb, x, out),
            four: |w, x| x.rows.map(|x| quant::$m::dot(w, x)),
            eight: |w, x, y| eight_with(quant::$m::dot, w, x, y),
            groups: $groups,
        }
    };
}

/// The portable products of a K-quant type, likewise.
macro_rules! q8k_products {
    ($m:ident, $groups:expr) => {
        Q8KProducts {
            one: quant::$m::dot,
            rows: |w, rb, x, out| rows_with(quant::$m::dot, w, rb, x, out),
            four: |w, x| x.map(|x| quant::$m::dot(w, x)),
            groups: $groups,
        }
    };
}

/// The portable group kernels of an interleaved 32-value block type, from
/// its `x8` group product.
macro_rules! q8_groups {
    ($m:ident, $dot_group:expr) => {
        Some(Q8Groups {
            rows: |w, x, sums, out| {
                let group_bytes = x.len() * x8::group_block(quant::$m::BLOCK_BYTES);
                each_group(w, group_bytes, out, |g| $dot_group(g, x, sums));
            },
            four: |g, x, sums| [0, 1, 2, 3].map(|r| $dot_group(g, x[r], sums[r])),
        })
    };
}

/// The portable table: every supported type, in the order `rbees backends`
/// and error messages list them.
pub(crate) const PORTABLE: [TypeKernels; 11] = [
    float(
        WeightDType::F32,
        quant::float::dequantize_f32,
        Products::F32(quant::float::dot_f32),
    ),
    float(
        WeightDType::F16,
        quant::float::dequantize_f16,
        Products::Half(quant::float::dot_f16),
    ),
    float(
        WeightDType::BF16,
        quant::float::dequantize_bf16,
        Products::Half(quant::float::dot_bf16),
    ),
    q8(
        WeightDType::Q4_0,
        quant::q4_0::dequantize,
        q8_products!(q4_0, q8_groups!(q4_0, x8::dot_group_q4_0)),
    ),
    q8(
        WeightDType::Q4_1,
        quant::q4_1::dequantize,
        q8_products!(q4_1, q8_groups!(q4_1, |g, x, _| x8::dot_group_q4_1(g, x))),
    ),
    q8(
        WeightDType::Q5_0,
        quant::q5_0::dequantize,
        q8_products!(q5_0, None),
    ),
    q8(
        WeightDType::Q5_1,
        quant::q5_1::dequantize,
        q8_products!(q5_1, None),
    ),
    q8(
        WeightDType::Q8_0,
        quant::q8_0::dequantize,
        q8_products!(q8_0, q8_groups!(q8_0, |g, x, _| x8::dot_group_q8_0(g, x))),
    ),
    q8k(
        WeightDType::Q4K,
        quant::q4_k::dequantize,
        q8k_products!(
            q4_k,
            Some(Q8KGroups {
                rows: |w, x, out| {
                    let group_bytes = x.len() * q4_kx8::GROUP_BLOCK;
                    each_group(w, group_bytes, out, |g| q4_kx8::dot_group(g, x));
                },
                four: |g, x| x.map(|x| q4_kx8::dot_group(g, x)),
            })
        ),
    ),
    q8k(
        WeightDType::Q5K,
        quant::q5_k::dequantize,
        q8k_products!(q5_k, None),
    ),
    q8k(
        WeightDType::Q6K,
        quant::q6_k::dequantize,
        q8k_products!(q6_k, None),
    ),
];

type Dequantize = fn(&[u8], &mut [f32]);

const fn float(dtype: WeightDType, dequantize: Dequantize, products: Products) -> TypeKernels {
    TypeKernels {
        dtype,
        dequantize,
        interleave: None,
        products,
    }
}

const fn q8(dtype: WeightDType, dequantize: Dequantize, p: Q8Products) -> TypeKernels {
    let interleave = match (p.groups, x8::format(dtype)) {
        (Some(_), Some(format)) => Some(Interleave::X8(format)),
        _ => None,
    };
    TypeKernels {
        dtype,
        dequantize,
        interleave,
        products: Products::Q8(p),
    }
}

const fn q8k(dtype: WeightDType, dequantize: Dequantize, p: Q8KProducts) -> TypeKernels {
    let interleave = match (p.groups, dtype) {
        (Some(_), WeightDType::Q4K) => Some(Interleave::Q4K),
        _ => None,
    };
    TypeKernels {
        dtype,
        dequantize,
        interleave,
        products: Products::Q8K(p),
    }
}

/// The portable entry of `dtype`, if this backend runs it.
pub(crate) fn portable(dtype: WeightDType) -> Option<&'static TypeKernels> {
    PORTABLE.iter().find(|t| t.dtype == dtype)
}

/// Weight types this backend multiplies and looks up natively: the table's.
pub fn supported_matmul_dtypes() -> Vec<WeightDType> {
    PORTABLE.iter().map(|t| t.dtype).collect()
}

/// Why weights of `dtype` cannot be used, or `None` if they can.
pub fn unsupported_reason(dtype: WeightDType) -> Option<String> {
    if portable(dtype).is_some() {
        return None;
    }
    Some(match dtype {
        WeightDType::Q8K => format!("{dtype} is an activation-only type"),
        _ => {
            let names: Vec<String> = PORTABLE.iter().map(|t| t.dtype.to_string()).collect();
            format!(
                "the cpu backend has no {dtype} kernels yet (it runs {})",
                names.join(", ")
            )
        }
    })
}

/// Dequantises one row of `dtype` (`bytes` holds exactly that row) into
/// `out`; `false` for a type the backend does not run.
pub fn dequantize_row(dtype: WeightDType, bytes: &[u8], out: &mut [f32]) -> bool {
    match portable(dtype) {
        Some(t) => {
            (t.dequantize)(bytes, out);
            true
        }
        None => false,
    }
}

/// A rows kernel from a one-row dot product.
pub(crate) fn rows_with<B>(
    dot: fn(&[u8], &[B]) -> f32,
    w: &[u8],
    row_bytes: usize,
    x: &[B],
    out: &mut [f32],
) {
    for (o, row) in out.iter_mut().zip(w.chunks_exact(row_bytes.max(1))) {
        *o = dot(row, x);
    }
}

/// Eight results per group of `group_bytes` bytes of `w`, into `out`.
pub(crate) fn each_group(
    w: &[u8],
    group_bytes: usize,
    out: &mut [f32],
    dot: impl Fn(&[u8]) -> [f32; 8],
) {
    for (o, g) in out
        .chunks_exact_mut(8)
        .zip(w.chunks_exact(group_bytes.max(1)))
    {
        o.copy_from_slice(&dot(g));
    }
}

/// An eight-row kernel from a one-row dot product.
fn eight_with(dot: Q8Dot, w: &[u8], x: &quant::Q8x4<'_>, y: &quant::Q8x4<'_>) -> [f32; 8] {
    let mut out = [0f32; 8];
    for (o, row) in out.iter_mut().zip(x.rows.iter().chain(&y.rows)) {
        *o = dot(w, row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_per_type_and_every_other_type_is_refused_with_the_list() {
        for (i, t) in PORTABLE.iter().enumerate() {
            assert!(
                PORTABLE[..i].iter().all(|u| u.dtype != t.dtype),
                "{} twice",
                t.dtype
            );
        }
        for dtype in WeightDType::ALL {
            match unsupported_reason(dtype) {
                None => assert!(portable(dtype).is_some()),
                Some(why) => {
                    assert!(portable(dtype).is_none());
                    assert!(why.contains(&dtype.to_string()), "{why}");
                }
            }
        }
    }
}
