//! Continuous batching in the real worker: jobs generated together give the
//! ids each gets alone (exactly, on `ndarray` and `cpu`), join and leave
//! mid-generation, are cancelled one by one, reuse cached prompt prefixes,
//! and the slots show in `/health` and `/metrics`.

mod daemon_support;

use std::time::{Duration, Instant};

use daemon_support::*;
use serde_json::{json, Value};

const PROMPTS: [&str; 8] = [
    "Once upon a time",
    "The capital of France is",
    "1, 2, 3, 4,",
    "def main():",
    "A longer prompt, cut into several chunks by the step budget so that it shares steps with the others",
    "Hi",
    "Les mots",
    "Tell me about the sea",
];

fn body(job_id: &str, prompt: &str, max_tokens: usize) -> Value {
    json!({"job_id": job_id, "prompt": prompt, "max_tokens": max_tokens,
           "temperature": 0, "ignore_eos": true})
}

/// Every prompt alone, one after the other: the reference ids.
fn alone(w: &Worker, max_tokens: usize) -> Vec<Vec<u64>> {
    PROMPTS
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let events = w.execute_events(&body(&format!("alone-{i}"), p, max_tokens));
            assert_eq!(
                last(&events).data["stop_reason"],
                "MAX_TOKENS",
                "{events:?}"
            );
            token_ids(&events)
        })
        .collect()
}

/// `POST /execute` on its own thread; all its events.
fn spawn_job(w: &Worker, body: Value) -> std::thread::JoinHandle<Vec<SseEvent>> {
    let url = w.url("/execute");
    std::thread::spawn(move || {
        let r = client()
            .post(url)
            .json(&body)
            .send()
            .expect("POST /execute");
        assert_eq!(r.status(), 200);
        SseReader::new(r).collect()
    })
}

/// Steps that ran more than one sequence, from `/metrics`.
fn batched_steps(w: &Worker) -> f64 {
    let m = w.metrics_text();
    let all = metric_value(&m, "rbees_batch_sequences_count").expect("step count");
    let single = metric_value(&m, "rbees_batch_sequences_bucket{le=\"1.0\"}").expect("bucket");
    all - single
}

fn together_equals_alone(backend: &str, model: &std::path::Path) {
    let mut w = spawn_model(
        model,
        &[
            "--backend",
            backend,
            "--parallel",
            "8",
            "--batch-tokens",
            "16",
            "--debug-token-delay-ms",
            "3",
        ],
        &[],
    );
    w.wait_ready(None);
    let n = 20;
    let reference = alone(&w, n);
    let before = batched_steps(&w);
    let handles: Vec<_> = PROMPTS
        .iter()
        .enumerate()
        .map(|(i, p)| spawn_job(&w, body(&format!("together-{i}"), p, n)))
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let events = h.join().expect("client thread");
        assert_eq!(last(&events).data["stop_reason"], "MAX_TOKENS");
        assert_eq!(
            token_ids(&events),
            reference[i],
            "{backend}: prompt {i} ({:?}) together vs alone",
            PROMPTS[i]
        );
    }
    assert!(
        batched_steps(&w) > before,
        "{backend}: no step ran more than one sequence"
    );
}

#[test]
fn eight_jobs_together_give_each_its_ids_alone_on_ndarray() {
    together_equals_alone("ndarray", &tiny_model());
}

#[test]
fn eight_jobs_together_give_each_its_ids_alone_on_cpu() {
    let q8 = repo_root().join("testdata/models/tiny-llama2-q8_0.gguf");
    together_equals_alone("cpu", &q8);
}

