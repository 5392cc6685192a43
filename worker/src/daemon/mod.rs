//! `rbees-workerd`: the HTTP worker a pool manager spawns to serve one model.
//!
//! Layout: [`http`] (axum handlers) and [`openai`] talk to one engine thread
//! ([`engine_thread`]) that owns the model, over a bounded job queue; each job
//! has its own unbounded event channel back to its HTTP response. See
//! `docs/worker.md` for the HTTP contract.

pub mod callback;
pub mod config;
pub mod correlation;
pub mod engine_thread;
pub mod error;
pub mod http;
pub mod metrics;
pub mod openai;
pub mod openai_request;
pub mod orch_compat;
pub mod orch_routes;
pub mod scheduler;
pub mod slots;
pub mod sse;
pub mod state;
pub mod validate;
pub mod web;

use std::collections::HashMap;
use std::future::IntoFuture;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use rbees_model::LoadOptions;
use tokio::sync::{oneshot, watch};

use crate::cli::ModelArgs;
use crate::config::Config;
use config::{EventFormat, LogFormat};
use state::{LoadInfo, LoadState, Settings, State};

/// Environment variable holding the bearer token (overrides `[worker] api_token`).
pub const TOKEN_ENV: &str = "RBEES_API_TOKEN";

#[derive(Debug, Parser)]
#[command(
    name = "rbees-workerd",
    version,
    about = "HTTP worker serving one Llama-family GGUF model (spawned by a pool manager)",
    // llama-orch's spawners and specs name the device flag these ways.
    mut_arg("device", |a| a.visible_aliases(["gpu", "gpu-device"]))
)]
pub struct Args {
    /// Identifier reported in /health and in the ready callback.
    #[arg(long, required_unless_present = "build_info")]
    pub worker_id: Option<String>,
    /// TCP port to listen on (0: any free port, logged at start).
    #[arg(long, required_unless_present = "build_info")]
    pub port: Option<u16>,
    /// The model's name as the pool manager knows it (e.g. `hf:org/repo`),
    /// reported in the ready callback and `/info` (default: `--model` as given).
    #[arg(long)]
    pub model_ref: Option<String>,
    /// Sent by llama-orch's current hive. With it, `POST /v1/inference`
    /// answers `{job_id, sse_url}` and the tokens stream from
    /// `GET sse_url`, as that queen expects; the URL itself is not used.
    #[arg(long, value_name = "URL")]
    pub queen_url: Option<String>,
    /// Accepted for compatibility (llama-orch's own worker flag); not used.
    #[arg(long, value_name = "URL")]
    pub hive_url: Option<String>,
    /// Accepted for compatibility (llama-orch): refuses a non-loopback `--host`.
    #[arg(long)]
    pub local_mode: bool,
    /// Print `release` or `debug` (the build profile) and exit, as
    /// llama-orch's hive asks every worker binary before starting it.
    #[arg(long, hide = true)]
    pub build_info: bool,
    /// How a cancelled job's stream ends and how `started_at` is written:
    /// `rbees` (an `end` event with `stop_reason: CANCELLED`; Unix
    /// milliseconds) or `orch-spec` (llama-orch's spec: an `error` event
    /// with code `CANCELLED`; RFC 3339). Default: `[worker] event_format`, else rbees.
    #[arg(long)]
    pub event_format: Option<EventFormat>,
    /// Address to listen on; anything but loopback requires a bearer token.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// POSTed `{worker_id, url, model_ref, backend, device, vram_bytes}` once the model is loaded.
    #[arg(long)]
    pub callback_url: Option<String>,
    /// The URL reported in the ready callback (default: http://HOST:PORT).
    #[arg(long)]
    pub public_url: Option<String>,
    /// Jobs that may wait for the engine (default 16; `[worker] queue_depth`).
    #[arg(long)]
    pub queue_depth: Option<usize>,
    /// Jobs generated at the same time, each with its own KV cache slot of
    /// `--ctx-size` tokens (default 4; `[worker] parallel`).
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Tokens one engine step may run: a decode token per generating job
    /// plus prompt chunks of new jobs up to this total (default 512;
    /// `[worker] batch_tokens`).
    #[arg(long)]
    pub batch_tokens: Option<usize>,
    /// Seconds the ready callback is retried before the worker exits (default 60).
    #[arg(long)]
    pub callback_timeout_s: Option<f64>,
    /// Heartbeat URL (default: /v1/heartbeat on the callback URL's host).
    #[arg(long)]
    pub heartbeat_url: Option<String>,
    /// Seconds between heartbeats (default: 30 with --callback-url, else
    /// none; 0: none).
    #[arg(long)]
    pub heartbeat_interval_s: Option<f64>,
    /// Seconds in-flight jobs may run on after Ctrl-C/SIGTERM (default 30).
    #[arg(long)]
    pub shutdown_grace_s: Option<f64>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Log format on stderr: `text` or `json` (default: `[worker] log_format`, else text).
    #[arg(long)]
    pub log_format: Option<LogFormat>,
    /// `--model` and `--device` as the spawner wrote them, before
    /// [`orch_compat::apply`] resolves them (reported back in its terms).
    #[arg(skip)]
    pub given: orch_compat::Given,
    /// No web page: `GET /` answers health to browsers too, `/ui/` is 404.
    #[arg(long)]
    pub no_web: bool,
    /// Test aid: sleep this many milliseconds after each generated token.
    #[arg(long, hide = true, default_value_t = 0)]
    pub debug_token_delay_ms: u64,
}

