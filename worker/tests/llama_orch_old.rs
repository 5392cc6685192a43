//! rbees-workerd driven as llama-orch's last hive with a ready callback
//! drove a worker (veighnsche/llama-orch at 29909f0b, 2025-10-19):
//! - `bin/old.rbee-hive/src/http/workers.rs` spawns `llm-worker-rbee
//!   --worker-id worker-<uuid> --model <file> --model-ref hf:<repo>
//!   --backend cpu --device 0 --port <port> --callback-url
//!   http://127.0.0.1:<hive>/v1/workers/ready`, its environment inherited
//!   (`LLORCH_API_TOKEN` included);
//! - the ready callback must deserialize as its `WorkerReadyRequest
//!   {worker_id, url, model_ref, backend, device: u32}` and carry the
//!   hive's bearer token (`/v1/workers/ready` and `/v1/heartbeat` are
//!   behind its auth middleware, `http/routes.rs`);
//! - heartbeats: `POST /v1/heartbeat {worker_id, timestamp (RFC 3339),
//!   health_status: healthy|degraded}` (`http/heartbeat.rs`);
//! - `monitor.rs` checks `GET /v1/health` for any 2xx;
//! - the queen (`bin/old.queen-rbee/src/http/inference.rs`) polls
//!   `GET /v1/ready` for `{ready, state}`, then posts `{job_id, prompt,
//!   max_tokens, temperature, stream: true}` (or `{model: null, prompt,
//!   max_tokens, temperature}` with `x-deadline`) to `/v1/inference` and
//!   relays the SSE it gets back to rbee-keeper, which splits events on a
//!   blank line, requires each to start with `data: ` and stops at `[DONE]`
//!   (`bin/old.rbee-keeper/src/commands/infer.rs`);
//! - `POST /v1/shutdown` without a body or token (`shutdown.rs`).
//!
//! Also the spec points of `bin/.specs/00_llama-orch.md` and
//! `01_M0_worker_orcd.md` at 6ca91007 behind `--event-format orch-spec`,
//! `X-Correlation-Id`, and `71_metrics_contract.md`'s metric names.

mod daemon_support;

use std::io::Read;
use std::time::{Duration, Instant};

use daemon_support::*;
use serde_json::{json, Value};

/// rbee-keeper's reading of the relayed stream: events split on a blank
/// line, each must start with `data: `, up to `[DONE]`.
fn keeper_reads(mut r: reqwest::blocking::Response) -> Vec<Value> {
    let mut text = String::new();
    r.read_to_string(&mut text).unwrap();
    let mut events = Vec::new();
    for chunk in text.split("\n\n").filter(|c| !c.is_empty()) {
        let data = chunk
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("an event that does not start with 'data: ': {chunk:?}"));
        if data == "[DONE]" {
            return events;
        }
        events.push(serde_json::from_str(data).unwrap_or_else(|e| panic!("{data}: {e}")));
    }
    panic!("no [DONE] in {text:?}");
}

/// The model reference check of the hive (`input-validation/src/model_ref.rs`).
fn valid_model_ref(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 512
        && !s.contains("../")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_/:.".contains(&b))
}

