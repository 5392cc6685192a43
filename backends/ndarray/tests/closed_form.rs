//! The reference backend against closed-form values, through the `Backend`
//! trait only. Quantised weights are made with candle-core's quantizer and
//! checked against candle's own dequantisation.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use ndarray::Array2;
use rbees_backend_ndarray::{NdarrayBackend, NdarrayWeight};
use rbees_core::{
    AttentionShape, Backend, BackendOptions, HostWeight, Op, RopeVariant, Support, WeightDType,
};

/// Quantised weights stay in their GGUF blocks (dequantised on use).
fn blocks_backend() -> NdarrayBackend {
    let options = BackendOptions {
        device: "cpu".into(),
        threads: Some(2),
    };
    NdarrayBackend::with_dense_budget(&options, 0).expect("the ndarray backend runs on the cpu")
}

#[test]
fn quantized_weights_dequantised_at_load_match_candle() {
    quantized_weights_match_candle_dequantization(backend());
}

#[test]
fn quantized_weights_kept_in_blocks_match_candle() {
    quantized_weights_match_candle_dequantization(blocks_backend());
}

fn backend() -> NdarrayBackend {
    NdarrayBackend::new(&BackendOptions {
        device: "cpu".into(),
        threads: Some(2),
    })
    .expect("the ndarray backend runs on the cpu")
}

fn up(b: &NdarrayBackend, rows: usize, cols: usize, data: &[f32]) -> Array2<f32> {
    b.upload(data, rows, cols).expect("upload")
}

fn down(b: &NdarrayBackend, x: &Array2<f32>) -> Vec<f32> {
    b.download(x).expect("download")
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// An F32 weight of `shape` (`[n]` or `[rows, cols]`).
fn f32_weight(b: &NdarrayBackend, shape: &[usize], values: &[f32]) -> NdarrayWeight {
    let bytes = f32_bytes(values);
    let host = HostWeight::new("w", WeightDType::F32, shape, &bytes).expect("valid F32 weight");
    b.load_weight(&host).expect("load F32 weight")
}

#[track_caller]
fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= tol * w.abs().max(1.0)
        };
        assert!(
            ok,
            "element {i}: got {g}, want {w} (tolerance {tol})\n{got:?}"
        );
    }
}

/// Deterministic values in about [-1, 1] (an LCG; no dependency on `rand`).
fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

// ---------------------------------------------------------------------------
// rms_norm

#[test]
fn rms_norm_closed_form() {
    let b = backend();
    let x = up(&b, 2, 2, &[3.0, 4.0, -6.0, 8.0]);
    let w = f32_weight(&b, &[2], &[1.0, 2.0]);
    let y = down(&b, &b.rms_norm(&x, &w, 0.0).unwrap());
    // mean(3², 4²) = 12.5; mean(6², 8²) = 50.
    let r1 = 12.5f32.sqrt();
    let r2 = 50f32.sqrt();
    assert_close(&y, &[3.0 / r1, 8.0 / r1, -6.0 / r2, 16.0 / r2], 1e-6);

    // eps is added to the mean square inside the root.
    let y = down(&b, &b.rms_norm(&x, &w, 1.0).unwrap());
    let r1 = 13.5f32.sqrt();
    let r2 = 51f32.sqrt();
    assert_close(&y, &[3.0 / r1, 8.0 / r1, -6.0 / r2, 16.0 / r2], 1e-6);

    // A zero row with eps > 0 stays zero (no NaN); scaling a row does not change its norm.
    let x = up(&b, 2, 2, &[0.0, 0.0, 300.0, 400.0]);
    let y = down(&b, &b.rms_norm(&x, &w, 1e-6).unwrap());
    let r = 125_000f32.sqrt();
    assert_close(&y, &[0.0, 0.0, 300.0 / r, 800.0 / r], 1e-5);
    assert_eq!(b.dims(&b.rms_norm(&x, &w, 1e-6).unwrap()), (2, 2));
}

#[test]
fn rms_norm_shape_errors() {
    let b = backend();
    let x = up(&b, 1, 3, &[1.0, 2.0, 3.0]);
    let w2 = f32_weight(&b, &[2], &[1.0, 1.0]);
    assert!(b.rms_norm(&x, &w2, 0.0).is_err());
    let matrix = f32_weight(&b, &[3, 3], &[1.0; 9]);
    assert!(b.rms_norm(&x, &matrix, 0.0).is_err());
}

// ---------------------------------------------------------------------------
// softmax, silu