/// Longest accepted duration setting: a year (`Duration::from_secs_f64`
/// panics past u64 seconds, and longer waits are mistakes anyway).
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// Most jobs the queue may hold (tokio's bounded channel panics on a
/// capacity past `usize::MAX >> 3`; a queue this long is a mistake anyway).
pub const MAX_QUEUE_DEPTH: usize = 1 << 20;

fn seconds(name: &str, value: Option<f64>, default: f64) -> Result<Duration> {
    let v = value.unwrap_or(default);
    if !(v.is_finite() && (0.0..=MAX_SECONDS).contains(&v)) {
        bail!("{name} must be a number of seconds in [0, {MAX_SECONDS}], got {v}");
    }
    Ok(Duration::from_secs_f64(v))
}

/// Default `--parallel`: as llama.cpp's server, four slots. Decode reads
/// every weight once per step whatever the number of sequences, so a few
/// concurrent jobs cost little more than one; each slot adds a KV cache.
pub const DEFAULT_PARALLEL: usize = 4;

/// Default `--batch-tokens`: rbees' (and llama.cpp's `n_batch`) prompt chunk,
/// so a job alone processes its prompt as fast as `rbees generate`; lower
/// it to shorten the pause a new prompt causes in the others' decoding.
pub const DEFAULT_BATCH_TOKENS: usize = rbees_model::PROMPT_BATCH;

/// Largest `--batch-tokens`: a step's activations are this many rows.
pub const MAX_BATCH_TOKENS: usize = 1 << 16;

