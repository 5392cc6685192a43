//! Soak test (ignored by default; a minute by default):
//!
//! ```sh
//! RBEES_SOAK_SECS=60 cargo test -p rbees-worker --test soak -- --ignored --nocapture
//! ```
//!
//! 32 clients hammer one real `rbees-workerd` (tiny model, loopback) with a
//! mix of normal `/execute` jobs, streaming OpenAI completions, jobs
//! cancelled through `/cancel`, clients that disconnect mid-stream and
//! invalid bodies, while another thread polls `/health`. Checks: every
//! accepted job ends exactly once (client side: one `end`/`error` per stream;
//! worker side: its outcome counters add up to the jobs accepted), nothing is
//! left queued or running, `/health` answered throughout, and the worker's
//! RSS returns to its post-warm-up baseline. Prints the figures as Markdown.

mod daemon_support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use daemon_support::{client, metric_value, spawn, SseEvent, SseReader, Worker};
use serde_json::{json, Value};

const CLIENTS: usize = 32;
/// RSS may end this much above its baseline (allocator caches, lazily
/// grown buffers) without counting as a leak.
const RSS_SLACK_KIB: u64 = 16 * 1024;
const RSS_SLACK_FRACTION: f64 = 0.10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Execute,
    OpenAiStream,
    Cancelled,
    Disconnect,
    Invalid,
}

#[derive(Default)]
struct Tally {
    /// (request kind, outcome) -> count.
    outcomes: BTreeMap<(String, String), u64>,
    ttft: Vec<Duration>,
    accepted_jobs: u64,
    invalid_sent: u64,
    busy: u64,
    problems: Vec<String>,
}

