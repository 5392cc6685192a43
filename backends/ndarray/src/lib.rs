//! `ndarray`: the reference backend.
//!
//! Plain, readable f32 kernels over `ndarray` on the CPU. Every other backend
//! is checked against this one, so clarity wins over speed here; only the
//! matrix products are split across threads.
//!
//! Precision: activations stay f32 everywhere. Quantised weights are
//! dequantised to f32 with candle-core's quantized module, once at load while
//! a per-backend budget lasts ([`DEFAULT_DENSE_BUDGET_BYTES`]), beyond it a
//! block of rows at a time inside `matmul` and `embedding` (so memory stays
//! bounded); the products then run in f32 either way.
//! That is more exact than llama.cpp's CPU path, which quantises activations
//! to Q8 before its dot products.

mod attention;
mod backend;
mod elementwise;
mod weight;

pub use backend::{NdarrayBackend, DEFAULT_DENSE_BUDGET_BYTES};
pub use weight::NdarrayWeight;

inventory::submit! {
    rbees_core::BackendDescriptor {
        name: <NdarrayBackend as rbees_core::BuiltInBackend>::NAME,
        description: "reference backend: readable pure-ndarray f32 kernels, weights dequantised with candle-core",
        devices: &["cpu"],
        probe: backend::probe,
        // `auto`: the reference: runs every weight type, slowest.
        preference: 10,
    }
}

use rbees_core::inventory;