/// Merges flags, `[worker]` and the environment into [`Settings`]; refuses
/// unsafe or meaningless combinations.
pub fn settings(args: &Args, config: &Config, env_token: Option<String>) -> Result<Settings> {
    let w = &config.worker;
    let queue_depth = args.queue_depth.or(w.queue_depth).unwrap_or(16);
    if !(1..=MAX_QUEUE_DEPTH).contains(&queue_depth) {
        bail!("queue_depth must be in [1, {MAX_QUEUE_DEPTH}], got {queue_depth}");
    }
    let parallel = args.parallel.or(w.parallel).unwrap_or(DEFAULT_PARALLEL);
    if !(1..=rbees_model::MAX_SLOTS).contains(&parallel) {
        bail!(
            "parallel must be in [1, {}], got {parallel}",
            rbees_model::MAX_SLOTS
        );
    }
    let batch_tokens = args
        .batch_tokens
        .or(w.batch_tokens)
        .unwrap_or(DEFAULT_BATCH_TOKENS);
    if !(parallel..=MAX_BATCH_TOKENS).contains(&batch_tokens) {
        bail!(
            "batch_tokens must be in [parallel = {parallel}, {MAX_BATCH_TOKENS}] (every running job's decode token must fit one step), got {batch_tokens}"
        );
    }
    let api_token = match env_token.or_else(|| w.api_token.clone()) {
        Some(t) if t.trim().is_empty() => {
            bail!("the API token is empty ({TOKEN_ENV} or [worker] api_token): refusing to start")
        }
        t => t,
    };
    if !args.host.is_loopback() && api_token.is_none() {
        bail!(
            "--host {} is not a loopback address: set a bearer token in {TOKEN_ENV} or [worker] api_token",
            args.host
        );
    }
    // With a pool manager to report to, heartbeats are on by default.
    let heartbeat_default = if args.callback_url.is_some() {
        callback::DEFAULT_HEARTBEAT_S
    } else {
        0.0
    };
    let heartbeat_interval = seconds(
        "heartbeat_interval_s",
        args.heartbeat_interval_s.or(w.heartbeat_interval_s),
        heartbeat_default,
    )?;
    let callback_timeout = seconds(
        "callback_timeout_s",
        args.callback_timeout_s.or(w.callback_timeout_s),
        60.0,
    )?;
    let max_body_bytes = w.max_body_bytes.unwrap_or(1 << 20);
    if max_body_bytes < 1024 {
        bail!("max_body_bytes must be at least 1024");
    }
    if let Some(url) = &args.callback_url {
        reqwest::Url::parse(url).with_context(|| format!("--callback-url '{url}'"))?;
    }
    Ok(Settings {
        queue_depth,
        parallel,
        batch_tokens,
        api_token,
        callback_url: args.callback_url.clone(),
        callback_timeout,
        heartbeat_url: args
            .heartbeat_url
            .clone()
            .or_else(|| w.heartbeat_url.clone()),
        heartbeat_interval: (!heartbeat_interval.is_zero()).then_some(heartbeat_interval),
        shutdown_grace: seconds(
            "shutdown_grace_s",
            args.shutdown_grace_s.or(w.shutdown_grace_s),
            30.0,
        )?,
        max_body_bytes,
        metrics_every: w.metrics_every.unwrap_or(16),
        event_format: args.event_format.or(w.event_format).unwrap_or_default(),
        inference_by_url: args.queen_url.is_some(),
        web: !args.no_web,
        outgoing_token: orch_compat::outgoing_token(),
        token_delay: Duration::from_millis(args.debug_token_delay_ms),
    })
}

/// Starts `tracing` output on stderr in the chosen format (`RUST_LOG` filters it).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.build_info {
        println!("{}", orch_compat::build_info());
        return ExitCode::SUCCESS;
    }
    let format = match args.log_format.or_else(orch_compat::log_format_from_env) {
        Some(format) => format,
        None => match Config::load_or_default(args.model.config.as_deref()) {
            Ok(config) => config.worker.log_format.unwrap_or_default(),
            Err(e) => {
                eprintln!("rbees-workerd: error: {e:#}");
                return ExitCode::FAILURE;
            }
        },
    };
    init_logging(format);
    if let Err(e) = orch_compat::apply(&mut args) {
        eprintln!("rbees-workerd: error: {e:#}");
        return ExitCode::FAILURE;
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rbees-workerd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let config = Config::load_or_default(args.model.config.as_deref())?;
    let resolved = args.model.resolve()?;
    crate::engine::check_device(&resolved.choice)?;
    let settings = settings(&args, &config, std::env::var(TOKEN_ENV).ok())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(serve(args, resolved, settings))
}

