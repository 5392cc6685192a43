//! The official `openai` Python client against `rbees-workerd` serving
//! SmolLM2 (it has a chat template): `scripts/openai_client_check.py` streams
//! and non-streams chat and plain completions at temperature 0, lists models,
//! and fails on any mismatch.
//!
//! The interpreter is `$RBEES_TEST_PYTHON` (default `python3`);
//! `scripts/test.sh` installs `openai` into `.venv-test/` and sets it.

mod daemon_support;

use std::process::Command;
use std::time::Instant;

use daemon_support::*;
use serde_json::Value;

#[test]
fn the_official_openai_python_client_works() {
    let model = repo_root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        model.exists(),
        "{} is missing: run scripts/fetch-model.sh",
        model.display()
    );
    let python = std::env::var("RBEES_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import openai; print(openai.__version__)"])
        .output();
    let version = match probe {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Ok(out) => panic!(
            "`{python} -c 'import openai'` failed: the openai package is missing; \
             run scripts/test.sh (it installs it into .venv-test/ and sets RBEES_TEST_PYTHON)\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "cannot run {python} ({e}): run scripts/test.sh, or set RBEES_TEST_PYTHON \
             to a Python with the openai package"
        ),
    };

    let mut w = spawn_model(&model, &["--ctx-size", "256"], &[]);
    w.wait_ready(None);
    let t0 = Instant::now();
    let out = Command::new(&python)
        .arg(repo_root().join("scripts/openai_client_check.py"))
        .arg(&w.base)
        .output()
        .expect("run scripts/openai_client_check.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "openai_client_check.py failed ({}):\n{stdout}\n{stderr}\nworker log:\n{}",
        out.status,
        w.log_text()
    );
    let summary: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("the summary is not JSON ({e}):\n{stdout}"));
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(
        summary["models"],
        serde_json::json!(["SmolLM2-135M-Instruct.Q4_1"]),
        "{summary}"
    );
    let chat = summary["chat"]["text"].as_str().unwrap_or_default();
    assert!(!chat.is_empty(), "{summary}");
    assert_eq!(summary["chat_stream"]["text"], summary["chat"]["text"]);
    assert_eq!(
        summary["completion"]["streamed_text"],
        summary["completion"]["text"]
    );
    eprintln!(
        "openai {version}: checks took {:?}; chat answer {chat:?}",
        t0.elapsed()
    );
}
