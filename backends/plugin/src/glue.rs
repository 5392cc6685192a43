//! The elementwise glue ops, run in the host on f32 vectors (the ABI has
//! only the five kernels; attention's glue is `rbees_host_ops::attention`).
//! Callers have validated shapes with `rbees_core::checks`.

/// Elementwise `f(a, b)` of two same-length vectors.
pub fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> Vec<f32> {
    a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
}
