//! `cpu`: rbees' own CPU kernels, built to race llama.cpp's CPU path.
//!
//! * Weights keep their GGUF blocks (the raw bytes are copied at load, the
//!   block layout unchanged); F32 weights are plain f32.
//! * `matmul` rounds each activation row once per call to Q8 blocks exactly
//!   as ggml does (`d = max|x| / 127`, `q = round(x / d)`, `d` stored as
//!   f16): Q8_0 for Q4_0/Q5_0/Q8_0 weights, Q8_1 (also carrying `d * Σq`)
//!   for Q4_1/Q5_1 weights, Q8_K (256 per block, with the sums of each 16) for the
//!   K-quants Q4_K, Q5_K and Q6_K. The block dot products are integer products with one
//!   f32 scale per block, in AVX2/FMA intrinsics when the CPU has them
//!   (checked at run time) and in portable scalar code otherwise. F32, F16
//!   and BF16 weights multiply f32 activations in f32.
//! * Everything else (norms, RoPE, softmax, attention, SwiGLU) is f32 with
//!   simple loops the compiler vectorises; attention and SwiGLU are fused.
//! * Work is split over output-row bands on the backend's own threads,
//!   sized by `threads`; small ops run on the calling thread.

mod backend;
mod matmul;
mod ops;
mod pool;
pub mod quant;
pub mod simd;
mod tensor;
pub mod types;
mod weight;

pub use backend::CpuBackend;
pub use tensor::{CpuKvCache, CpuTensor};
pub use types::{supported_matmul_dtypes, unsupported_reason};
pub use weight::CpuWeight;

use rbees_core::inventory;

inventory::submit! {
    rbees_core::BackendDescriptor {
        name: <CpuBackend as rbees_core::BuiltInBackend>::NAME,
        description: "rbees' own CPU kernels: weights stay in GGUF blocks, activations rounded to Q8 as llama.cpp does, AVX2/FMA dot products, own thread pool",
        devices: &["cpu"],
        probe: backend::probe,
        // `auto`: the fastest on the CPU.
        preference: 30,
    }
}
