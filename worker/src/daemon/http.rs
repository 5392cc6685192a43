//! The HTTP API: health, readiness, `/execute` (SSE), `/cancel`, `/metrics`.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State as Ext};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use rbees_model::{GenerateParams, StopReason};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use super::metrics::Outcome;
use super::state::{Job, JobEvent, LoadState, State};
use super::validate::{self, FieldError, Fields};

pub type Shared = Arc<State>;

/// Seconds a client should wait before retrying a 503.
const RETRY_AFTER_S: &str = "1";

pub fn router(state: Shared) -> Router {
    let limit = state.settings.max_body_bytes;
    let protected = Router::new()
        .route("/v1/ready", get(ready))
        .route("/execute", post(execute))
        .route("/cancel", post(cancel))
        .route("/metrics", get(metrics))
        .merge(super::openai::routes())
        .layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/health", get(health))
        .merge(protected)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// A JSON error body `{"errors":[{field, message}]}` with `status`.
pub fn field_errors(status: StatusCode, errors: Vec<FieldError>) -> Response {
    (status, Json(json!({ "errors": errors }))).into_response()
}

/// A JSON error body `{"error":{code, message}}` with `status`.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({ "error": { "code": code, "message": message.into() } });
    (status, Json(body)).into_response()
}

fn unavailable(code: &str, message: impl Into<String>) -> Response {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, code, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_S));
    r
}

async fn auth(Ext(state): Ext<Shared>, request: Request, next: Next) -> Response {
    let Some(token) = state.settings.api_token.as_deref() else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        next.run(request).await
    } else {
        state.metrics.request(Outcome::Unauthorized);
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "missing or wrong bearer token",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    }
}

async fn health(Ext(state): Ext<Shared>) -> Json<Value> {
    let load = state.load_info();
    Json(json!({
        "status": if load.state == LoadState::Error { "error" } else { "ok" },
        "state": load.state.as_str(),
        "backend": state.backend(),
        "device": state.device(),
        "model": state.model_name,
        "context_length": state.ready.get().map(|r| r.context),
        "uptime_s": state.started.elapsed().as_secs_f64(),
        "worker_id": state.worker_id,
    }))
}

async fn ready(Ext(state): Ext<Shared>) -> Json<Value> {
    let load = state.load_info();
    let mut body = json!({
        "ready": load.state == LoadState::Ready,
        "state": load.state.as_str(),
        "layers_loaded": load.layers_loaded,
        "layers_total": load.layers_total,
    });
    if let Some(e) = load.error {
        body["error"] = json!(e);
    }
    Json(body)
}

