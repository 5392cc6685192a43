/// cos/sin tables for RoPE: row `p` holds `cos(p·θᵢ)` / `sin(p·θᵢ)` with
/// `θᵢ = base^(-2i / rope_dim)` for `i < rope_dim / 2`, computed in f64.
/// Every backend's `rope` takes these tables (uploaded once per model).
pub fn rope_tables(positions: usize, rope_dim: usize, base: f32) -> (Vec<f32>, Vec<f32>) {
    let half = rope_dim / 2;
    let mut cos = Vec::with_capacity(positions * half);
    let mut sin = Vec::with_capacity(positions * half);
    for p in 0..positions {
        for i in 0..half {
            let theta = (base as f64).powf(-2.0 * i as f64 / rope_dim as f64);
            let angle = p as f64 * theta;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (cos, sin)
}

#[cfg(test)]
mod tests {
    use super::rope_tables;

    #[test]
    fn tables_follow_the_closed_form() {
        let (cos, sin) = rope_tables(3, 4, 100.0);
        // θ = [1, 100^(-1/2) = 0.1]; row p = [cos p, cos 0.1p].
        let want_cos = [1.0, 1.0, 1f32.cos(), 0.1f32.cos(), 2f32.cos(), 0.2f32.cos()];
        let want_sin = [0.0, 0.0, 1f32.sin(), 0.1f32.sin(), 2f32.sin(), 0.2f32.sin()];
        for (got, want) in cos.iter().chain(&sin).zip(want_cos.iter().chain(&want_sin)) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }
}