#[test]
fn softmax_closed_form() {
    let b = backend();
    // Log-probabilities in, the same probabilities out.
    let p = [0.1f32, 0.2, 0.3, 0.4];
    let logp: Vec<f32> = p.iter().map(|v| v.ln()).collect();
    let y = down(&b, &b.softmax(&up(&b, 1, 4, &logp)).unwrap());
    assert_close(&y, &p, 1e-6);
    // Adding a constant to a row changes nothing.
    let shifted: Vec<f32> = logp.iter().map(|v| v + 7.5).collect();
    let y = down(&b, &b.softmax(&up(&b, 1, 4, &shifted)).unwrap());
    assert_close(&y, &p, 1e-6);

    // -inf gets exactly 0; rows are independent.
    let ninf = f32::NEG_INFINITY;
    let x = up(&b, 2, 3, &[0.0, ninf, 0.0, ninf, 2.0f32.ln(), 0.0]);
    let y = down(&b, &b.softmax(&x).unwrap());
    assert_close(&y, &[0.5, 0.0, 0.5, 0.0, 2.0 / 3.0, 1.0 / 3.0], 1e-6);
    assert_eq!(y[1], 0.0);
    assert_eq!(y[3], 0.0);

    // Large values are stable.
    let x = up(&b, 3, 2, &[1000.0, 1000.0, 1e30, 0.0, -1e30, 88.0]);
    let y = down(&b, &b.softmax(&x).unwrap());
    assert!(y.iter().all(|v| v.is_finite()), "{y:?}");
    assert_close(&y, &[0.5, 0.5, 1.0, 0.0, 0.0, 1.0], 1e-6);
    let x = up(&b, 1, 3, &[100.0, 101.0, 102.0]);
    let y = down(&b, &b.softmax(&x).unwrap());
    let e = [1.0f32, 1f32.exp(), 2f32.exp()];
    let s: f32 = e.iter().sum();
    assert_close(&y, &[e[0] / s, e[1] / s, e[2] / s], 1e-6);
    assert!((y.iter().sum::<f32>() - 1.0).abs() < 1e-6);
}

#[test]
fn silu_closed_form() {
    let b = backend();
    let x = up(
        &b,
        2,
        4,
        &[0.0, 1.0, -1.0, 2.0, 20.0, -20.0, 1000.0, -1000.0],
    );
    let y = down(&b, &b.silu(&x).unwrap());
    let silu = |v: f64| (v / (1.0 + (-v).exp())) as f32;
    assert_eq!(y[0], 0.0);
    assert_close(
        &y,
        &[
            0.0,
            0.731_058_6, // 1 / (1 + e^-1)
            -0.268_941_43,
            silu(2.0),
            silu(20.0),
            silu(-20.0),
            1000.0,
            0.0,
        ],
        1e-6,
    );
    assert!(y.iter().all(|v| v.is_finite()), "{y:?}");

    // swiglu is silu(gate) * up.
    let up_ = up(&b, 2, 4, &[2.0; 8]);
    let s = down(&b, &b.swiglu(&x, &up_).unwrap());
    let want: Vec<f32> = y.iter().map(|v| 2.0 * v).collect();
    assert_close(&s, &want, 1e-6);
    assert!(b.swiglu(&x, &up(&b, 1, 4, &[1.0; 4])).is_err());
}

// ---------------------------------------------------------------------------
// rope

/// `[positions, half]` tables of `cos/sin(p * base^(-2i / rot))`.
fn rope_tables(
    b: &NdarrayBackend,
    positions: usize,
    rot: usize,
    base: f64,
) -> (Array2<f32>, Array2<f32>, Vec<f64>) {
    let half = rot / 2;
    let theta: Vec<f64> = (0..half)
        .map(|i| base.powf(-2.0 * i as f64 / rot as f64))
        .collect();
    let mut cos = Vec::new();
    let mut sin = Vec::new();
    for p in 0..positions {
        for t in &theta {
            cos.push((p as f64 * t).cos() as f32);
            sin.push((p as f64 * t).sin() as f32);
        }
    }
    (
        up(b, positions, half, &cos),
        up(b, positions, half, &sin),
        theta,
    )
}

