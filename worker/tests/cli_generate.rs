//! End-to-end behaviour of the `rbees` command line on the tiny F32 model,
//! checked against the llama.cpp fixtures in `testdata/fixtures`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const TINY_F32: &str = "testdata/models/tiny-llama2-f32.gguf";

fn tiny_model() -> PathBuf {
    repo_root().join(TINY_F32)
}

fn fixture(name: &str) -> Value {
    let path = repo_root().join("testdata/fixtures").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
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
fn expect_success(out: &Output) -> (String, String) {
    let stdout = String::from_utf8(out.stdout.clone()).expect("utf-8 stdout");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "rbees failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    (stdout, stderr)
}

/// `rbees generate --json` on the tiny model with `extra` flags, on the
/// ndarray reference (the llama.cpp fixtures' tolerances are its own; the
/// default `auto` would pick the cpu backend).
#[track_caller]
fn generate_json(extra: &[&str]) -> Value {
    let model = tiny_model();
    let mut args = vec![
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--backend",
        "ndarray",
        "--ignore-eos",
        "--json",
    ];
    args.extend_from_slice(extra);
    let (stdout, _) = expect_success(&rbees(&args));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "--json prints one line: {stdout}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}"))
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_u64().expect("an id"))
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

fn f32_cases() -> Vec<Value> {
    let all = fixture("generate_tiny.json");
    let cases: Vec<Value> = all["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["model"] == TINY_F32)
        .cloned()
        .collect();
    assert!(!cases.is_empty(), "no F32 cases in generate_tiny.json");
    cases
}

fn joined(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

#[test]
fn tokenize_json_matches_llama_cpp() {
    let fx = fixture("tokenize_tiny.json");
    assert_eq!(fx["model"], TINY_F32);
    let model = tiny_model();
    let cases = fx["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let mut args = vec![
            "tokenize",
            "--model",
            model.to_str().unwrap(),
            "--json",
            "--text",
            text,
        ];
        if case["add_special"] == false {
            args.push("--no-add-special");
        }
        if case["parse_special"] == false {
            args.push("--no-parse-special");
        }
        let (stdout, _) = expect_success(&rbees(&args));
        let got: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
        assert_eq!(
            ids(&got["ids"]),
            ids(&case["ids"]),
            "tokenize {text:?} add_special={} parse_special={}",
            case["add_special"],
            case["parse_special"]
        );
        assert_eq!(
            got["pieces"].as_array().map(Vec::len),
            Some(ids(&case["ids"]).len()),
            "one piece per id"
        );
    }
}

#[test]
fn greedy_generation_matches_llama_cpp() {
    for case in f32_cases() {
        let prompt = case["prompt"].as_str().unwrap();
        let out = generate_json(&[
            "--prompt",
            prompt,
            "--temperature",
            "0",
            "--max-tokens",
            "16",
            "--logits",
        ]);
        assert_eq!(
            ids(&out["prompt_ids"]),
            ids(&case["prompt_ids"]),
            "{prompt:?}"
        );
        assert_eq!(ids(&out["ids"]), ids(&case["greedy_ids"]), "{prompt:?}");
        assert_eq!(out["stop_reason"], "MAX_TOKENS");
        assert_eq!(out["stop_sequence"], Value::Null);
        assert_eq!(out["backend"], "ndarray");
        assert_eq!(out["device"], "cpu");
        assert!(out["text"].is_string());

        let got = floats(&out["last_logits"]);
        let want = floats(&case["last_logits"]);
        assert_eq!(got.len(), want.len(), "one logit per vocabulary entry");
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-3, "{prompt:?}: logits differ by {worst}");

        // The reference backend runs the fused ops as default compositions, and says so.
        assert_eq!(
            out["composed_ops"],
            serde_json::json!([
                "attention",
                "swiglu",
                "rope_batch",
                "kv_append_batch",
                "attention_batch"
            ])
        );

        let t = &out["timings"];
        assert!(t.is_object(), "timings: {t}");
        assert_eq!(
            t["prompt_tokens"].as_u64(),
            Some(ids(&case["prompt_ids"]).len() as u64)
        );
        assert_eq!(t["generated_tokens"].as_u64(), Some(16));
        for key in [
            "load_ms",
            "prompt_ms",
            "prompt_tokens_per_sec",
            "decode_ms",
            "decode_tokens_per_sec",
        ] {
            let v = t[key]
                .as_f64()
                .unwrap_or_else(|| panic!("timings.{key}: {t}"));
            assert!(v.is_finite() && v >= 0.0, "timings.{key} = {v}");
        }
    }
}

