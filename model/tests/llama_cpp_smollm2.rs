//! SmolLM2-135M-Instruct Q4_1 against llama.cpp (testdata/fixtures/generate_smollm2.json).

mod common;

use common::*;

/// Below this top-1/top-2 margin llama.cpp's own choice is within the
/// difference its Q8 activation rounding makes, so the sequences may part.
const MARGIN: f32 = 0.2;
/// Reference (f32 activations) vs llama.cpp (activations rounded to Q8_1
/// before every Q4_1 product, Q8_0 before the tied Q8_0 output): measured
/// 2e-4 to 8.8e-3 over the fixture prompts, 30 layers deep. Emulating the
/// rounding in the reference brought most prompts down several-fold, which
/// is how the gap was attributed. A real bug (RoPE, norms, masking) moves
/// the NMSE to 0.1 and beyond.
const LOGITS_NMSE: f64 = 1.5e-2;

#[test]
fn greedy_generation_matches_llama_cpp() {
    let fx = fixture("generate_smollm2.json");
    let (mut model, tok) = load("models/SmolLM2-135M-Instruct.Q4_1.gguf", Some(512));
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
        assert_eq!(got_ids[0], want_ids[0], "{prompt:?}: first token");
        for step in 0..want_ids.len() {
            if margins[step] < MARGIN {
                break;
            }
            assert_eq!(
                got_ids[step],
                want_ids[step],
                "{prompt:?}: step {step}, got {:?} want {:?}",
                &got_ids[..=step],
                &want_ids[..=step]
            );
        }
    }
}
