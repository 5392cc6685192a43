//! OpenAI-compatible endpoints: `POST /v1/completions`,
//! `POST /v1/chat/completions` (prompt from the GGUF chat template, rendered
//! with minijinja) and `GET /v1/models`; streaming (`stream: true`) and not.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State as Ext;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use rbees_model::{GenerateParams, StopReason, Tokenizer};
use serde_json::{json, Value};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::http::{body_bytes, error, field_errors, submit, Accepted, Shared};
use super::metrics::Outcome;
use super::state::JobEvent;
use super::validate::{self, FieldError, Fields};

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

/// The fields both endpoints share, validated.
struct Common {
    params: GenerateParams,
    stream: bool,
}

fn common(f: &mut Fields, context: usize) -> Common {
    // Accepted for compatibility; `model` is not checked against the loaded one.
    f.allow("model");
    f.allow("user");
    let max_tokens = f.uint(
        "max_tokens",
        validate::DEFAULT_MAX_TOKENS.min(context as u64),
        1,
        context as u64,
    ) as usize;
    let sampling = validate::sampling(f, "repetition_penalty");
    let stop = f.stop("stop");
    let stream = f.boolean("stream", false);
    let ignore_eos = f.boolean("ignore_eos", false);
    // Only one choice per request.
    let _ = f.uint("n", 1, 1, 1);
    Common {
        params: GenerateParams {
            max_tokens,
            sampling,
            stop,
            ignore_eos,
            keep_prompt_logits: false,
        },
        stream,
    }
}

fn finish_reason(r: StopReason) -> &'static str {
    match r {
        StopReason::Eos | StopReason::StopSequence => "stop",
        StopReason::MaxTokens | StopReason::ContextFull => "length",
        StopReason::Cancelled => "cancelled",
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Completion,
    Chat,
}

async fn completions(Ext(state): Ext<Shared>, body: Result<Bytes, BytesRejection>) -> Response {
    handle(state, body, Kind::Completion).await
}

async fn chat_completions(
    Ext(state): Ext<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(state, body, Kind::Chat).await
}

async fn handle(state: Shared, body: Result<Bytes, BytesRejection>, kind: Kind) -> Response {
    let body = match body_bytes(&state, body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(ready) = state.ready.get() else {
        state.metrics.request(Outcome::Rejected);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "LOADING",
            "the model is not loaded",
        );
    };
    let invalid = |errors: Vec<FieldError>| {
        state.metrics.request(Outcome::Invalid);
        field_errors(StatusCode::BAD_REQUEST, errors)
    };
    let mut f = match Fields::parse(&body) {
        Ok(f) => f,
        Err(errors) => return invalid(errors),
    };
    let prompt = match kind {
        Kind::Completion => completion_prompt(&mut f),
        Kind::Chat => chat_prompt(&mut f, ready.chat_template.as_ref(), &ready.tokenizer),
    };
    let c = common(&mut f, ready.context);
    if let Err(errors) = f.finish() {
        return invalid(errors);
    }
    let Some(prompt) = prompt else {
        return invalid(vec![FieldError::new("body", "no prompt")]);
    };
    let (prefix, object) = match kind {
        Kind::Completion => ("cmpl", "text_completion"),
        Kind::Chat => ("chatcmpl", "chat.completion"),
    };
    let id = format!(
        "{prefix}-{}-{}",
        state.worker_id,
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    );
    let accepted = match submit(&state, id.clone(), &prompt, c.params) {
        Ok(a) => a,
        Err(r) => return r,
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
                        "usage": usage(prompt_tokens, tokens_out),
                    }))
                    .into_response();
                }
                JobEvent::Error { code, message } => {
                    return error(StatusCode::INTERNAL_SERVER_ERROR, code, message)
                }
                _ => {}
            }
        }
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ENGINE_GONE",
            "the engine ended the job without a result",
        )
    }
}

fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
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
                ..
            } => {
                let delta = match meta.kind {
                    Kind::Completion => json!(""),
                    Kind::Chat => json!({}),
                };
                let mut last = meta.chunk(delta, Some(finish_reason(stop_reason)));
                last["usage"] = usage(prompt_tokens, tokens_out);
                return futures::stream::iter(vec![
                    Ok(Event::default().data(last.to_string())),
                    Ok(Event::default().data("[DONE]")),
                ]);
            }
            JobEvent::Error { code, message } => {
                json!({"error": {"code": code, "message": message}}).to_string()
            }
            _ => return futures::stream::iter(vec![]),
        };
        futures::stream::iter(vec![Ok(Event::default().data(data))])
    })
}

