//! Launch shapes: the grid and block each kernel runs with (as candle
//! launches its own kernels), and the grid limits a shape must respect.

use cudarc::driver::LaunchConfig;
use rbees_core::{BackendError, Result, WeightDType};

use crate::weight_types::QuantType;

/// Threads per block of the fused attention kernel (4 warps: one key per warp at a time).
const ATTENTION_THREADS: u32 = 128;
/// Warps per block of the F16/BF16 mat-vec kernel (one weight row per warp).
const MATVEC_16_WARPS: usize = 4;
/// Threads per block of `quantize_q8_1` (candle's `CUDA_QUANTIZE_BLOCK_SIZE`).
const QUANTIZE_THREADS: usize = 256;
/// The largest grid y (and z) the hardware launches.
pub const MAX_GRID_Y: usize = 65_535;

fn config(grid_dim: (u32, u32, u32), block_dim: (u32, u32, u32)) -> LaunchConfig {
    LaunchConfig {
        grid_dim,
        block_dim,
        shared_mem_bytes: 0,
    }
}

/// A grid-stride launch over `n` elements (our kernels and candle's loop over the rest).
pub fn elementwise(n: usize) -> LaunchConfig {
    const THREADS: usize = 256;
    // The kernels loop with a grid stride, so capping the grid loses no element.
    const MAX_BLOCKS: usize = 65_535;
    config(
        (n.div_ceil(THREADS).clamp(1, MAX_BLOCKS) as u32, 1, 1),
        (THREADS as u32, 1, 1),
    )
}

/// candle-nn's launch of `rmsnorm_f32`: one block per row, 32 threads below
/// 1024 columns, else 1024. The block width is also a kernel argument.
pub fn rms_norm(rows: usize, cols: usize) -> (LaunchConfig, i32) {
    let block: i32 = if cols < 1024 { 32 } else { 1024 };
    (config((rows as u32, 1, 1), (block as u32, 1, 1)), block)
}

/// candle-nn's launch of `softmax_f32`: one row per block, 32 threads along the row.
pub fn softmax(rows: usize) -> LaunchConfig {
    config((rows as u32, 1, 1), (1, 32, 1))
}

/// `get_rows_f32`: one block row per id, 256 columns per block.
pub fn get_rows_f32(ids: usize, cols: usize) -> LaunchConfig {
    config(
        (
            ids as u32,
            cols.div_ceil(256).clamp(1, MAX_GRID_Y) as u32,
            1,
        ),
        (256, 1, 1),
    )
}

/// `get_rows_<t>` of a quantised type, as candle-core launches it.
pub fn get_rows_quantized(ids: usize, cols: usize, dtype: WeightDType) -> Result<LaunchConfig> {
    if dtype.block_size() != 256 {
        return Ok(config(
            (
                ids as u32,
                cols.div_ceil(512).clamp(1, MAX_GRID_Y) as u32,
                1,
            ),
            (256, 1, 1),
        ));
    }
    // One block per super-block; Q4_K's dequantiser uses 32 threads, the others 64.
    let threads = if dtype == WeightDType::Q4K { 32 } else { 64 };
    let blocks = cols / 256;
    if blocks > MAX_GRID_Y {
        return Err(BackendError::shape(
            "embedding",
            format!("rows of {cols} values are past the kernel's grid limit"),
        ));
    }
    Ok(config((ids as u32, blocks as u32, 1), (threads, 1, 1)))
}

/// `quantize_q8_1` over `rows` rows (at most [`MAX_GRID_Y`]) of `k_padded` values.
pub fn quantize_q8_1(rows: usize, k_padded: usize) -> LaunchConfig {
    config(
        (k_padded.div_ceil(QUANTIZE_THREADS) as u32, rows as u32, 1),
        (QUANTIZE_THREADS as u32, 1, 1),
    )
}

/// candle-core's launch of `mul_mat_vec_<t>_q8_1_cuda{m}` for `m` (1..=8)
/// activation rows and `n` weight rows.
pub fn mat_vec(m: usize, n: usize) -> LaunchConfig {
    let (blocks_x, warps) = match m {
        1 => (n, 4),
        2..=4 => (n.div_ceil(2), 4),
        _ => (n.div_ceil(2), 2),
    };
    config((blocks_x as u32, 1, 1), (32, warps, 1))
}

/// `rbees_matvec_{f16,bf16}` over `n` weight rows (at least one): one warp
/// per row. `n` fits an i32 (checked by `float16::product`), so the grid
/// fits the hardware's 2^31 - 1 blocks.
pub fn matvec_16(n: usize) -> LaunchConfig {
    config(
        (n.div_ceil(MATVEC_16_WARPS).max(1) as u32, 1, 1),
        ((MATVEC_16_WARPS * 32) as u32, 1, 1),
    )
}

/// `mul_mat_<t>`: one block per tile of `mmq_y` weight rows by `mmq_x` activation rows.
pub fn mat_mat(m: usize, n: usize, ty: &QuantType) -> LaunchConfig {
    config(
        (
            n.div_ceil(ty.mmq_y as usize) as u32,
            m.div_ceil(ty.mmq_x as usize) as u32,
            1,
        ),
        (32, 4, 1),
    )
}

/// The fused attention: one block per (query row, head), `shared` bytes of
/// dynamic shared memory for a row's scores and the query head.
pub fn attention(seq: usize, n_heads: usize, shared: usize) -> Result<LaunchConfig> {
    if n_heads > MAX_GRID_Y {
        return Err(BackendError::shape("attention", "more than 65535 heads"));
    }
    Ok(LaunchConfig {
        grid_dim: (seq as u32, n_heads as u32, 1),
        block_dim: (ATTENTION_THREADS, 1, 1),
        shared_mem_bytes: shared as u32,
    })
}
