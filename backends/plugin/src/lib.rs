//! The plugin host: backends built as separate shared libraries, loaded at
//! run time with `libloading` and driven through the C ABI of
//! [`rbees_core::plugin_abi`] (specification: `docs/plugin-abi.md`).
//!
//! * [`PluginLibrary::load`] opens a library and refuses it, with an error
//!   naming the file, when the entry symbol is missing, the ABI version
//!   differs, or the table is malformed (null function, bad name, unknown
//!   capability answer). Libraries are never unloaded (see [`library`]).
//! * [`PluginBackend`] implements [`rbees_core::Backend`]: the five kernels
//!   (rms_norm, rope, softmax, silu, matmul) run in the plugin; the glue ops
//!   (embedding, add, mul, rows, KV cache, attention scores and weighted
//!   sum) run here in the host on f32 vectors; attention and swiglu are the
//!   trait's default compositions. Every shape is validated with
//!   [`rbees_core::checks`] before a plugin call.
//! * Weights: a plugin takes each weight type natively or declares that it
//!   wants it as F32; the host then dequantises it once at load and logs it.
//!   Anything else is refused at load. Nothing falls back silently.

mod backend;
mod call;
mod discover;
mod error;
mod glue;
pub mod library;
mod tensor;

pub use backend::{op_placement, Placement, PluginBackend};
pub use discover::{scan_dir, Discovered};
pub use error::PluginError;
pub use library::{PluginLibrary, WeightPlan};
pub use tensor::{PluginKvCache, PluginTensor, PluginWeight};

/// Backend names a plugin may not take: `plugin` selects a library by path.
pub const RESERVED_NAMES: [&str; 1] = ["plugin"];
