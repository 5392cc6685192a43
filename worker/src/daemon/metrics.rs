//! `/metrics`: Prometheus metrics through the `prometheus-client` crate.
//!
//! Two families of names: llama-orch's metrics contract
//! (`bin/.specs/71_metrics_contract.md`: `worker_*`), which its pool
//! managers scrape, and rbees' own finer-grained `rbees_*` (per-step
//! batching, time to first token, slots). Both are kept: the contract's
//! set has no batching or latency-per-token view, and ours has no
//! contract. A counter shared by both (tokens generated) is one metric
//! registered under both names.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The window `rbees_tokens_per_second` averages over.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// The content type of [`Metrics::render`]'s output (OpenMetrics text,
/// which Prometheus scrapes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How a request ended, the `outcome` label of `rbees_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Generation ended normally (max tokens, EOS, stop sequence, full context).
    Completed,
    /// Cancelled by `/cancel`, by a client disconnect or by shutdown.
    Cancelled,
    /// The engine failed.
    Error,
    /// Rejected with 400/413 before queueing.
    Invalid,
    /// Rejected with 503: queue full, model not ready, or shutting down.
    Rejected,
    /// Rejected with 401.
    Unauthorized,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Cancelled => "cancelled",
            Outcome::Error => "error",
            Outcome::Invalid => "invalid",
            Outcome::Rejected => "rejected",
            Outcome::Unauthorized => "unauthorized",
        }
    }

    /// The contract's `worker_requests_total` outcome
    /// (`success|error|cancelled|timeout`): every refusal is an error there.
    fn contract_label(self) -> &'static str {
        match self {
            Outcome::Completed => "success",
            Outcome::Cancelled => "cancelled",
            Outcome::Error | Outcome::Invalid | Outcome::Rejected | Outcome::Unauthorized => {
                "error"
            }
        }
    }
}

type Labels = [(&'static str, &'static str); 1];
type FloatGauge = Gauge<f64, AtomicU64>;

const TTFT_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const TOKEN_BOUNDS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
const BATCH_BOUNDS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
/// `worker_inference_duration_ms`: 10 ms to 10 minutes.
const DURATION_MS_BOUNDS: &[f64] = &[
    10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 120000.0,
    300000.0, 600000.0,
];

/// Values sampled from the worker's state when `/metrics` is read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub queue_depth: usize,
    pub in_flight: usize,
    pub ready: bool,
    pub slots_total: usize,
    pub slots_busy: usize,
    /// Device memory in use on a GPU; 0 on the CPU.
    pub vram_bytes: u64,
    /// The process's resident memory.
    pub resident_bytes: u64,
    pub uptime_s: f64,
}

