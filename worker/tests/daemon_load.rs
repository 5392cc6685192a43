//! `rbees-workerd` under concurrent load, and every sampling field observed
//! over HTTP. The real binary on a loopback port with the tiny models.

mod daemon_support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use daemon_support::*;
use serde_json::{json, Value};

const CLIENTS: usize = 32;
const JOBS_PER_CLIENT: usize = 10;
const PROMPTS: [&str; 3] = ["Once upon a time", "The", "Hello there"];
/// Tokens of a normal job; cancelled and disconnected jobs ask for many more
/// so that they cannot end on their own before the cancel arrives.
const NORMAL_TOKENS: usize = 8;
const LONG_TOKENS: usize = 250;

/// Checks one job's complete event stream against the contract and returns
/// its terminal event: `started` first (naming `job_id` and `model`), token
/// indices counting from 0 (the final flush may repeat the last one), then
/// exactly one `end` or `error`, last, whose `tokens_out` counts the tokens.
fn check_stream<'a>(job_id: &str, model: &str, events: &'a [SseEvent]) -> &'a SseEvent {
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    let started = names.iter().filter(|n| **n == "started").count();
    let terminal = names
        .iter()
        .filter(|n| **n == "end" || **n == "error")
        .count();
    assert_eq!(started, 1, "{job_id}: started events: {names:?}");
    assert_eq!(terminal, 1, "{job_id}: terminal events: {names:?}");
    assert_eq!(names[0], "started", "{job_id}: {names:?}");
    assert_eq!(
        events[0].data["job_id"], job_id,
        "{job_id}: {:?}",
        events[0]
    );
    assert_eq!(events[0].data["model"], model, "{job_id}: {:?}", events[0]);
    let end = last(events);
    assert!(
        end.name == "end" || end.name == "error",
        "{job_id}: the terminal event is not last: {names:?}"
    );
    let tokens: Vec<&SseEvent> = events.iter().filter(|e| e.name == "token").collect();
    let mut next = 0u64;
    for (k, t) in tokens.iter().enumerate() {
        let i = t.data["i"].as_u64().unwrap();
        if i == next {
            next += 1;
        } else {
            // Only the very last token event may repeat the last index (and id).
            assert!(
                k == tokens.len() - 1 && i + 1 == next && t.data["id"] == tokens[k - 1].data["id"],
                "{job_id}: token {k} has i={i}, expected {next}: {:?}",
                t.data
            );
        }
    }
    if end.name == "end" {
        assert_eq!(
            end.data["tokens_out"], next,
            "{job_id}: {:?} after {next} tokens",
            end.data
        );
    }
    end
}

/// What one client saw of one job.
#[derive(Debug)]
enum Outcome {
    /// Streamed to the end: the job's prompt, ids and end event.
    Normal {
        job_id: String,
        prompt: usize,
        ids: Vec<u64>,
    },
    Cancelled {
        job_id: String,
    },
    Disconnected {
        job_id: String,
    },
    Invalid,
}

fn normal_body(job_id: &str, prompt: usize) -> Value {
    json!({"job_id": job_id, "prompt": PROMPTS[prompt], "max_tokens": NORMAL_TOKENS,
           "temperature": 0, "ignore_eos": true})
}

fn long_body(job_id: &str) -> Value {
    json!({"job_id": job_id, "prompt": "The", "max_tokens": LONG_TOKENS,
           "temperature": 1.0, "seed": 7, "ignore_eos": true})
}

/// Invalid requests of several kinds; each must be refused with 400.
fn invalid_body(n: usize, job_id: &str) -> String {
    match n % 5 {
        0 => json!({"job_id": job_id, "prompt": "x", "temperature": -1}).to_string(),
        1 => json!({"job_id": job_id}).to_string(),
        2 => json!({"job_id": job_id, "prompt": "x", "top_p": 0, "bogus": 1}).to_string(),
        3 => json!({"job_id": "", "prompt": "x", "max_tokens": 0}).to_string(),
        _ => "{not json".to_string(),
    }
}

