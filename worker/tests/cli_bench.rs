//! `rbees synth` and `rbees bench` through the real binary: a synthetic
//! SmolLM2-shaped model is written, loaded and measured on every CPU
//! backend, with JSON and SVG output; bad settings are clear errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rbees(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rbees"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("rbees runs")
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rbees-cli-bench-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `rbees bench ARGS --reps 1 --threads 1 --json -` on the tiny Q8_0
/// model: the JSON document it prints (stdout holds nothing else).
fn bench_json(args: &[&str], dir: &Path) -> serde_json::Value {
    let model = repo_root().join("testdata/models/tiny-llama2-q8_0.gguf");
    let mut all = vec!["bench", "--model", model.to_str().unwrap()];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--reps", "1", "--threads", "1", "--json", "-"]);
    let out = rbees(&all, dir);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON document")
}

#[test]
fn synth_then_bench_every_cpu_backend_with_json_and_chart() {
    let dir = scratch("e2e");
    let out = rbees(
        &[
            "synth",
            "--shape",
            "smollm2-135m",
            "--qtype",
            "Q4_0",
            "--out",
            "smol.gguf",
        ],
        &dir,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("smollm2-135m (134.5M parameters), Q4_0 matrices"));
    let size = std::fs::metadata(dir.join("smol.gguf")).unwrap().len();
    // 134.5M parameters at 18 bytes per 32 (norms in F32): about 72 MiB.
    assert!((70 << 20..80 << 20).contains(&size), "{size}");

    let out = rbees(
        &[
            "bench",
            "--model",
            "smol.gguf",
            "--threads",
            "2",
            "--pp",
            "16",
            "--tg",
            "4",
            "--reps",
            "2",
            "--json",
            "bench.json",
            "--chart",
            "bench.svg",
        ],
        &dir,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("| backend | device | load (s) | pp16 tokens/s | tg4 tokens/s |"),
        "{table}"
    );
    assert!(
        table.contains("| candle | cpu |")
            && table.contains("| cpu | cpu |")
            && table.contains("| ndarray | cpu |"),
        "{table}"
    );

    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bench.json")).unwrap()).unwrap();
    assert_eq!(
        (doc["pp"].as_u64(), doc["tg"].as_u64(), doc["reps"].as_u64()),
        (Some(16), Some(4), Some(2))
    );
    assert_eq!(doc["threads"].as_u64(), Some(2));
    let results = doc["results"].as_array().unwrap();
    let names: Vec<&str> = results
        .iter()
        .map(|r| r["backend"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["candle", "cpu", "ndarray"]);
    for r in results {
        for key in ["pp_tokens_per_s", "tg_tokens_per_s"] {
            let samples = r[key].as_array().unwrap();
            assert_eq!(samples.len(), 2, "{key}: {r}");
            assert!(
                samples.iter().all(|v| v.as_f64().unwrap() > 0.0),
                "{key}: {r}"
            );
        }
        let pp = &r["pp"];
        assert!(
            pp["min"].as_f64() <= pp["median"].as_f64()
                && pp["median"].as_f64() <= pp["max"].as_f64()
        );
        // Each backend runs in its own process: its peak memory holds at
        // least the mapped Q4_0 weights it touched (the ndarray backend
        // dequantises them to f32, about 4x more).
        let rss = r["peak_rss_bytes"].as_u64().unwrap();
        assert!(rss > size / 2, "{}: peak RSS {rss}", r["backend"]);
        assert!(r["load_ms"].as_f64().unwrap() > 0.0);
    }
    // candle keeps the blocks and dequantises only the embedding rows it
    // looks up, and the mapped file pages are dropped as each weight is
    // copied. A dense f32 embedding table alone would be 1.5x the file, and
    // the mapped file plus the copy 2x; the rest (binary, buffers) is about
    // 0.3-0.5x depending on the build profile.
    // The cpu backend keeps blocks too.
    for r in &results[..2] {
        let rss = r["peak_rss_bytes"].as_u64().unwrap();
        assert!(
            rss < size * 2,
            "{}: peak RSS {rss} for a {size}-byte file",
            r["backend"]
        );
    }
    let ndarray_rss = results[2]["peak_rss_bytes"].as_u64().unwrap();
    assert!(
        ndarray_rss > 3 * size,
        "ndarray holds f32 weights: {ndarray_rss}"
    );
    let svg = std::fs::read_to_string(dir.join("bench.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("decode (tg4)") && svg.contains("ndarray"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bench_json_to_stdout_is_only_json() {
    let dir = scratch("stdout");
    let doc = bench_json(&["--backend", "ndarray", "--pp", "8", "--tg", "0"], &dir);
    let r = &doc["results"][0];
    assert_eq!(r["pp_tokens_per_s"].as_array().unwrap().len(), 1);
    assert_eq!(
        r["tg_tokens_per_s"].as_array().unwrap().len(),
        0,
        "--tg 0 skips decode"
    );
    assert!(r["tg"].is_null());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_bench_and_synth_settings_are_clear_errors() {
    let dir = scratch("errors");
    let model = repo_root().join("testdata/models/tiny-llama2-q8_0.gguf");
    let m = model.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["bench", "--model", m, "--backend", "nope"],
            "unknown backend 'nope'; known backends:",
        ),
        (
            &["bench", "--model", m, "--reps", "0"],
            "--reps must be at least 1",
        ),
        (
            &["bench", "--model", m, "--pp", "0", "--tg", "0"],
            "nothing to measure",
        ),
        (&["bench", "--model", "missing.gguf"], "missing.gguf"),
        // The tiny model was trained for 256 positions.
        (
            &[
                "bench",
                "--model",
                m,
                "--backend",
                "ndarray",
                "--pp",
                "300",
                "--reps",
                "1",
            ],
            "1 of 1 backends failed: ndarray: cannot load",
        ),
        (
            &[
                "synth", "--shape", "gpt-5", "--qtype", "Q4_0", "--out", "x.gguf",
            ],
            "unknown shape 'gpt-5'; known shapes: smollm2-135m, tinyllama-1.1b, llama2-7b",
        ),
        (
            &[
                "synth",
                "--shape",
                "smollm2-135m",
                "--qtype",
                "Q4_K",
                "--out",
                "x.gguf",
            ],
            "rows of 576 values",
        ),
        (
            &[
                "synth",
                "--shape",
                "smollm2-135m",
                "--qtype",
                "Q9",
                "--out",
                "x.gguf",
            ],
            "unknown weight type 'Q9'",
        ),
        (
            &[
                "synth",
                "--shape",
                "smollm2-135m",
                "--qtype",
                "Q8_K",
                "--out",
                "x.gguf",
            ],
            "no quantiser",
        ),
        (
            &[
                "synth",
                "--shape",
                "smollm2-135m",
                "--qtype",
                "Q4_0",
                "--out",
                "no/such/dir/x.gguf",
            ],
            "cannot write no/such/dir/x.gguf",
        ),
    ];
    for (args, expected) in cases {
        let out = rbees(args, &dir);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        if expected.contains("backends failed") {
            // A failing backend shows its reason in the table too.
            let table = String::from_utf8_lossy(&out.stdout);
            assert!(
                table.contains("| ndarray | – | – | error:") && table.contains("256"),
                "{table}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn plugins_are_measured_next_to_the_built_in_backends() {
    let dir = scratch("plugin");
    let plugin = rbees_plugin_testkit::build().example();
    let doc = bench_json(
        &[
            "--plugin",
            plugin.to_str().unwrap(),
            "--pp",
            "8",
            "--tg",
            "2",
        ],
        &dir,
    );
    let names: Vec<&str> = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["backend"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["candle", "cpu", "ndarray", "example"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn quality_joins_speed_in_one_report() {
    // The same numbers `rbees perplexity` gives for the same text and settings.
    let dir = scratch("quality");
    let text = dir.join("text.txt");
    std::fs::write(
        &text,
        "The quick brown fox jumps over the lazy dog while the farmer watches. ".repeat(30),
    )
    .unwrap();
    let quality = [
        "--quality",
        text.to_str().unwrap(),
        "--quality-ctx",
        "32",
        "--quality-chunks",
        "3",
    ];
    let mut args = vec![
        "--backend",
        "ndarray",
        "--backend",
        "cpu",
        "--pp",
        "8",
        "--tg",
        "2",
    ];
    args.extend_from_slice(&quality);
    let doc = bench_json(&args, &dir);
    let q = &doc["quality"];
    assert_eq!(q["n_ctx"], 32);
    assert_eq!(q["chunks"], 3);
    let rows = q["results"].as_array().unwrap();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["backend"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ndarray", "cpu"]);
    let model = repo_root().join("testdata/models/tiny-llama2-q8_0.gguf");
    let out = rbees(
        &[
            "perplexity",
            "--model",
            model.to_str().unwrap(),
            "--file",
            text.to_str().unwrap(),
            "--backend",
            "cpu",
            "--ctx",
            "32",
            "--chunks",
            "3",
            "--threads",
            "1",
            "--json",
            "-",
        ],
        &dir,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let alone: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[1]["ppl"], alone["results"][0]["ppl"]);
    assert!(rows[0]["ppl"].as_f64().unwrap() > 1.0);
    // Without --json the quality table follows the speed table.
    let mut args = vec![
        "bench",
        "--model",
        model.to_str().unwrap(),
        "--backend",
        "cpu",
        "--pp",
        "8",
        "--tg",
        "2",
        "--reps",
        "1",
    ];
    args.extend_from_slice(&quality);
    let out = rbees(&args, &dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("| backend | device | PPL | tokens/s |"),
        "{table}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