impl Tally {
    fn add(&mut self, kind: Kind, outcome: &str) {
        *self
            .outcomes
            .entry((format!("{kind:?}"), outcome.to_string()))
            .or_default() += 1;
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A tiny xorshift, so the mix is reproducible per client.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

static NEXT_JOB: AtomicU64 = AtomicU64::new(0);

fn pick(rng: &mut Rng) -> Kind {
    match rng.next() % 10 {
        0..=2 => Kind::Execute,
        3..=4 => Kind::OpenAiStream,
        5..=6 => Kind::Cancelled,
        7 => Kind::Disconnect,
        _ => Kind::Invalid,
    }
}

/// One request of `kind`; records its outcome.
fn one_request(
    w: &Worker,
    c: &reqwest::blocking::Client,
    kind: Kind,
    rng: &mut Rng,
    t: &Mutex<Tally>,
) {
    let job_id = format!("soak-{}", NEXT_JOB.fetch_add(1, Ordering::Relaxed));
    let max_tokens = 8 + rng.next() % 40;
    let start = Instant::now();
    let (path, body) = match kind {
        Kind::Invalid => {
            let bodies = [
                json!({"job_id": job_id, "prompt": 5}),
                json!({"job_id": "", "prompt": "x", "temperature": -1}),
                json!({"prompt": "x", "max_tokens": 0, "bogus": true}),
                json!([1, 2, 3]),
            ];
            let pick = (rng.next() % 7) as usize;
            if pick >= bodies.len() {
                return raw_invalid(w, c, pick - bodies.len(), t);
            }
            ("/execute", bodies[pick].clone())
        }
        Kind::OpenAiStream => (
            "/v1/completions",
            json!({"prompt": "Once upon a time", "max_tokens": max_tokens, "stream": true, "temperature": 0.7, "seed": rng.next() % 1000}),
        ),
        _ => (
            "/execute",
            json!({"job_id": job_id, "prompt": "The quick brown fox", "max_tokens": max_tokens, "seed": rng.next() % 1000}),
        ),
    };
    let resp = match c.post(w.url(path)).json(&body).send() {
        Ok(r) => r,
        Err(e) => {
            t.lock()
                .unwrap()
                .problems
                .push(format!("{kind:?}: send failed: {e}"));
            return;
        }
    };
    let status = resp.status().as_u16();
    if kind == Kind::Invalid {
        let mut t = t.lock().unwrap();
        t.invalid_sent += 1;
        if status == 400 {
            t.add(kind, "400");
        } else {
            t.problems.push(format!("invalid body answered {status}"));
        }
        return;
    }
    if status == 503 {
        let mut t = t.lock().unwrap();
        t.busy += 1;
        t.add(kind, "503 busy");
        return;
    }
    if status != 200 {
        t.lock()
            .unwrap()
            .problems
            .push(format!("{kind:?} answered {status}"));
        return;
    }
    t.lock().unwrap().accepted_jobs += 1;
    let mut events = SseReader::new(resp);
    let mut first_token = None;
    let mut terminal = Vec::new();
    let mut after_terminal = 0;
    while let Some(ev) = events.next_event() {
        let is_token = match kind {
            Kind::OpenAiStream => {
                ev.data.get("choices").is_some() && ev.data["choices"][0]["finish_reason"].is_null()
            }
            _ => ev.name == "token",
        };
        if is_token && first_token.is_none() {
            first_token = Some(ev.at - start);
            match kind {
                Kind::Disconnect => {
                    // Drop the connection mid-stream: the worker must cancel.
                    drop(events);
                    let mut t = t.lock().unwrap();
                    t.ttft.push(ev.at - start);
                    t.add(kind, "disconnected");
                    return;
                }
                Kind::Cancelled => {
                    let r = c
                        .post(w.url("/cancel"))
                        .json(&json!({"job_id": job_id}))
                        .send();
                    if !matches!(r.as_ref().map(|r| r.status().as_u16()), Ok(202)) {
                        t.lock()
                            .unwrap()
                            .problems
                            .push(format!("cancel {job_id}: {r:?}"));
                    }
                }
                _ => {}
            }
        }
        let end = match kind {
            Kind::OpenAiStream => ev.data.get("error").is_some(),
            _ => ev.name == "end" || ev.name == "error",
        };
        if !terminal.is_empty() {
            after_terminal += 1;
        }
        if end {
            terminal.push(ev);
        }
    }
    // Every stream ends with `data: [DONE]`; an OpenAI stream's terminal
    // event is that line.
    if !events.done {
        t.lock()
            .unwrap()
            .problems
            .push(format!("{kind:?} {job_id}: no [DONE] at the end"));
    } else if kind == Kind::OpenAiStream && terminal.is_empty() {
        terminal.push(SseEvent {
            name: "done".into(),
            data: Value::String("[DONE]".into()),
            at: Instant::now(),
        });
    }
    let mut t = t.lock().unwrap();
    if let Some(d) = first_token {
        t.ttft.push(d);
    }
    if terminal.len() != 1 || after_terminal != 0 {
        t.problems.push(format!(
            "{kind:?} {job_id}: {} terminal events, {after_terminal} events after the first",
            terminal.len()
        ));
        return;
    }
    let outcome = match kind {
        Kind::OpenAiStream => "done".to_string(),
        _ if terminal[0].name == "error" => format!("error {}", terminal[0].data["code"]),
        _ => terminal[0].data["stop_reason"]
            .as_str()
            .unwrap_or("?")
            .to_string(),
    };
    t.add(kind, &outcome);
}

/// Invalid bytes and headers rather than invalid fields: a body that is
/// not UTF-8, one past `max_body_bytes` (413), and odd headers (an
/// unparsable `Authorization`, a non-JSON content type, a 16 KiB header).
fn raw_invalid(w: &Worker, c: &reqwest::blocking::Client, which: usize, t: &Mutex<Tally>) {
    let req = c.post(w.url("/execute"));
    let (label, req) = match which {
        0 => (
            "non-UTF-8 body",
            req.header("content-type", "application/json")
                .body(vec![b'{', 0xff, 0xfe, b'"', 0x80, b'}']),
        ),
        1 => ("2 MiB body", req.body(vec![b' '; 2 << 20])),
        _ => (
            "odd headers",
            req.header(
                "authorization",
                reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").expect("obs-text"),
            )
            .header("content-type", "text/plain; charset=nonsense")
            .header("x-padding", "a".repeat(16 << 10))
            .body("{\"job_id\": 7}"),
        ),
    };
    let status = req.send().map(|r| r.status().as_u16());
    let mut t = t.lock().unwrap();
    match status {
        Ok(s @ (400 | 413)) => {
            t.invalid_sent += 1;
            t.add(Kind::Invalid, &format!("{s} ({label})"));
        }
        // A header hyper refuses before any handler (431): not counted by the worker.
        Ok(431) => t.add(Kind::Invalid, &format!("431 ({label})")),
        // The worker answers 413 as soon as the limit is passed and closes
        // the connection, so a client still sending may see the close first.
        Err(e) if which == 1 && e.is_request() => {
            t.invalid_sent += 1;
            t.add(Kind::Invalid, "413 or closed while sending (2 MiB body)");
        }
        other => t.problems.push(format!("{label}: {other:?}")),
    }
}

fn run_load(w: &Worker, secs: f64, tally: &Arc<Mutex<Tally>>) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    std::thread::scope(|s| {
        for i in 0..CLIENTS {
            let tally = tally.clone();
            s.spawn(move || {
                let c = client();
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((i as u64 + 1) * 0x1234_5678));
                while Instant::now() < deadline {
                    let kind = pick(&mut rng);
                    one_request(w, &c, kind, &mut rng, &tally);
                }
            });
        }
    });
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn metrics(w: &Worker) -> String {
    client()
        .get(w.url("/metrics"))
        .send()
        .expect("metrics")
        .text()
        .expect("text")
}

fn counter(text: &str, outcome: &str) -> u64 {
    metric_value(
        text,
        &format!("rbees_requests_total{{outcome=\"{outcome}\"}}"),
    )
    .unwrap_or(0.0) as u64
}

#[test]
#[ignore = "soak test: a minute or more; run with --ignored (see the file's docs)"]
fn soak_32_clients() {
    let secs: f64 = std::env::var("RBEES_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60.0);
    let mut w = spawn(
        &["--parallel", "8", "--queue-depth", "32", "--threads", "1"],
        &[],
    );
    w.wait_ready(None);
    let pid = w.child.id();

    // Health poller for the whole run: every answer must be a 200 "ok".
    let stop = Arc::new(AtomicBool::new(false));
    let health = {
        let (stop, url) = (stop.clone(), w.url("/health"));
        std::thread::spawn(move || {
            let c = client();
            let (mut ok, mut bad, mut worst) = (0u64, Vec::new(), Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                match c
                    .get(&url)
                    .send()
                    .map(|r| (r.status().as_u16(), r.json::<Value>()))
                {
                    Ok((200, Ok(v))) if v["status"] == "ok" => ok += 1,
                    other => bad.push(format!("{other:?}")),
                }
                worst = worst.max(t0.elapsed());
                std::thread::sleep(Duration::from_millis(100));
            }
            (ok, bad, worst)
        })
    };

    // Warm-up: the same mix for a while, so allocator pools and lazily
    // grown buffers reach their working size before the baseline.
    let warm = Arc::new(Mutex::new(Tally::default()));
    run_load(&w, (secs / 6.0).max(5.0), &warm);
    std::thread::sleep(Duration::from_secs(2));
    let before = metrics(&w);
    let rss_base = rss_kib(pid);

    let tally = Arc::new(Mutex::new(Tally::default()));
    let t0 = Instant::now();
    run_load(&w, secs, &tally);
    let elapsed = t0.elapsed();

    // Let disconnected and cancelled jobs drain, then read the counters.
    let drain_end = Instant::now() + Duration::from_secs(30);
    let mut after = metrics(&w);
    while Instant::now() < drain_end
        && (metric_value(&after, "rbees_jobs_in_flight") != Some(0.0)
            || metric_value(&after, "rbees_queue_depth") != Some(0.0))
    {
        std::thread::sleep(Duration::from_millis(100));
        after = metrics(&w);
    }
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = rss_kib(pid);
    stop.store(true, Ordering::Relaxed);
    let (health_ok, health_bad, health_worst) = health.join().expect("health thread");
    let final_health = w.get_json("/health");

    let t = tally.lock().unwrap();
    let delta = |o: &str| counter(&after, o) - counter(&before, o);
    let ended = delta("completed") + delta("cancelled") + delta("error");
    let mut ttft = t.ttft.clone();
    ttft.sort();
    let total: u64 = t.outcomes.values().sum();

    println!(
        "## Soak: {CLIENTS} clients, {:.0} s (after {:.0} s warm-up)\n",
        elapsed.as_secs_f64(),
        (secs / 6.0).max(5.0)
    );
    println!("| request | outcome | count |\n|---|---|---|");
    for ((k, o), n) in &t.outcomes {
        println!("| {k} | {o} | {n} |");
    }
    println!("\nrequests: {total} ({:.1}/s); jobs accepted: {}; worker outcome counters: completed {}, cancelled {}, error {}, invalid {}, rejected {}",
        total as f64 / elapsed.as_secs_f64(), t.accepted_jobs, delta("completed"), delta("cancelled"), delta("error"), delta("invalid"), delta("rejected"));
    println!(
        "time to first token: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
        percentile(&ttft, 0.5).as_secs_f64() * 1e3,
        percentile(&ttft, 0.99).as_secs_f64() * 1e3,
        ttft.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        ttft.len()
    );
    println!(
        "/health: {health_ok} ok, {} failed, slowest {:.1} ms; after the run: {}",
        health_bad.len(),
        health_worst.as_secs_f64() * 1e3,
        final_health["status"]
    );
    println!(
        "worker RSS: {} KiB after warm-up, {} KiB after the run ({:+} KiB)",
        rss_base,
        rss_after,
        rss_after as i64 - rss_base as i64
    );
    println!("problems: {:?}", t.problems);

    assert!(t.problems.is_empty(), "problems: {:#?}", t.problems);
    assert_eq!(
        ended, t.accepted_jobs,
        "every accepted job ends exactly once (worker counters vs client)"
    );
    assert_eq!(
        delta("invalid"),
        t.invalid_sent,
        "every invalid body counted as invalid"
    );
    assert_eq!(delta("rejected"), t.busy);
    assert_eq!(
        metric_value(&after, "rbees_jobs_in_flight"),
        Some(0.0),
        "no job left running"
    );
    assert_eq!(
        metric_value(&after, "rbees_queue_depth"),
        Some(0.0),
        "no job left queued"
    );
    assert!(
        health_bad.is_empty(),
        "/health failed during the run: {health_bad:?}"
    );
    assert_eq!(final_health["status"], "ok");
    let limit = rss_base + RSS_SLACK_KIB.max((rss_base as f64 * RSS_SLACK_FRACTION) as u64);
    assert!(
        rss_after <= limit,
        "RSS grew from {rss_base} to {rss_after} KiB (limit {limit})"
    );
}