/// Reads events until the first `token`, returning what was read.
fn read_until_token<R: std::io::Read>(sse: &mut SseReader<R>, job_id: &str) -> Vec<SseEvent> {
    let mut seen = Vec::new();
    loop {
        let e = sse
            .next_event()
            .unwrap_or_else(|| panic!("{job_id}: the stream ended before a token: {seen:?}"));
        let name = e.name.clone();
        seen.push(e);
        match name.as_str() {
            "token" => return seen,
            "end" | "error" => panic!("{job_id}: ended before a token: {seen:?}"),
            _ => {}
        }
    }
}

fn run_client(base: &str, model: &str, c: usize) -> Vec<Outcome> {
    let http = client();
    let execute = |body: String| {
        http.post(format!("{base}/execute"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .expect("POST /execute")
    };
    let mut out = Vec::new();
    for k in 0..JOBS_PER_CLIENT {
        let job_id = format!("load-{c}-{k}");
        match (c + k) % 5 {
            // Normal streamed jobs, greedy, on one of the prompts.
            kind @ (0 | 1) => {
                let prompt = (c + kind) % PROMPTS.len();
                let r = execute(normal_body(&job_id, prompt).to_string());
                assert_eq!(r.status(), 200, "{job_id}: {:?}", r.text());
                let events = SseReader::new(r).collect();
                let end = check_stream(&job_id, model, &events);
                assert_eq!(end.name, "end", "{job_id}: {:?}", end.data);
                assert_eq!(end.data["stop_reason"], "MAX_TOKENS", "{job_id}");
                out.push(Outcome::Normal {
                    job_id,
                    prompt,
                    ids: token_ids(&events),
                });
            }
            // Cancelled via /cancel once a token arrived; meanwhile the same
            // job id is refused with 409.
            2 => {
                let r = execute(long_body(&job_id).to_string());
                assert_eq!(r.status(), 200, "{job_id}: {:?}", r.text());
                let mut sse = SseReader::new(r);
                let mut events = read_until_token(&mut sse, &job_id);
                let dup = execute(long_body(&job_id).to_string());
                assert_eq!(dup.status(), 409, "{job_id}: {:?}", dup.text());
                let cancel = http
                    .post(format!("{base}/cancel"))
                    .json(&json!({"job_id": job_id}))
                    .send()
                    .expect("POST /cancel");
                assert_eq!(cancel.status(), 202);
                let cancel: Value = cancel.json().unwrap();
                assert_eq!(cancel["found"], true, "{job_id}: {cancel}");
                assert_eq!(cancel["job_id"], job_id.as_str());
                events.extend(sse.collect());
                let end = check_stream(&job_id, model, &events);
                assert_eq!(end.name, "end", "{job_id}: {:?}", end.data);
                assert_eq!(end.data["stop_reason"], "CANCELLED", "{job_id}");
                assert!(
                    end.data["tokens_out"].as_u64().unwrap() < LONG_TOKENS as u64,
                    "{job_id}: {:?}",
                    end.data
                );
                out.push(Outcome::Cancelled { job_id });
            }
            // The client goes away mid-stream.
            3 => {
                let r = execute(long_body(&job_id).to_string());
                assert_eq!(r.status(), 200, "{job_id}: {:?}", r.text());
                let mut sse = SseReader::new(r);
                let seen = read_until_token(&mut sse, &job_id);
                assert_eq!(seen[0].data["job_id"], job_id.as_str());
                drop(sse);
                out.push(Outcome::Disconnected { job_id });
            }
            _ => {
                let r = execute(invalid_body(c, &job_id));
                let status = r.status().as_u16();
                let body: Value = r.json().unwrap_or(Value::Null);
                assert_eq!(status, 400, "{job_id}: {body}");
                let errors = body["errors"].as_array();
                assert!(errors.is_some_and(|e| !e.is_empty()), "{job_id}: {body}");
                out.push(Outcome::Invalid);
            }
        }
    }
    out
}

#[test]
fn many_concurrent_clients_each_get_their_own_complete_stream() {
    let t0 = Instant::now();
    // 8 ms per token gives a cancel or a disconnect ~2 s to take effect on a
    // busy 2-core machine before a long job would end on its own.
    let mut w = spawn(
        &[
            "--parallel",
            "8",
            "--queue-depth",
            "64",
            "--debug-token-delay-ms",
            "8",
        ],
        &[],
    );
    w.wait_ready(None);
    let model = "tiny-llama2-f32";

    // The greedy ids of each prompt, one job at a time, as the reference.
    let reference: Vec<Vec<u64>> = PROMPTS
        .iter()
        .enumerate()
        .map(|(k, _)| {
            let id = format!("ref-{k}");
            let events = w.execute_events(&normal_body(&id, k));
            check_stream(&id, model, &events);
            token_ids(&events)
        })
        .collect();
    for ids in &reference {
        assert_eq!(ids.len(), NORMAL_TOKENS);
    }
    assert_ne!(
        reference[0], reference[1],
        "the prompts must differ in output"
    );

    // /health keeps answering, quickly, while the load runs.
    let done = Arc::new(AtomicBool::new(false));
    let health_log = Arc::new(Mutex::new(Vec::<(u16, Duration)>::new()));
    let prober = {
        let (done, log, url) = (done.clone(), health_log.clone(), w.url("/health"));
        std::thread::spawn(move || {
            let http = client();
            while !done.load(Ordering::SeqCst) {
                let sent = Instant::now();
                let status = http.get(&url).send().map_or(0, |r| {
                    let s = r.status().as_u16();
                    let ok = r.json::<Value>().is_ok_and(|v| v["status"] == "ok");
                    if ok {
                        s
                    } else {
                        1
                    }
                });
                log.lock().unwrap().push((status, sent.elapsed()));
                std::thread::sleep(Duration::from_millis(25));
            }
        })
    };

    let load_started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let base = w.base.clone();
            std::thread::spawn(move || run_client(&base, model, c))
        })
        .collect();
    // Join them all before judging, so that one failure does not stop the
    // worker under the others.
    let results: Vec<_> = clients.into_iter().map(|h| h.join()).collect();
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(
        failed, 0,
        "{failed} clients failed (see their panics above)"
    );
    let outcomes: Vec<Outcome> = results.into_iter().flat_map(Result::unwrap).collect();
    let load_time = load_started.elapsed();

    // Every disconnected job ends too: nothing stays in flight.
    let end = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let m = w.metrics_text();
        if metric_value(&m, "rbees_jobs_in_flight") == Some(0.0) || Instant::now() > end {
            break m;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    done.store(true, Ordering::SeqCst);
    prober.join().unwrap();

    let mut seen = BTreeSet::new();
    let (mut normal, mut cancelled, mut disconnected, mut invalid) = (0, 0, 0, 0);
    let mut gone = Vec::new();
    for o in &outcomes {
        match o {
            Outcome::Normal {
                job_id,
                prompt,
                ids,
            } => {
                assert!(seen.insert(job_id.clone()), "{job_id} twice");
                assert_eq!(
                    ids, &reference[*prompt],
                    "{job_id}: another job's tokens? prompt {prompt}"
                );
                normal += 1;
            }
            Outcome::Cancelled { job_id } => {
                assert!(seen.insert(job_id.clone()), "{job_id} twice");
                cancelled += 1;
            }
            Outcome::Disconnected { job_id } => {
                assert!(seen.insert(job_id.clone()), "{job_id} twice");
                gone.push(job_id.clone());
                disconnected += 1;
            }
            Outcome::Invalid => invalid += 1,
        }
    }
    assert_eq!(outcomes.len(), CLIENTS * JOBS_PER_CLIENT);
    assert!(normal > 0 && cancelled > 0 && disconnected > 0 && invalid > 0);

    // No job lost, none counted twice: each accepted job ended exactly once.
    let count = |outcome: &str| {
        metric_value(
            &metrics,
            &format!("rbees_requests_total{{outcome=\"{outcome}\"}}"),
        )
        .unwrap_or_else(|| panic!("no {outcome} count in\n{metrics}")) as usize
    };
    assert_eq!(
        metric_value(&metrics, "rbees_jobs_in_flight"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(count("completed"), normal + reference.len(), "{metrics}");
    assert_eq!(
        count("cancelled"),
        cancelled + disconnected,
        "disconnects must cancel their jobs:\n{metrics}"
    );
    assert_eq!(count("error"), 0, "{metrics}");
    assert_eq!(count("rejected"), 0, "{metrics}");
    // 400s, plus one 409 per cancelled job.
    assert_eq!(count("invalid"), invalid + cancelled, "{metrics}");
    for job_id in &gone {
        let r: Value = w
            .post("/cancel", &json!({"job_id": job_id}))
            .json()
            .unwrap();
        assert_eq!(r["found"], false, "{job_id} still registered: {r}");
    }

    let health = health_log.lock().unwrap();
    let slowest = health.iter().map(|h| h.1).max().unwrap_or_default();
    assert!(health.len() >= 3, "too few health probes: {health:?}");
    assert!(
        health.iter().all(|h| h.0 == 200),
        "/health failed under load: {health:?}"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "/health slow: {slowest:?}"
    );
    let h = w.get_json("/health");
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["state"], "ready", "{h}");
    assert_eq!(w.child.try_wait().unwrap(), None, "the worker died");
    eprintln!(
        "{} jobs from {CLIENTS} clients in {load_time:?} ({} health probes, slowest {slowest:?}); test {:?}",
        outcomes.len(),
        health.len(),
        t0.elapsed()
    );
}

/// Greedy reference runs and sampled runs, as token ids.
struct Sampler<'a> {
    w: &'a Worker,
    prompt: &'a str,
    n: usize,
}

impl Sampler<'_> {
    /// Token ids of one job with `max_tokens` 16 and `ignore_eos`, plus `extra`.
    fn run(&mut self, extra: Value) -> (Vec<u64>, Vec<SseEvent>) {
        self.n += 1;
        let mut body = json!({"job_id": format!("s{}", self.n), "prompt": self.prompt,
                              "max_tokens": 16, "ignore_eos": true});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let events = self.w.execute_events(&body);
        let end = last(&events);
        assert_eq!(end.name, "end", "{body}: {:?}", end.data);
        (token_ids(&events), events)
    }

    fn ids(&mut self, extra: Value) -> Vec<u64> {
        self.run(extra).0
    }
}

