//! The ready callback to the pool manager and the heartbeat.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;

use super::state::State;

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()?)
}

/// What the worker reports as ready: `POST {callback_url}` with this body.
pub fn ready_body(state: &State, url: &str) -> serde_json::Value {
    let device = state.device();
    // The weights' size is a lower bound of what a GPU device holds; on the CPU it is 0.
    let vram_bytes = if device.starts_with("cpu") {
        0
    } else {
        std::fs::metadata(&state.model_path).map_or(0, |m| m.len())
    };
    json!({
        "worker_id": state.worker_id,
        "url": url,
        "model_ref": state.model_path.display().to_string(),
        "backend": state.backend(),
        "device": device,
        "vram_bytes": vram_bytes,
    })
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
        let last = match client
            .post(callback_url)
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

/// `/heartbeat` on the callback URL's scheme, host and port.
pub fn default_heartbeat_url(callback_url: &str) -> Option<String> {
    let url = reqwest::Url::parse(callback_url).ok()?;
    url.join("/heartbeat").ok().map(String::from)
}

/// Posts `{worker_id, state, queue_depth, jobs_in_flight}` every `interval`;
/// failures are logged, never fatal.
pub async fn heartbeat(state: Arc<State>, url: String, interval: Duration) {
    let Ok(client) = client() else {
        return;
    };
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        let body = json!({
            "worker_id": state.worker_id,
            "state": state.load_info().state.as_str(),
            "queue_depth": state.queue_depth(),
            "jobs_in_flight": state.in_flight(),
        });
        match client.post(&url).json(&body).send().await {
            Ok(r) if r.status().is_success() => tracing::debug!("heartbeat sent"),
            Ok(r) => tracing::warn!(url, status = %r.status(), "heartbeat refused"),
            Err(e) => tracing::warn!(url, error = %e, "heartbeat failed"),
        }
    }
}