#[test]
fn rope_rotates_unit_pairs_by_position() {
    let b = backend();
    let (n_heads, head_dim, rot) = (2, 6, 4);
    let (cos, sin, theta) = rope_tables(&b, 16, rot, 10_000.0);
    let width = n_heads * head_dim;
    for variant in [RopeVariant::Interleaved, RopeVariant::HalfSplit] {
        // The rotated pairs of one head: (first, second) index.
        let pairs: Vec<(usize, usize)> = match variant {
            RopeVariant::Interleaved => vec![(0, 1), (2, 3)],
            RopeVariant::HalfSplit => vec![(0, 2), (1, 3)],
        };
        for (f, &(a, c)) in pairs.iter().enumerate() {
            // Three rows at positions 5, 6, 7: each head holds the pair (1, 0)
            // at frequency f, zeros elsewhere, and 9, -9 past the rotary width.
            let pos0 = 5;
            let mut x = vec![0.0f32; 3 * width];
            for row in 0..3 {
                for h in 0..n_heads {
                    let base = row * width + h * head_dim;
                    x[base + a] = 1.0;
                    x[base + 4] = 9.0;
                    x[base + 5] = -9.0;
                }
            }
            let xt = up(&b, 3, width, &x);
            let y = down(
                &b,
                &b.rope(&xt, n_heads, head_dim, pos0, &cos, &sin, variant)
                    .unwrap(),
            );
            let mut want = x.clone();
            for row in 0..3 {
                let angle = (pos0 + row) as f64 * theta[f];
                for h in 0..n_heads {
                    let base = row * width + h * head_dim;
                    want[base + a] = angle.cos() as f32;
                    want[base + c] = angle.sin() as f32;
                }
            }
            assert_close(&y, &want, 1e-6);
        }

        // Position 0 is the identity, for any values.
        let x = pseudo_random(2 * width, 3);
        let xt = up(&b, 2, width, &x);
        let y = down(
            &b,
            &b.rope(&xt, n_heads, head_dim, 0, &cos, &sin, variant)
                .unwrap(),
        );
        assert_close(&y[..width], &x[..width], 0.0);
        // Rotations keep the length of every pair and never touch dims past `rot`.
        for h in 0..n_heads {
            let base = width + h * head_dim;
            for &(a, c) in &pairs {
                let before = x[base + a].hypot(x[base + c]);
                let after = y[base + a].hypot(y[base + c]);
                assert!((before - after).abs() < 1e-6, "{before} vs {after}");
            }
            assert_eq!(y[base + 4..base + 6], x[base + 4..base + 6]);
        }
    }
}

#[test]
fn rope_full_width_interleaved_matches_the_formula() {
    let b = backend();
    let (n_heads, head_dim) = (3, 4);
    let (cos, sin, theta) = rope_tables(&b, 8, head_dim, 500.0);
    let x = pseudo_random(2 * n_heads * head_dim, 11);
    let xt = up(&b, 2, n_heads * head_dim, &x);
    let pos0 = 6;
    let y = down(
        &b,
        &b.rope(
            &xt,
            n_heads,
            head_dim,
            pos0,
            &cos,
            &sin,
            RopeVariant::Interleaved,
        )
        .unwrap(),
    );
    for row in 0..2 {
        for h in 0..n_heads {
            for (f, t) in theta.iter().enumerate() {
                let i = row * n_heads * head_dim + h * head_dim + 2 * f;
                let angle = (pos0 + row) as f64 * t;
                let (c, s) = (angle.cos(), angle.sin());
                let (x0, x1) = (x[i] as f64, x[i + 1] as f64);
                assert!((y[i] as f64 - (x0 * c - x1 * s)).abs() < 1e-6);
                assert!((y[i + 1] as f64 - (x0 * s + x1 * c)).abs() < 1e-6);
            }
        }
    }
}

#[test]
fn rope_shape_errors() {
    let b = backend();
    let (cos, sin, _) = rope_tables(&b, 4, 4, 10_000.0);
    let x = up(&b, 2, 8, &[0.5; 16]);
    let v = RopeVariant::Interleaved;
    assert!(b.rope(&x, 2, 4, 0, &cos, &sin, v).is_ok());
    assert!(b.rope(&x, 2, 4, 2, &cos, &sin, v).is_ok());
    // Past the table: rows at positions 3 and 4 of a 4-position table.
    assert!(b.rope(&x, 2, 4, 3, &cos, &sin, v).is_err());
    assert!(b.rope(&x, 2, 4, usize::MAX, &cos, &sin, v).is_err());
    // Heads do not match the row width.
    assert!(b.rope(&x, 3, 4, 0, &cos, &sin, v).is_err());
    // Tables wider than half a head.
    assert!(b.rope(&x, 4, 2, 0, &cos, &sin, v).is_err());
    // Odd head size.
    let x3 = up(&b, 1, 6, &[0.5; 6]);
    let (c1, s1, _) = rope_tables(&b, 4, 2, 10_000.0);
    assert!(b.rope(&x3, 2, 3, 0, &c1, &s1, v).is_err());
    // cos and sin of different shapes.
    assert!(b.rope(&x, 2, 4, 0, &cos, &s1, v).is_err());
}