/// Neutral filters, so that only the field under test restricts sampling.
fn open(extra: Value) -> Value {
    let mut v = json!({"top_k": 0, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

/// Two ASCII letters or digits from the later part of `text` that first
/// occur after its start (so the cut output is not empty).
fn stop_string(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    (chars.len() / 3..chars.len().saturating_sub(1))
        .map(|k| chars[k..k + 2].iter().collect::<String>())
        .find(|s: &String| {
            s.chars().all(|c| c.is_ascii_alphanumeric()) && text.find(s.as_str()) > Some(0)
        })
        .unwrap_or_else(|| panic!("no ASCII stop string in {text:?}"))
}

fn distinct(ids: &[u64]) -> usize {
    ids.iter().collect::<BTreeSet<_>>().len()
}

#[test]
fn every_sampling_field_has_an_observable_effect() {
    let t0 = Instant::now();
    let mut w = spawn(&[], &[]);
    w.wait_ready(None);
    let mut s = Sampler {
        w: &w,
        prompt: "The",
        n: 0,
    };
    let greedy = s.ids(open(json!({"temperature": 0})));
    assert_eq!(greedy.len(), 16);

    // temperature: 0 is deterministic whatever the seed; a high one is not greedy.
    assert_eq!(s.ids(open(json!({"temperature": 0, "seed": 99}))), greedy);
    let hot = s.ids(open(json!({"temperature": 1.5, "seed": 1})));
    assert_ne!(hot, greedy, "temperature 1.5 gave the greedy tokens");

    // seed: the same seed repeats the sample, another seed changes it.
    let a = s.ids(open(json!({"temperature": 1.0, "seed": 42})));
    let b = s.ids(open(json!({"temperature": 1.0, "seed": 42})));
    let c = s.ids(open(json!({"temperature": 1.0, "seed": 43})));
    assert_eq!(a, b, "same seed, different tokens");
    assert_ne!(a, c, "another seed, same tokens");

    // top_k: 1 leaves only the most likely token, i.e. greedy, at any temperature.
    for seed in [1, 2] {
        let k1 = s.ids(open(json!({"temperature": 1.5, "seed": seed, "top_k": 1})));
        assert_eq!(k1, greedy, "top_k=1 seed {seed}");
    }
    let k5 = s.ids(open(json!({"temperature": 1.5, "seed": 1, "top_k": 5})));
    assert_ne!(k5, greedy, "top_k=5 at temperature 1.5 stayed greedy");

    // top_p: a tiny nucleus holds only the top token.
    let p = s.ids(open(json!({"temperature": 1.5, "seed": 1, "top_p": 0.001})));
    assert_eq!(p, greedy, "top_p=0.001");

    // min_p: 1 keeps only tokens as likely as the top one.
    let m = s.ids(open(json!({"temperature": 1.5, "seed": 1, "min_p": 1.0})));
    assert_eq!(m, greedy, "min_p=1");

    // max_tokens: bounds tokens_out; the tokens are the greedy prefix.
    let (ids, events) = s.run(open(json!({"temperature": 0, "max_tokens": 5})));
    assert_eq!(ids, greedy[..5]);
    assert_eq!(last(&events).data["tokens_out"], 5);
    assert_eq!(last(&events).data["stop_reason"], "MAX_TOKENS");

    // stop: the text ends before the first match of a piece of the greedy text.
    let (_, events) = s.run(open(json!({"temperature": 0})));
    let text = text_of(&events);
    let stop = stop_string(&text);
    let cut = &text[..text.find(&stop).unwrap()];
    let (ids, events) = s.run(open(json!({"temperature": 0, "stop": stop})));
    assert_eq!(text_of(&events), cut, "stop {stop:?} in {text:?}");
    let end = last(&events);
    assert_eq!(end.data["stop_reason"], "STOP_SEQUENCE", "{:?}", end.data);
    assert_eq!(end.data["stop_sequence_matched"], json!(stop));
    assert!(ids.len() < greedy.len(), "{ids:?}");
    assert_eq!(ids, greedy[..ids.len()]);
    drop(w);

    // repetition_penalty: the Q4_0 tiny model's greedy output repeats tokens;
    // a strong penalty on recent tokens breaks the repetition.
    let q4 = repo_root().join("testdata/models/tiny-llama2-q4_0-tied.gguf");
    let mut w = spawn_model(&q4, &[], &[]);
    w.wait_ready(None);
    let mut s = Sampler {
        w: &w,
        prompt: "Once upon a time",
        n: 100,
    };
    let looping = s.ids(open(json!({"temperature": 0})));
    assert!(
        distinct(&looping) <= looping.len() / 2,
        "the fixture no longer loops: {looping:?}"
    );
    assert_eq!(
        s.ids(open(json!({"temperature": 0, "repetition_penalty": 1.0}))),
        looping
    );
    let penalized = s.ids(open(json!({"temperature": 0, "repetition_penalty": 20.0})));
    assert_ne!(penalized, looping);
    assert!(
        distinct(&penalized) > distinct(&looping),
        "penalized {penalized:?} repeats no less than {looping:?}"
    );
    eprintln!("sampling checks took {:?}", t0.elapsed());
}