#[test]
fn prompt_ids_generate_like_the_text() {
    let case = &f32_cases()[1];
    let prompt_ids = ids(&case["prompt_ids"]);
    let greedy = ["--temperature", "0", "--max-tokens", "16", "--logits"];
    let from_ids =
        generate_json(&[&["--prompt-ids", joined(&prompt_ids).as_str()], &greedy[..]].concat());
    let from_text =
        generate_json(&[&["--prompt", case["prompt"].as_str().unwrap()], &greedy[..]].concat());
    assert_eq!(ids(&from_ids["prompt_ids"]), prompt_ids);
    assert_eq!(ids(&from_ids["ids"]), ids(&case["greedy_ids"]));
    assert_eq!(from_ids["ids"], from_text["ids"]);
    assert_eq!(from_ids["text"], from_text["text"]);
    assert_eq!(from_ids["last_logits"], from_text["last_logits"]);

    // Spaces around the ids are allowed.
    let spaced = prompt_ids
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let out = generate_json(&[
        "--prompt-ids",
        &spaced,
        "--temperature",
        "0",
        "--max-tokens",
        "4",
    ]);
    assert_eq!(ids(&out["prompt_ids"]), prompt_ids);
    assert_eq!(ids(&out["ids"]), ids(&case["greedy_ids"])[..4]);
}

#[test]
fn seeded_sampling_is_reproducible() {
    let prompt = f32_cases()[0]["prompt"].as_str().unwrap().to_string();
    let sample = |seed: &str| {
        let out = generate_json(&[
            "--prompt",
            &prompt,
            "--temperature",
            "0.9",
            "--max-tokens",
            "16",
            "--seed",
            seed,
        ]);
        assert_eq!(out["seed"].as_u64().unwrap().to_string(), seed);
        assert_eq!(out["stop_reason"], "MAX_TOKENS");
        ids(&out["ids"])
    };
    let first = sample("42");
    assert_eq!(first.len(), 16);
    assert_eq!(sample("42"), first, "same seed, same tokens");
    assert_ne!(sample("43"), first, "another seed, other tokens");
}

#[test]
fn stop_string_from_the_middle_of_the_text() {
    let case = &f32_cases()[1];
    let prompt = case["prompt"].as_str().unwrap();
    let greedy = [
        "--prompt",
        prompt,
        "--temperature",
        "0",
        "--max-tokens",
        "16",
    ];
    let full = generate_json(&greedy);
    let text = full["text"].as_str().unwrap().to_string();
    assert_eq!(ids(&full["ids"]), ids(&case["greedy_ids"]));

    // Three plain ASCII characters from the middle of the greedy text.
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let plain = |c: char| c.is_ascii_alphanumeric() || c == ' ';
    let (start, _) = (chars.len() / 3..=chars.len().saturating_sub(3))
        .map(|i| (chars[i].0, &chars[i..i + 3]))
        .find(|(at, w)| {
            w.iter().all(|&(_, c)| plain(c)) && {
                let s: String = w.iter().map(|&(_, c)| c).collect();
                text.find(&s) == Some(*at)
            }
        })
        .unwrap_or_else(|| panic!("no plain stretch in the greedy text {text:?}"));
    let stop: String = text[start..].chars().take(3).collect();
    assert!(start > 0);

    let mut args = greedy.to_vec();
    args.extend_from_slice(&["--stop", &stop]);
    let out = generate_json(&args);
    assert_eq!(out["stop_reason"], "STOP_SEQUENCE", "{out}");
    assert_eq!(out["stop_sequence"], stop.as_str());
    let stopped = out["text"].as_str().unwrap();
    assert!(!stopped.contains(&stop), "{stopped:?} contains {stop:?}");
    assert_eq!(stopped, &text[..start], "the text up to the stop string");
    let got = ids(&out["ids"]);
    assert!(!got.is_empty() && got.len() < 16, "{got:?}");
    assert_eq!(got, ids(&case["greedy_ids"])[..got.len()]);

    // A stop string that never appears changes nothing.
    let mut args = greedy.to_vec();
    args.extend_from_slice(&["--stop", "never in this text \u{1F600}"]);
    let out = generate_json(&args);
    assert_eq!(out["stop_reason"], "MAX_TOKENS");
    assert_eq!(out["text"], full["text"]);
}

