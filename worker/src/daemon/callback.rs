//! The ready callback to the pool manager and the heartbeat.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;

use std::sync::atomic::Ordering;

use super::state::{LoadState, State};

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()?)
}

/// What the worker reports as ready: `POST {callback_url}` with this body.
/// `device` is a number when the spawner passed a bare ordinal (llama-orch's
/// hive reads a `u32` there), else the device's name; `device_name` always
/// names it.
pub fn ready_body(state: &State, url: &str) -> serde_json::Value {
    let device = state.device();
    json!({
        "worker_id": state.worker_id,
        "url": url,
        "model_ref": state.model_ref,
        "backend": state.backend(),
        "device": state.device_ordinal.map_or_else(|| json!(device), |n| json!(n)),
        "device_name": device,
        "vram_bytes": state.vram_bytes(),
        "memory_bytes": state.memory_bytes(),
    })
}

/// A POST to the pool manager, with its bearer token when one is set.
fn post(state: &State, client: &reqwest::Client, url: &str) -> reqwest::RequestBuilder {
    let request = client.post(url);
    match &state.settings.outgoing_token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// Posts the ready callback until a 2xx answer, with exponential back-off,
/// for at most `settings.callback_timeout` in all.
pub async fn send_ready(state: &State, callback_url: &str, url: &str) -> Result<()> {
    let client = client()?;
    let body = ready_body(state, url);
    let deadline = Instant::now() + state.settings.callback_timeout;
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let last = match post(state, &client, callback_url)
            .timeout(left.clamp(Duration::from_millis(100), REQUEST_TIMEOUT))
            .json(&body)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                tracing::info!(callback_url, attempt, "ready callback accepted");
                return Ok(());
            }
            Ok(r) => format!("answered {}", r.status()),
            Err(e) => format!("{e}"),
        };
        tracing::warn!(callback_url, attempt, error = %last, "ready callback failed");
        let now = Instant::now();
        if now + backoff >= deadline {
            bail!(
                "the ready callback to {callback_url} was not accepted within {:.1} s ({attempt} attempts; last: {last})",
                state.settings.callback_timeout.as_secs_f64()
            );
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Seconds between heartbeats when a callback URL is given and no
/// interval is: llama-orch's hive expects one every 30 s and drops a
/// worker after 60 s without one.
pub const DEFAULT_HEARTBEAT_S: f64 = 30.0;

/// `/v1/heartbeat` on the callback URL's scheme, host and port (llama-orch's
/// hive route).
pub fn default_heartbeat_url(callback_url: &str) -> Option<String> {
    let url = reqwest::Url::parse(callback_url).ok()?;
    url.join("/v1/heartbeat").ok().map(String::from)
}

/// The heartbeat body: llama-orch's `{worker_id, timestamp (RFC 3339),
/// health_status: healthy|degraded}` plus rbees' load state and queue.
pub fn heartbeat_body(state: &State) -> serde_json::Value {
    let load = state.load_info().state;
    let healthy = load == LoadState::Ready && !state.shutting_down.load(Ordering::Relaxed);
    json!({
        "worker_id": state.worker_id,
        "timestamp": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        "health_status": if healthy { "healthy" } else { "degraded" },
        "state": load.as_str(),
        "queue_depth": state.queue_depth(),
        "jobs_in_flight": state.in_flight(),
    })
}

/// Posts [`heartbeat_body`] every `interval`; failures are logged, never fatal.
pub async fn heartbeat(state: Arc<State>, url: String, interval: Duration) {
    let Ok(client) = client() else {
        return;
    };
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        match post(&state, &client, &url)
            .json(&heartbeat_body(&state))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => tracing::debug!("heartbeat sent"),
            Ok(r) => tracing::warn!(url, status = %r.status(), "heartbeat refused"),
            Err(e) => tracing::warn!(url, error = %e, "heartbeat failed"),
        }
    }
}
