//! OpenAI-compatible endpoints: `POST /v1/completions`,
//! `POST /v1/chat/completions` (prompt from the GGUF chat template, rendered
//! with minijinja) and `GET /v1/models`; streaming (`stream: true`) and not.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State as Ext;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::{Stream, StreamExt};
use rbees_model::StopReason;
use serde_json::{json, Value};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::correlation::CorrelationId;
use super::error::ApiError;
use super::http::{body_bytes, not_ready, submit, Accepted, Shared};
pub use super::openai_request::{parse_request, ChatTemplate, Kind, OpenAiRequest};
use super::state::JobEvent;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn created() -> u64 {
    super::state::unix_ms() / 1000
}

async fn models(Ext(state): Ext<Shared>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": state.model_name,
            "object": "model",
            "created": created(),
            "owned_by": "rbees",
        }],
    }))
}

fn finish_reason(r: StopReason) -> &'static str {
    match r {
        StopReason::Eos | StopReason::StopSequence => "stop",
        StopReason::MaxTokens | StopReason::ContextFull => "length",
        StopReason::Cancelled => "cancelled",
    }
}

async fn completions(
    Ext(state): Ext<Shared>,
    correlation: Extension<CorrelationId>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(state, correlation.0, body, Kind::Completion).await
}

async fn chat_completions(
    Ext(state): Ext<Shared>,
    correlation: Extension<CorrelationId>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(state, correlation.0, body, Kind::Chat).await
}

async fn handle(
    state: Shared,
    correlation: CorrelationId,
    body: Result<Bytes, BytesRejection>,
    kind: Kind,
) -> Response {
    let body = match body_bytes(&state, body) {
        Ok(b) => b,
        Err(e) => return e.respond(&state),
    };
    let Some(ready) = state.ready.get() else {
        return not_ready(&state).respond(&state);
    };
    let request = parse_request(
        &body,
        kind,
        ready.context,
        ready.chat_template.as_ref(),
        &ready.tokenizer,
    );
    let c = match request {
        Ok(c) => c,
        Err(errors) => return ApiError::fields(errors).respond(&state),
    };
    let prompt = c.prompt;
    let (prefix, object) = match kind {
        Kind::Completion => ("cmpl", "text_completion"),
        Kind::Chat => ("chatcmpl", "chat.completion"),
    };
    let id = format!(
        "{prefix}-{}-{}",
        state.worker_id,
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    );
    let accepted = match submit(&state, id.clone(), &prompt, c.params, &correlation) {
        Ok(a) => a,
        Err(e) => return e.respond(&state),
    };
    let meta = Meta {
        id,
        model: state.model_name.clone(),
        created: created(),
        kind,
    };
    if c.stream {
        Sse::new(stream_chunks(meta, accepted))
            .keep_alive(KeepAlive::default())
            .into_response()
    } else {
        let prompt_tokens = accepted.prompt_tokens;
        let mut events = accepted.events;
        let mut text = String::new();
        while let Some(ev) = events.recv().await {
            match ev {
                JobEvent::Token { text: t, .. } => text.push_str(&t),
                JobEvent::End {
                    tokens_out,
                    stop_reason,
                    prompt_tokens_cached,
                    ..
                } => {
                    let choice = match kind {
                        Kind::Completion => json!({
                            "index": 0, "text": text, "logprobs": null,
                            "finish_reason": finish_reason(stop_reason),
                        }),
                        Kind::Chat => json!({
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": finish_reason(stop_reason),
                        }),
                    };
                    return Json(json!({
                        "id": meta.id,
                        "object": object,
                        "created": meta.created,
                        "model": meta.model,
                        "choices": [choice],
                        "usage": usage(prompt_tokens, prompt_tokens_cached, tokens_out),
                    }))
                    .into_response();
                }
                // Already counted by the engine.
                JobEvent::Error(e) => return e.into_response(),
                _ => {}
            }
        }
        ApiError::EngineGone.into_response()
    }
}

/// llama.cpp server's `timings` of the last stream chunk: prompt tokens
/// computed (cached ones are not) and generated, their milliseconds and
/// tokens per second.
fn timings(prompt_n: usize, prompt_ms: f64, predicted_n: usize, predicted_ms: f64) -> Value {
    let per_second = |n: usize, ms: f64| {
        if ms > 0.0 {
            n as f64 * 1000.0 / ms
        } else {
            0.0
        }
    };
    json!({
        "prompt_n": prompt_n,
        "prompt_ms": prompt_ms,
        "prompt_per_second": per_second(prompt_n, prompt_ms),
        "predicted_n": predicted_n,
        "predicted_ms": predicted_ms,
        "predicted_per_second": per_second(predicted_n, predicted_ms),
    })
}

/// OpenAI's `usage`, with the prompt tokens served from the KV cache of
/// an earlier request in `prompt_tokens_details.cached_tokens`.
fn usage(prompt_tokens: usize, cached: usize, completion_tokens: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": { "cached_tokens": cached },
    })
}

struct Meta {
    id: String,
    model: String,
    created: u64,
    kind: Kind,
}

impl Meta {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        let (object, choice) = match self.kind {
            Kind::Completion => (
                "text_completion",
                json!({"index": 0, "text": delta, "logprobs": null, "finish_reason": finish}),
            ),
            Kind::Chat => (
                "chat.completion.chunk",
                json!({"index": 0, "delta": delta, "finish_reason": finish}),
            ),
        };
        json!({
            "id": self.id, "object": object, "created": self.created,
            "model": self.model, "choices": [choice],
        })
    }
}

/// `data: {chunk}` per non-empty token text, a last chunk with
/// `finish_reason` and `usage`, then `data: [DONE]`.
fn stream_chunks(
    meta: Meta,
    accepted: Accepted,
) -> impl Stream<Item = Result<Event, Infallible>> + use<> {
    let prompt_tokens = accepted.prompt_tokens;
    let mut first = true;
    UnboundedReceiverStream::new(accepted.events).flat_map(move |ev| {
        let data = match ev {
            JobEvent::Token { text, .. } if !text.is_empty() => {
                let delta = match meta.kind {
                    Kind::Completion => json!(text),
                    Kind::Chat if first => json!({"role": "assistant", "content": text}),
                    Kind::Chat => json!({"content": text}),
                };
                first = false;
                meta.chunk(delta, None).to_string()
            }
            JobEvent::End {
                tokens_out,
                stop_reason,
                prompt_tokens_cached,
                prompt_time_ms,
                decode_time_ms,
                ..
            } => {
                let delta = match meta.kind {
                    Kind::Completion => json!(""),
                    Kind::Chat => json!({}),
                };
                let mut last = meta.chunk(delta, Some(finish_reason(stop_reason)));
                last["usage"] = usage(prompt_tokens, prompt_tokens_cached, tokens_out);
                last["timings"] = timings(
                    prompt_tokens - prompt_tokens_cached.min(prompt_tokens),
                    prompt_time_ms,
                    tokens_out,
                    decode_time_ms,
                );
                return futures::stream::iter(vec![
                    Ok(Event::default().data(last.to_string())),
                    Ok(Event::default().data("[DONE]")),
                ]);
            }
            JobEvent::Error(e) => json!({ "error": e.body() }).to_string(),
            _ => return futures::stream::iter(vec![]),
        };
        futures::stream::iter(vec![Ok(Event::default().data(data))])
    })
}