#[test]
fn jobs_join_mid_generation_and_cancelled_ones_leave_without_disturbing_the_rest() {
    let mut w = spawn(
        &[
            "--backend",
            "cpu",
            "--parallel",
            "4",
            "--batch-tokens",
            "8",
            "--debug-token-delay-ms",
            "10",
        ],
        &[],
    );
    w.wait_ready(None);
    let n = 40;
    let reference = alone(&w, n);
    // Two long jobs first; the others join once they are generating.
    let first: Vec<_> = (0..2)
        .map(|i| spawn_job(&w, body(&format!("early-{i}"), PROMPTS[i], n)))
        .collect();
    let end = Instant::now() + Duration::from_secs(30);
    while metric_value(&w.metrics_text(), "rbees_tokens_generated_total").unwrap_or(0.0)
        < (PROMPTS.len() * n + 10) as f64
    {
        assert!(Instant::now() < end, "the early jobs did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    // A job to cancel by request and one whose client disconnects.
    let cancelled = w.post("/execute", &body("to-cancel", PROMPTS[2], 150));
    let mut cancelled = SseReader::new(cancelled);
    let gone = w.post("/execute", &body("to-drop", PROMPTS[3], 150));
    let mut gone = SseReader::new(gone);
    for s in [&mut cancelled, &mut gone] {
        while s.next_event().expect("events").name != "token" {}
    }
    // The long prompt joins while the others decode (its prompt is chunked).
    let late = spawn_job(&w, body("late", PROMPTS[4], n));
    assert_eq!(
        w.post("/cancel", &json!({"job_id": "to-cancel"})).status(),
        202
    );
    drop(gone);
    let events = cancelled.collect();
    assert_eq!(last(&events).data["stop_reason"], "CANCELLED");
    // Everyone else finishes with the tokens it gets alone.
    for (i, h) in first.into_iter().enumerate() {
        assert_eq!(
            token_ids(&h.join().expect("thread")),
            reference[i],
            "early-{i}"
        );
    }
    assert_eq!(
        token_ids(&late.join().expect("thread")),
        reference[4],
        "late"
    );
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let m = w.metrics_text();
        let cancelled = metric_value(&m, "rbees_requests_total{outcome=\"cancelled\"}");
        if cancelled == Some(2.0) && metric_value(&m, "rbees_slots_busy") == Some(0.0) {
            break;
        }
        assert!(Instant::now() < end, "the slots were not freed:\n{m}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_prompt_with_a_cached_prefix_computes_only_the_rest_and_gives_the_same_ids() {
    let mut warm = spawn(&["--backend", "cpu", "--parallel", "2"], &[]);
    warm.wait_ready(None);
    let system = "You are a helpful assistant who answers in one short sentence. ";
    let first = format!("{system}What is the sea?");
    let events = warm.execute_events(&body("turn-1", &first, 12));
    let end = &last(&events).data;
    assert_eq!(end["prompt_tokens_cached"], 0, "{end}");
    // The next turn resends the history: its prefix is in the slot's cache.
    let second = format!("{first}{} And the sky?", text_of(&events));
    let events = warm.execute_events(&body("turn-2", &second, 12));
    let end = &last(&events).data;
    let prompt_tokens = end["prompt_tokens"].as_u64().expect("prompt_tokens");
    let cached = end["prompt_tokens_cached"].as_u64().expect("cached count");
    assert!(
        cached >= 10 && cached < prompt_tokens,
        "cached {cached} of {prompt_tokens}: {end}"
    );
    let warm_ids = token_ids(&events);
    // The same prompt on a worker that never saw it: the same ids.
    let mut cold = spawn(&["--backend", "cpu", "--parallel", "2"], &[]);
    cold.wait_ready(None);
    let events = cold.execute_events(&body("cold", &second, 12));
    assert_eq!(last(&events).data["prompt_tokens_cached"], 0);
    assert_eq!(token_ids(&events), warm_ids);
    let m = warm.metrics_text();
    assert_eq!(
        metric_value(&m, "rbees_prompt_tokens_cached_total"),
        Some(cached as f64),
        "{m}"
    );
    // The OpenAI route reports it in usage.prompt_tokens_details.
    let r = warm.post(
        "/v1/completions",
        &json!({"prompt": second, "max_tokens": 4, "temperature": 0}),
    );
    assert_eq!(r.status(), 200);
    let v: Value = r.json().expect("JSON");
    let cached_now = v["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .expect("cached_tokens");
    assert_eq!(cached_now, prompt_tokens - 1, "{v}");
}

#[test]
fn slots_show_in_health_and_metrics() {
    let mut w = spawn(&["--parallel", "3", "--debug-token-delay-ms", "20"], &[]);
    w.wait_ready(None);
    let h = w.get_json("/health");
    assert_eq!(h["slots_total"], 3, "{h}");
    assert_eq!(h["slots_busy"], 0, "{h}");
    assert_eq!(h["queue_length"], 0, "{h}");
    let jobs: Vec<_> = (0..2)
        .map(|i| spawn_job(&w, body(&format!("busy-{i}"), "The", 60)))
        .collect();
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let h = w.get_json("/health");
        if h["slots_busy"] == 2 && h["tokens_per_second"].as_f64().unwrap_or(0.0) > 0.0 {
            break;
        }
        assert!(Instant::now() < end, "never two busy slots: {h}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let m = w.metrics_text();
    assert_eq!(metric_value(&m, "rbees_slots_total"), Some(3.0), "{m}");
    assert_eq!(metric_value(&m, "rbees_slots_busy"), Some(2.0), "{m}");
    assert!(
        metric_value(&m, "rbees_tokens_per_second").is_some_and(|v| v > 0.0),
        "{m}"
    );
    for h in jobs {
        assert_eq!(
            last(&h.join().expect("thread")).data["stop_reason"],
            "MAX_TOKENS"
        );
    }
}

#[test]
fn bad_parallel_settings_are_refused_at_start() {
    for (flags, words) in [
        (vec!["--parallel", "0"], "parallel must be in [1, 1024]"),
        (
            vec!["--parallel", "4", "--batch-tokens", "2"],
            "batch_tokens must be in [parallel = 4",
        ),
    ] {
        let mut w = spawn(&flags, &[]);
        let status = w.wait_exit(Duration::from_secs(20)).expect("exits");
        assert!(!status.success());
        let log = w.log_text();
        assert!(log.contains(words), "{flags:?}: {log}");
    }
}
