//! `kind = "auto"` (the default): the most preferred backend that runs the
//! model on the device is picked, and the user is told which and why.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rbees_core::WeightDType;
use rbees_model::synth::{write_synthetic, SynthShape};
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `rbees` from the system temp dir, so no checkout config is read
/// (the built-in default is `auto` too).
fn rbees(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rbees"))
        .args(args)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run the rbees binary")
}

/// `rbees generate --json` on `model` (no `--backend`): the backend that ran
/// and what was said on stderr.
fn generate(model: &Path, extra: &[&str]) -> (Value, String) {
    let model = model.to_str().expect("utf-8 path");
    let mut args = vec![
        "generate",
        "--model",
        model,
        "--prompt-ids",
        "1,2,3",
        "--max-tokens",
        "2",
        "--ignore-eos",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = rbees(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "rbees failed: {stderr}");
    let json = serde_json::from_str(stdout.trim()).expect("one JSON object");
    (json, stderr)
}

/// `rbees generate` on `model` with `extra` flags, expected to fail cleanly:
/// its stderr.
fn generate_fails(model: &Path, extra: &[&str]) -> String {
    let model = model.to_str().expect("utf-8 path");
    let mut args = vec!["generate", "--model", model, "--prompt-ids", "1"];
    args.extend_from_slice(extra);
    let out = rbees(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn auto_picks_cpu_for_a_model_it_runs() {
    let model = repo_root().join("testdata/models/tiny-llama2-q8_0.gguf");
    let (json, stderr) = generate(&model, &[]);
    assert_eq!(json["backend"], "cpu", "{stderr}");
    assert!(
        stderr.contains("backend auto: picked 'cpu' on cpu"),
        "{stderr}"
    );
    // Nothing was passed over on the way to the first choice.
    assert!(!stderr.contains("passed over"), "{stderr}");
}

#[test]
fn auto_passes_over_cpu_for_a_weight_type_it_lacks_and_says_why() {
    // Q2_K matrices: the cpu backend refuses them at load; candle, next in
    // preference, runs them.
    let shape = SynthShape {
        name: "tiny-q2k",
        dim: 256,
        n_layers: 1,
        n_heads: 4,
        n_kv_heads: 2,
        ff_dim: 256,
        vocab: 256,
        context: 64,
        rope_base: 10000.0,
        rms_eps: 1e-5,
        tied_embeddings: false,
    };
    let model = std::env::temp_dir().join(format!("rbees-auto-q2k-{}.gguf", std::process::id()));
    write_synthetic(&shape, WeightDType::Q2K, 1, &model).expect("write the model");
    let _cleanup = RemoveOnDrop(model.clone());
    let (json, stderr) = generate(&model, &[]);
    assert_eq!(json["backend"], "candle", "{stderr}");
    assert!(
        stderr.contains("backend auto: picked 'candle' on cpu"),
        "{stderr}"
    );
    assert!(
        stderr.contains("passed over: cpu: ") && stderr.contains("Q2_K"),
        "{stderr}"
    );
    // The same model with the cpu backend named is a clear load error.
    let stderr = generate_fails(&model, &["--backend", "cpu"]);
    assert!(stderr.contains("Q2_K"), "{stderr}");
}

#[test]
fn auto_on_a_device_nothing_here_can_use_lists_every_reason() {
    if cfg!(feature = "cuda") {
        // A CUDA build may find a GPU here: nothing to refuse.
        return;
    }
    let model = repo_root().join("testdata/models/tiny-llama2-q8_0.gguf");
    let stderr = generate_fails(&model, &["--device", "cuda:0"]);
    assert!(
        stderr.contains("backend 'auto' found no built-in backend"),
        "{stderr}"
    );
    assert!(stderr.contains("cuda-kernels: "), "{stderr}");
}

#[test]
fn device_auto_is_the_gpu_where_one_is_usable_else_the_cpu() {
    // Without CUDA in the build no GPU is usable: `auto` (the default
    // device) is the CPU for a backend that runs on both, and a clear error
    // for a GPU-only one. A CUDA build may find a GPU, so it is not asked.
    if cfg!(feature = "cuda") {
        return;
    }
    let model = repo_root().join("testdata/models/tiny-llama2-q8_0.gguf");
    let (json, stderr) = generate(&model, &["--backend", "candle", "--device", "auto"]);
    assert_eq!(json["backend"], "candle", "{stderr}");
    assert_eq!(json["device"], "cpu", "{stderr}");
    let stderr = generate_fails(&model, &["--backend", "cuda-kernels", "--device", "auto"]);
    assert!(
        stderr.contains("device auto") && stderr.contains("cuda-kernels"),
        "{stderr}"
    );
}