#[test]
fn spawned_by_the_old_hive_with_its_callback_heartbeat_queen_and_shutdown() {
    let (hive, received) = fake_manager(200);
    let port = free_port();
    let args: Vec<String> = [
        "--worker-id",
        "worker-6f1c0e1a-0d2b-4a53-9d9e-2f8f3b7c1a11",
        "--model",
        tiny_model().to_str().unwrap(),
        "--model-ref",
        "hf:rbees/tiny-llama2",
        "--backend",
        "cpu",
        "--device",
        "0",
        "--port",
        &port.to_string(),
        "--callback-url",
        &format!("http://127.0.0.1:{hive}/v1/workers/ready"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut w = spawn_argv(port, &args, &[("LLORCH_API_TOKEN", "hive-secret")]);

    let ready = received
        .recv_timeout(Duration::from_secs(60))
        .expect("ready callback");
    assert_eq!(ready.path, "/v1/workers/ready");
    assert_eq!(ready.authorization.as_deref(), Some("Bearer hive-secret"));
    let b = &ready.body;
    assert_eq!(
        b["worker_id"],
        "worker-6f1c0e1a-0d2b-4a53-9d9e-2f8f3b7c1a11"
    );
    assert_eq!(b["url"], w.base.as_str());
    assert_eq!(b["model_ref"], "hf:rbees/tiny-llama2");
    assert!(valid_model_ref(b["model_ref"].as_str().unwrap()));
    assert_eq!(b["backend"], "cpu");
    assert_eq!(b["device"], 0, "the hive reads device as a u32: {b}");
    assert_eq!(b["device_name"], "cpu");
    assert!(b["memory_bytes"].as_u64().unwrap() > 0, "{b}");

    let hb = received
        .recv_timeout(Duration::from_secs(10))
        .expect("heartbeat");
    assert_eq!(hb.path, "/v1/heartbeat");
    assert_eq!(hb.authorization.as_deref(), Some("Bearer hive-secret"));
    assert_eq!(hb.body["worker_id"], b["worker_id"]);
    assert_eq!(hb.body["health_status"], "healthy");
    let stamp = hb.body["timestamp"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(stamp).is_ok(), "{stamp}");

    // The hive's liveness check and the queen's readiness poll, without a token.
    let c = client();
    assert!(c
        .get(w.url("/v1/health"))
        .send()
        .unwrap()
        .status()
        .is_success());
    let r: Value = c.get(w.url("/v1/ready")).send().unwrap().json().unwrap();
    assert_eq!(r["ready"], true);
    assert!(r["state"].is_string());

    // The queen's `/v2/tasks` path: the stream comes straight back.
    let r = c
        .post(w.url("/v1/inference"))
        .json(
            &json!({"job_id": "job-1", "prompt": "Once upon a time", "max_tokens": 10,
                      "temperature": 0.0, "stream": true}),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let events = keeper_reads(r);
    assert_eq!(events[0]["type"], "started");
    assert_eq!(events[0]["job_id"], "job-1");
    let text: String = events
        .iter()
        .filter(|e| e["type"] == "token")
        .map(|e| e["t"].as_str().unwrap())
        .collect();
    let end = events.last().unwrap();
    assert_eq!(end["type"], "end");
    let tokens = events.iter().filter(|e| e["type"] == "token").count() as u64;
    assert!(end["tokens_out"].as_u64().unwrap() <= tokens);
    // The same greedy job through rbees' own route gives the same text.
    let own = w.execute_events(&json!({"job_id": "job-2", "prompt": "Once upon a time",
                                       "max_tokens": 10, "temperature": 0.0}));
    assert_eq!(text_of(&own), text);

    // The queen's direct path: no job_id, `model: null`, a deadline header.
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 60_000;
    let r = c
        .post(w.url("/v1/inference"))
        .header("x-deadline", deadline.to_string())
        .json(&json!({"model": null, "prompt": "Hello", "max_tokens": 4, "temperature": 0.7}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let events = keeper_reads(r);
    let job_id = events[0]["job_id"].as_str().unwrap();
    assert!(job_id.starts_with("job-"), "a generated id: {job_id}");

    // The hive's shutdown: no body, no token; 2xx at once, exit 0 within 10 s.
    let sent = Instant::now();
    let r = c.post(w.url("/v1/shutdown")).send().unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let status = w
        .wait_exit(Duration::from_secs(10))
        .expect("exits within 10 s");
    assert!(status.success(), "{status}");
    assert!(sent.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_gpu_ordinal_on_a_cpu_backend_is_refused_clearly() {
    let mut w = spawn(&["--backend", "cpu", "--device", "1"], &[]);
    let status = w.wait_exit(Duration::from_secs(30)).expect("exits");
    assert!(!status.success());
    let log = w.log_text();
    assert!(log.contains("device 1 is a GPU ordinal"), "{log}");
    let mut w = spawn(&["--backend", "metal", "--device", "0"], &[]);
    assert!(!w
        .wait_exit(Duration::from_secs(30))
        .expect("exits")
        .success());
    assert!(
        w.log_text().contains("no Metal backend"),
        "{}",
        w.log_text()
    );
}

#[test]
fn compatibility_flags_are_accepted_and_listed_in_help() {
    let mut w = spawn(
        &[
            "--hive-url",
            "http://127.0.0.1:1",
            "--local-mode",
            "--gpu",
            "0",
        ],
        &[("LLORCH_LOG_FORMAT", "json")],
    );
    w.wait_ready(None);
    assert_eq!(w.get_json("/health")["device"], "cpu");
    let log = w.log_text();
    let first = log.lines().next().expect("a log line");
    assert!(
        serde_json::from_str::<Value>(first).is_ok(),
        "LLORCH_LOG_FORMAT=json gives JSON lines: {first}"
    );
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_rbees-workerd"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in [
        "--queen-url",
        "--model-ref",
        "--hive-url",
        "--local-mode",
        "--gpu-device",
        "--event-format",
    ] {
        assert!(help.contains(flag), "{flag} not in --help:\n{help}");
    }
}

#[test]
fn spec_events_correlation_ids_and_contract_metrics() {
    let mut w = spawn(
        &[
            "--event-format",
            "orch-spec",
            "--debug-token-delay-ms",
            "20",
        ],
        &[],
    );
    w.wait_ready(None);
    let c = client();
    // Cancelled: the stream ends with `error` CANCELLED (SYS-5.4.2), then [DONE].
    let r = c
        .post(w.url("/execute"))
        .header("X-Correlation-Id", "corr-42")
        .json(&json!({"job_id": "c1", "prompt": "The", "max_tokens": 200, "ignore_eos": true}))
        .send()
        .unwrap();
    assert_eq!(r.headers()["x-correlation-id"], "corr-42");
    let mut sse = SseReader::new(r);
    let started = sse.next_event().unwrap();
    assert_eq!(started.data["type"], "started");
    let at = started.data["started_at"]
        .as_str()
        .expect("an RFC 3339 string");
    assert!(humantime::parse_rfc3339(at).is_ok(), "{at}");
    while sse.next_event().unwrap().name != "token" {}
    assert_eq!(w.post("/cancel", &json!({"job_id": "c1"})).status(), 202);
    let rest: Vec<SseEvent> = std::iter::from_fn(|| sse.next_event()).collect();
    let terminal = last(&rest);
    assert_eq!(terminal.name, "error");
    assert_eq!(terminal.data["type"], "error");
    assert_eq!(terminal.data["code"], "CANCELLED");
    assert_eq!(terminal.data["retriable"], false);
    assert!(sse.done);
    assert!(
        w.log_text().contains("corr-42"),
        "the job's log lines carry it"
    );

    // A malformed correlation id is replaced by a generated one.
    let r = c
        .get(w.url("/v1/ready"))
        .header("X-Correlation-Id", "not valid!")
        .send()
        .unwrap();
    let id = r.headers()["x-correlation-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );

    // Errors say whether to retry (M0-W-1510).
    let v: Value = c
        .get(w.url("/v1/jobs/none/stream"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["error"]["code"], "UNKNOWN_JOB");
    assert_eq!(v["error"]["retriable"], false);

    let m = w.metrics_text();
    for name in [
        "worker_requests_total{outcome=\"cancelled\"}",
        "worker_tokens_generated_total",
        "worker_tokens_in_total",
        "worker_inference_duration_ms_count",
        "worker_vram_bytes{worker_id=\"w-test\"}",
        "worker_uptime_seconds",
        "process_resident_memory_bytes",
    ] {
        assert!(metric_value(&m, name).is_some(), "{name} missing:\n{m}");
    }
    assert_eq!(
        metric_value(&m, "worker_requests_total{outcome=\"cancelled\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&m, "worker_inference_duration_ms_count"),
        Some(1.0)
    );
    assert!(metric_value(&m, "process_resident_memory_bytes").unwrap() > 1e6);
    assert_eq!(
        metric_value(&m, "worker_vram_bytes{worker_id=\"w-test\"}"),
        Some(0.0)
    );
    let h = w.get_json("/health");
    assert_eq!(h["vram_bytes"], 0);
    assert!(h["memory_bytes"].as_u64().unwrap() > 1_000_000, "{h}");
}

#[cfg(unix)]
#[test]
fn the_alias_script_installs_the_names_the_spawners_run() {
    let dir = std::env::temp_dir().join(format!("rbees-orch-bin-{}", std::process::id()));
    let out = std::process::Command::new(repo_root().join("scripts/install-llama-orch-aliases.sh"))
        .arg("--port-shims")
        .arg(&dir)
        .env("RBEES_WORKERD", env!("CARGO_BIN_EXE_rbees-workerd"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "llm-worker-rbee",
        "llm-worker-rbee-cpu",
        "llm-worker-rbee-cuda",
        "worker-cpu-9123",
    ] {
        let probe = std::process::Command::new(dir.join(name))
            .arg("--build-info")
            .output()
            .unwrap();
        assert!(probe.status.success(), "{name}");
        let word = String::from_utf8(probe.stdout).unwrap();
        assert!(
            ["debug", "release"].contains(&word.trim()),
            "{name}: {word}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}
