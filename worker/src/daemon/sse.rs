//! A job's events as server-sent events, in the two wire forms clients
//! parse: named events (`event: token` + `data:`), rbees' contract on
//! `/execute`; and `data:` lines only, which llama-orch's queens and its
//! CLI read on `/v1/inference` (a line starting `event:` breaks their
//! parser). Either way each data object carries its event name as `type`
//! and the stream ends with `data: [DONE]`, so one client reads both.

use std::convert::Infallible;
use std::time::{Duration, UNIX_EPOCH};

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{stream, Stream};
use serde_json::{json, Value};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use super::config::EventFormat;
use super::http::{stop_reason_str, Accepted};
use super::state::{JobEvent, State};
use rbees_model::StopReason;

/// How the events are framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// `event: NAME` then `data: {...}`, with keep-alive comments.
    Named,
    /// `data: {...}` only, no comments.
    DataOnly,
}

/// The terminal line of every stream.
pub const DONE: &str = "[DONE]";

/// The event's name and its data object (with `type` set to the name).
pub fn event_json(
    job_id: &str,
    model: &str,
    format: EventFormat,
    ev: JobEvent,
) -> (&'static str, Value) {
    let (name, mut data) = match ev {
        JobEvent::Started { started_at_ms } => {
            let started_at = match format {
                EventFormat::Rbees => json!(started_at_ms),
                EventFormat::OrchSpec => json!(humantime::format_rfc3339_millis(
                    UNIX_EPOCH + Duration::from_millis(started_at_ms)
                )
                .to_string()),
            };
            (
                "started",
                json!({ "job_id": job_id, "model": model, "started_at": started_at }),
            )
        }
        JobEvent::Token {
            text, index, id, ..
        } => ("token", json!({ "t": text, "i": index, "id": id })),
        JobEvent::Metrics {
            tokens_per_sec,
            tokens_out,
            elapsed_ms,
        } => (
            "metrics",
            json!({ "job_id": job_id, "tokens_per_sec": tokens_per_sec, "tokens_out": tokens_out, "elapsed_ms": elapsed_ms }),
        ),
        JobEvent::End {
            stop_reason: StopReason::Cancelled,
            ..
        } if format == EventFormat::OrchSpec => (
            "error",
            json!({ "code": "CANCELLED", "message": "the job was cancelled", "retriable": false }),
        ),
        JobEvent::End {
            tokens_out,
            prompt_time_ms,
            decode_time_ms,
            stop_reason,
            stop_sequence,
            prompt_tokens,
            prompt_tokens_cached,
        } => (
            "end",
            json!({
                "tokens_out": tokens_out,
                "prompt_tokens": prompt_tokens,
                "prompt_tokens_cached": prompt_tokens_cached,
                "prompt_time_ms": prompt_time_ms,
                "decode_time_ms": decode_time_ms,
                "stop_reason": stop_reason_str(stop_reason),
                "stop_sequence_matched": stop_sequence,
            }),
        ),
        JobEvent::Error(e) => ("error", e.body()),
    };
    data["type"] = json!(name);
    (name, data)
}

/// The job's event stream as the response, ending with `data: [DONE]`.
pub fn response(state: &State, accepted: Accepted, wire: Wire) -> Response {
    let events = events(state, accepted, wire);
    match wire {
        Wire::Named => Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response(),
        Wire::DataOnly => Sse::new(events).into_response(),
    }
}

fn events(
    state: &State,
    accepted: Accepted,
    wire: Wire,
) -> impl Stream<Item = Result<Event, Infallible>> + use<> {
    let job_id = accepted.job_id;
    let model = state.model_name.clone();
    let format = state.settings.event_format;
    UnboundedReceiverStream::new(accepted.events)
        .map(move |ev| {
            let (name, data) = event_json(&job_id, &model, format, ev);
            let event = Event::default().data(data.to_string());
            Ok(match wire {
                Wire::Named => event.event(name),
                Wire::DataOnly => event,
            })
        })
        .chain(stream::once(async { Ok(Event::default().data(DONE)) }))
}
