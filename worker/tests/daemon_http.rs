//! `rbees-workerd` end to end: the real binary on a loopback port with the
//! tiny F32 model.

mod daemon_support;

use std::process::Command;
use std::time::{Duration, Instant};

use daemon_support::*;
use serde_json::{json, Value};

fn execute(w: &Worker, body: Value) -> Vec<SseEvent> {
    w.execute_events(&body)
}

#[test]
fn health_ready_and_metrics() {
    let mut w = spawn(&[], &[]);
    w.wait_ready(None);
    let h = w.get_json("/health");
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["state"], "ready");
    // `auto`, the default, picks the cpu backend for the tiny F32 model.
    assert_eq!(h["backend"], "cpu");
    assert_eq!(h["device"], "cpu");
    assert_eq!(h["model"], "tiny-llama2-f32");
    assert_eq!(h["worker_id"], "w-test");
    assert!(h["context_length"].as_u64().unwrap() > 0, "{h}");
    assert!(h["uptime_s"].as_f64().unwrap() >= 0.0, "{h}");
    let r = w.get_json("/v1/ready");
    assert_eq!(r["ready"], true, "{r}");
    assert_eq!(r["state"], "ready");
    assert!(r["layers_total"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["layers_loaded"], r["layers_total"]);

    let events = execute(
        &w,
        json!({"job_id": "m1", "prompt": "Hello", "max_tokens": 4, "temperature": 0, "ignore_eos": true}),
    );
    assert_eq!(last(&events).name, "end");
    let m = client()
        .get(w.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        m.contains("rbees_requests_total{outcome=\"completed\"} 1"),
        "{m}"
    );
    assert!(m.contains("rbees_tokens_generated_total 4"), "{m}");
    assert!(
        m.contains("rbees_time_to_first_token_seconds_count 1"),
        "{m}"
    );
    assert!(m.contains("rbees_queue_depth 0"), "{m}");
}

/// `rbees generate --json` with the same settings.
fn cli_generate(prompt: &str, max_tokens: usize) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_rbees"))
        .args(["generate", "--temperature", "0", "--json", "--ignore-eos"])
        .arg("--model")
        .arg(tiny_model())
        .args(["--prompt", prompt, "--max-tokens", &max_tokens.to_string()])
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run rbees");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn greedy_output_equals_the_cli_and_stop_strings_cut_it() {
    let prompt = "Once upon a time";
    let mut w = spawn(&[], &[]);
    w.wait_ready(None);
    let events = execute(
        &w,
        json!({"job_id": "g1", "prompt": prompt, "max_tokens": 24, "temperature": 0, "ignore_eos": true}),
    );
    let cli = cli_generate(prompt, 24);
    let ids: Vec<Value> = events
        .iter()
        .filter(|e| e.name == "token" && e.data["t"] != "")
        .map(|e| e.data["id"].clone())
        .collect();
    let text = text_of(&events);
    assert_eq!(text, cli["text"].as_str().unwrap());
    let all_ids: Vec<Value> = {
        let mut seen = Vec::new();
        for e in events.iter().filter(|e| e.name == "token") {
            let i = e.data["i"].as_u64().unwrap() as usize;
            if i == seen.len() {
                seen.push(e.data["id"].clone());
            }
        }
        seen
    };
    assert!(!ids.is_empty());
    assert_eq!(Value::Array(all_ids), cli["ids"]);
    let end = last(&events);
    assert_eq!(end.name, "end");
    assert_eq!(end.data["stop_reason"], "MAX_TOKENS");
    assert_eq!(end.data["tokens_out"], 24);

    // A stop string from the middle of that text ends the output before it.
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() > 8, "{text:?}");
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 3].iter().collect();
    let cut = &text[..text.find(&stop).unwrap()];
    let events = execute(
        &w,
        json!({"job_id": "g2", "prompt": prompt, "max_tokens": 24, "temperature": 0,
               "ignore_eos": true, "stop": ["zzzz-never", stop]}),
    );
    assert_eq!(text_of(&events), cut);
    let end = last(&events);
    assert_eq!(end.data["stop_reason"], "STOP_SEQUENCE", "{:?}", end.data);
    assert_eq!(end.data["stop_sequence_matched"], json!(stop));
}