// ---------------------------------------------------------------------------
// matmul

#[test]
fn matmul_f32_by_hand() {
    let b = backend();
    // x: [2, 3]; w: [4, 3] -> x · wᵀ: [2, 4].
    let x = up(&b, 2, 3, &[1.0, 2.0, 3.0, -1.0, 0.5, 2.0]);
    let w = f32_weight(
        &b,
        &[4, 3],
        &[
            1.0, 0.0, 0.0, //
            0.0, 1.0, 0.0, //
            1.0, 1.0, 1.0, //
            2.0, -1.0, 0.5,
        ],
    );
    assert_eq!(b.weight_dims(&w), (4, 3));
    let y = b.matmul(&x, &w).unwrap();
    assert_eq!(b.dims(&y), (2, 4));
    assert_close(
        &down(&b, &y),
        &[1.0, 2.0, 6.0, 1.5, -1.0, 0.5, 1.5, -1.5],
        1e-6,
    );
}

#[test]
fn matmul_f32_across_row_bands() {
    // More output rows than one parallel band (64) and an uneven tail.
    let b = backend();
    let (m, k, n) = (3, 40, 150);
    let x = pseudo_random(m * k, 1);
    let w = pseudo_random(n * k, 2);
    let y = down(
        &b,
        &b.matmul(&up(&b, m, k, &x), &f32_weight(&b, &[n, k], &w))
            .unwrap(),
    );
    let want = reference_product(&x, &w, m, k, n);
    assert_close(&y, &want, 1e-5);
}

#[test]
fn matmul_shape_errors() {
    let b = backend();
    let x = up(&b, 2, 3, &[1.0; 6]);
    let w = f32_weight(&b, &[3, 2], &[1.0; 6]);
    assert!(b.matmul(&x, &w).is_err());
    let v = f32_weight(&b, &[2], &[1.0; 2]);
    assert!(b.matmul(&x, &v).is_err());
}

/// `x · wᵀ` in f64.
fn reference_product(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let dot: f64 = (0..k)
                .map(|t| x[i * k + t] as f64 * w[j * k + t] as f64)
                .sum();
            out[i * n + j] = dot as f32;
        }
    }
    out
}

/// Per element of `x · wᵀ`, the sum of `|x_t w_t|`: the scale rounding errors grow with.
fn product_scale(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|t| (x[i * k + t] * w[j * k + t]).abs()).sum();
        }
    }
    out
}

/// `values` (`[rows, cols]`) quantised by candle: raw GGUF bytes and candle's
/// own dequantisation of them.
fn quantize(values: &[f32], rows: usize, cols: usize, dtype: WeightDType) -> (Vec<u8>, Vec<f32>) {
    let t = Tensor::from_vec(values.to_vec(), (rows, cols), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&t, dtype.to_candle()).unwrap();
    let bytes = q.data().unwrap().into_owned();
    let dense = q
        .dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(
        Some(bytes.len()),
        dtype.storage_bytes(rows * cols),
        "{dtype}"
    );
    (bytes, dense)
}

/// How far a weight type may move `x · wᵀ` from the f32 product, relative to
/// the largest output: a loose bound on each format's rounding.
fn quantisation_tolerance(dtype: WeightDType) -> f32 {
    // About twice what each format gives on these values (F16 2e-4, BF16
    // 1.3e-3, Q8_0 4e-3, Q6_K 1.4e-2, Q5_* 3e-2, Q4_K 5.5e-2, Q4_0 9e-2,
    // Q3_K 0.12, Q2_K 0.22 of the largest output).
    match dtype {
        WeightDType::F32 => 5e-6,
        WeightDType::F16 => 5e-4,
        WeightDType::BF16 => 4e-3,
        WeightDType::Q8_0 | WeightDType::Q8K => 1e-2,
        WeightDType::Q6K => 3e-2,
        WeightDType::Q5_0 | WeightDType::Q5_1 | WeightDType::Q5K => 6e-2,
        WeightDType::Q4K => 0.1,
        WeightDType::Q4_0 | WeightDType::Q4_1 => 0.15,
        WeightDType::Q3K => 0.25,
        WeightDType::Q2K => 0.4,
    }
}

