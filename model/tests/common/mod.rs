//! Shared by the model's integration tests: paths, fixtures, loading.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rbees_backend_candle::CandleBackend;
use rbees_backend_cpu::CpuBackend;
use rbees_backend_ndarray::NdarrayBackend;
use rbees_core::{Backend, BackendOptions};
use rbees_model::{GgufFile, Llama, LoadOptions, Tokenizer};
use serde_json::Value;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A repo-relative path; the SmolLM2 model gets a hint on how to fetch it.
pub fn repo_file(relative: &str) -> PathBuf {
    let path = repo_root().join(relative);
    assert!(
        path.is_file(),
        "{} is missing{}",
        path.display(),
        if relative.starts_with("models/") {
            ": run scripts/fetch-model.sh first"
        } else {
            ""
        }
    );
    path
}

pub fn fixture(name: &str) -> Value {
    let path = repo_file(&format!("testdata/fixtures/{name}"));
    let text = std::fs::read_to_string(&path).expect("fixture readable");
    serde_json::from_str(&text).expect("fixture is JSON")
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn cpu() -> BackendOptions {
    BackendOptions {
        device: "cpu".into(),
        threads: Some(2),
    }
}

pub fn ndarray() -> NdarrayBackend {
    NdarrayBackend::new(&cpu()).expect("ndarray backend")
}

pub fn candle() -> CandleBackend {
    CandleBackend::new(&cpu()).expect("candle backend")
}

pub fn cpu_backend() -> CpuBackend {
    CpuBackend::new(&cpu()).expect("cpu backend")
}

/// Loads a repo-relative model on `backend`.
pub fn load_on<B: Backend>(
    backend: B,
    relative: &str,
    context: Option<usize>,
) -> (Llama<B>, Tokenizer) {
    let gguf = GgufFile::open(repo_file(relative)).expect("model opens");
    let tokenizer = Tokenizer::from_gguf_metadata(gguf.metadata()).expect("tokenizer");
    let model = Llama::load(
        backend,
        &gguf,
        &LoadOptions { context, slots: 1 },
        &mut |_, _| {},
    )
    .expect("model loads");
    (model, tokenizer)
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[allow(unused_imports)]
pub use rbees_conformance::nmse;

/// Greedy generation with EOS ignored: the ids and the last prompt logits.
pub fn greedy<B: Backend>(
    model: &mut Llama<B>,
    tokenizer: &Tokenizer,
    prompt_ids: &[u32],
    n: usize,
) -> (Vec<u32>, Vec<f32>) {
    let params = rbees_model::GenerateParams {
        max_tokens: n,
        sampling: rbees_model::SamplingParams::greedy(),
        stop: vec![],
        ignore_eos: true,
        keep_prompt_logits: true,
    };
    let out = rbees_model::generate(model, tokenizer, prompt_ids, &params, |_| {
        std::ops::ControlFlow::Continue(())
    })
    .expect("generation runs");
    (out.ids, out.prompt_logits.expect("logits kept"))
}
