//! Intermediate activations of the tiny F32 model against an independent
//! numpy forward pass (testdata/fixtures/checkpoints_tiny.json), which the
//! fixture script itself checked against llama.cpp's logits, on ndarray,
//! candle and cpu. A traced pass runs the production path (the fused
//! attention); `kq_softmax` is computed beside it for the trace.

mod common;

use std::collections::HashMap;

use common::*;
use rbees_core::Backend;

const TOLERANCE: f32 = 1e-4;

fn traced<B: Backend>(backend: B, prompt: &[u32]) -> (HashMap<String, Vec<f32>>, Vec<f32>) {
    let (mut model, _) = load_on(backend, "testdata/models/tiny-llama2-f32.gguf", None);
    let mut seen = HashMap::new();
    let logits = model
        .forward_traced(prompt, 0, &mut |b, name, t| {
            seen.insert(name.to_string(), b.download(t).unwrap());
        })
        .unwrap();
    (seen, logits)
}

fn every_checkpoint_matches_numpy<B: Backend>(backend: B) {
    let fx = fixture("checkpoints_tiny.json");
    let (seen, logits) = traced(backend, &ids(&fx["prompt_ids"]));
    let checkpoints = fx["checkpoints"].as_object().unwrap();
    // RMSNorm (1), QKV (2), RoPE (1B), attention scores (4), attention output (5),
    // SwiGLU (6), first block (7), full logits (8).
    for name in [
        "embd",
        "attn_norm.0",
        "q.0",
        "k.0",
        "v.0",
        "q_rope.0",
        "k_rope.0",
        "kq_softmax.0",
        "attn_out.0",
        "ffn_inp.0",
        "ffn_norm.0",
        "swiglu.0",
        "l_out.0",
        "l_out.1",
        "result_norm",
    ] {
        let want = floats(&checkpoints[name]["data"]);
        let got = seen
            .get(name)
            .unwrap_or_else(|| panic!("{name} not traced"));
        let diff = max_abs_diff(got, &want);
        let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        assert!(
            diff <= TOLERANCE * scale,
            "{name}: differs by {diff} (scale {scale})"
        );
    }
    let want = floats(&checkpoints["logits"]["data"]);
    let diff = max_abs_diff(&logits, &want);
    assert!(diff < 1e-3, "logits differ by {diff}");
}

/// KV cache (3): the prompt fed in pieces, reusing the cache, gives the
/// same logits at every position as the numpy pass over the whole prompt.
fn kv_cache_continuation_matches_full_pass<B: Backend>(backend: B) {
    let fx = fixture("checkpoints_tiny.json");
    let prompt = ids(&fx["prompt_ids"]);
    let want = floats(&fx["checkpoints"]["logits"]["data"]);
    let vocab = want.len() / prompt.len();
    let (mut model, _) = load_on(backend, "testdata/models/tiny-llama2-f32.gguf", None);
    // Fill the cache with junk first: a new request must overwrite it.
    model.forward(&[5, 6, 7, 8, 9, 10, 11, 12], 0).unwrap();
    let split = 3;
    let first = model.forward(&prompt[..split], 0).unwrap();
    let diff = max_abs_diff(&first, &want[(split - 1) * vocab..split * vocab]);
    assert!(diff < 1e-3, "prefix logits differ by {diff}");
    for pos in split..prompt.len() {
        let got = model.forward(&prompt[pos..pos + 1], pos).unwrap();
        let diff = max_abs_diff(&got, &want[pos * vocab..(pos + 1) * vocab]);
        assert!(diff < 1e-3, "position {pos}: logits differ by {diff}");
    }
}

#[test]
fn ndarray_checkpoints_match_numpy() {
    every_checkpoint_matches_numpy(ndarray());
}

#[test]
fn candle_checkpoints_match_numpy() {
    every_checkpoint_matches_numpy(candle());
}

#[test]
fn ndarray_kv_cache_continuation_matches_full_pass() {
    kv_cache_continuation_matches_full_pass(ndarray());
}

#[test]
fn candle_kv_cache_continuation_matches_full_pass() {
    kv_cache_continuation_matches_full_pass(candle());
}

#[test]
fn cpu_checkpoints_match_numpy() {
    every_checkpoint_matches_numpy(cpu_backend());
}

#[test]
fn cpu_kv_cache_continuation_matches_full_pass() {
    kv_cache_continuation_matches_full_pass(cpu_backend());
}