async fn metrics(Ext(state): Ext<Shared>) -> Response {
    let text = state.metrics.render(
        state.queue_depth(),
        state.in_flight(),
        state.ready.get().is_some(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The body as bytes, or the 413/400 answer.
// The error is the finished HTTP answer, returned straight from the handler.
#[allow(clippy::result_large_err)]
pub fn body_bytes(state: &State, body: Result<Bytes, BytesRejection>) -> Result<Bytes, Response> {
    body.map_err(|rejection| {
        state.metrics.request(Outcome::Invalid);
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            let message = format!(
                "request body larger than {} bytes",
                state.settings.max_body_bytes
            );
            let mut response = field_errors(status, vec![FieldError::new("body", message)]);
            // The rest of the body is never read, so the connection cannot
            // carry another request: say so, or a keep-alive client reuses
            // it and its next request fails (found by the soak test).
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            return response;
        }
        field_errors(status, vec![FieldError::new("body", rejection.body_text())])
    })
}

/// A validated, tokenized job ready for the queue.
pub struct Accepted {
    pub job_id: String,
    pub events: mpsc::UnboundedReceiver<JobEvent>,
    pub prompt_tokens: usize,
}

/// Tokenizes `prompt`, checks it fits the context and queues the job.
/// Errors are complete HTTP answers (400, 409, 503).
#[allow(clippy::result_large_err)]
pub fn submit(
    state: &Shared,
    job_id: String,
    prompt: &str,
    params: GenerateParams,
) -> Result<Accepted, Response> {
    let Some(ready) = state.ready.get() else {
        state.metrics.request(Outcome::Rejected);
        return Err(not_ready(state));
    };
    if state.shutting_down.load(Ordering::SeqCst) {
        state.metrics.request(Outcome::Rejected);
        return Err(unavailable("SHUTTING_DOWN", "the worker is shutting down"));
    }
    let prompt_ids = match ready.tokenizer.encode(prompt, true, true) {
        Ok(ids) => ids,
        Err(e) => {
            state.metrics.request(Outcome::Invalid);
            return Err(field_errors(
                StatusCode::BAD_REQUEST,
                vec![FieldError::new("prompt", format!("cannot tokenize: {e}"))],
            ));
        }
    };
    let too_long = prompt_ids.len() > ready.context;
    if prompt_ids.is_empty() || too_long {
        state.metrics.request(Outcome::Invalid);
        let message = if too_long {
            format!(
                "the prompt is {} tokens but the context holds {} tokens",
                prompt_ids.len(),
                ready.context
            )
        } else {
            "the prompt is empty (this model adds no BOS token)".to_string()
        };
        return Err(field_errors(
            StatusCode::BAD_REQUEST,
            vec![FieldError::new("prompt", message)],
        ));
    }
    let Some(cancel) = state.register_job(&job_id) else {
        state.metrics.request(Outcome::Invalid);
        return Err(error(
            StatusCode::CONFLICT,
            "DUPLICATE_JOB_ID",
            format!("job '{job_id}' is already queued or running"),
        ));
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let prompt_tokens = prompt_ids.len();
    let job = Job {
        id: job_id.clone(),
        prompt_ids,
        params,
        cancel,
        events: tx,
        accepted: Instant::now(),
    };
    match ready.queue.try_send(job) {
        Ok(()) => Ok(Accepted {
            job_id,
            events: rx,
            prompt_tokens,
        }),
        Err(e) => {
            state.finish_job(&job_id);
            state.metrics.request(Outcome::Rejected);
            let full = matches!(e, mpsc::error::TrySendError::Full(_));
            Err(if full {
                unavailable(
                    "QUEUE_FULL",
                    format!(
                        "the job queue is full ({} waiting); retry later",
                        ready.queue.max_capacity()
                    ),
                )
            } else {
                unavailable("ENGINE_GONE", "the engine has stopped")
            })
        }
    }
}

fn not_ready(state: &State) -> Response {
    let load = state.load_info();
    match load.state {
        LoadState::Error => unavailable(
            "LOAD_FAILED",
            format!(
                "the model failed to load: {}",
                load.error.unwrap_or_default()
            ),
        ),
        _ => unavailable(
            "LOADING",
            format!(
                "the model is loading ({}/{} layers)",
                load.layers_loaded, load.layers_total
            ),
        ),
    }
}

pub fn stop_reason_str(r: StopReason) -> &'static str {
    match r {
        StopReason::MaxTokens => "MAX_TOKENS",
        StopReason::Eos => "EOS",
        StopReason::StopSequence => "STOP_SEQUENCE",
        StopReason::Cancelled => "CANCELLED",
        StopReason::ContextFull => "CONTEXT_FULL",
    }
}

async fn execute(Ext(state): Ext<Shared>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body_bytes(&state, body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(context) = state.ready.get().map(|r| r.context) else {
        state.metrics.request(Outcome::Rejected);
        return not_ready(&state);
    };
    let req = match validate::execute(&body, context) {
        Ok(r) => r,
        Err(errors) => {
            state.metrics.request(Outcome::Invalid);
            return field_errors(StatusCode::BAD_REQUEST, errors);
        }
    };
    let params = GenerateParams {
        max_tokens: req.max_tokens,
        sampling: req.sampling,
        stop: req.stop,
        ignore_eos: req.ignore_eos,
        keep_prompt_logits: false,
    };
    let accepted = match submit(&state, req.job_id, &req.prompt, params) {
        Ok(a) => a,
        Err(r) => return r,
    };
    Sse::new(sse_events(&state, accepted))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn sse_events(
    state: &Shared,
    accepted: Accepted,
) -> impl Stream<Item = Result<Event, Infallible>> + use<> {
    let job_id = accepted.job_id;
    let model = state.model_name.clone();
    UnboundedReceiverStream::new(accepted.events).map(move |ev| {
        let (name, data) = match ev {
            JobEvent::Started { started_at_ms } => (
                "started",
                json!({ "job_id": job_id, "model": model, "started_at": started_at_ms }),
            ),
            JobEvent::Token { text, index, id, .. } => {
                ("token", json!({ "t": text, "i": index, "id": id }))
            }
            JobEvent::Metrics {
                tokens_per_sec,
                tokens_out,
                elapsed_ms,
            } => (
                "metrics",
                json!({ "tokens_per_sec": tokens_per_sec, "tokens_out": tokens_out, "elapsed_ms": elapsed_ms }),
            ),
            JobEvent::End {
                tokens_out,
                decode_time_ms,
                stop_reason,
                stop_sequence,
                prompt_tokens,
            } => (
                "end",
                json!({
                    "tokens_out": tokens_out,
                    "prompt_tokens": prompt_tokens,
                    "decode_time_ms": decode_time_ms,
                    "stop_reason": stop_reason_str(stop_reason),
                    "stop_sequence_matched": stop_sequence,
                }),
            ),
            JobEvent::Error { code, message } => {
                ("error", json!({ "code": code, "message": message }))
            }
        };
        Ok(Event::default().event(name).data(data.to_string()))
    })
}

async fn cancel(Ext(state): Ext<Shared>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body_bytes(&state, body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut f = match Fields::parse(&body) {
        Ok(f) => f,
        Err(errors) => return field_errors(StatusCode::BAD_REQUEST, errors),
    };
    let job_id = validate::job_id(&mut f);
    if let Err(errors) = f.finish() {
        return field_errors(StatusCode::BAD_REQUEST, errors);
    }
    let job_id = job_id.unwrap_or_default();
    let found = state.cancel_job(&job_id);
    tracing::info!(job_id = %job_id, found, "cancel requested");
    (
        StatusCode::ACCEPTED,
        Json(json!({ "job_id": job_id, "found": found })),
    )
        .into_response()
}
