//! Matrix products `x · Wᵀ`: cuBLAS for f32 weights, candle-kernels'
//! quantised products (after rounding the activations to Q8_1) for GGUF blocks.

use cudarc::cublas::{sys::cublasOperation_t, Gemm, GemmConfig};
use cudarc::driver::{CudaSlice, PushKernelArg};
use rbees_core::{Op, Result, WeightDType};

use crate::index::{int, quantized_product, QuantizedProduct};
use crate::launch::{self, MAX_GRID_Y};
use crate::memory::CudaTensor;
use crate::setup::{cuda_err, CudaKernelsBackend};

/// Values and bytes of one Q8_1 block (candle-kernels' `block_q8_1`: two halves and 32 i8).
const Q8_1_VALUES: usize = 32;
const Q8_1_BYTES: usize = 36;

impl CudaKernelsBackend {
    /// `x` rounded to Q8_1 blocks, each row padded with zeros to `k_padded` values.
    fn quantize_q8_1(&self, x: &CudaTensor, dims: QuantizedProduct) -> Result<CudaSlice<u8>> {
        let (m, k, k_padded) = (x.rows, x.cols, dims.padded_len());
        let row_bytes = k_padded / Q8_1_VALUES * Q8_1_BYTES;
        let mut out =
            unsafe { self.stream.alloc::<u8>(m * row_bytes) }.map_err(cuda_err("matmul"))?;
        let mut row = 0;
        while row < m {
            let rows = (m - row).min(MAX_GRID_Y);
            let src = x.data.slice(row * k..(row + rows) * k);
            let mut dst = out.slice_mut(row * row_bytes..(row + rows) * row_bytes);
            let mut launch = self.stream.launch_builder(&self.kernels.quantize_q8_1);
            launch
                .arg(&src)
                .arg(&mut dst)
                .arg(&dims.k)
                .arg(&dims.k_padded);
            unsafe { launch.launch(launch::quantize_q8_1(rows, k_padded)) }
                .map_err(cuda_err("matmul"))?;
            row += rows;
        }
        Ok(out)
    }

    /// `x · Wᵀ` on GGUF blocks: activations to Q8_1, then candle-kernels'
    /// matrix-vector kernel (up to 8 rows) or tiled matrix kernel.
    pub(crate) fn quantized_matmul(
        &self,
        x: &CudaTensor,
        blocks: &CudaSlice<u8>,
        dtype: WeightDType,
        n: usize,
    ) -> Result<CudaSlice<f32>> {
        let q = self.kernels.quant(dtype, Op::MatMul)?;
        let m = x.rows;
        let dims = quantized_product(m, n, x.cols, dtype.block_size())?;
        let xq = match x.q8_1.get() {
            Some(xq) => xq,
            None => {
                let xq = self.quantize_q8_1(x, dims)?;
                x.q8_1.get_or_init(|| xq)
            }
        };
        // The matrix-vector kernel computes two weight rows per block from 2
        // activation rows on, without a bounds check on the second: with an
        // odd row count it would read past the weight and write into the
        // next output row. Those shapes take the tiled kernel.
        if m == 1 || (m <= 8 && n.is_multiple_of(2)) {
            // It writes every output, so no memset.
            let mut y = self.alloc("matmul", m * n)?;
            let mut launch = self.stream.launch_builder(&q.mat_vec[m - 1]);
            launch.arg(blocks).arg(xq).arg(&mut y);
            // (ncols_x, nrows_x, nrows_y: the Q8_1 row length, nrows_dst)
            launch
                .arg(&dims.k)
                .arg(&dims.n)
                .arg(&dims.k_padded)
                .arg(&dims.n);
            unsafe { launch.launch(launch::mat_vec(m, n)) }.map_err(cuda_err("matmul"))?;
            Ok(y)
        } else {
            let mut y = self
                .stream
                .alloc_zeros::<f32>(m * n)
                .map_err(cuda_err("matmul"))?;
            let mut launch = self.stream.launch_builder(&q.mat_mat);
            launch.arg(blocks).arg(xq).arg(&mut y);
            // (ncols_x, nrows_x, ncols_y: activation rows, nrows_y, nrows_dst)
            launch
                .arg(&dims.k)
                .arg(&dims.n)
                .arg(&dims.m)
                .arg(&dims.k_padded)
                .arg(&dims.n);
            unsafe { launch.launch(launch::mat_mat(m, n, q.ty)) }.map_err(cuda_err("matmul"))?;
            Ok(y)
        }
    }

    /// `x · Wᵀ` with an f32 weight, by cuBLAS in f32. Column-major, that is
    /// `Yᵀ[n, m] = W[n, k] · Xᵀ[k, m]`: W is read transposed, X as it is.
    pub(crate) fn dense_matmul(
        &self,
        x: &CudaTensor,
        w: &CudaSlice<f32>,
        n: usize,
    ) -> Result<CudaSlice<f32>> {
        let (m, k) = (x.rows, x.cols);
        let mut y = self.alloc("matmul", m * n)?;
        let cfg = GemmConfig {
            transa: cublasOperation_t::CUBLAS_OP_T,
            transb: cublasOperation_t::CUBLAS_OP_N,
            m: int("matmul", n)?,
            n: int("matmul", m)?,
            k: int("matmul", k)?,
            alpha: 1.0f32,
            lda: int("matmul", k)?,
            ldb: int("matmul", k)?,
            beta: 0.0f32,
            ldc: int("matmul", n)?,
        };
        unsafe { self.blas.gemm(cfg, w, &x.data, &mut y) }.map_err(cuda_err("matmul"))?;
        Ok(y)
    }
}
