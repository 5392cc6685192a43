//! Matrix products `x · Wᵀ`: cuBLAS for f32 weights, our kernels and cuBLAS
//! for F16/BF16 weights, candle-kernels' quantised products (after rounding
//! the activations to Q8_1) for GGUF blocks.

use cudarc::cublas::{sys::cublasOperation_t, Gemm, GemmConfig};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, PushKernelArg};
use rbees_core::{Op, Result, WeightDType};

use crate::float16::{self, Float16Product};
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

    /// `x · Wᵀ` with an f32 weight, by cuBLAS in f32.
    pub(crate) fn dense_matmul(
        &self,
        x: &CudaTensor,
        w: &CudaSlice<f32>,
        n: usize,
    ) -> Result<CudaSlice<f32>> {
        let mut y = self.alloc("matmul", x.rows * n)?;
        self.sgemm(x, w, n, &mut y, n)?;
        Ok(y)
    }

    /// `y = x · Wᵀ` for a row-major f32 `W` of `rows` rows, by cuBLAS'
    /// `Sgemm` (f32, no TF32), writing output column `j` of row `i` at
    /// `y[i * ldc + j]`. Column-major, that is `Yᵀ[rows, m] = W[rows, k] ·
    /// Xᵀ[k, m]` with leading dimension `ldc`: W is read transposed, X as
    /// it is; `ldc` larger than `rows` writes a band of the output's columns.
    fn sgemm<W: DevicePtr<f32>, Y: DevicePtrMut<f32>>(
        &self,
        x: &CudaTensor,
        w: &W,
        rows: usize,
        y: &mut Y,
        ldc: usize,
    ) -> Result<()> {
        let (m, k) = (x.rows, x.cols);
        let cfg = GemmConfig {
            transa: cublasOperation_t::CUBLAS_OP_T,
            transb: cublasOperation_t::CUBLAS_OP_N,
            m: int("matmul", rows)?,
            n: int("matmul", m)?,
            k: int("matmul", k)?,
            alpha: 1.0f32,
            lda: int("matmul", k)?,
            ldb: int("matmul", k)?,
            beta: 0.0f32,
            ldc: int("matmul", ldc)?,
        };
        unsafe { self.blas.gemm(cfg, w, &x.data, y) }.map_err(cuda_err("matmul"))
    }

    /// `x · Wᵀ` with an F16 or BF16 weight kept in its type (see
    /// [`crate::float16`]): our mat-vec kernel up to 8 rows, else the
    /// weight widened to f32 band by band into scratch for cuBLAS.
    pub(crate) fn float16_matmul(
        &self,
        x: &CudaTensor,
        w: &CudaSlice<u16>,
        dtype: WeightDType,
        n: usize,
    ) -> Result<CudaSlice<f32>> {
        let kernels = self.kernels.float16(dtype, Op::MatMul)?;
        let (m, k) = (x.rows, x.cols);
        let mut y = self.alloc("matmul", m * n)?;
        if m == 0 || n == 0 {
            return Ok(y);
        }
        if k == 0 {
            // Empty sums (and cuBLAS refuses a leading dimension of 0).
            self.stream
                .memset_zeros(&mut y)
                .map_err(cuda_err("matmul"))?;
            return Ok(y);
        }
        match float16::product(m, n, k)? {
            Float16Product::MatVec { m, n, k } => {
                // It writes every output, so no memset.
                let mut launch = self.stream.launch_builder(&kernels.mat_vec);
                launch.arg(w).arg(&x.data).arg(&mut y);
                launch.arg(&m).arg(&n).arg(&k);
                unsafe { launch.launch(launch::matvec_16(n as usize)) }
                    .map_err(cuda_err("matmul"))?;
            }
            Float16Product::Widened { band_rows } => {
                let mut scratch = self.alloc("matmul", band_rows * k)?;
                for band in float16::bands(n, band_rows) {
                    let values = band.len() * k;
                    if values > 0 {
                        let src = w.slice(band.start * k..band.end * k);
                        let count = values as i64;
                        let mut launch = self.stream.launch_builder(&kernels.widen);
                        launch.arg(&src).arg(&mut scratch).arg(&count);
                        unsafe { launch.launch(launch::elementwise(values)) }
                            .map_err(cuda_err("matmul"))?;
                    }
                    // The band's output columns start at `band.start` of every row.
                    let mut out = y.slice_mut(band.start..);
                    self.sgemm(x, &scratch, band.len(), &mut out, n)?;
                }
            }
        }
        Ok(y)
    }
}
