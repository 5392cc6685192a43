//! SmolLM2-135M-Instruct Q4_1 against llama.cpp (testdata/fixtures/generate_smollm2.json).

mod common;

use common::*;
use rbees_core::Backend;

/// Below this top-1/top-2 margin llama.cpp's own choice is within the
/// difference its Q8 activation rounding makes, so the sequences may part.
const MARGIN: f32 = 0.2;
/// The same rule for the candle backend, which rounds activations to Q8 as
/// llama.cpp does but in its own kernels: its rounding noise is as large as
/// llama.cpp's and independent of it (conformance: NMSE 2.4e-5 against exact
/// f32 products, the same as for Q8_0 weights), so two such engines part
/// sooner. Measured: one prompt of seven ("Translate to French...") has
/// llama.cpp's top two 0.28 apart and candle's 0.06 apart the other way.
/// The cpu backend rounds exactly as llama.cpp does (same Q8_0/Q8_1
/// formulas) but sums in another order, so it gets the same rule.
const CANDLE_MARGIN: f32 = 0.3;
/// Reference (f32 activations) vs llama.cpp (activations rounded to Q8_1
/// before every Q4_1 product, Q8_0 before the tied Q8_0 output): measured
/// 2e-4 to 8.8e-3 over the fixture prompts, 30 layers deep. Emulating the
/// rounding in the reference brought most prompts down several-fold, which
/// is how the gap was attributed. A real bug (RoPE, norms, masking) moves
/// the NMSE to 0.1 and beyond.
const LOGITS_NMSE: f64 = 1.5e-2;

/// Runs every fixture prompt; returns the greedy ids per prompt.
/// Asserts llama.cpp's greedy ids up to the first step where its own
/// top-1/top-2 margin is below `margin` (the first token always, unless
/// llama.cpp's first margin is itself below `margin`).
fn greedy_generation_matches_llama_cpp<B: Backend>(backend: B, margin: f32) -> Vec<Vec<u32>> {
    let fx = fixture("generate_smollm2.json");
    let (mut model, tok) = load_on(backend, "models/SmolLM2-135M-Instruct.Q4_1.gguf", Some(512));
    let mut all = Vec::new();
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 6);
    for case in cases {
        let prompt = case["prompt"].as_str().unwrap();
        let prompt_ids = ids(&case["prompt_ids"]);
        assert_eq!(
            tok.encode(prompt, true, true).unwrap(),
            prompt_ids,
            "{prompt:?}"
        );
        let want_ids = ids(&case["greedy_ids"]);
        let margins = floats(&case["margins"]);
        let (got_ids, logits) = greedy(&mut model, &tok, &prompt_ids, want_ids.len());
        let err = nmse(&logits, &floats(&case["last_logits"]));
        assert!(err < LOGITS_NMSE, "{prompt:?}: last-logit NMSE {err}");
        let mut agree = margins.iter().take_while(|&&m| m >= margin).count();
        if margin == MARGIN {
            agree = agree.max(1); // the reference: the first token always
        }
        assert_eq!(
            got_ids[..agree],
            want_ids[..agree],
            "{prompt:?}: the first {agree} ids must match llama.cpp's"
        );
        all.push(got_ids);
    }
    all
}

#[test]
fn ndarray_candle_and_cpu_match_llama_cpp_and_each_other() {
    let reference = greedy_generation_matches_llama_cpp(ndarray(), MARGIN);
    let candle = greedy_generation_matches_llama_cpp(candle(), CANDLE_MARGIN);
    let cpu = greedy_generation_matches_llama_cpp(cpu_backend(), CANDLE_MARGIN);
    let fx = fixture("generate_smollm2.json");
    for (((r, c), p), case) in reference
        .iter()
        .zip(&candle)
        .zip(&cpu)
        .zip(fx["cases"].as_array().unwrap())
    {
        // All follow llama.cpp while its choice is clear, so they agree there too.
        let clear = floats(&case["margins"])
            .iter()
            .take_while(|&&m| m >= CANDLE_MARGIN)
            .count();
        assert_eq!(r[..clear], c[..clear], "candle {:?}", case["prompt"]);
        assert_eq!(r[..clear], p[..clear], "cpu {:?}", case["prompt"]);
    }
}