fn quantized_weights_match_candle_dequantization(b: NdarrayBackend) {
    // 256 columns: one K-quant super-block per row. 70 rows: more than one band.
    let (m, k, n) = (3, 256, 70);
    let x = pseudo_random(m * k, 5);
    let w = pseudo_random(n * k, 6);
    let exact = reference_product(&x, &w, m, k, n);
    let exact_max = exact.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let xt = up(&b, m, k, &x);
    let shape = [n, k];
    // Q8_K is an activation type candle cannot dequantise (see below).
    for dtype in WeightDType::ALL
        .into_iter()
        .filter(|&d| d != WeightDType::Q8K)
    {
        assert!(
            b.supports(Op::MatMul, Some(dtype)).is_supported(),
            "{dtype}"
        );
        let (bytes, dense) = quantize(&w, n, k, dtype);
        let host = HostWeight::new("w", dtype, &shape, &bytes).unwrap();
        let weight = b.load_weight(&host).unwrap();
        assert_eq!(b.weight_dims(&weight), (n, k), "{dtype}");
        let y = down(&b, &b.matmul(&xt, &weight).unwrap());

        // Equal to the product with candle's dequantised weight.
        let want = reference_product(&x, &dense, m, k, n);
        let scale = product_scale(&x, &dense, m, k, n);
        for (i, ((g, w), s)) in y.iter().zip(&want).zip(&scale).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * s.max(1e-6),
                "{dtype} element {i}: {g} vs {w} (scale {s})"
            );
        }

        // Close to the f32 product, as close as the format allows.
        let worst = y
            .iter()
            .zip(&exact)
            .fold(0.0f32, |a, (g, e)| a.max((g - e).abs()));
        let tol = quantisation_tolerance(dtype);
        assert!(
            worst <= tol * exact_max,
            "{dtype}: off the f32 product by {worst} (max |y| {exact_max}, tolerance {tol})"
        );

        // Embedding rows of the same table are candle's dequantised rows.
        let ids = [0u32, 69, 31, 0];
        let e = down(&b, &b.embedding(&weight, &ids).unwrap());
        let mut rows = Vec::new();
        for &id in &ids {
            rows.extend_from_slice(&dense[id as usize * k..(id as usize + 1) * k]);
        }
        assert_close(&e, &rows, 0.0);
        assert!(b.embedding(&weight, &[70]).is_err(), "{dtype}");

        // A quantised norm weight works like its dequantised values.
        let (vb, vd) = quantize(&w[..k], 1, k, dtype);
        let vshape = [k];
        let norm_w = b
            .load_weight(&HostWeight::new("norm", dtype, &vshape, &vb).unwrap())
            .unwrap();
        let normed = down(
            &b,
            &b.rms_norm(&up(&b, 1, k, &x[..k]), &norm_w, 1e-5).unwrap(),
        );
        let ms: f32 = x[..k].iter().map(|v| v * v).sum::<f32>() / k as f32;
        let want: Vec<f32> = x[..k]
            .iter()
            .zip(&vd)
            .map(|(v, g)| v / (ms + 1e-5).sqrt() * g)
            .collect();
        assert_close(&normed, &want, 1e-5);
    }
}

#[test]
fn q8_k_weights_are_refused_up_front() {
    // candle-core cannot dequantise Q8_K, so the backend must say so before a
    // model loads rather than fail in the middle of a request.
    let b = backend();
    for op in [Op::MatMul, Op::Embedding, Op::RmsNorm] {
        assert!(
            matches!(
                b.supports(op, Some(WeightDType::Q8K)),
                Support::Unsupported(_)
            ),
            "{op}"
        );
    }
    let t = Tensor::from_vec(pseudo_random(256, 4), (1, 256), &Device::Cpu).unwrap();
    let q8k = QTensor::quantize(&t, GgmlDType::Q8K).unwrap();
    let q8k_bytes = q8k.data().unwrap().into_owned();
    let shape = [1, 256];
    let host = HostWeight::new("q8k", WeightDType::Q8K, &shape, &q8k_bytes).unwrap();
    let err = b.load_weight(&host).unwrap_err().to_string();
    assert!(err.contains("q8k") && err.contains("Q8_K"), "{err}");
    // Every op without a weight, and every other weight type, is supported.
    for op in Op::ALL {
        assert!(b.supports(op, None).is_supported(), "{op}");
    }
}

