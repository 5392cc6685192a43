//! `cuda-kernels`: the Backend trait on the GPU with no candle `Tensor` in
//! the hot path (plan phase 3). Activations, weights and the KV cache live
//! in device memory from load to the end of a request; kernels are launched
//! directly with cudarc:
//!
//! * candle-kernels' PTX: `rmsnorm_f32`, `softmax_f32` (reduce), `usilu_f32`
//!   (unary), `badd_f32`/`bmul_f32` (binary), `quantize_q8_1`,
//!   `mul_mat_vec_*_q8_1_cuda{1..8}`, `mul_mat_*` and `get_rows_*` (quantized);
//! * cuBLAS (through cudarc) for products with F32 weights, and with
//!   F16/BF16 weights past 8 activation rows;
//! * ours, in `kernels/rbees.cu` (compiled to PTX by nvcc at build time):
//!   RoPE over the token-major layout with a position offset, causal
//!   grouped-query attention (fused, and scores / weighted sum for the
//!   unfused path), a fused SwiGLU, and the F16/BF16 weight mat-vec and
//!   widening kernels.
//!
//! Precision: quantised products round the activations to Q8_1 first (as
//! candle's and llama.cpp's CUDA paths do); F16/BF16 weight matrices stay
//! 16-bit on the device and are widened to f32 value by value inside the
//! product, with f32 activations and f32 sums (our mat-vec kernel up to 8
//! rows, cuBLAS `Sgemm` on widened bands above, no TF32), exactly as if
//! widened at load; F32 weights go to cuBLAS as they are; norms, softmax
//! and attention run in f32.
//!
//! Without the `cuda` feature this crate only registers the backend, as not
//! usable ("built without CUDA"), so the default build needs no CUDA.

mod device;

/// The `Backend` trait impl: shape checks and kernel launches per op.
#[cfg(feature = "cuda")]
mod backend;
/// The load-time memory checks' arithmetic (driver free memory plus the
/// pool's idle bytes). Host-only, tested without CUDA like `index`.
#[cfg(any(feature = "cuda", test))]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
mod budget;
/// F16/BF16 weight matrices: which product path runs, and their values.
/// Host-only, tested without CUDA like `index`.
#[cfg(any(feature = "cuda", test))]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
mod float16;
/// Kernel-index range checks (`int` arguments, quantised product shapes).
/// Host-only, so its tests also run in builds without CUDA (the feature's
/// test binary needs the driver library just to start).
#[cfg(any(feature = "cuda", test))]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
mod index;
/// Every kernel, loaded from its module once at start-up.
#[cfg(feature = "cuda")]
mod kernels;
/// Grid and block sizes per kernel.
#[cfg(feature = "cuda")]
mod launch;
/// Row lookups (embeddings, quantised vectors at load).
#[cfg(feature = "cuda")]
mod lookup;
/// Matrix products: cuBLAS and quantised.
#[cfg(feature = "cuda")]
mod matmul;
/// Device buffers, the memory pool, host/device copies.
#[cfg(feature = "cuda")]
mod memory;
/// The backend value and its start-up (context, stream, cuBLAS, modules).
#[cfg(feature = "cuda")]
mod setup;
/// Weights in device memory.
#[cfg(feature = "cuda")]
mod weight;
/// The weight types the backend runs and their kernel names: the table
/// `supports` answers from. Host-only, tested without CUDA like `index`.
#[cfg(any(feature = "cuda", test))]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
mod weight_types;

#[cfg(feature = "cuda")]
pub use memory::{CudaKvCache, CudaTensor};
#[cfg(feature = "cuda")]
pub use setup::CudaKernelsBackend;
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
