//! `rbees perplexity` end to end on the tiny model: the scores equal an
//! independent computation from `rbees generate --logits` (one prefix at a
//! time), 1 and 2 threads agree bit for bit, a reference written by one run
//! is read by another, and bad input is a clear error.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tiny_model() -> PathBuf {
    repo_root().join("testdata/models/tiny-llama2-f32.gguf")
}

fn rbees<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rbees"))
        .args(args)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run rbees")
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rbees-ppl-{}-{name}", std::process::id()))
}

/// A text of a few hundred tiny-model tokens.
fn text_file() -> PathBuf {
    let path = temp("text.txt");
    let text = "Once upon a time there was a little girl who lived in a village near the forest. \
                Whenever she went out, the little girl wore a red riding cloak, so everyone in the \
                village called her Little Red Riding Hood. One morning she asked her mother if she \
                could go to visit her grandmother as it had been a while since they had seen each other.\n";
    std::fs::write(&path, text.repeat(4)).unwrap();
    path
}

/// `rbees perplexity ... --json -` on the tiny model; the report.
fn perplexity(extra: &[&str]) -> Value {
    let model = tiny_model();
    let mut args = vec![
        "perplexity",
        "--model",
        model.to_str().unwrap(),
        "--json",
        "-",
    ];
    args.extend_from_slice(extra);
    let out = rbees(&args);
    assert!(
        out.status.success(),
        "rbees {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

fn fails_with(extra: &[&str], needle: &str) {
    let model = tiny_model();
    let mut args = vec!["perplexity", "--model", model.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = rbees(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(
        err.contains(needle),
        "{args:?}: expected '{needle}' in: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

fn token_ids(text: &Path) -> Vec<u64> {
    let model = tiny_model();
    let text = std::fs::read_to_string(text).unwrap();
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let out = rbees(&[
        "tokenize",
        "--model",
        model.to_str().unwrap(),
        "--text",
        text,
        "--json",
    ]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap())
        .collect()
}

fn f64_of(v: &Value) -> f64 {
    v.as_f64().expect("a number")
}

#[test]
fn scores_equal_one_prefix_at_a_time_through_generate() {
    // Context 16: chunks of 16 tokens, positions 8..14 scored (7 per chunk).
    let text = text_file();
    let report = perplexity(&[
        "--file",
        text.to_str().unwrap(),
        "--backend",
        "ndarray",
        "--ctx",
        "16",
        "--chunks",
        "2",
    ]);
    assert_eq!(report["chunks"], 2);
    assert_eq!(report["tokens"], 14);
    let ids = token_ids(&text);
    let bos = ids[0];
    let model = tiny_model();
    let mut nll = Vec::new();
    for c in 0..2 {
        let chunk = &ids[c * 16..(c + 1) * 16];
        for pos in 8..15 {
            // The chunk's first token is replaced by BOS, as llama-perplexity does.
            let mut prefix = vec![bos];
            prefix.extend_from_slice(&chunk[1..=pos]);
            let list: Vec<String> = prefix.iter().map(|i| i.to_string()).collect();
            let out = rbees(&[
                "generate",
                "--model",
                model.to_str().unwrap(),
                "--backend",
                "ndarray",
                "--prompt-ids",
                &list.join(","),
                "--max-tokens",
                "1",
                "--temperature",
                "0",
                "--json",
                "--logits",
            ]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            let logits: Vec<f64> = v["last_logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(f64_of)
                .collect();
            let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln() + max;
            nll.push(lse - logits[chunk[pos + 1] as usize]);
        }
    }
    let mean = nll.iter().sum::<f64>() / nll.len() as f64;
    let var = nll.iter().map(|x| x * x).sum::<f64>() / nll.len() as f64 - mean * mean;
    let ppl = mean.exp();
    let err = ppl * (var / (nll.len() - 1) as f64).sqrt();
    let r = &report["results"][0];
    assert_eq!(r["backend"], "ndarray");
    assert!((f64_of(&r["ppl"]) / ppl - 1.0).abs() < 1e-5, "{r} vs {ppl}");
    assert!(
        (f64_of(&r["ppl_err"]) / err - 1.0).abs() < 1e-3,
        "{r} vs {err}"
    );
    // The running estimate ends at the final one.
    let running = r["running"].as_array().unwrap();
    assert_eq!(running.len(), 2);
    assert_eq!(running[1], r["ppl"]);
}

#[test]
fn one_and_two_threads_give_identical_numbers() {
    let text = text_file();
    let run = |threads: &str| {
        perplexity(&[
            "--file",
            text.to_str().unwrap(),
            "--backend",
            "cpu",
            "--ctx",
            "32",
            "--threads",
            threads,
        ])["results"][0]
            .clone()
    };
    let (one, two) = (run("1"), run("2"));
    assert_eq!(one["ppl"], two["ppl"]);
    assert_eq!(one["ppl_err"], two["ppl_err"]);
    assert_eq!(one["running"], two["running"]);
}

#[test]
fn a_reference_written_by_one_run_is_read_by_another() {
    let text = text_file();
    let base = temp("base.kld");
    let _ = std::fs::remove_file(&base);
    // Written by the first backend (the reference), compared by the second.
    let written = perplexity(&[
        "--file",
        text.to_str().unwrap(),
        "--backend",
        "ndarray",
        "--backend",
        "cpu",
        "--ctx",
        "32",
        "--kl-base",
        base.to_str().unwrap(),
    ]);
    let info = &written["reference"];
    assert_eq!(info["written_by"], "ndarray:cpu");
    assert_eq!(info["bytes"], std::fs::metadata(&base).unwrap().len());
    let reference = &written["results"][0];
    assert!(reference["kl"].is_null());
    let cpu = &written["results"][1]["kl"];
    // F32 weights: the cpu backend stays close to the reference.
    assert!(f64_of(&cpu["kld_mean"]).abs() < 1e-3, "{cpu}");
    assert!(f64_of(&cpu["same_top"]) > 0.9, "{cpu}");
    // The reference's perplexity, read back from its quantised logits: the
    // file keeps 16 nats below each row's top, and this random-weight
    // model puts the next token further down than that, so the stored
    // NLL is capped and the read-back perplexity lower.
    let ppl = f64_of(&reference["ppl"]);
    let read_back = f64_of(&cpu["ppl_base"]);
    assert!(read_back < ppl && read_back > 1.0, "{cpu} vs {ppl}");

    // Another run reads it (its tokens come from the file: no --file needed)
    // and compares the same backend with itself.
    let read = perplexity(&["--backend", "ndarray", "--kl-base", base.to_str().unwrap()]);
    assert!(read["reference"]["written_by"].is_null());
    let again = &read["results"][0];
    assert_eq!(
        again["ppl"], reference["ppl"],
        "the same run, the same numbers"
    );
    let kl = &again["kl"];
    assert!(f64_of(&kl["kld_mean"]).abs() < 1e-4, "{kl}");
    assert!(f64_of(&kl["kld_max"]).abs() < 1e-3, "{kl}");
    assert_eq!(f64_of(&kl["same_top"]), 1.0);
    assert!(f64_of(&kl["rms_dp"]) < 1e-3, "{kl}");
    // With --file, the text must be the one the reference scored.
    let other = temp("other.txt");
    std::fs::write(&other, "A completely different text. ".repeat(40)).unwrap();
    fails_with(
        &[
            "--file",
            other.to_str().unwrap(),
            "--kl-base",
            base.to_str().unwrap(),
        ],
        "another text",
    );
    fails_with(
        &["--kl-base", base.to_str().unwrap(), "--ctx", "64"],
        "computed with a context of 32",
    );
    fails_with(
        &["--kl-base", base.to_str().unwrap(), "--chunks", "1"],
        "the reference holds",
    );
    let _ = std::fs::remove_file(base);
}

#[test]
fn bad_input_is_a_clear_error() {
    let empty = temp("empty.txt");
    std::fs::write(&empty, "\n").unwrap();
    fails_with(&["--file", empty.to_str().unwrap()], "is empty");
    let short = temp("short.txt");
    std::fs::write(&short, "Too short to score.").unwrap();
    fails_with(
        &[
            "--file",
            short.to_str().unwrap(),
            "--backend",
            "ndarray",
            "--ctx",
            "64",
        ],
        "needs at least 128",
    );
    fails_with(&["--backend", "ndarray"], "nothing to score");
    fails_with(
        &["--file", "/no/such/text.txt", "--backend", "ndarray"],
        "cannot read /no/such/text.txt",
    );
    // A reference of another vocabulary: a well-formed file of 7 tokens.
    let other = temp("vocab7.kld");
    let (n_ctx, vocab, chunks) = (4i32, 7i32, 1i32);
    let mut bytes = b"_logits_".to_vec();
    for v in [n_ctx, vocab, chunks] {
        bytes.extend(v.to_le_bytes());
    }
    for t in 0..4i32 {
        bytes.extend(t.to_le_bytes());
    }
    // One scored token (4 - 1 - 2), a record of 8 + 4 u16s.
    bytes.extend(vec![0u8; 2 * 12]);
    std::fs::write(&other, bytes).unwrap();
    fails_with(
        &["--kl-base", other.to_str().unwrap(), "--backend", "ndarray"],
        "computed with another model",
    );
    let junk = temp("junk.kld");
    std::fs::write(&junk, "not logits").unwrap();
    fails_with(
        &["--kl-base", junk.to_str().unwrap(), "--backend", "ndarray"],
        "not a reference logits file",
    );
    for f in [empty, short, other, junk] {
        let _ = std::fs::remove_file(f);
    }
}
