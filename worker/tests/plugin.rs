//! Backend plugins through the command line: the example plugin, loaded
//! from its shared library (built by `rbees-plugin-testkit`), selected by
//! `--plugin`, by config `path` and by its own name from `plugins_dir`;
//! greedy output equal to the ndarray reference; `rbees backends` and
//! `rbees conformance` on it; broken plugins fail cleanly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rbees_plugin_testkit::build;
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `rbees` from the system temp dir, so no checkout config is read.
fn rbees<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rbees"))
        .args(args)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run the rbees binary")
}

#[track_caller]
fn success(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "rbees failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    stdout
}

/// A clean failure: exit code 1 (not a signal), one message on stderr.
#[track_caller]
fn failure(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{}: {stderr}", out.status);
    stderr
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Greedy `generate --json` with `backend_args`.
#[track_caller]
fn greedy(model: &Path, prompt: &str, tokens: usize, backend_args: &[&str]) -> Value {
    let n = tokens.to_string();
    let mut args = vec![
        "generate",
        "--model",
        path_str(model),
        "--prompt",
        prompt,
        "--max-tokens",
        &n,
        "--temperature",
        "0",
        "--ignore-eos",
        "--json",
        "--threads",
        "2",
    ];
    args.extend_from_slice(backend_args);
    let stdout = success(&rbees(&args));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}"))
}

#[track_caller]
fn assert_same_greedy_ids(model: &Path, prompt: &str, tokens: usize) {
    let plugin = build().example();
    let reference = greedy(model, prompt, tokens, &["--backend", "ndarray"]);
    let got = greedy(model, prompt, tokens, &["--plugin", path_str(&plugin)]);
    assert_eq!(got["backend"], "example", "{got}");
    assert_eq!(
        got["ids"],
        reference["ids"],
        "{}: {prompt:?}",
        model.display()
    );
    assert_eq!(got["ids"].as_array().unwrap().len(), tokens);
    let composed: Vec<&str> = got["composed_ops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        composed,
        [
            "attention",
            "swiglu",
            "rope_batch",
            "kv_append_batch",
            "attention_batch"
        ],
        "{got}"
    );
}

#[test]
fn tiny_models_through_the_plugin_match_ndarray() {
    for model in [
        "tiny-llama2-f32.gguf",
        "tiny-llama2-q8_0.gguf",
        "tiny-llama2-q4_0-tied.gguf",
    ] {
        let model = repo_root().join("testdata/models").join(model);
        assert_same_greedy_ids(&model, "Once upon a time", 24);
    }
}

/// SmolLM2-135M Q4_1 (fetched by scripts/fetch-model.sh): the plugin gets
/// the weights as F32, converted at load as it declares, like ndarray's.
#[test]
fn smollm2_through_the_plugin_matches_ndarray() {
    let model = repo_root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        model.is_file(),
        "{} is missing: run scripts/fetch-model.sh first",
        model.display()
    );
    assert_same_greedy_ids(&model, "The capital of France is", 16);
}

