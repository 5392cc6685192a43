//! Prometheus counters and histograms, written in the text exposition format by hand.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

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

pub struct Metrics {
    requests: [AtomicU64; 6],
    tokens: AtomicU64,
    ttft: Mutex<Histogram>,
    per_token: Mutex<Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Default::default(),
            tokens: AtomicU64::new(0),
            ttft: Mutex::new(Histogram::new(TTFT_BOUNDS)),
            per_token: Mutex::new(Histogram::new(TOKEN_BOUNDS)),
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

    /// The text exposition format; `queue_depth`/`in_flight` are sampled by the caller.
    pub fn render(&self, queue_depth: usize, in_flight: usize, ready: bool) -> String {
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
        out.push_str("# HELP rbees_queue_depth Jobs waiting for the engine.\n");
        out.push_str("# TYPE rbees_queue_depth gauge\n");
        let _ = writeln!(out, "rbees_queue_depth {queue_depth}");
        out.push_str("# HELP rbees_jobs_in_flight Jobs accepted and not yet ended.\n");
        out.push_str("# TYPE rbees_jobs_in_flight gauge\n");
        let _ = writeln!(out, "rbees_jobs_in_flight {in_flight}");
        out.push_str("# HELP rbees_ready Whether the model is loaded.\n");
        out.push_str("# TYPE rbees_ready gauge\n");
        let _ = writeln!(out, "rbees_ready {}", u8::from(ready));
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
        let text = m.render(2, 1, true);
        assert!(text.contains("rbees_time_to_first_token_seconds_bucket{le=\"0.025\"} 1"));
        assert!(text.contains("rbees_time_to_first_token_seconds_bucket{le=\"5\"} 2"));
        assert!(text.contains("rbees_time_to_first_token_seconds_count 2"));
        assert!(text.contains("rbees_requests_total{outcome=\"completed\"} 1"));
        assert!(text.contains("rbees_queue_depth 2"));
    }
}