#[test]
fn load_weight_rejects_bad_weights() {
    let b = backend();
    let bytes = vec![0u8; 24];
    let bad = |dtype, shape: &[usize], data: &[u8]| {
        let w = HostWeight {
            name: "bad",
            dtype,
            shape,
            data,
        };
        b.load_weight(&w).is_err()
    };
    // 2x3 F32 needs 24 bytes.
    assert!(!bad(WeightDType::F32, &[2, 3], &bytes));
    assert!(bad(WeightDType::F32, &[2, 4], &bytes));
    assert!(bad(WeightDType::F32, &[2, 3], &bytes[..20]));
    assert!(bad(WeightDType::F32, &[1, 2, 3], &bytes));
    assert!(bad(WeightDType::F32, &[], &bytes));
    // A Q4_0 row must be whole blocks of 32.
    assert!(bad(WeightDType::Q4_0, &[1, 40], &[0u8; 18]));
    assert!(bad(WeightDType::Q4_0, &[2, 32], &[0u8; 18]));
    assert!(bad(WeightDType::Q6K, &[1, 256], &[0u8; 200]));
    assert!(bad(WeightDType::F32, &[usize::MAX, 2], &bytes));
}

// ---------------------------------------------------------------------------
// glue: embedding, add, mul, rows, upload

#[test]
fn embedding_rows() {
    let b = backend();
    let table: Vec<f32> = (0..12).map(|v| v as f32).collect();
    let t = f32_weight(&b, &[4, 3], &table);
    let e = b.embedding(&t, &[2, 0, 2, 3]).unwrap();
    assert_eq!(b.dims(&e), (4, 3));
    assert_eq!(
        down(&b, &e),
        [6.0, 7.0, 8.0, 0.0, 1.0, 2.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0]
    );
    assert_eq!(b.dims(&b.embedding(&t, &[]).unwrap()), (0, 3));
    assert!(b.embedding(&t, &[4]).is_err());
    assert!(b.embedding(&t, &[1, u32::MAX]).is_err());
}

