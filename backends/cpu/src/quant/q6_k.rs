//! Q6_K: 256 weights per 210-byte block (ggml `block_q6_K`): 128 bytes of
//! low nibbles, 64 bytes of high 2-bit pairs, 16 i8 scales (one per 16
//! values, in order), then f16 `d`; `w = d * sc * (q - 32)`.

use super::f16_at;
use super::q8_k::{BlockQ8K, QK_K};

pub const BLOCK_BYTES: usize = 210;

/// The 256 signed 6-bit values of a block in order (ggml's unpacking: each
/// half of 128 takes 64 bytes of `ql` and 32 of `qh`).
#[inline(always)]
fn unpack(b: &[u8]) -> [i8; QK_K] {
    let (ql, qh) = (&b[..128], &b[128..192]);
    let mut v = [0i8; QK_K];
    for half in 0..2 {
        let (ql, qh, v) = (&ql[64 * half..], &qh[32 * half..], &mut v[128 * half..]);
        for l in 0..32 {
            let h = qh[l];
            v[l] = ((ql[l] & 0x0F) | ((h & 3) << 4)) as i8 - 32;
            v[l + 32] = ((ql[l + 32] & 0x0F) | (((h >> 2) & 3) << 4)) as i8 - 32;
            v[l + 64] = ((ql[l] >> 4) | (((h >> 4) & 3) << 4)) as i8 - 32;
            v[l + 96] = ((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    v
}

fn scale(b: &[u8], g: usize) -> i32 {
    i32::from(b[192 + g] as i8)
}

/// `Σ w·x` against Q8_K activations (ggml `ggml_vec_dot_q6_K_q8_K`).
pub fn dot(w: &[u8], x: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (b, y) in w.chunks_exact(BLOCK_BYTES).zip(x) {
        let v = unpack(b);
        let mut sumi = 0i32;
        for (g, (vg, yg)) in v.chunks_exact(16).zip(y.qs.chunks_exact(16)).enumerate() {
            let s: i32 = vg
                .iter()
                .zip(yg)
                .map(|(&a, &c)| i32::from(a) * i32::from(c))
                .sum();
            sumi += scale(b, g) * s;
        }
        sum += y.d * f16_at(b, 208) * sumi as f32;
    }
    sum
}

pub fn dequantize(w: &[u8], out: &mut [f32]) {
    for (b, o) in w.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, 208);
        for (i, (o, &q)) in o.iter_mut().zip(unpack(b).iter()).enumerate() {
            *o = d * scale(b, i / 16) as f32 * f32::from(q);
        }
    }
}