async fn serve(args: Args, resolved: crate::cli::Resolved, settings: Settings) -> Result<()> {
    let port = args.port.unwrap_or_default();
    let worker_id = args.worker_id.clone().unwrap_or_default();
    let listener = tokio::net::TcpListener::bind((args.host, port))
        .await
        .with_context(|| format!("cannot listen on {}:{port}", args.host))?;
    let local = listener.local_addr()?;
    let url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{local}"));
    let model_name = resolved
        .model
        .file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".gguf").to_string())
        .unwrap_or_default();
    let (stop_tx, _) = watch::channel(false);
    let state = Arc::new(State {
        worker_id: worker_id.clone(),
        model_ref: args
            .model_ref
            .clone()
            .or_else(|| args.given.model.clone())
            .unwrap_or_else(|| resolved.model.display().to_string()),
        device_ordinal: args.given.device_ordinal,
        port: local.port(),
        model_path: resolved.model.clone(),
        model_name,
        requested_backend: resolved.choice.kind.clone(),
        requested_device: resolved.choice.options.device.clone(),
        started: Instant::now(),
        settings,
        load: Mutex::new(LoadInfo {
            state: LoadState::Loading,
            layers_loaded: 0,
            layers_total: 0,
            error: None,
        }),
        ready: OnceLock::new(),
        jobs: Mutex::new(HashMap::new()),
        metrics: metrics::Metrics::new(&worker_id),
        shutting_down: AtomicBool::new(false),
        slots_busy: Default::default(),
        vram_bytes: Default::default(),
        stop: stop_tx,
        unclaimed: Mutex::new(HashMap::new()),
    });
    tracing::info!(%url, worker_id = %state.worker_id, model = %resolved.model.display(), "listening; loading the model");

    let (loaded_tx, loaded_rx) = oneshot::channel();
    let load_options = LoadOptions {
        context: resolved.context,
        slots: state.settings.parallel,
    };
    engine_thread::spawn(state.clone(), resolved.choice, load_options, loaded_tx)
        .context("cannot start the engine thread")?;

    // After loading: the ready callback (fatal if never accepted), then heartbeats.
    let (fatal_tx, fatal_rx) = oneshot::channel::<anyhow::Error>();
    {
        let state = state.clone();
        tokio::spawn(async move {
            let loaded = loaded_rx
                .await
                .unwrap_or_else(|_| Err("the engine thread ended".into()));
            let Some(callback_url) = state.settings.callback_url.clone() else {
                return;
            };
            if let Err(message) = loaded {
                let _ = fatal_tx.send(anyhow::anyhow!(
                    "the model failed to load, so no ready callback was sent: {message}"
                ));
                return;
            }
            if let Err(e) = callback::send_ready(&state, &callback_url, &url).await {
                let _ = fatal_tx.send(e);
                return;
            }
            if let Some(interval) = state.settings.heartbeat_interval {
                let hb = state
                    .settings
                    .heartbeat_url
                    .clone()
                    .or_else(|| callback::default_heartbeat_url(&callback_url));
                if let Some(hb) = hb {
                    tokio::spawn(callback::heartbeat(state.clone(), hb, interval));
                }
            }
        });
    }
    if state.settings.callback_url.is_none() {
        if let (Some(interval), Some(hb)) = (
            state.settings.heartbeat_interval,
            state.settings.heartbeat_url.clone(),
        ) {
            tokio::spawn(callback::heartbeat(state.clone(), hb, interval));
        }
    }

    let stop_rx = state.stop.subscribe();
    {
        let state = state.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            state.stop.send_replace(true);
        });
    }
    let app = http::router(state.clone());
    let mut graceful = stop_rx.clone();
    let mut server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = graceful.wait_for(|s| *s).await;
            })
            .into_future(),
    );
    let mut stop = stop_rx;
    tokio::select! {
        r = &mut server => {
            r.context("the HTTP server task failed")??;
            return Ok(());
        }
        Ok(e) = fatal_rx => return Err(e),
        _ = stop.wait_for(|s| *s) => {}
    }
    state.shutting_down.store(true, Ordering::SeqCst);
    let grace = state.settings.shutdown_grace;
    tracing::info!(
        in_flight = state.in_flight(),
        grace_s = grace.as_secs_f64(),
        "shutting down: no new connections; waiting for in-flight jobs"
    );
    if tokio::time::timeout(grace, &mut server).await.is_err() {
        tracing::warn!("grace period over: cancelling the remaining jobs");
        state.cancel_all();
        if tokio::time::timeout(Duration::from_secs(5), &mut server)
            .await
            .is_err()
        {
            tracing::warn!("connections still open; exiting anyway");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
