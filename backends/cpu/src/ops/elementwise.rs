//! Elementwise ops: plain loops the compiler vectorises.

use super::exp::exp;

pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// `silu(gate) * up`, one pass, no intermediate tensor.
pub fn swiglu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter().zip(up).map(|(&g, &u)| silu(g) * u).collect()
}

pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

pub fn mul(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x * y).collect()
}

/// `out += p * v`.
pub fn axpy(out: &mut [f32], p: f32, v: &[f32]) {
    for (o, &x) in out.iter_mut().zip(v) {
        *o += p * x;
    }
}
