//! `cuda-kernels`: the Backend trait on the GPU with no candle `Tensor` in
//! the hot path (plan phase 3). Activations, weights and the KV cache live
//! in device memory from load to the end of a request; kernels are launched
//! directly with cudarc:
//!
//! * candle-kernels' PTX: `rmsnorm_f32`, `softmax_f32` (reduce), `usilu_f32`
//!   (unary), `badd_f32`/`bmul_f32` (binary), `quantize_q8_1`,
//!   `mul_mat_vec_*_q8_1_cuda{1..8}`, `mul_mat_*` and `get_rows_*` (quantized);
//! * cuBLAS (through cudarc) for products with F32/F16/BF16 weights;
//! * ours, in `kernels/rbees.cu` (compiled to PTX by nvcc at build time):
//!   RoPE over the token-major layout with a position offset, causal
//!   grouped-query attention (fused, and scores / weighted sum for the
//!   unfused path), and a fused SwiGLU.
//!
//! Precision: quantised products round the activations to Q8_1 first (as
//! candle's and llama.cpp's CUDA paths do); F16/BF16 weights are widened to
//! f32 once at load and multiplied in f32 by cuBLAS (no TF32); norms,
//! softmax and attention run in f32.
//!
//! Without the `cuda` feature this crate only registers the backend, as not
//! usable ("built without CUDA"), so the default build needs no CUDA.

mod device;

#[cfg(feature = "cuda")]
mod backend;
#[cfg(feature = "cuda")]
mod kernels;
#[cfg(feature = "cuda")]
mod weight;

#[cfg(feature = "cuda")]
pub use backend::{CudaKernelsBackend, CudaKvCache, CudaTensor};
#[cfg(feature = "cuda")]
pub use weight::CudaWeight;

use rbees_core::inventory;

/// The name in config (`[backend] kind = "cuda-kernels"`) and on the command line.
pub const NAME: &str = "cuda-kernels";

inventory::submit! {
    rbees_core::BackendDescriptor {
        name: NAME,
        description: "candle-kernels PTX, cuBLAS and own kernels launched directly with cudarc; device-resident",
        devices: &["cuda:N"],
        probe: device::probe,
        // `auto`: first on a GPU (rbees' own launch of candle-kernels).
        preference: 40,
    }
}
