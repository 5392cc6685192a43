//! `example`: a backend plugin, built as a shared library and loaded by the
//! worker at run time (`[backend] kind = "plugin"`, `path = ".../librbees_backend_example.so"`).
//!
//! Multi-threaded f32 CPU kernels (rayon, one pool per instance) with loops
//! written so the compiler vectorises them (eight independent accumulators
//! in the dot products). It implements the five kernels of the ABI on F32
//! buffers only; for every other weight type it declares
//! `SUPPORT_CONVERT_TO_F32`, so the host dequantises those weights to F32
//! once at load and says so in `rbees backends`.
//!
//! Every entry point goes through [`rbees_core::plugin_abi::guard`]: errors
//! and panics come back as status codes plus a message, never as an unwind
//! into the host.

mod entry;
pub mod kernels;

pub use entry::PLUGIN_TABLE;