#[test]
fn sse_events_arrive_in_order_while_generating() {
    let mut w = spawn(&["--debug-token-delay-ms", "10"], &[]);
    w.wait_ready(None);
    let sent = Instant::now();
    let events = execute(
        &w,
        json!({"job_id": "s1", "prompt": "The", "max_tokens": 40, "seed": 3, "ignore_eos": true}),
    );
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names[0], "started", "{names:?}");
    assert_eq!(events[0].data["job_id"], "s1");
    assert_eq!(events[0].data["model"], "tiny-llama2-f32");
    assert!(events[0].data["started_at"].as_u64().unwrap() > 1_600_000_000_000);
    let end = last(&events);
    assert_eq!(end.name, "end");
    assert_eq!(end.data["tokens_out"], 40);
    assert_eq!(end.data["stop_reason"], "MAX_TOKENS");
    assert!(end.data["decode_time_ms"].as_f64().unwrap() > 0.0);
    assert!(end.data["stop_sequence_matched"].is_null());
    let tokens: Vec<&SseEvent> = events.iter().filter(|e| e.name == "token").collect();
    for (k, t) in tokens.iter().enumerate().take(40) {
        assert_eq!(t.data["i"], k, "{:?}", t.data);
        assert!(t.data["t"].is_string());
    }
    let metrics: Vec<&SseEvent> = events.iter().filter(|e| e.name == "metrics").collect();
    assert_eq!(metrics.len(), 2, "one every 16 tokens: {names:?}");
    assert_eq!(metrics[0].data["tokens_out"], 16);
    assert!(metrics[0].data["tokens_per_sec"].as_f64().unwrap() > 0.0);
    assert!(metrics[0].data["elapsed_ms"].as_f64().unwrap() > 0.0);
    // Streamed, not buffered: 40 tokens at >= 10 ms each.
    let first = tokens[0].at;
    assert!(
        end.at.duration_since(first) > Duration::from_millis(200),
        "first token {:?} end {:?} after sending",
        first - sent,
        end.at - sent
    );
}

#[test]
fn cancel_by_request_and_by_disconnect() {
    let mut w = spawn(&["--debug-token-delay-ms", "20"], &[]);
    w.wait_ready(None);
    let long =
        |id: &str| json!({"job_id": id, "prompt": "The", "max_tokens": 200, "ignore_eos": true});

    // By request: the stream ends with CANCELLED soon after.
    let r = w.post("/execute", &long("c1"));
    assert_eq!(r.status(), 200);
    let mut sse = SseReader::new(r);
    while sse.next_event().expect("events").name != "token" {}
    let c = w.post("/cancel", &json!({"job_id": "c1"}));
    assert_eq!(c.status(), 202);
    let rest = sse.collect();
    let end = last(&rest);
    assert_eq!(end.name, "end");
    assert_eq!(end.data["stop_reason"], "CANCELLED");
    assert!(
        end.data["tokens_out"].as_u64().unwrap() < 50,
        "{:?}",
        end.data
    );
    // Idempotent, and fine for unknown jobs.
    assert_eq!(w.post("/cancel", &json!({"job_id": "c1"})).status(), 202);
    assert_eq!(w.post("/cancel", &json!({"job_id": "nope"})).status(), 202);
    assert_eq!(w.post("/cancel", &json!({})).status(), 400);

    // By disconnect: dropping the stream cancels the job; the next job runs at once.
    let r = w.post("/execute", &long("c2"));
    let mut sse = SseReader::new(r);
    while sse.next_event().expect("events").name != "token" {}
    drop(sse);
    let started = Instant::now();
    let events = execute(
        &w,
        json!({"job_id": "c3", "prompt": "The", "max_tokens": 3, "ignore_eos": true}),
    );
    assert_eq!(last(&events).data["stop_reason"], "MAX_TOKENS");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the disconnected job kept the engine busy: {:?}",
        started.elapsed()
    );
    let m = client()
        .get(w.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        m.contains("rbees_requests_total{outcome=\"cancelled\"} 2"),
        "{m}"
    );
}

