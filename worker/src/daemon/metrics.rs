//! Prometheus counters and histograms, written in the text exposition format by hand.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window `rbees_tokens_per_second` averages over.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

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
    const ALL: [Outcome; 6] = [
        Outcome::Completed,
        Outcome::Cancelled,
        Outcome::Error,
        Outcome::Invalid,
        Outcome::Rejected,
        Outcome::Unauthorized,
    ];

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
}

struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&mut self.counts) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

const TTFT_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const TOKEN_BOUNDS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
const BATCH_BOUNDS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Gauges the caller samples at render time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub queue_depth: usize,
    pub in_flight: usize,
    pub ready: bool,
    pub slots_total: usize,
    pub slots_busy: usize,
}

pub struct Metrics {
    requests: [AtomicU64; 6],
    tokens: AtomicU64,
    prompt_tokens: AtomicU64,
    prompt_tokens_cached: AtomicU64,
    steps: AtomicU64,
    ttft: Mutex<Histogram>,
    per_token: Mutex<Histogram>,
    batch_tokens: Mutex<Histogram>,
    batch_sequences: Mutex<Histogram>,
    /// When each recent token was generated (within [`RATE_WINDOW`]).
    recent_tokens: Mutex<VecDeque<Instant>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Default::default(),
            tokens: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            prompt_tokens_cached: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            ttft: Mutex::new(Histogram::new(TTFT_BOUNDS)),
            per_token: Mutex::new(Histogram::new(TOKEN_BOUNDS)),
            batch_tokens: Mutex::new(Histogram::new(BATCH_BOUNDS)),
            batch_sequences: Mutex::new(Histogram::new(BATCH_BOUNDS)),
            recent_tokens: Mutex::new(VecDeque::new()),
        }
    }
}

impl Metrics {
    pub fn request(&self, outcome: Outcome) {
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.requests[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn token(&self) {
        self.tokens.fetch_add(1, Ordering::Relaxed);
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
        self.prompt_tokens
            .fetch_add(total as u64, Ordering::Relaxed);
        self.prompt_tokens_cached
            .fetch_add(cached as u64, Ordering::Relaxed);
    }

    /// One engine step of `tokens` rows over `sequences` sequences.
    pub fn step(&self, tokens: usize, sequences: usize) {
        self.steps.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut h) = self.batch_tokens.lock() {
            h.observe(tokens as f64);
        }
        if let Ok(mut h) = self.batch_sequences.lock() {
            h.observe(sequences as f64);
        }
    }

    pub fn time_to_first_token(&self, seconds: f64) {
        if let Ok(mut h) = self.ttft.lock() {
            h.observe(seconds);
        }
    }

    pub fn token_latency(&self, seconds: f64) {
        if let Ok(mut h) = self.per_token.lock() {
            h.observe(seconds);
        }
    }

    /// The text exposition format.
    pub fn render(&self, g: Gauges) -> String {
        let mut out = String::new();
        out.push_str("# HELP rbees_requests_total Generation requests by outcome.\n");
        out.push_str("# TYPE rbees_requests_total counter\n");
        for (o, c) in Outcome::ALL.iter().zip(&self.requests) {
            let _ = writeln!(
                out,
                "rbees_requests_total{{outcome=\"{}\"}} {}",
                o.label(),
                c.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP rbees_tokens_generated_total Tokens generated.\n");
        out.push_str("# TYPE rbees_tokens_generated_total counter\n");
        let _ = writeln!(
            out,
            "rbees_tokens_generated_total {}",
            self.tokens.load(Ordering::Relaxed)
        );
        let counters = [
            (
                "rbees_prompt_tokens_total",
                "Prompt tokens of started jobs.",
                &self.prompt_tokens,
            ),
            (
                "rbees_prompt_tokens_cached_total",
                "Prompt tokens reused from a slot's KV cache (not computed again).",
                &self.prompt_tokens_cached,
            ),
            (
                "rbees_engine_steps_total",
                "Forward passes of the engine (one batch each).",
                &self.steps,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", c.load(Ordering::Relaxed));
        }
        if let Ok(h) = self.batch_tokens.lock() {
            h.write(
                &mut out,
                "rbees_batch_tokens",
                "Tokens (rows) per engine step: decode tokens plus prompt chunks.",
            );
        }
        if let Ok(h) = self.batch_sequences.lock() {
            h.write(
                &mut out,
                "rbees_batch_sequences",
                "Sequences per engine step.",
            );
        }
        if let Ok(h) = self.ttft.lock() {
            h.write(
                &mut out,
                "rbees_time_to_first_token_seconds",
                "From request accepted to first generated token.",
            );
        }
        if let Ok(h) = self.per_token.lock() {
            h.write(
                &mut out,
                "rbees_token_latency_seconds",
                "Time between consecutive generated tokens.",
            );
        }
        let gauges = [
            (
                "rbees_queue_depth",
                "Jobs waiting for the engine.",
                g.queue_depth as f64,
            ),
            (
                "rbees_jobs_in_flight",
                "Jobs accepted and not yet ended.",
                g.in_flight as f64,
            ),
            (
                "rbees_ready",
                "Whether the model is loaded.",
                f64::from(u8::from(g.ready)),
            ),
            (
                "rbees_slots_total",
                "KV cache slots (--parallel).",
                g.slots_total as f64,
            ),
            (
                "rbees_slots_busy",
                "Slots running a job.",
                g.slots_busy as f64,
            ),
            (
                "rbees_tokens_per_second",
                "Tokens generated per second over the last 10 s, all jobs together.",
                self.tokens_per_second(),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {v}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.time_to_first_token(0.02);
        m.time_to_first_token(3.0);
        m.request(Outcome::Completed);
        m.step(9, 3);
        m.prompt_tokens(10, 4);
        let text = m.render(Gauges {
            queue_depth: 2,
            in_flight: 1,
            ready: true,
            slots_total: 8,
            slots_busy: 3,
        });
        assert!(text.contains("rbees_batch_tokens_bucket{le=\"8\"} 0"));
        assert!(text.contains("rbees_batch_tokens_bucket{le=\"16\"} 1"));
        assert!(text.contains("rbees_batch_sequences_sum 3"));
        assert!(text.contains("rbees_prompt_tokens_cached_total 4"));
        assert!(text.contains("rbees_slots_busy 3"));
        assert!(text.contains("rbees_time_to_first_token_seconds_bucket{le=\"0.025\"} 1"));
        assert!(text.contains("rbees_time_to_first_token_seconds_bucket{le=\"5\"} 2"));
        assert!(text.contains("rbees_time_to_first_token_seconds_count 2"));
        assert!(text.contains("rbees_requests_total{outcome=\"completed\"} 1"));
        assert!(text.contains("rbees_queue_depth 2"));
    }
}