/// Every metric, registered once in [`Metrics::new`]. Handles are shared
/// with the registry (each metric is an `Arc` inside), so updating a field
/// updates what is rendered.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    contract_requests: Family<Labels, Counter>,
    tokens: Counter,
    prompt_tokens: Counter,
    prompt_tokens_cached: Counter,
    steps: Counter,
    ttft: Histogram,
    per_token: Histogram,
    batch_tokens: Histogram,
    batch_sequences: Histogram,
    inference_ms: Histogram,
    queue_depth: Gauge,
    in_flight: Gauge,
    ready: Gauge,
    slots_total: Gauge,
    slots_busy: Gauge,
    tokens_per_second: FloatGauge,
    vram_bytes: Family<[(&'static str, String); 1], Gauge>,
    resident_bytes: Gauge,
    uptime: FloatGauge,
    worker_id: String,
    /// When each recent token was generated (within [`RATE_WINDOW`]).
    recent_tokens: Mutex<VecDeque<Instant>>,
}

impl Metrics {
    /// The metrics of the worker `worker_id` (the label of `worker_vram_bytes`).
    pub fn new(worker_id: &str) -> Self {
        let histogram = |b: &[f64]| Histogram::new(b.iter().copied());
        let m = Metrics {
            ttft: histogram(TTFT_BOUNDS),
            per_token: histogram(TOKEN_BOUNDS),
            batch_tokens: histogram(BATCH_BOUNDS),
            batch_sequences: histogram(BATCH_BOUNDS),
            inference_ms: histogram(DURATION_MS_BOUNDS),
            prompt_tokens_cached: Counter::default(),
            steps: Counter::default(),
            queue_depth: Gauge::default(),
            in_flight: Gauge::default(),
            ready: Gauge::default(),
            slots_total: Gauge::default(),
            slots_busy: Gauge::default(),
            tokens_per_second: FloatGauge::default(),
            vram_bytes: Family::default(),
            resident_bytes: Gauge::default(),
            uptime: FloatGauge::default(),
            worker_id: worker_id.to_string(),
            recent_tokens: Mutex::new(VecDeque::new()),
            requests: Family::default(),
            contract_requests: Family::default(),
            tokens: Counter::default(),
            prompt_tokens: Counter::default(),
            // Filled below, once every handle exists.
            registry: Registry::default(),
        };
        let mut r = Registry::default();
        // Counters get their `_total` suffix from the encoder.
        r.register(
            "worker_requests",
            "Generation requests by outcome (success|error|cancelled|timeout); refusals count as error.",
            m.contract_requests.clone(),
        );
        r.register(
            "worker_tokens_in",
            "Prompt tokens of started jobs.",
            m.prompt_tokens.clone(),
        );
        r.register(
            "worker_tokens_generated",
            "Tokens generated.",
            m.tokens.clone(),
        );
        r.register(
            "worker_inference_duration_ms",
            "From request accepted to its end, in milliseconds.",
            m.inference_ms.clone(),
        );
        r.register(
            "worker_vram_bytes",
            "Device memory in use on the worker's GPU (0 on the CPU).",
            m.vram_bytes.clone(),
        );
        // A gauge: an OpenMetrics counter would have to be named `_total`.
        r.register(
            "worker_uptime_seconds",
            "Seconds since the worker started.",
            m.uptime.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident memory of the worker process.",
            m.resident_bytes.clone(),
        );
        r.register(
            "rbees_requests",
            "Generation requests by outcome.",
            m.requests.clone(),
        );
        r.register(
            "rbees_tokens_generated",
            "Tokens generated.",
            m.tokens.clone(),
        );
        r.register(
            "rbees_prompt_tokens",
            "Prompt tokens of started jobs.",
            m.prompt_tokens.clone(),
        );
        r.register(
            "rbees_prompt_tokens_cached",
            "Prompt tokens reused from a slot's KV cache (not computed again).",
            m.prompt_tokens_cached.clone(),
        );
        r.register(
            "rbees_engine_steps",
            "Forward passes of the engine (one batch each).",
            m.steps.clone(),
        );
        r.register(
            "rbees_batch_tokens",
            "Tokens (rows) per engine step: decode tokens plus prompt chunks.",
            m.batch_tokens.clone(),
        );
        r.register(
            "rbees_batch_sequences",
            "Sequences per engine step.",
            m.batch_sequences.clone(),
        );
        r.register(
            "rbees_time_to_first_token_seconds",
            "From request accepted to first generated token.",
            m.ttft.clone(),
        );
        r.register(
            "rbees_token_latency_seconds",
            "Time between consecutive generated tokens.",
            m.per_token.clone(),
        );
        r.register(
            "rbees_queue_depth",
            "Jobs waiting for the engine.",
            m.queue_depth.clone(),
        );
        r.register(
            "rbees_jobs_in_flight",
            "Jobs accepted and not yet ended.",
            m.in_flight.clone(),
        );
        r.register(
            "rbees_ready",
            "Whether the model is loaded.",
            m.ready.clone(),
        );
        r.register(
            "rbees_slots_total",
            "KV cache slots (--parallel).",
            m.slots_total.clone(),
        );
        r.register(
            "rbees_slots_busy",
            "Slots running a job.",
            m.slots_busy.clone(),
        );
        r.register(
            "rbees_tokens_per_second",
            "Tokens generated per second over the last 10 s, all jobs together.",
            m.tokens_per_second.clone(),
        );
        // Every outcome is listed from the start, at 0.
        for o in [
            Outcome::Completed,
            Outcome::Cancelled,
            Outcome::Error,
            Outcome::Invalid,
            Outcome::Rejected,
            Outcome::Unauthorized,
        ] {
            drop(m.requests.get_or_create(&[("outcome", o.label())]));
        }
        for label in ["success", "error", "cancelled", "timeout"] {
            drop(m.contract_requests.get_or_create(&[("outcome", label)]));
        }
        Metrics { registry: r, ..m }
    }

    pub fn request(&self, outcome: Outcome) {
        self.requests
            .get_or_create(&[("outcome", outcome.label())])
            .inc();
        self.contract_requests
            .get_or_create(&[("outcome", outcome.contract_label())])
            .inc();
    }

    /// A job that was accepted has ended after `seconds`.
    pub fn job_duration(&self, seconds: f64) {
        self.inference_ms.observe(seconds * 1000.0);
    }

    pub fn token(&self) {
        self.tokens.inc();
        if let Ok(mut recent) = self.recent_tokens.lock() {
            let now = Instant::now();
            recent.push_back(now);
            while recent
                .front()
                .is_some_and(|t| now.duration_since(*t) > RATE_WINDOW)
            {
                recent.pop_front();
            }
        }
    }

    /// Generated tokens per second over the last [`RATE_WINDOW`], all jobs together.
    pub fn tokens_per_second(&self) -> f64 {
        let now = Instant::now();
        self.recent_tokens.lock().map_or(0.0, |recent| {
            let n = recent
                .iter()
                .filter(|t| now.duration_since(**t) <= RATE_WINDOW)
                .count();
            n as f64 / RATE_WINDOW.as_secs_f64()
        })
    }

    /// A job's prompt: `total` tokens, `cached` of them reused from a slot.
    pub fn prompt_tokens(&self, total: usize, cached: usize) {
        self.prompt_tokens.inc_by(total as u64);
        self.prompt_tokens_cached.inc_by(cached as u64);
    }

    /// One engine step of `tokens` rows over `sequences` sequences.
    pub fn step(&self, tokens: usize, sequences: usize) {
        self.steps.inc();
        self.batch_tokens.observe(tokens as f64);
        self.batch_sequences.observe(sequences as f64);
    }

    pub fn time_to_first_token(&self, seconds: f64) {
        self.ttft.observe(seconds);
    }

    pub fn token_latency(&self, seconds: f64) {
        self.per_token.observe(seconds);
    }

    /// The OpenMetrics text of every metric, with the gauges set from `g`.
    pub fn render(&self, g: Gauges) -> String {
        let count = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.queue_depth.set(count(g.queue_depth));
        self.in_flight.set(count(g.in_flight));
        self.ready.set(i64::from(g.ready));
        self.slots_total.set(count(g.slots_total));
        self.slots_busy.set(count(g.slots_busy));
        self.tokens_per_second.set(self.tokens_per_second());
        self.vram_bytes
            .get_or_create(&[("worker_id", self.worker_id.clone())])
            .set(i64::try_from(g.vram_bytes).unwrap_or(i64::MAX));
        self.resident_bytes
            .set(i64::try_from(g.resident_bytes).unwrap_or(i64::MAX));
        self.uptime.set(g.uptime_s);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_rendered_with_its_contract_name() {
        let m = Metrics::new("w7");
        m.time_to_first_token(0.02);
        m.time_to_first_token(3.0);
        m.request(Outcome::Completed);
        m.request(Outcome::Rejected);
        m.job_duration(0.2);
        m.step(9, 3);
        m.prompt_tokens(10, 4);
        m.token();
        let text = m.render(Gauges {
            queue_depth: 2,
            in_flight: 1,
            ready: true,
            slots_total: 8,
            slots_busy: 3,
            vram_bytes: 0,
            resident_bytes: 12345,
            uptime_s: 1.5,
        });
        for line in [
            "rbees_batch_tokens_bucket{le=\"8.0\"} 0",
            "rbees_batch_tokens_bucket{le=\"16.0\"} 1",
            "rbees_batch_sequences_sum 3.0",
            "rbees_prompt_tokens_cached_total 4",
            "rbees_slots_busy 3",
            "rbees_time_to_first_token_seconds_bucket{le=\"0.025\"} 1",
            "rbees_time_to_first_token_seconds_bucket{le=\"5.0\"} 2",
            "rbees_time_to_first_token_seconds_count 2",
            "rbees_requests_total{outcome=\"completed\"} 1",
            "rbees_requests_total{outcome=\"unauthorized\"} 0",
            "rbees_queue_depth 2",
            "rbees_tokens_generated_total 1",
            "worker_tokens_generated_total 1",
            "worker_tokens_in_total 10",
            "worker_requests_total{outcome=\"success\"} 1",
            "worker_requests_total{outcome=\"error\"} 1",
            "worker_requests_total{outcome=\"timeout\"} 0",
            "worker_inference_duration_ms_bucket{le=\"250.0\"} 1",
            "worker_vram_bytes{worker_id=\"w7\"} 0",
            "worker_uptime_seconds 1.5",
            "process_resident_memory_bytes 12345",
            "# TYPE worker_requests counter",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing '{line}' in\n{text}"
            );
        }
    }
}