#[test]
fn invalid_requests_list_every_bad_field() {
    let mut w = spawn(&[], &[]);
    w.wait_ready(None);
    let r = w.post(
        "/execute",
        &json!({"job_id": 5, "prompt": "x", "max_tokens": 0, "temperature": -1, "top_p": 0,
                "top_k": -2, "min_p": 1.5, "repetition_penalty": 0, "seed": "s",
                "stop": [""], "extra": 1}),
    );
    assert_eq!(r.status(), 400);
    let v: Value = r.json().unwrap();
    let mut fields: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
            e["field"].as_str().unwrap()
        })
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "extra",
            "job_id",
            "max_tokens",
            "min_p",
            "repetition_penalty",
            "seed",
            "stop",
            "temperature",
            "top_k",
            "top_p"
        ],
        "{v}"
    );
    // Missing fields and non-JSON.
    let v: Value = w.post("/execute", &json!({})).json().unwrap();
    assert_eq!(
        v["errors"].as_array().unwrap().len(),
        1,
        "only the prompt is required: {v}"
    );
    let r = client()
        .post(w.url("/execute"))
        .body("not json")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    // A prompt longer than the context.
    let h = w.get_json("/health");
    let n = h["context_length"].as_u64().unwrap() as usize;
    let r = w.post(
        "/execute",
        &json!({"job_id": "long", "prompt": "hello world ".repeat(n)}),
    );
    assert_eq!(r.status(), 400);
    let v: Value = r.json().unwrap();
    assert_eq!(v["errors"][0]["field"], "prompt", "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("context"),
        "{v}"
    );
    // Over the body limit.
    let r = w.post(
        "/execute",
        &json!({"job_id": "big", "prompt": "x".repeat(2 << 20)}),
    );
    assert_eq!(r.status(), 413);
    // The unread rest of the body makes the connection unusable: the answer
    // says so, so keep-alive clients do not send their next request on it.
    assert_eq!(r.headers()["connection"], "close");
}

