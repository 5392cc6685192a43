//! Every way the worker refuses or fails a request, as one type: each
//! variant has its HTTP status, its error code and its metrics label here,
//! and nowhere else. Handlers return it; [`ApiError::respond`] counts it and
//! turns it into the answer, so `/execute` and the OpenAI routes answer the
//! same error the same way.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::metrics::Outcome;
use super::state::State;
use super::validate::FieldError;

/// Seconds a client should wait before retrying a 503.
const RETRY_AFTER_S: &str = "1";

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// Request fields that failed validation (400, or 413 for the body size).
    #[error("invalid request: {}", list(.errors))]
    Invalid {
        status: StatusCode,
        errors: Vec<FieldError>,
    },
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("job '{0}' is already queued or running")]
    DuplicateJobId(String),
    #[error(
        "no job '{0}' is waiting for its stream (unknown, already fetched, or not fetched in time)"
    )]
    UnknownJob(String),
    #[error("the model is loading ({loaded}/{total} layers)")]
    Loading { loaded: usize, total: usize },
    #[error("the model failed to load: {0}")]
    LoadFailed(String),
    #[error("the worker is shutting down")]
    ShuttingDown,
    #[error("the job queue is full ({0} waiting); retry later")]
    QueueFull(usize),
    #[error("the engine has stopped")]
    EngineGone,
    /// Generation failed (a backend error mid-step).
    #[error("{0}")]
    Engine(String),
    #[error("the engine panicked while generating; see the worker log")]
    EnginePanic,
}

fn list(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    /// 400 with these field errors.
    pub fn fields(errors: Vec<FieldError>) -> Self {
        ApiError::Invalid {
            status: StatusCode::BAD_REQUEST,
            errors,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid { status, .. } => *status,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::DuplicateJobId(_) => StatusCode::CONFLICT,
            ApiError::UnknownJob(_) => StatusCode::NOT_FOUND,
            ApiError::Loading { .. }
            | ApiError::LoadFailed(_)
            | ApiError::ShuttingDown
            | ApiError::QueueFull(_)
            | ApiError::EngineGone => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Engine(_) | ApiError::EnginePanic => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid { .. } => "INVALID_REQUEST",
            ApiError::Unauthorized => "UNAUTHORIZED",
            ApiError::DuplicateJobId(_) => "DUPLICATE_JOB_ID",
            ApiError::UnknownJob(_) => "UNKNOWN_JOB",
            ApiError::Loading { .. } => "LOADING",
            ApiError::LoadFailed(_) => "LOAD_FAILED",
            ApiError::ShuttingDown => "SHUTTING_DOWN",
            ApiError::QueueFull(_) => "QUEUE_FULL",
            ApiError::EngineGone => "ENGINE_GONE",
            ApiError::Engine(_) => "ENGINE_ERROR",
            ApiError::EnginePanic => "ENGINE_PANIC",
        }
    }

    /// The `outcome` label of `rbees_requests_total`.
    pub fn outcome(&self) -> Outcome {
        match self {
            ApiError::Invalid { .. } | ApiError::DuplicateJobId(_) | ApiError::UnknownJob(_) => {
                Outcome::Invalid
            }
            ApiError::Unauthorized => Outcome::Unauthorized,
            ApiError::Loading { .. }
            | ApiError::LoadFailed(_)
            | ApiError::ShuttingDown
            | ApiError::QueueFull(_)
            | ApiError::EngineGone => Outcome::Rejected,
            ApiError::Engine(_) | ApiError::EnginePanic => Outcome::Error,
        }
    }

    /// Whether the same request may succeed later or on another worker
    /// (llama-orch's `retriable`): the 503 refusals.
    pub fn retriable(&self) -> bool {
        self.status() == StatusCode::SERVICE_UNAVAILABLE
    }

    /// The `{code, message, retriable}` object of error bodies and SSE `error` events.
    pub fn body(&self) -> serde_json::Value {
        json!({ "code": self.code(), "message": self.to_string(), "retriable": self.retriable() })
    }

    /// Counts the request in the metrics and answers it.
    pub fn respond(self, state: &State) -> Response {
        state.metrics.request(self.outcome());
        self.into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = match &self {
            // Field errors keep their list form: `{"errors": [{field, message}]}`.
            ApiError::Invalid { errors, .. } => {
                (status, Json(json!({ "errors": errors }))).into_response()
            }
            _ => (status, Json(json!({ "error": self.body() }))).into_response(),
        };
        let headers = response.headers_mut();
        match status {
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_S));
            }
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            // The rest of an oversized body is never read, so the connection
            // cannot carry another request: say so, or a keep-alive client
            // reuses it and its next request fails (found by the soak test).
            StatusCode::PAYLOAD_TOO_LARGE => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_its_status_code_and_label() {
        let cases = [
            (
                ApiError::fields(vec![]),
                400,
                "INVALID_REQUEST",
                Outcome::Invalid,
            ),
            (
                ApiError::Unauthorized,
                401,
                "UNAUTHORIZED",
                Outcome::Unauthorized,
            ),
            (
                ApiError::DuplicateJobId("j".into()),
                409,
                "DUPLICATE_JOB_ID",
                Outcome::Invalid,
            ),
            (
                ApiError::UnknownJob("j".into()),
                404,
                "UNKNOWN_JOB",
                Outcome::Invalid,
            ),
            (
                ApiError::Loading {
                    loaded: 1,
                    total: 2,
                },
                503,
                "LOADING",
                Outcome::Rejected,
            ),
            (
                ApiError::LoadFailed("x".into()),
                503,
                "LOAD_FAILED",
                Outcome::Rejected,
            ),
            (
                ApiError::ShuttingDown,
                503,
                "SHUTTING_DOWN",
                Outcome::Rejected,
            ),
            (ApiError::QueueFull(4), 503, "QUEUE_FULL", Outcome::Rejected),
            (ApiError::EngineGone, 503, "ENGINE_GONE", Outcome::Rejected),
            (
                ApiError::Engine("x".into()),
                500,
                "ENGINE_ERROR",
                Outcome::Error,
            ),
            (ApiError::EnginePanic, 500, "ENGINE_PANIC", Outcome::Error),
        ];
        for (e, status, code, outcome) in cases {
            assert_eq!(e.status().as_u16(), status, "{e:?}");
            assert_eq!(e.code(), code);
            assert_eq!(e.outcome(), outcome);
            let e_retriable = e.body()["retriable"] == true;
            let r = e.into_response();
            assert_eq!(r.status().as_u16(), status);
            assert_eq!(r.headers().contains_key(header::RETRY_AFTER), status == 503);
            assert_eq!(e_retriable, status == 503);
        }
    }
}
