//! The kernels on plain f32 slices, row-major. Rows are independent, so
//! each kernel splits rows (or, for matmul, bands of weight rows) across the
//! instance's thread pool. The formulas are the reference backend's, in the
//! same order of operations, so results agree to f32 rounding.

use rayon::prelude::*;
use rayon::ThreadPool;

/// Weight rows (output columns) per matmul task: 16 rows of a 576-wide
/// weight are 36 KiB, so a band stays in L1/L2 while every activation row
/// passes over it.
const MATMUL_BAND: usize = 16;

/// Elementwise ops split into chunks of at least this many values (smaller
/// ones are not worth a task).
const MIN_CHUNK: usize = 4096;

/// `x / sqrt(mean(x²) + eps) * weight`, per row of `cols` values.
pub fn rms_norm(
    pool: &ThreadPool,
    x: &[f32],
    cols: usize,
    weight: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    pool.install(|| {
        out.par_chunks_mut(cols)
            .zip(x.par_chunks(cols))
            .for_each(|(o, row)| {
                let mean_square = row.iter().map(|v| v * v).sum::<f32>() / cols as f32;
                let inv_rms = 1.0 / (mean_square + eps).sqrt();
                for ((o, &v), &w) in o.iter_mut().zip(row).zip(weight) {
                    *o = v * inv_rms * w;
                }
            })
    });
}

/// Numerically stable softmax per row; `-inf` gives 0.
pub fn softmax(pool: &ThreadPool, x: &[f32], cols: usize, out: &mut [f32]) {
    pool.install(|| {
        out.par_chunks_mut(cols)
            .zip(x.par_chunks(cols))
            .for_each(|(o, row)| {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                for (o, &v) in o.iter_mut().zip(row) {
                    *o = (v - max).exp();
                }
                let sum: f32 = o.iter().sum();
                for o in o.iter_mut() {
                    *o /= sum;
                }
            })
    });
}

/// `x * sigmoid(x)`.
pub fn silu(pool: &ThreadPool, x: &[f32], out: &mut [f32]) {
    let chunk = MIN_CHUNK.max(x.len().div_ceil(pool.current_num_threads().max(1)));
    pool.install(|| {
        out.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .for_each(|(o, x)| {
                for (o, &v) in o.iter_mut().zip(x) {
                    *o = v / (1.0 + (-v).exp());
                }
            })
    });
}

/// Shape of a RoPE call; `half_rot` is the width of the cos/sin tables.
#[derive(Debug, Clone, Copy)]
pub struct Rope {
    pub n_heads: usize,
    pub head_dim: usize,
    pub pos0: usize,
    pub half_rot: usize,
    /// Adjacent pairs (GGUF `llama`) rather than halves (NeoX).
    pub interleaved: bool,
}