fn completion_prompt(f: &mut Fields) -> Option<String> {
    f.allow("prompt");
    match f_get(f, "prompt") {
        Some(Value::String(s)) => Some(s),
        Some(Value::Array(items)) if items.len() == 1 && items[0].is_string() => {
            items[0].as_str().map(str::to_string)
        }
        Some(_) => {
            f.error("prompt", "must be a string (or a list of one string)");
            None
        }
        None => {
            f.error("prompt", "is required");
            None
        }
    }
}

fn f_get(f: &mut Fields, key: &'static str) -> Option<Value> {
    f.raw(key)
}

fn chat_prompt(
    f: &mut Fields,
    template: Option<&Result<ChatTemplate, String>>,
    tokenizer: &Tokenizer,
) -> Option<String> {
    f.allow("messages");
    let messages = match f_get(f, "messages") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(_) => {
            f.error("messages", "must be a non-empty list of {role, content}");
            return None;
        }
        None => {
            f.error("messages", "is required");
            return None;
        }
    };
    for m in &messages {
        let ok = m.as_object().is_some_and(|o| {
            o.get("role").is_some_and(Value::is_string)
                && o.get("content").is_some_and(Value::is_string)
        });
        if !ok {
            f.error(
                "messages",
                "each message must be {\"role\": string, \"content\": string}",
            );
            return None;
        }
    }
    let template = match template {
        None => {
            f.error(
                "messages",
                "the model has no chat template (tokenizer.chat_template); use /v1/completions",
            );
            return None;
        }
        Some(Err(e)) => {
            f.error(
                "messages",
                format!("the model's chat template does not compile: {e}"),
            );
            return None;
        }
        Some(Ok(t)) => t,
    };
    match template.render(&messages, tokenizer) {
        Ok(p) => Some(p),
        Err(e) => {
            f.error("messages", format!("chat template failed: {e}"));
            None
        }
    }
}

/// A Hugging Face style chat template, compiled once when the model loads.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
}

impl ChatTemplate {
    /// Compiles `source`; a syntax error is reported here, not per request.
    pub fn new(source: String) -> Result<Self, minijinja::Error> {
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, _> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        });
        env.add_template_owned("chat", source)?;
        Ok(ChatTemplate { env })
    }

    /// Renders `messages` as a prompt that ends where the assistant speaks.
    pub fn render(
        &self,
        messages: &[Value],
        tokenizer: &Tokenizer,
    ) -> Result<String, minijinja::Error> {
        let text = |id: Option<u32>| {
            id.and_then(|id| tokenizer.token_text(id))
                .unwrap_or("")
                .to_string()
        };
        let rendered = self.env.get_template("chat")?.render(minijinja::context! {
            messages => minijinja::value::Serde(messages),
            add_generation_prompt => true,
            bos_token => text(tokenizer.bos_id()),
            eos_token => text(tokenizer.eos_id()),
        })?;
        // The template usually writes BOS itself; tokenizing adds it again when
        // the model asks for one, so drop a leading BOS text here.
        let bos = text(tokenizer.bos_id());
        Ok(match rendered.strip_prefix(&bos) {
            Some(rest) if !bos.is_empty() && tokenizer.add_bos() => rest.to_string(),
            _ => rendered,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tiny_tokenizer() -> Tokenizer {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/models/tiny-llama2-f32.gguf");
        let gguf = rbees_model::GgufFile::open(path).unwrap();
        Tokenizer::from_gguf_metadata(gguf.metadata()).unwrap()
    }

    /// Llama-2-chat's template calls Python's `str.strip()`.
    const LLAMA2_TEMPLATE: &str = "{% for message in messages %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + message['content'].strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'].strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

    #[test]
    fn renders_templates_that_call_python_string_methods() {
        let messages = vec![
            json!({"role": "user", "content": "  Hi there \n"}),
            json!({"role": "assistant", "content": " Hello! "}),
            json!({"role": "user", "content": "Bye"}),
        ];
        let template = ChatTemplate::new(LLAMA2_TEMPLATE.to_string()).unwrap();
        let got = template.render(&messages, &tiny_tokenizer()).unwrap();
        // The leading BOS is left to the tokenizer (the model adds one).
        assert_eq!(
            got,
            "[INST] Hi there [/INST] Hello! </s><s>[INST] Bye [/INST]"
        );
    }

    #[test]
    fn raise_exception_in_a_template_is_an_error() {
        let template = "{{ raise_exception('roles must alternate') }}";
        let template = ChatTemplate::new(template.to_string()).unwrap();
        let e = template.render(&[], &tiny_tokenizer()).unwrap_err();
        assert!(e.to_string().contains("roles must alternate"), "{e}");
    }
}
