//! The HTTP API: health, readiness, `/execute` (SSE), `/cancel`, `/metrics`;
//! llama-orch's routes are in [`super::orch_routes`], OpenAI's in [`super::openai`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State as Ext};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use rbees_model::{GenerateParams, StopReason};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;

use super::correlation::CorrelationId;
use super::error::ApiError;
use super::sse::Wire;
use super::state::{Job, JobEvent, LoadState, State};
use super::validate::{self, FieldError, Fields, Route};

pub type Shared = Arc<State>;

pub fn router(state: Shared) -> Router {
    let limit = state.settings.max_body_bytes;
    let protected = Router::new()
        .route("/v1/ready", get(ready))
        .route("/execute", post(execute))
        .route("/cancel", post(cancel))
        .route("/metrics", get(metrics))
        .merge(super::orch_routes::protected())
        .merge(super::openai::routes())
        .layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/health", get(health))
        .merge(super::orch_routes::open())
        .merge(super::web::routes(state.settings.web))
        .merge(protected)
        .layer(middleware::from_fn(super::correlation::layer))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
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
        ApiError::Unauthorized.respond(&state)
    }
}

pub async fn health(Ext(state): Ext<Shared>) -> Json<Value> {
    let load = state.load_info();
    Json(json!({
        "status": if load.state == LoadState::Error { "error" } else { "ok" },
        "state": load.state.as_str(),
        "backend": state.backend(),
        "device": state.device(),
        "model": state.model_name,
        "context_length": state.ready.get().map(|r| r.context),
        "slots_total": state.ready.get().map(|r| r.slots),
        "slots_busy": state.slots_busy.load(Ordering::Relaxed),
        "queue_length": state.queue_depth(),
        "tokens_per_second": state.metrics.tokens_per_second(),
        "uptime_s": state.started.elapsed().as_secs_f64(),
        "vram_bytes": state.vram_bytes(),
        "memory_bytes": state.memory_bytes(),
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
    let text = state.metrics.render(state.gauges());
    ([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], text).into_response()
}

/// The body as bytes, or the 413/400 refusal.
pub fn body_bytes(state: &State, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!(
                "request body larger than {} bytes",
                state.settings.max_body_bytes
            )
        } else {
            rejection.body_text()
        };
        ApiError::Invalid {
            status,
            errors: vec![FieldError::new("body", message)],
        }
    })
}

/// A validated, tokenized job ready for the queue.
pub struct Accepted {
    pub job_id: String,
    pub events: mpsc::UnboundedReceiver<JobEvent>,
    pub prompt_tokens: usize,
}

/// Tokenizes `prompt`, checks it fits the context and queues the job.
pub fn submit(
    state: &Shared,
    job_id: String,
    prompt: &str,
    params: GenerateParams,
    correlation: &CorrelationId,
) -> Result<Accepted, ApiError> {
    let ready = state.ready.get().ok_or_else(|| not_ready(state))?;
    if state.shutting_down.load(Ordering::SeqCst) {
        return Err(ApiError::ShuttingDown);
    }
    let prompt_ids = ready.tokenizer.encode(prompt, true, true).map_err(|e| {
        ApiError::fields(vec![FieldError::new(
            "prompt",
            format!("cannot tokenize: {e}"),
        )])
    })?;
    let too_long = prompt_ids.len() > ready.context;
    if prompt_ids.is_empty() || too_long {
        let message = if too_long {
            format!(
                "the prompt is {} tokens but the context holds {} tokens",
                prompt_ids.len(),
                ready.context
            )
        } else {
            "the prompt is empty (this model adds no BOS token)".to_string()
        };
        return Err(ApiError::fields(vec![FieldError::new("prompt", message)]));
    }
    let Some(cancel) = state.register_job(&job_id) else {
        return Err(ApiError::DuplicateJobId(job_id));
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
        correlation_id: correlation.0.clone(),
    };
    match ready.queue.try_send(job) {
        Ok(()) => Ok(Accepted {
            job_id,
            events: rx,
            prompt_tokens,
        }),
        Err(e) => {
            state.finish_job(&job_id);
            Err(match e {
                mpsc::error::TrySendError::Full(_) => {
                    ApiError::QueueFull(ready.queue.max_capacity())
                }
                mpsc::error::TrySendError::Closed(_) => ApiError::EngineGone,
            })
        }
    }
}

/// Why nothing can be queued yet: still loading, or the load failed.
pub fn not_ready(state: &State) -> ApiError {
    let load = state.load_info();
    match load.state {
        LoadState::Error => ApiError::LoadFailed(load.error.unwrap_or_default()),
        _ => ApiError::Loading {
            loaded: load.layers_loaded,
            total: load.layers_total,
        },
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

async fn execute(
    Ext(state): Ext<Shared>,
    correlation: Extension<CorrelationId>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match accept_job(&state, &correlation, body, Route::Execute) {
        Ok(accepted) => super::sse::response(&state, accepted, Wire::Named),
        Err(e) => e.respond(&state),
    }
}

/// Validates a generation body of `route` and queues the job.
pub fn accept_job(
    state: &Shared,
    correlation: &CorrelationId,
    body: Result<Bytes, BytesRejection>,
    route: Route,
) -> Result<Accepted, ApiError> {
    let body = body_bytes(state, body)?;
    let context = state
        .ready
        .get()
        .map(|r| r.context)
        .ok_or_else(|| not_ready(state))?;
    let req = validate::execute(&body, context, route).map_err(ApiError::fields)?;
    let params = GenerateParams {
        max_tokens: req.max_tokens,
        sampling: req.sampling,
        stop: req.stop,
        ignore_eos: req.ignore_eos,
        keep_prompt_logits: false,
    };
    submit(state, req.job_id, &req.prompt, params, correlation)
}

pub async fn cancel(Ext(state): Ext<Shared>, body: Result<Bytes, BytesRejection>) -> Response {
    // A refused cancel is not a generation request: not counted.
    let body = match body_bytes(&state, body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let mut f = match Fields::parse(&body) {
        Ok(f) => f,
        Err(errors) => return ApiError::fields(errors).into_response(),
    };
    let job_id = validate::job_id(&mut f);
    if let Err(errors) = f.finish() {
        return ApiError::fields(errors).into_response();
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
