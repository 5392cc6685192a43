//! `candle`: the Backend trait on candle-core tensors and candle-nn's ops
//! (plan phases 1 and 2), on the CPU and, with the `cuda` feature, on CUDA.
//!
//! Kernels: `candle_nn::ops::rms_norm`, `candle_nn::rotary_emb::rope_i`
//! (and `rope` for the half-split variant), `candle_nn::ops::softmax_last_dim`,
//! `candle_nn::ops::silu`, and `QMatMul` on weights that stay in their GGUF
//! blocks.
//!
//! Precision: like llama.cpp's CPU path, candle's quantised CPU products
//! round the activations to the weight type's dot-product companion (Q8_0,
//! Q8_1 or Q8_K) before multiplying; F32/F16/BF16 weights are multiplied in
//! f32 (F16/BF16 dequantised once at load). Norms, softmax and attention run
//! in f32.

mod attention;
mod backend;
mod device;
mod weight;

pub use backend::CandleBackend;
pub use weight::CandleWeight;

use rbees_core::inventory;

inventory::submit! {
    rbees_core::BackendDescriptor {
        name: <CandleBackend as rbees_core::BuiltInBackend>::NAME,
        description: "candle-core tensors and candle-nn ops; GGUF weights stay quantised (QMatMul)",
        devices: device::DEVICES,
        probe: device::probe,
        // `auto`: candle: on a GPU after cuda-kernels; on the CPU slower than cpu.
        preference: 20,
    }
}
