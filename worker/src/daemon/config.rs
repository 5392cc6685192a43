//! The `[worker]` section of the configuration file, read by `rbees-workerd`
//! only (`rbees` ignores it). Command-line flags override it.

use serde::Deserialize;

/// `[worker]`: daemon settings. Every field is optional; see
/// [`Settings`](super::state::Settings) for the defaults.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkerSection {
    /// Jobs that may wait for the engine; a full queue answers 503 (default 16).
    pub queue_depth: Option<usize>,
    /// Jobs generated at the same time, one KV cache slot each (default 4).
    pub parallel: Option<usize>,
    /// Tokens per engine step: decode tokens plus prompt chunks (default 512).
    pub batch_tokens: Option<usize>,
    /// Bearer token required on every endpoint except `/health`; the
    /// `RBEES_API_TOKEN` environment variable takes precedence.
    pub api_token: Option<String>,
    /// Total time the ready callback is retried before the worker gives up (default 60).
    pub callback_timeout_s: Option<f64>,
    /// Where heartbeats go (default: `/v1/heartbeat` on the callback URL's host).
    pub heartbeat_url: Option<String>,
    /// Seconds between heartbeats; 0: none; unset: 30 with a callback URL, else none.
    pub heartbeat_interval_s: Option<f64>,
    /// How long in-flight jobs may run on after Ctrl-C/SIGTERM (default 30).
    pub shutdown_grace_s: Option<f64>,
    /// Largest accepted request body in bytes (default 1 MiB).
    pub max_body_bytes: Option<usize>,
    /// A `metrics` SSE event every this many tokens (default 16).
    pub metrics_every: Option<usize>,
    /// `text` (default) or `json` log lines on stderr.
    pub log_format: Option<LogFormat>,
    /// `rbees` (default) or `orch-spec`: see `--event-format`.
    pub event_format: Option<EventFormat>,
}

/// The two readings of a job's event stream that differ (docs/worker.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum EventFormat {
    /// A cancelled job ends with `end` (`stop_reason: CANCELLED`, with its
    /// token counts); `started_at` is Unix milliseconds.
    #[default]
    Rbees,
    /// llama-orch's spec (SYS-5.4.2, M0-W-1310): a cancelled job ends with
    /// `error` code `CANCELLED`; `started_at` is an RFC 3339 string.
    OrchSpec,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}
