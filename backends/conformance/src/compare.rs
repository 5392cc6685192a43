//! How far a result is from the reference.

/// Normalised mean squared error `Σ(got - want)² / Σ want²`, as llama.cpp's
/// test-backend-ops reports it. Entries that are `-inf` in both count as
/// equal (masked attention scores); a `-inf` in only one, or a NaN, is an
/// infinite error.
pub fn nmse(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    let mut err = 0.0f64;
    let mut norm = 0.0f64;
    for (&g, &w) in got.iter().zip(want) {
        if g == f32::NEG_INFINITY && w == f32::NEG_INFINITY {
            continue;
        }
        if !g.is_finite() || !w.is_finite() {
            return f64::INFINITY;
        }
        err += ((g - w) as f64).powi(2);
        norm += (w as f64).powi(2);
    }
    if norm == 0.0 {
        return if err == 0.0 { 0.0 } else { f64::INFINITY };
    }
    err / norm
}

#[cfg(test)]
mod tests {
    use super::nmse;

    #[test]
    fn nmse_of_known_vectors() {
        assert_eq!(nmse(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        // (0.1² + 0²) / (1² + 2²)
        assert!((nmse(&[1.1, 2.0], &[1.0, 2.0]) - 0.002).abs() < 1e-9);
        assert_eq!(
            nmse(&[f32::NEG_INFINITY, 1.0], &[f32::NEG_INFINITY, 1.0]),
            0.0
        );
        assert!(nmse(&[0.0, 1.0], &[f32::NEG_INFINITY, 1.0]).is_infinite());
        assert!(nmse(&[f32::NAN], &[1.0]).is_infinite());
        assert!(nmse(&[1.0], &[1.0, 2.0]).is_infinite());
    }
}
