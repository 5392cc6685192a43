//! rbees-workerd driven as llama-orch's current code drives a worker
//! (veighnsche/llama-orch at 6ca91007, 2025-11-01):
//! - the hive's `WorkerSpawn` (`bin/20_rbee_hive/src/job_router.rs`) starts
//!   it with exactly `--worker-id worker-<type>-<port> --model <id>
//!   --device <u32> --port <port> --queen-url http://localhost:7833`, after
//!   probing the binary with `--build-info` (`bin/96_lifecycle/
//!   lifecycle-local/src/utils/binary.rs`), and takes any 2xx on
//!   `GET http://localhost:<port>` as started (`lifecycle-local/src/start.rs`,
//!   `bin/96_lifecycle/health-poll/src/lib.rs`);
//! - `<id>` is an entry of the hive's model catalog
//!   (`~/.cache/rbee/models/<id>/metadata.json`, `bin/25_rbee_hive_crates/
//!   model-catalog`), and the queen finds the worker's model by reading
//!   `--model` back from `/proc/<pid>/cmdline` (`bin/25_rbee_hive_crates/
//!   monitor/src/monitor.rs`);
//! - the queen's scheduler (`bin/15_queen_rbee_crates/scheduler/src/
//!   {simple,types}.rs`) posts `{prompt, max_tokens, temperature, top_p?,
//!   top_k?}` to `/v1/inference` without a token, reads `{job_id, sse_url}`,
//!   GETs `sse_url`, strips `data: ` from each line and stops at `[DONE]`;
//! - the hive deletes a worker with SIGTERM and SIGKILLs it 2 s later.

mod daemon_support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use daemon_support::*;
use serde_json::{json, Value};

/// A model catalog like the hive's, under a temp `XDG_CACHE_HOME`, whose
/// entry `id` points at the folder holding `model`.
fn catalog(id: &str, model: &Path) -> PathBuf {
    let cache = std::env::temp_dir().join(format!("rbees-orch-cache-{}", std::process::id()));
    let entry = cache.join("rbee/models").join(id);
    std::fs::create_dir_all(&entry).unwrap();
    let folder = cache.join("files");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(model, folder.join("model.gguf")).unwrap();
    let meta = json!({
        "artifact": {"id": id, "name": id, "path": folder, "size": 1, "status": "Available",
                     "added_at": "2025-11-01T00:00:00Z"},
        "added_at": "2025-11-01T00:00:00Z",
        "last_accessed": null
    });
    std::fs::write(entry.join("metadata.json"), meta.to_string()).unwrap();
    cache
}

/// The hive's health poll: `GET http://localhost:<port>` every
/// 200 ms × 1.5^k until a 2xx, within its 120 s limit.
fn hive_health_poll(w: &mut Worker) {
    let c = client();
    let start = Instant::now();
    let mut delay = Duration::from_millis(200);
    while start.elapsed() < Duration::from_secs(120) {
        if let Some(status) = w.child.try_wait().unwrap() {
            panic!("worker exited ({status}):\n{}", w.log_text());
        }
        let r = c
            .get(format!("http://localhost:{}", w.port))
            .timeout(Duration::from_secs(5))
            .send();
        if r.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        std::thread::sleep(delay);
        delay = delay.mul_f64(1.5);
    }
    panic!("no 2xx on GET / within 120 s:\n{}", w.log_text());
}

/// The queen's stream reading: every line trimmed, empty ones skipped,
/// `data: ` stripped, up to `[DONE]`. Returns the payload lines, and
/// whether `[DONE]` came.
fn queen_reads(r: reqwest::blocking::Response) -> (Vec<String>, bool) {
    let mut lines = Vec::new();
    for line in BufReader::new(r).lines() {
        let line = line.unwrap();
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let payload = line.strip_prefix("data: ").unwrap_or(line);
        if payload == "[DONE]" {
            return (lines, true);
        }
        lines.push(payload.to_string());
    }
    (lines, false)
}

#[test]
fn the_binary_answers_the_hives_build_info_probe() {
    let out = Command::new(env!("CARGO_BIN_EXE_rbees-workerd"))
        .arg("--build-info")
        .output()
        .unwrap();
    assert!(out.status.success());
    let word = String::from_utf8(out.stdout).unwrap();
    assert!(
        ["debug", "release"].contains(&word.trim()),
        "the hive accepts only debug or release, got {word:?}"
    );
}

