//! rbees-host-ops: what several backends that keep their data in host memory
//! would otherwise each write again.
//!
//! * [`attention`]: the composed attention glue (causal, grouped-query
//!   scores and the weighted sum of values) on f32 slices. Each backend
//!   passes its own products, so its summation order, and its results, are
//!   its own.
//! * `dequant` (feature `dequant`): GGUF blocks to f32 through candle-core.
//!   Behind a feature so a backend that links no candle (`cpu`) can share
//!   the attention glue without it; `core` itself stays free of candle.

pub mod attention;
#[cfg(feature = "dequant")]
pub mod dequant;
