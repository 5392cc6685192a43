//! What the HTTP handlers and the engine thread share.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rbees_model::{GenerateParams, StopReason, Tokenizer};
use tokio::sync::{mpsc, watch};

use super::error::ApiError;
use super::metrics::Metrics;

/// Daemon settings after config file and flags are merged.
#[derive(Debug, Clone)]
pub struct Settings {
    pub queue_depth: usize,
    /// Sequences generated at once (KV cache slots).
    pub parallel: usize,
    /// Tokens one engine step may run: a decode token per generating
    /// sequence plus prompt chunks up to this total.
    pub batch_tokens: usize,
    pub api_token: Option<String>,
    pub callback_url: Option<String>,
    pub callback_timeout: Duration,
    pub heartbeat_url: Option<String>,
    pub heartbeat_interval: Option<Duration>,
    pub shutdown_grace: Duration,
    pub max_body_bytes: usize,
    pub metrics_every: usize,
    /// How cancellation and `started_at` are written (see `--event-format`).
    pub event_format: super::config::EventFormat,
    /// `POST /v1/inference` answers `{job_id, sse_url}` instead of the
    /// stream itself (llama-orch's current queen; set by `--queen-url`).
    pub inference_by_url: bool,
    /// The web page is served (`--no-web` turns it off).
    pub web: bool,
    /// Bearer token sent on the ready callback and heartbeats (`LLORCH_API_TOKEN`).
    pub outgoing_token: Option<String>,
    /// Test aid: sleep this long after each token (0: none).
    pub token_delay: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadState {
    Loading,
    Ready,
    Error,
}

impl LoadState {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadState::Loading => "loading",
            LoadState::Ready => "ready",
            LoadState::Error => "error",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoadInfo {
    pub state: LoadState,
    pub layers_loaded: usize,
    pub layers_total: usize,
    pub error: Option<String>,
}

/// Set once the model is loaded.
pub struct Ready {
    pub tokenizer: Tokenizer,
    /// Tokens each slot holds.
    pub context: usize,
    pub slots: usize,
    pub backend: &'static str,
    pub device: String,
    /// Compiled at load; the error if the file's template does not compile.
    pub chat_template: Option<Result<super::openai::ChatTemplate, String>>,
    pub queue: mpsc::Sender<Job>,
}

/// What the engine reports about one job, in order: `Started`, any number of
/// `Token`/`Metrics`, then exactly one `End` or `Error`.
#[derive(Debug, Clone)]
pub enum JobEvent {
    Started {
        started_at_ms: u64,
    },
    /// `new_token` is false for the final flush of held-back text, which
    /// repeats the index of the last token.
    Token {
        text: String,
        index: usize,
        id: u32,
        new_token: bool,
    },
    Metrics {
        tokens_per_sec: f64,
        tokens_out: usize,
        elapsed_ms: f64,
    },
    End {
        prompt_tokens: usize,
        /// Prompt tokens whose keys and values were already in the slot's
        /// cache (prefix reuse) and were not computed again.
        prompt_tokens_cached: usize,
        tokens_out: usize,
        /// From the engine taking the job to its prompt's logits (prefill).
        prompt_time_ms: f64,
        decode_time_ms: f64,
        stop_reason: StopReason,
        stop_sequence: Option<String>,
    },
    Error(ApiError),
}

pub struct Job {
    pub id: String,
    pub prompt_ids: Vec<u32>,
    pub params: GenerateParams,
    pub cancel: Arc<AtomicBool>,
    pub events: mpsc::UnboundedSender<JobEvent>,
    pub accepted: Instant,
    /// The request's `X-Correlation-Id` (given or generated), for the logs.
    pub correlation_id: String,
}

pub struct State {
    pub worker_id: String,
    /// The model's name for the pool manager: `--model-ref`, else `--model` as given.
    pub model_ref: String,
    /// `--device N` as a bare ordinal, echoed as a number in the ready callback.
    pub device_ordinal: Option<u32>,
    /// The port the worker listens on.
    pub port: u16,
    pub model_path: PathBuf,
    /// The model's name as reported to clients: the file name without `.gguf`.
    pub model_name: String,
    pub requested_backend: String,
    pub requested_device: String,
    pub started: Instant,
    pub settings: Settings,
    pub load: Mutex<LoadInfo>,
    pub ready: OnceLock<Ready>,
    /// Cancellation flags of accepted jobs that have not ended, by job id.
    pub jobs: Mutex<HashMap<String, Arc<AtomicBool>>>,
    pub metrics: Metrics,
    pub shutting_down: AtomicBool,
    /// Slots holding a running job (set by the engine thread).
    pub slots_busy: AtomicUsize,
    /// Device memory in use on a GPU, sampled by the engine thread; 0 on the CPU.
    pub vram_bytes: AtomicU64,
    /// Set to true to shut down (signals and the shutdown endpoints).
    pub stop: watch::Sender<bool>,
    /// Streams of jobs queued through `POST /v1/inference` that their
    /// client has not fetched yet (see [`Settings::inference_by_url`]).
    pub unclaimed: Mutex<HashMap<String, super::http::Accepted>>,
}

impl State {
    pub fn load_info(&self) -> LoadInfo {
        self.load.lock().map(|l| l.clone()).unwrap_or(LoadInfo {
            state: LoadState::Error,
            layers_loaded: 0,
            layers_total: 0,
            error: Some("internal state poisoned".into()),
        })
    }

