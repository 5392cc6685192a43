//! The routes llama-orch's hives and queens call (docs/worker.md,
//! "llama-orch compatibility"): their health polls, `/info`, the job route
//! `/v1/inference` with its `{job_id, sse_url}` indirection, and shutdown.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State as Ext};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};

use super::correlation::CorrelationId;
use super::error::ApiError;
use super::http::{accept_job, cancel, health, Shared};
use super::sse::{self, Wire};
use super::state::LoadState;
use super::validate::Route;

/// How long a job queued through `/v1/inference` waits for its client to
/// fetch the stream before it is cancelled (it holds a slot meanwhile).
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(60);

/// Routes without a token: what a pool manager polls to see the worker live.
pub fn open() -> Router<Shared> {
    Router::new()
        .route("/", get(root))
        .route("/v1/health", get(health))
        .route("/info", get(info))
}

/// Routes behind the bearer token, when one is configured.
pub fn protected() -> Router<Shared> {
    Router::new()
        .route("/v1/inference", post(inference))
        .route("/v1/jobs/{job_id}/stream", get(job_stream))
        .route("/v1/inference/{job_id}/stream", get(job_stream))
        .route("/v1/cancel", post(cancel))
        .route("/v1/shutdown", post(shutdown))
        .route("/shutdown", post(shutdown))
        .route("/v1/admin/shutdown", post(shutdown))
}

/// `GET /`: the web page for a browser (it asks for HTML); else the
/// health object, 200 once the model is loaded and 503
/// before (llama-orch's current hive polls this path and takes any 2xx as
/// "started"; its queen sends jobs right after). `/health` and
/// `/v1/health` answer 200 while loading too: the older hive kills a
/// worker whose health check fails while it loads.
async fn root(state: Ext<Shared>, headers: HeaderMap) -> Response {
    if state.settings.web && super::web::wants_page(&headers) {
        return super::web::page().await;
    }
    let loaded = state.ready.get().is_some();
    let body = health(state).await;
    if loaded {
        body.into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

/// llama-orch's `WorkerInfo` (`bin/97_contracts/worker-contract`).
async fn info(Ext(state): Ext<Shared>) -> Json<Value> {
    let status = match state.load_info().state {
        _ if state.shutting_down.load(Ordering::SeqCst) => "stopping",
        LoadState::Loading => "starting",
        LoadState::Error => "stopped",
        LoadState::Ready => {
            let slots = state.ready.get().map_or(0, |r| r.slots);
            if state.slots_busy.load(Ordering::Relaxed) >= slots {
                "busy"
            } else {
                "ready"
            }
        }
    };
    Json(json!({
        "id": state.worker_id,
        "model_id": state.model_ref,
        "device": state.device(),
        "port": state.port,
        "status": status,
        "implementation": "rbees-workerd",
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// `POST /v1/inference`: the stream itself (`data:` lines), or, for
/// llama-orch's current queen (`--queen-url`), `{job_id, sse_url}` to fetch it from.
async fn inference(
    Ext(state): Ext<Shared>,
    correlation: Extension<CorrelationId>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let accepted = match accept_job(&state, &correlation, body, Route::Inference) {
        Ok(a) => a,
        Err(e) => return e.respond(&state),
    };
    if !state.settings.inference_by_url {
        return sse::response(&state, accepted, Wire::DataOnly);
    }
    let job_id = accepted.job_id.clone();
    let sse_url = format!("/v1/jobs/{}/stream", percent_encode(&job_id));
    if let Ok(mut unclaimed) = state.unclaimed.lock() {
        unclaimed.insert(job_id.clone(), accepted);
    }
    let waiting = state.clone();
    let id = job_id.clone();
    tokio::spawn(async move {
        tokio::time::sleep(CLAIM_TIMEOUT).await;
        // Dropping the stream's receiver cancels the job.
        let dropped = waiting
            .unclaimed
            .lock()
            .ok()
            .and_then(|mut u| u.remove(&id));
        if dropped.is_some() {
            tracing::warn!(job_id = %id, "stream not fetched within {CLAIM_TIMEOUT:?}: job cancelled");
        }
    });
    Json(json!({ "job_id": job_id, "sse_url": sse_url })).into_response()
}

/// `GET /v1/jobs/{job_id}/stream`: the events of a job queued by
/// `/v1/inference`, once (a second fetch is 404).
async fn job_stream(Ext(state): Ext<Shared>, Path(job_id): Path<String>) -> Response {
    let accepted = state
        .unclaimed
        .lock()
        .ok()
        .and_then(|mut u| u.remove(&job_id));
    match accepted {
        Some(a) => sse::response(&state, a, Wire::DataOnly),
        None => ApiError::UnknownJob(job_id).into_response(),
    }
}

/// `POST /v1/shutdown` (also `/shutdown`, `/v1/admin/shutdown`): as
/// SIGTERM, answered at once with 202.
async fn shutdown(Ext(state): Ext<Shared>) -> Response {
    tracing::info!("shutdown requested over HTTP");
    state.stop.send_replace(true);
    (
        StatusCode::ACCEPTED,
        Json(json!({ "status": "shutting down" })),
    )
        .into_response()
}

/// What a job id keeps as is in a URL path segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A job id as one URL path segment.
fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn job_ids_become_one_path_segment() {
        assert_eq!(super::percent_encode("job-12ab"), "job-12ab");
        assert_eq!(super::percent_encode("a/b c"), "a%2Fb%20c");
        assert_eq!(super::percent_encode("é"), "%C3%A9");
    }
}