#[test]
fn spawned_by_the_hive_and_driven_by_the_queen() {
    let id = "HuggingFaceTB/tiny-llama2";
    let cache = catalog(id, &tiny_model());
    let port = free_port();
    let worker_id = format!("worker-cpu-{port}");
    let args: Vec<String> = [
        "--worker-id",
        &worker_id,
        "--model",
        id,
        "--device",
        "0",
        "--port",
        &port.to_string(),
        "--queen-url",
        "http://localhost:7833",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut w = spawn_argv(port, &args, &[("XDG_CACHE_HOME", cache.to_str().unwrap())]);
    hive_health_poll(&mut w);

    // The queen matches the model against `--model` in the command line.
    #[cfg(target_os = "linux")]
    {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", w.child.id())).unwrap();
        let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let at = argv.iter().position(|a| *a == b"--model").unwrap();
        assert_eq!(argv[at + 1], id.as_bytes());
    }
    let info = w.get_json("/info");
    assert_eq!(info["id"], worker_id.as_str());
    assert_eq!(info["model_id"], id);
    assert_eq!(info["status"], "ready");
    assert_eq!(info["port"], port);
    assert_eq!(info["device"], "cpu", "--device 0 on the CPU is the CPU");

    // The scheduler's body: no job_id, no token, top_p/top_k optional.
    let c = client();
    let r = c
        .post(w.url("/v1/inference"))
        .json(
            &json!({"prompt": "Once upon a time", "max_tokens": 12, "temperature": 0.7,
                      "top_p": 0.9, "top_k": 40}),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let job: Value = r.json().unwrap();
    let job_id = job["job_id"].as_str().expect("job_id").to_string();
    let sse_url = job["sse_url"].as_str().expect("sse_url").to_string();
    assert!(
        sse_url.starts_with('/'),
        "appended to the worker URL: {sse_url}"
    );

    let r = c.get(format!("{}{sse_url}", w.base)).send().unwrap();
    assert_eq!(r.status(), 200);
    let (lines, done) = queen_reads(r);
    assert!(done, "no [DONE]: {lines:?}");
    // Nothing but data lines: the queen prints every other line as is.
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"started"), "{types:?}");
    assert_eq!(types.last(), Some(&"end"), "{types:?}");
    assert_eq!(events[0]["job_id"], job_id.as_str());
    let tokens = types.iter().filter(|t| **t == "token").count();
    assert!(tokens >= 1, "{types:?}");
    assert!(events.last().unwrap()["tokens_out"].as_u64().unwrap() >= 1);

    // A stream is fetched once.
    let again = c.get(format!("{}{sse_url}", w.base)).send().unwrap();
    assert_eq!(again.status(), 404);
    let v: Value = again.json().unwrap();
    assert_eq!(v["error"]["code"], "UNKNOWN_JOB");

    // The hive's `WorkerProcessDelete`: SIGTERM, SIGKILL after 2 s.
    #[cfg(unix)]
    {
        let sent = Instant::now();
        assert!(Command::new("kill")
            .args(["-TERM", &w.child.id().to_string()])
            .status()
            .unwrap()
            .success());
        let status = w
            .wait_exit(Duration::from_secs(2))
            .expect("exits within 2 s");
        assert!(status.success(), "{status}");
        assert!(sent.elapsed() < Duration::from_secs(2));
    }
    let _ = std::fs::remove_dir_all(cache);
}

#[test]
fn the_root_path_is_not_ready_while_the_model_loads() {
    // A model that fails to load never makes `GET /` a 2xx, so the hive's
    // poll does not report a worker that cannot serve; `/v1/health`
    // still answers, as the older hive's liveness check needs.
    let bad = std::env::temp_dir().join(format!("rbees-orch-bad-{}.gguf", std::process::id()));
    std::fs::write(&bad, b"GGUF not really").unwrap();
    let mut w = spawn_model(&bad, &[], &[]);
    let c = client();
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let ready: Option<Value> = c
            .get(w.url("/v1/ready"))
            .send()
            .ok()
            .and_then(|r| r.json().ok());
        if ready.as_ref().is_some_and(|r| r["state"] == "error") {
            break;
        }
        assert!(Instant::now() < end, "{ready:?}\n{}", w.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(c.get(w.url("/")).send().unwrap().status(), 503);
    assert_eq!(c.get(w.url("/v1/health")).send().unwrap().status(), 200);
    assert_eq!(w.get_json("/info")["status"], "stopped");
    let _ = w.child.kill();
    let _ = std::fs::remove_file(bad);
}