#[test]
fn add_mul_rows_upload() {
    let b = backend();
    let a = up(&b, 2, 2, &[1.0, 2.0, 3.0, 4.0]);
    let c = up(&b, 2, 2, &[0.5, -1.0, 2.0, 0.0]);
    assert_eq!(down(&b, &b.add(&a, &c).unwrap()), [1.5, 1.0, 5.0, 4.0]);
    assert_eq!(down(&b, &b.mul(&a, &c).unwrap()), [0.5, -2.0, 6.0, 0.0]);
    let row = up(&b, 1, 4, &[1.0; 4]);
    let col = up(&b, 4, 1, &[1.0; 4]);
    assert!(b.add(&a, &row).is_err());
    assert!(b.mul(&a, &col).is_err());

    let x = up(&b, 4, 2, &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    let r = b.rows(&x, 1, 2).unwrap();
    assert_eq!(b.dims(&r), (2, 2));
    assert_eq!(down(&b, &r), [2.0, 3.0, 4.0, 5.0]);
    assert_eq!(down(&b, &b.rows(&x, 3, 1).unwrap()), [6.0, 7.0]);
    assert_eq!(b.dims(&b.rows(&x, 4, 0).unwrap()), (0, 2));
    assert!(b.rows(&x, 3, 2).is_err());
    assert!(b.rows(&x, 5, 0).is_err());
    assert!(b.rows(&x, usize::MAX, 2).is_err());

    assert_eq!(b.dims(&x), (4, 2));
    assert!(b.upload(&[1.0; 5], 2, 3).is_err());
    assert!(b.upload(&[1.0; 6], usize::MAX, 2).is_err());
}

// ---------------------------------------------------------------------------
// KV cache and attention

fn shape(n_heads: usize, n_kv_heads: usize, head_dim: usize) -> AttentionShape {
    AttentionShape {
        n_heads,
        n_kv_heads,
        head_dim,
        scale: 1.0 / (head_dim as f32).sqrt(),
    }
}

#[test]
fn one_cached_position_returns_v() {
    let b = backend();
    // GQA: 4 query heads over 2 kv heads of 3 values.
    let s = shape(4, 2, 3);
    let mut cache = b.kv_cache(8, 6).unwrap();
    let k = up(&b, 1, 6, &[0.3, -1.0, 2.0, 0.7, 0.1, -0.4]);
    let v = up(&b, 1, 6, &[1.0, 2.0, 3.0, -4.0, -5.0, -6.0]);
    b.kv_append(&mut cache, &k, &v, 0).unwrap();
    let q = up(&b, 1, 12, &pseudo_random(12, 9));
    let out = b.attention(&q, &cache, 0, s).unwrap();
    assert_eq!(b.dims(&out), (1, 12));
    assert_close(
        &down(&b, &out),
        &[
            1.0, 2.0, 3.0, 1.0, 2.0, 3.0, // heads 0, 1 read kv head 0
            -4.0, -5.0, -6.0, -4.0, -5.0, -6.0, // heads 2, 3 read kv head 1
        ],
        1e-6,
    );
}

#[test]
fn attention_scores_are_scaled_causal_dot_products() {
    let b = backend();
    // One head of 2: hand-made q and k.
    let s = AttentionShape {
        n_heads: 1,
        n_kv_heads: 1,
        head_dim: 2,
        scale: 0.5,
    };
    let mut cache = b.kv_cache(4, 2).unwrap();
    let k = up(&b, 3, 2, &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    let v = up(&b, 3, 2, &[1.0, 0.0, 0.0, 1.0, 2.0, 2.0]);
    b.kv_append(&mut cache, &k, &v, 0).unwrap();
    let q = up(&b, 3, 2, &[2.0, 3.0, -1.0, 4.0, 1.0, 1.0]);
    let scores = b.attention_scores(&q, &cache, 0, s).unwrap();
    assert_eq!(b.dims(&scores), (3, 3));
    let ninf = f32::NEG_INFINITY;
    // scale * q_i · k_j for j <= i: q0·k0 = 2; q1·k0 = -1, q1·k1 = 4; q2·k = 1, 1, 2.
    assert_close(
        &down(&b, &scores),
        &[1.0, ninf, ninf, -0.5, 2.0, ninf, 0.5, 0.5, 1.0],
        1e-6,
    );

    // Softmax, then the weighted sum of v by hand.
    let probs = b.softmax(&scores).unwrap();
    let p = down(&b, &probs);
    let out = down(&b, &b.attention_weighted_sum(&probs, &cache, 0, s).unwrap());
    let vs = [[1.0f32, 0.0], [0.0, 1.0], [2.0, 2.0]];
    let mut want = vec![0.0f32; 6];
    for i in 0..3 {
        for (j, vj) in vs.iter().enumerate() {
            want[2 * i] += p[3 * i + j] * vj[0];
            want[2 * i + 1] += p[3 * i + j] * vj[1];
        }
    }
    assert_close(&out, &want, 1e-6);
    assert_close(&out[..2], &[1.0, 0.0], 1e-6); // the first row sees only v0

    // The same positions one at a time give the same rows.
    let mut inc = b.kv_cache(4, 2).unwrap();
    for pos in 0..3 {
        let kr = b.rows(&k, pos, 1).unwrap();
        let vr = b.rows(&v, pos, 1).unwrap();
        b.kv_append(&mut inc, &kr, &vr, pos).unwrap();
        let qr = b.rows(&q, pos, 1).unwrap();
        let sc = b.attention_scores(&qr, &inc, pos, s).unwrap();
        assert_eq!(b.dims(&sc), (1, pos + 1));
        let row = down(&b, &sc);
        assert_close(&row, &down(&b, &scores)[3 * pos..3 * pos + pos + 1], 1e-6);
        let o = down(&b, &b.attention(&qr, &inc, pos, s).unwrap());
        assert_close(&o, &out[2 * pos..2 * pos + 2], 1e-6);
    }
}

#[test]
fn grouped_query_heads_read_their_kv_head() {
    let b = backend();
    // 6 query heads over 2 kv heads (groups of 3), head size 2; 2 positions.
    let (nh, nkv, hd) = (6, 2, 2);
    let s = shape(nh, nkv, hd);
    let (seq, pos0) = (1, 1);
    let mut cache = b.kv_cache(2, nkv * hd).unwrap();
    // Position 0, then position 1.
    let k0 = up(&b, 1, 4, &[1.0, 0.0, 0.0, 2.0]);
    let v0 = up(&b, 1, 4, &[10.0, 11.0, 20.0, 21.0]);
    let k1 = up(&b, 1, 4, &[0.0, 1.0, 3.0, 0.0]);
    let v1 = up(&b, 1, 4, &[12.0, 13.0, 22.0, 23.0]);
    b.kv_append(&mut cache, &k0, &v0, 0).unwrap();
    b.kv_append(&mut cache, &k1, &v1, 1).unwrap();
    // Every query head holds (1, 1).
    let q = up(&b, seq, nh * hd, &[1.0; 12]);
    let scores = down(&b, &b.attention_scores(&q, &cache, pos0, s).unwrap());
    assert_eq!(scores.len(), nh * 2);
    let sc = s.scale;
    for h in 0..nh {
        // kv head 0: k0 = (1, 0), k1 = (0, 1); kv head 1: k0 = (0, 2), k1 = (3, 0).
        let want = if h / 3 == 0 {
            [sc, sc]
        } else {
            [2.0 * sc, 3.0 * sc]
        };
        assert_close(&scores[2 * h..2 * h + 2], &want, 1e-6);
    }

    // Uniform probabilities: each head gets the mean of its kv head's values.
    let probs = up(&b, nh * seq, 2, &[0.5; 12]);
    let out = down(
        &b,
        &b.attention_weighted_sum(&probs, &cache, pos0, s).unwrap(),
    );
    for h in 0..nh {
        let want = if h / 3 == 0 {
            [11.0, 12.0]
        } else {
            [21.0, 22.0]
        };
        assert_close(&out[2 * h..2 * h + 2], &want, 1e-6);
    }

    // The fused op is the composition.
    let fused = down(&b, &b.attention(&q, &cache, pos0, s).unwrap());
    let scores = b.attention_scores(&q, &cache, pos0, s).unwrap();
    let composed = down(
        &b,
        &b.attention_weighted_sum(&b.softmax(&scores).unwrap(), &cache, pos0, s)
            .unwrap(),
    );
    assert_close(&fused, &composed, 1e-6);
}

#[test]
fn kv_and_attention_shape_errors() {
    let b = backend();
    let s = shape(4, 2, 2);
    let mut cache = b.kv_cache(3, 4).unwrap();
    let kv1 = up(&b, 1, 4, &[1.0; 4]);
    let kv2 = up(&b, 2, 4, &[1.0; 8]);
    // Past the capacity.
    assert!(b.kv_append(&mut cache, &kv2, &kv2, 2).is_err());
    assert!(b.kv_append(&mut cache, &kv1, &kv1, 3).is_err());
    assert!(b.kv_append(&mut cache, &kv1, &kv1, usize::MAX).is_err());
    // Wrong width; k and v of different shapes.
    let wide = up(&b, 1, 5, &[1.0; 5]);
    assert!(b.kv_append(&mut cache, &wide, &wide, 0).is_err());
    assert!(b.kv_append(&mut cache, &kv1, &kv2, 0).is_err());
    b.kv_append(&mut cache, &kv2, &kv2, 0).unwrap();
    b.kv_append(&mut cache, &kv1, &kv1, 2).unwrap();

    let q1 = up(&b, 1, 8, &[1.0; 8]);
    let q2 = up(&b, 2, 8, &[1.0; 16]);
    assert!(b.attention_scores(&q1, &cache, 2, s).is_ok());
    // Positions past the cache.
    assert!(b.attention_scores(&q2, &cache, 2, s).is_err());
    assert!(b.attention_scores(&q1, &cache, usize::MAX, s).is_err());
    assert!(b.attention(&q1, &cache, 3, s).is_err());
    // q rows that are not n_heads x head_dim.
    assert!(b.attention_scores(&kv1, &cache, 0, s).is_err());
    // Heads that do not group, no kv heads, a cache of another width.
    assert!(b.attention_scores(&q1, &cache, 0, shape(3, 2, 2)).is_err());
    assert!(b.attention_scores(&q1, &cache, 0, shape(4, 0, 2)).is_err());
    assert!(b.attention_scores(&q1, &cache, 0, shape(2, 4, 2)).is_err());
    assert!(b.attention_scores(&q1, &cache, 0, shape(2, 2, 4)).is_err());

    // Probabilities of the wrong shape.
    let ok = up(&b, 4, 3, &[0.25; 12]);
    assert!(b.attention_weighted_sum(&ok, &cache, 2, s).is_ok());
    assert!(b.attention_weighted_sum(&ok, &cache, 1, s).is_err());
    let odd_rows = up(&b, 5, 3, &[0.2; 15]);
    assert!(b.attention_weighted_sum(&odd_rows, &cache, 2, s).is_err());
    let long = up(&b, 8, 4, &[0.25; 32]);
    assert!(b.attention_weighted_sum(&long, &cache, 2, s).is_err());
    assert!(b
        .attention_weighted_sum(&ok, &cache, 2, shape(4, 0, 2))
        .is_err());
    assert!(b
        .attention_weighted_sum(&ok, &cache, usize::MAX, s)
        .is_err());
}

#[test]
fn backend_identity() {
    let b = backend();
    assert_eq!(b.name(), "ndarray");
    assert_eq!(b.device(), "cpu");
    assert!(NdarrayBackend::new(&BackendOptions {
        device: "cuda:0".into(),
        threads: None,
    })
    .is_err());
}
