//! `e^x` in f32 from operations the compiler vectorises.
//!
//! `f32::exp` is a libm call per value, which kept SiLU (SwiGLU) and the
//! attention softmax scalar: at eight sequences per step they were ~7% of a
//! decode step. This is the classic Cephes `expf` scheme (as in ggml's
//! vectorised exponential): `x = n ln 2 + r` with `|r| <= ln 2 / 2`, a
//! degree-6 polynomial for `e^r` and `2^n` built in the exponent bits.
//! Within 1 ulp of `f32::exp` (tested every 0.001 over the range); `e^x`
//! underflows to 0 below -86.5 (`e^-86.5` is 3e-38; softmax's masked
//! `-inf` scores give exactly 0) and overflows to infinity above 88.72.

/// `1.5 · 2^23`: adding it rounds an f32 below 2^22 to an integer, which
/// then sits in the low mantissa bits.
const ROUND: f32 = 12_582_912.0;
/// Below this the result is 0 (`2^(n-1)` would need a subnormal exponent).
const LOWEST: f32 = -86.5;
/// Above this `e^x` is not a finite f32.
const HIGHEST: f32 = 88.72;
/// `ln 2` split in two for an exact `x - n ln 2`.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

#[inline]
pub fn exp(x: f32) -> f32 {
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    // The integer n from t's mantissa bits, then 2^(n-1) in the exponent
    // bits (2^n itself has no exponent field for n = 128, near the top).
    let half_scale = f32::from_bits(
        t.to_bits()
            .wrapping_sub(ROUND.to_bits())
            .wrapping_add(126)
            .wrapping_shl(23),
    );
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e = (p * r * r + r + 1.0) * half_scale * 2.0;
    if x < LOWEST {
        0.0
    } else if x > HIGHEST {
        f32::INFINITY
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn within_two_ulp_of_libm() {
        let mut worst = (0u32, 0f32);
        let mut x = LOWEST;
        while x <= HIGHEST {
            let d = ulps(exp(x), x.exp());
            if d > worst.0 {
                worst = (d, x);
            }
            x += 1e-3;
        }
        assert!(worst.0 <= 1, "{} ulp at x = {}", worst.0, worst.1);
    }

    #[test]
    fn edges() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-1000.0), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert!(ulps(exp(1.0), std::f32::consts::E) <= 1);
    }
}