#[test]
fn streaming_prints_the_text_and_a_timing_line() {
    let case = &f32_cases()[0];
    let prompt = case["prompt"].as_str().unwrap();
    let greedy = [
        "--prompt",
        prompt,
        "--temperature",
        "0",
        "--max-tokens",
        "16",
    ];
    let json = generate_json(&greedy);

    let model = tiny_model();
    let mut args = vec![
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--backend",
        "ndarray",
        "--ignore-eos",
    ];
    args.extend_from_slice(&greedy);
    let (stdout, stderr) = expect_success(&rbees(&args));
    let text = json["text"].as_str().unwrap();
    assert!(!text.is_empty());
    assert_eq!(
        stdout,
        format!("{text}\n"),
        "the streamed text, then a newline"
    );
    assert!(!stdout.contains('{'), "no JSON without --json: {stdout}");
    let timing = stderr
        .lines()
        .find(|l| l.contains("tokens/s"))
        .unwrap_or_else(|| panic!("no timing line on stderr: {stderr}"));
    assert!(timing.contains("ndarray"), "{timing}");
    assert!(timing.contains("decode 16 tokens"), "{timing}");
}

#[test]
fn zero_max_tokens_generates_nothing() {
    let case = &f32_cases()[0];
    let prompt = case["prompt"].as_str().unwrap();
    let out = generate_json(&["--prompt", prompt, "--max-tokens", "0", "--logits"]);
    assert_eq!(ids(&out["prompt_ids"]), ids(&case["prompt_ids"]));
    assert!(ids(&out["ids"]).is_empty());
    assert_eq!(out["text"], "");
    assert_eq!(out["stop_reason"], "MAX_TOKENS");
    assert_eq!(out["timings"]["generated_tokens"].as_u64(), Some(0));
    // The prompt still ran.
    assert_eq!(floats(&out["last_logits"]).len(), 512);

    let model = tiny_model();
    let (stdout, _) = expect_success(&rbees(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        prompt,
        "--max-tokens",
        "0",
    ]));
    assert_eq!(stdout.trim(), "", "nothing generated, nothing printed");
}

#[test]
fn backends_lists_ndarray_as_usable() {
    let (stdout, _) = expect_success(&rbees(&["backends"]));
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some("ndarray"))
        .unwrap_or_else(|| panic!("ndarray is not listed:\n{stdout}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields.get(1), Some(&"cpu"), "{line}");
    assert_eq!(fields.get(2), Some(&"yes"), "{line}");
}

/// Without the `cuda` feature the cuda-kernels backend is still listed, as
/// unusable with the fix, and choosing it is a clear start-up error.
#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_kernels_is_listed_and_refused_in_a_build_without_cuda() {
    let (stdout, _) = expect_success(&rbees(&["backends"]));
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some("cuda-kernels"))
        .unwrap_or_else(|| panic!("cuda-kernels is not listed:\n{stdout}"));
    assert!(
        line.contains("cuda:N") && line.contains("no: this binary was built without CUDA"),
        "{line}"
    );
    assert!(line.contains("--features cuda"), "{line}");

    let model = tiny_model();
    for (device, why) in [
        ("cuda:0", "built without CUDA"),
        ("cpu", "runs only on cuda:N"),
    ] {
        let out = rbees(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--backend",
            "cuda-kernels",
            "--device",
            device,
            "--prompt",
            "Hello",
        ]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("'cuda-kernels'") && stderr.contains(why),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