#[test]
fn backends_lists_the_plugin_with_its_abi_version_and_file() {
    let plugin = build().example();
    let stdout = success(&rbees(&["backends", "--plugin", path_str(&plugin)]));
    assert!(
        stdout.contains("ndarray") && stdout.contains("candle"),
        "{stdout}"
    );
    let canonical = plugin.canonicalize().unwrap();
    assert!(
        stdout.contains(&format!("example    ABI v1  {}", canonical.display())),
        "{stdout}"
    );
    assert!(stdout.contains("usable here: yes on cpu"), "{stdout}");
    assert!(
        stdout.contains(
            "weights converted to F32 at load (declared by the plugin): F16, BF16, Q4_0, Q4_1"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("in the plugin: rms_norm, rope, softmax, silu, matmul"),
        "{stdout}"
    );
    assert!(stdout.contains("weights refused: Q8_K"), "{stdout}");
}

#[test]
fn conformance_command_runs_on_the_plugin() {
    let plugin = build().example();
    let out = rbees(&[
        "conformance",
        "--plugin",
        path_str(&plugin),
        "--quick",
        "--threads",
        "2",
    ]);
    let stdout = success(&out);
    assert!(
        stdout.contains("conformance of backend 'example' on cpu"),
        "{stdout}"
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

/// A folder with the example plugin (under another file name) and a broken one.
fn plugins_dir(tag: &str) -> PathBuf {
    let built = build();
    let dir =
        std::env::temp_dir().join(format!("rbees-worker-plugins-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let so = std::env::consts::DLL_SUFFIX;
    std::fs::copy(built.example(), dir.join(format!("libmine{so}"))).unwrap();
    std::fs::copy(
        built.fixture("wrong_version"),
        dir.join(format!("libold{so}")),
    )
    .unwrap();
    dir
}

#[test]
fn a_plugin_name_from_plugins_dir_is_a_backend_kind_in_the_config() {
    let dir = plugins_dir("config");
    let config = dir.join("rbees.toml");
    std::fs::write(
        &config,
        format!(
            "[backend]\nkind = \"example\"\nthreads = 2\nplugins_dir = \"{}\"\n",
            dir.display()
        ),
    )
    .unwrap();
    let model = repo_root().join("testdata/models/tiny-llama2-f32.gguf");
    let got = greedy(&model, "Hello", 4, &["--config", path_str(&config)]);
    assert_eq!(got["backend"], "example");
    let reference = greedy(&model, "Hello", 4, &["--backend", "ndarray"]);
    assert_eq!(got["ids"], reference["ids"]);
}

#[test]
fn an_unknown_kind_lists_the_plugins_found_and_those_refused() {
    let dir = plugins_dir("unknown");
    let model = repo_root().join("testdata/models/tiny-llama2-f32.gguf");
    let out = rbees(&[
        "generate",
        "--model",
        path_str(&model),
        "--prompt",
        "Hi",
        "--backend",
        "exampel",
        "--plugins-dir",
        path_str(&dir),
    ]);
    let stderr = failure(&out);
    assert!(stderr.contains("unknown backend 'exampel'"), "{stderr}");
    assert!(
        stderr.contains("ndarray") && stderr.contains("example (plugin"),
        "{stderr}"
    );
    assert!(
        stderr.contains("libmine") && stderr.contains("libold"),
        "{stderr}"
    );
    assert!(stderr.contains("ABI version 999"), "{stderr}");
}

#[test]
fn broken_plugins_fail_generation_cleanly() {
    let built = build();
    let model = repo_root().join("testdata/models/tiny-llama2-f32.gguf");
    for (fixture, words) in [
        (
            "wrong_version",
            &["libwrong_version", "ABI version 999"][..],
        ),
        (
            "missing_symbol",
            &["libmissing_symbol", "no `rbees_plugin_entry` symbol"][..],
        ),
        (
            "null_kernel",
            &["libnull_kernel", "`matmul` function is null"][..],
        ),
        (
            "kernel_error",
            &["libkernel_error", "simulated device failure"][..],
        ),
        (
            "kernel_panics",
            &[
                "libkernel_panics",
                "panic caught in the plugin",
                "simulated kernel bug",
            ][..],
        ),
    ] {
        let plugin = built.fixture(fixture);
        let out = rbees(&[
            "generate",
            "--model",
            path_str(&model),
            "--prompt",
            "Hi",
            "--plugin",
            path_str(&plugin),
        ]);
        let stderr = failure(&out);
        for w in words {
            assert!(stderr.contains(w), "{fixture}: lacks '{w}': {stderr}");
        }
    }
}

#[test]
fn backend_plugin_without_a_path_says_how_to_give_one() {
    let model = repo_root().join("testdata/models/tiny-llama2-f32.gguf");
    let out = rbees(&[
        "generate",
        "--model",
        path_str(&model),
        "--prompt",
        "Hi",
        "--backend",
        "plugin",
    ]);
    let stderr = failure(&out);
    assert!(
        stderr.contains("--plugin PATH") && stderr.contains("[backend] path"),
        "{stderr}"
    );
}