#[test]
fn bearer_token_guards_everything_but_health() {
    let mut w = spawn(&[], &[("RBEES_API_TOKEN", "s3cret")]);
    w.wait_ready(Some("s3cret"));
    let c = client();
    // What pool managers poll to see the worker live stays open.
    for open in ["/health", "/", "/v1/health", "/info"] {
        assert_eq!(c.get(w.url(open)).send().unwrap().status(), 200, "{open}");
    }
    assert_eq!(c.get(w.url("/v1/ready")).send().unwrap().status(), 401);
    for path in [
        "/v1/inference",
        "/v1/cancel",
        "/v1/shutdown",
        "/shutdown",
        "/v1/admin/shutdown",
        "/v1/completions",
    ] {
        let r = c.post(w.url(path)).json(&json!({})).send().unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = c.get(w.url("/v1/jobs/x/stream")).send().unwrap();
    assert_eq!(r.status(), 401);
    let wrong = c
        .get(w.url("/v1/ready"))
        .bearer_auth("s3cres")
        .send()
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let r = c
        .post(w.url("/execute"))
        .json(&json!({"job_id": "a", "prompt": "x"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let ok = c
        .get(w.url("/v1/ready"))
        .bearer_auth("s3cret")
        .send()
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[test]
fn refuses_to_start_without_a_safe_token() {
    let mut w = spawn(&[], &[("RBEES_API_TOKEN", "")]);
    let status = w.wait_exit(Duration::from_secs(20)).expect("exits");
    assert!(!status.success());
    assert!(w.log_text().contains("empty"), "{}", w.log_text());

    let mut w = spawn(&["--host", "0.0.0.0"], &[]);
    let status = w.wait_exit(Duration::from_secs(20)).expect("exits");
    assert!(!status.success());
    assert!(w.log_text().contains("RBEES_API_TOKEN"), "{}", w.log_text());
}

#[test]
fn full_queue_answers_503() {
    // Queue depth counts jobs waiting behind the running ones. Hold one job
    // running first (so the engine has taken it off the queue), then of four
    // concurrent requests exactly one fits the queue and three are refused.
    // One slot, so the queue is what holds the others.
    let mut w = spawn(
        &[
            "--parallel",
            "1",
            "--queue-depth",
            "1",
            "--debug-token-delay-ms",
            "20",
        ],
        &[],
    );
    w.wait_ready(None);
    let r = w.post(
        "/execute",
        &json!({"job_id": "running", "prompt": "The", "max_tokens": 200, "ignore_eos": true}),
    );
    assert_eq!(r.status(), 200);
    let mut running = SseReader::new(r);
    while running.next_event().expect("events").name != "token" {}

    let base = w.base.clone();
    let handles: Vec<_> = (0..4)
        .map(|k| {
            let base = base.clone();
            std::thread::spawn(move || {
                let r = client()
                    .post(format!("{base}/execute"))
                    .json(&json!({"job_id": format!("q{k}"), "prompt": "The",
                                  "max_tokens": 3, "ignore_eos": true}))
                    .send()
                    .expect("POST /execute");
                let status = r.status().as_u16();
                let retry = r.headers().get("retry-after").is_some();
                let body = r.text().unwrap_or_default();
                (status, retry, body)
            })
        })
        .collect();
    // The refused ones answer at once; cancel the running job so the queued
    // one runs without waiting for 200 tokens.
    let end = Instant::now() + Duration::from_secs(20);
    while handles.iter().filter(|h| h.is_finished()).count() < 3 {
        assert!(Instant::now() < end, "refusals did not arrive");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        w.post("/cancel", &json!({"job_id": "running"})).status(),
        202
    );
    assert_eq!(last(&running.collect()).data["stop_reason"], "CANCELLED");

    let results: Vec<(u16, bool, String)> = handles
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect();
    let ok: Vec<_> = results.iter().filter(|r| r.0 == 200).collect();
    let busy: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert_eq!((ok.len(), busy.len()), (1, 3), "{results:?}");
    for (_, retry, body) in busy {
        assert!(retry, "503 without Retry-After");
        assert!(body.contains("QUEUE_FULL"), "{body}");
    }
    assert!(ok[0].2.contains("event: end"), "{}", ok[0].2);
    assert!(ok[0].2.contains("MAX_TOKENS"), "{}", ok[0].2);
}

#[test]
fn ready_callback_reaches_the_pool_manager_and_heartbeats_follow() {
    let (port, rx) = fake_manager(200);
    let callback = format!("http://127.0.0.1:{port}/workers/ready");
    let mut w = spawn(
        &["--callback-url", &callback, "--heartbeat-interval-s", "0.2"],
        &[],
    );
    let callback_request = rx.recv_timeout(Duration::from_secs(60)).expect("callback");
    let (path, body) = (callback_request.path, callback_request.body);
    assert_eq!(path, "/workers/ready");
    assert_eq!(body["worker_id"], "w-test");
    assert_eq!(body["url"], json!(w.base));
    assert_eq!(body["backend"], "cpu");
    assert_eq!(body["device"], "cpu");
    assert_eq!(body["vram_bytes"], 0);
    assert!(
        body["model_ref"]
            .as_str()
            .unwrap()
            .ends_with("tiny-llama2-f32.gguf"),
        "{body}"
    );
    let heartbeat = rx.recv_timeout(Duration::from_secs(10)).expect("heartbeat");
    let (path, hb) = (heartbeat.path, heartbeat.body);
    assert_eq!(path, "/v1/heartbeat");
    assert_eq!(hb["worker_id"], "w-test");
    assert_eq!(hb["state"], "ready");
    assert_eq!(hb["health_status"], "healthy");
    let stamp = hb["timestamp"].as_str().expect("an RFC 3339 timestamp");
    assert!(humantime::parse_rfc3339(stamp).is_ok(), "{stamp}");
    w.wait_ready(None);
}

#[test]
fn unanswered_ready_callback_exits_non_zero() {
    let (port, _rx) = fake_manager(500);
    let callback = format!("http://127.0.0.1:{port}/ready");
    let mut w = spawn(
        &["--callback-url", &callback, "--callback-timeout-s", "1"],
        &[],
    );
    let started = Instant::now();
    let status = w
        .wait_exit(Duration::from_secs(30))
        .expect("the worker exits");
    assert!(!status.success());
    assert!(started.elapsed() < Duration::from_secs(20));
    let log = w.log_text();
    assert!(
        log.contains("ready callback") && log.contains("not accepted"),
        "{log}"
    );
}

#[cfg(unix)]
#[test]
fn sigterm_lets_the_running_job_finish_and_exits_zero() {
    let mut w = spawn(&["--debug-token-delay-ms", "10"], &[]);
    w.wait_ready(None);
    let r = w.post(
        "/execute",
        &json!({"job_id": "t1", "prompt": "The", "max_tokens": 30, "ignore_eos": true}),
    );
    let mut sse = SseReader::new(r);
    while sse.next_event().expect("events").name != "token" {}
    let pid = w.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let rest = sse.collect();
    assert_eq!(last(&rest).data["stop_reason"], "MAX_TOKENS", "{rest:?}");
    let status = w.wait_exit(Duration::from_secs(20)).expect("exits");
    assert!(status.success(), "{status}\n{}", w.log_text());
}

#[test]
fn openai_completions_streaming_and_not() {
    let mut w = spawn(&[], &[]);
    w.wait_ready(None);
    let models = w.get_json("/v1/models");
    assert_eq!(models["data"][0]["id"], "tiny-llama2-f32", "{models}");

    let prompt = "Once upon a time";
    let cli = cli_generate(prompt, 12);
    let body = json!({"model": "x", "prompt": prompt, "max_tokens": 12, "temperature": 0, "ignore_eos": true});
    let r = w.post("/v1/completions", &body);
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], cli["text"], "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 12);
    let prompt_tokens = cli["prompt_ids"].as_array().unwrap().len();
    assert_eq!(v["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(v["usage"]["total_tokens"], prompt_tokens + 12);

    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);
    let r = w.post("/v1/completions", &stream_body);
    assert_eq!(r.status(), 200);
    let (chunks, done) = SseReader::new(r).collect_with_done();
    assert!(done, "{chunks:?}");
    let text: String = chunks
        .iter()
        .map(|e| e.data["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, cli["text"].as_str().unwrap());
    let final_chunk = &chunks.last().unwrap().data;
    assert_eq!(final_chunk["choices"][0]["finish_reason"], "length");
    assert_eq!(final_chunk["usage"]["completion_tokens"], 12);

    // Validation as for /execute; the tiny model has no chat template.
    let v: Value = w
        .post("/v1/completions", &json!({"prompt": 1, "n": 2, "bogus": 0}))
        .json()
        .unwrap();
    let mut fields: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    fields.sort();
    assert_eq!(fields, ["bogus", "n", "prompt"], "{v}");
    let r = w.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status(), 400);
    let v: Value = r.json().unwrap();
    assert!(v.to_string().contains("chat template"), "{v}");
}

/// The chat template path needs a model that has one: SmolLM2 (fetched by
/// scripts/fetch-model.sh, which the test command runs first).
#[test]
fn openai_chat_completions_with_the_gguf_template() {
    let model = repo_root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        model.is_file(),
        "{} is missing: run scripts/fetch-model.sh first",
        model.display()
    );
    let mut w = spawn_model(&model, &["--ctx-size", "256"], &[]);
    w.wait_ready(None);
    let messages = json!([{"role": "user", "content": "What is the capital of France?"}]);
    let r = w.post(
        "/v1/chat/completions",
        &json!({"messages": messages, "max_tokens": 4, "temperature": 0}),
    );
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!content.is_empty(), "{v}");
    // The system prompt of SmolLM2's template makes the prompt much longer than the question.
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 20, "{v}");

    let r = w.post(
        "/v1/chat/completions",
        &json!({"messages": messages, "max_tokens": 4, "temperature": 0, "stream": true}),
    );
    let (chunks, done) = SseReader::new(r).collect_with_done();
    assert!(done, "{chunks:?}");
    assert_eq!(chunks[0].data["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|e| e.data["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, content);
}

#[test]
fn cancelling_a_queued_job_ends_it_when_dequeued() {
    let mut w = spawn(&["--parallel", "1", "--debug-token-delay-ms", "20"], &[]);
    w.wait_ready(None);
    let r = w.post(
        "/execute",
        &json!({"job_id": "a", "prompt": "The", "max_tokens": 200, "ignore_eos": true}),
    );
    let mut first = SseReader::new(r);
    while first.next_event().expect("events").name != "token" {}
    let base = w.base.clone();
    let queued = std::thread::spawn(move || {
        let r = client()
            .post(format!("{base}/execute"))
            .json(&json!({"job_id": "b", "prompt": "The", "max_tokens": 200, "ignore_eos": true}))
            .send()
            .unwrap();
        SseReader::new(r).collect()
    });
    // Wait until "b" is queued, then cancel it, then the running one.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let m = client()
            .get(w.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        if m.contains("rbees_queue_depth 1") {
            break;
        }
        assert!(Instant::now() < end, "job b never queued: {m}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(w.post("/cancel", &json!({"job_id": "b"})).status(), 202);
    assert_eq!(w.post("/cancel", &json!({"job_id": "a"})).status(), 202);
    assert_eq!(last(&first.collect()).data["stop_reason"], "CANCELLED");
    let events = queued.join().unwrap();
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["started", "end"]);
    assert_eq!(events[1].data["stop_reason"], "CANCELLED");
    assert_eq!(events[1].data["tokens_out"], 0);
}

#[test]
fn a_model_that_fails_to_load_is_reported() {
    let missing = std::env::temp_dir().join("rbees-no-such-model.gguf");
    let w = spawn_model(&missing, &[], &[]);
    let end = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        if let Ok(r) = client().get(w.url("/v1/ready")).send() {
            let v: Value = r.json().unwrap();
            if v["state"] == "error" {
                break v;
            }
        }
        assert!(Instant::now() < end, "no error state:\n{}", w.log_text());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(ready["ready"], false);
    assert!(
        ready["error"]
            .as_str()
            .unwrap()
            .contains("rbees-no-such-model"),
        "{ready}"
    );
    assert_eq!(w.get_json("/health")["status"], "error");
    let r = w.post("/execute", &json!({"job_id": "x", "prompt": "x"}));
    assert_eq!(r.status(), 503);

    // With a pool manager waiting, the worker exits non-zero instead.
    let (port, _rx) = fake_manager(200);
    let callback = format!("http://127.0.0.1:{port}/ready");
    let mut w = spawn_model(&missing, &["--callback-url", &callback], &[]);
    let status = w.wait_exit(Duration::from_secs(30)).expect("exits");
    assert!(!status.success());
    assert!(w.log_text().contains("failed to load"), "{}", w.log_text());
}
