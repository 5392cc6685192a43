//! `X-Correlation-Id` (llama-orch SYS-5.6.1): a request's id is taken from
//! the header when it is well-formed, else made up; it is echoed on the
//! answer and written in the job's log lines.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// The header, as the spec spells it (HTTP header names are case-insensitive).
pub const HEADER: &str = "x-correlation-id";

/// Longest accepted id (the spec's `^[A-Za-z0-9-]{1,64}$`).
const MAX_LEN: usize = 64;

/// The request's correlation id, in the request's extensions.
#[derive(Debug, Clone, Default)]
pub struct CorrelationId(pub String);

fn well_formed(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Middleware: sets [`CorrelationId`] and echoes it on the response.
pub async fn layer(mut request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| well_formed(v))
        .map(str::to_string);
    let id = given.unwrap_or_else(|| {
        format!(
            "{:016x}{:016x}",
            super::validate::fresh_seed(),
            super::validate::fresh_seed()
        )
    });
    request.extensions_mut().insert(CorrelationId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_spec_alphabet_is_taken() {
        assert!(well_formed("0f3c-9a"));
        assert!(well_formed(&"a".repeat(64)));
        assert!(!well_formed(""));
        assert!(!well_formed(&"a".repeat(65)));
        assert!(!well_formed("a b"));
        assert!(!well_formed("a\nb"));
    }
}