/// Rotates the first `2 * half_rot` values of each head of row `i` by the
/// angles of position `pos0 + i`; the rest of each head is copied.
pub fn rope(pool: &ThreadPool, x: &[f32], cos: &[f32], sin: &[f32], p: Rope, out: &mut [f32]) {
    let cols = p.n_heads * p.head_dim;
    out.copy_from_slice(x);
    pool.install(|| {
        out.par_chunks_mut(cols).enumerate().for_each(|(i, row)| {
            let at = (p.pos0 + i) * p.half_rot;
            let (c, s) = (&cos[at..at + p.half_rot], &sin[at..at + p.half_rot]);
            for head in row.chunks_mut(p.head_dim) {
                for f in 0..p.half_rot {
                    let (a, b) = if p.interleaved {
                        (2 * f, 2 * f + 1)
                    } else {
                        (f, f + p.half_rot)
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * c[f] - x1 * s[f];
                    head[b] = x0 * s[f] + x1 * c[f];
                }
            }
        })
    });
}

/// `out[m, n] = x[m, k] · w[n, k]ᵀ`.
///
/// Each task takes a band of weight rows and computes their dot products
/// with every activation row into a transposed scratch (`[n, m]`, so tasks
/// write disjoint chunks), which is then transposed into `out`.
pub fn matmul(pool: &ThreadPool, x: &[f32], w: &[f32], k: usize, out: &mut [f32]) {
    let m = x.len() / k.max(1);
    let n = w.len() / k.max(1);
    if k == 0 || out.is_empty() {
        out.fill(0.0); // an empty sum (and nothing to do for an empty output)
        return;
    }
    if m == 1 {
        // Decode: the transposed scratch is `out` itself.
        pool.install(|| {
            out.par_chunks_mut(MATMUL_BAND)
                .zip(w.par_chunks(MATMUL_BAND * k))
                .for_each(|(o, band)| {
                    for (o, w_row) in o.iter_mut().zip(band.chunks_exact(k)) {
                        *o = dot(x, w_row);
                    }
                })
        });
        return;
    }
    let mut scratch = vec![0f32; n * m];
    pool.install(|| {
        scratch
            .par_chunks_mut(MATMUL_BAND * m)
            .zip(w.par_chunks(MATMUL_BAND * k))
            .for_each(|(o, band)| {
                for (o_row, w_row) in o.chunks_exact_mut(m).zip(band.chunks_exact(k)) {
                    for (o, x_row) in o_row.iter_mut().zip(x.chunks_exact(k)) {
                        *o = dot(x_row, w_row);
                    }
                }
            })
    });
    for (j, col) in scratch.chunks_exact(m).enumerate() {
        for (i, &v) in col.iter().enumerate() {
            out[i * n + j] = v;
        }
    }
}

/// Lanes of independent partial sums: 16 f32 fill one AVX-512 register (two
/// AVX2 ones), and independent sums let the compiler vectorise the loop.
const LANES: usize = 16;

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in ca.zip(cb) {
        for ((acc, &x), &y) in acc.iter_mut().zip(ca).zip(cb) {
            *acc += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
    }

    #[test]
    fn matmul_matches_the_naive_product() {
        let (m, n, k) = (3, 37, 100);
        let x: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 - 3.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.5 - 1.0).collect();
        for rows in [1, m] {
            let mut out = vec![0f32; rows * n];
            matmul(&pool(), &x[..rows * k], &w, k, &mut out);
            for i in 0..rows {
                for j in 0..n {
                    let want: f32 = (0..k).map(|l| x[i * k + l] * w[j * k + l]).sum();
                    assert!((out[i * n + j] - want).abs() < 1e-3, "({i},{j})");
                }
            }
        }
    }

    #[test]
    fn softmax_silu_and_rms_norm_follow_their_formulas() {
        let p = pool();
        let mut out = vec![0f32; 3];
        softmax(&p, &[0.0, f32::NEG_INFINITY, 0.0], 3, &mut out);
        assert_eq!(out, [0.5, 0.0, 0.5]);
        silu(&p, &[0.0, 1.0, -1.0], &mut out);
        assert!((out[1] - 1.0 / (1.0 + (-1f32).exp())).abs() < 1e-7);
        let mut out = vec![0f32; 2];
        rms_norm(&p, &[3.0, 4.0], 2, &[1.0, 2.0], 0.0, &mut out);
        let rms = 12.5f32.sqrt();
        assert!((out[0] - 3.0 / rms).abs() < 1e-6 && (out[1] - 8.0 / rms).abs() < 1e-6);
    }

    #[test]
    fn rope_rotates_pairs_by_the_position_angle() {
        let (cos, sin) = (vec![1.0, 0.0], vec![0.0, 1.0]); // positions 0 and 1, angle 90°
        let p = Rope {
            n_heads: 1,
            head_dim: 2,
            pos0: 1,
            half_rot: 1,
            interleaved: true,
        };
        let mut out = vec![0f32; 2];
        rope(&pool(), &[1.0, 2.0], &cos, &sin, p, &mut out);
        assert_eq!(out, [-2.0, 1.0]);
    }
}