    pub fn update_load(&self, f: impl FnOnce(&mut LoadInfo)) {
        if let Ok(mut l) = self.load.lock() {
            f(&mut l);
        }
    }

    pub fn backend(&self) -> String {
        self.ready
            .get()
            .map_or(self.requested_backend.clone(), |r| r.backend.to_string())
    }

    pub fn device(&self) -> String {
        self.ready
            .get()
            .map_or(self.requested_device.clone(), |r| r.device.clone())
    }

    pub fn queue_depth(&self) -> usize {
        self.ready
            .get()
            .map_or(0, |r| r.queue.max_capacity() - r.queue.capacity())
    }

    /// The gauges of `/metrics`, sampled now.
    pub fn gauges(&self) -> super::metrics::Gauges {
        super::metrics::Gauges {
            queue_depth: self.queue_depth(),
            in_flight: self.in_flight(),
            ready: self.ready.get().is_some(),
            slots_total: self.ready.get().map_or(0, |r| r.slots),
            slots_busy: self.slots_busy.load(Ordering::Relaxed),
            vram_bytes: self.vram_bytes(),
            resident_bytes: resident_bytes(),
            uptime_s: self.started.elapsed().as_secs_f64(),
        }
    }

    pub fn note_device_memory(&self, used: Option<u64>) {
        self.vram_bytes.store(used.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn vram_bytes(&self) -> u64 {
        self.vram_bytes.load(Ordering::Relaxed)
    }

    /// The memory the model holds: device memory on a GPU, else the
    /// process's resident memory.
    pub fn memory_bytes(&self) -> u64 {
        match self.vram_bytes() {
            0 => resident_bytes(),
            v => v,
        }
    }

    pub fn in_flight(&self) -> usize {
        self.jobs.lock().map_or(0, |j| j.len())
    }

    /// Registers a job id; `None` if a job with that id is still running.
    pub fn register_job(&self, id: &str) -> Option<Arc<AtomicBool>> {
        let mut jobs = self.jobs.lock().ok()?;
        if jobs.contains_key(id) {
            return None;
        }
        let flag = Arc::new(AtomicBool::new(false));
        jobs.insert(id.to_string(), flag.clone());
        Some(flag)
    }

    /// An accepted job has ended: counted by outcome and duration, and forgotten.
    pub fn job_ended(&self, id: &str, accepted: Instant, outcome: super::metrics::Outcome) {
        self.metrics.request(outcome);
        self.metrics.job_duration(accepted.elapsed().as_secs_f64());
        self.finish_job(id);
    }

    pub fn finish_job(&self, id: &str) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.remove(id);
        }
    }

    /// Sets the cancel flag of a job; false if no such job is running or queued.
    pub fn cancel_job(&self, id: &str) -> bool {
        match self.jobs.lock().ok().and_then(|j| j.get(id).cloned()) {
            Some(flag) => {
                flag.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    pub fn cancel_all(&self) {
        if let Ok(jobs) = self.jobs.lock() {
            for flag in jobs.values() {
                flag.store(true, Ordering::SeqCst);
            }
        }
    }
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The process's resident memory (`VmRSS`), 0 where `/proc` does not say.
pub fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}
