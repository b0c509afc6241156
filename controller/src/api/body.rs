//! Reading a request's body: bounded in size, in time and in how many at once.
//!
//! [`read_body`] runs before every routed handler (after authorisation). A request
//! with a body is read whole, up to [`super::server::MAX_BODY_BYTES`] (a larger
//! declared `Content-Length` is refused before reading; a larger chunked body when it
//! passes the limit), within [`ApiLimits::body_timeout`] of the first byte being asked
//! for; at most [`ApiLimits::bodies_in_flight`] bodies are read at once, so memory for
//! bodies stays under that many times the limit however many clients trickle. The
//! handler then gets the bytes in memory. Refusals are [`ApiError`]s: 413 `too-large`,
//! 408 `timeout`, 400 `bad-request` (the client broke off).
//!
//! Requests without a body (every `GET`, `retry`, `gc`) pass straight through.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::Body as _;
use tokio::sync::Semaphore;

use super::server::ApiError;
use crate::config::ApiLimits;

/// The bounds [`read_body`] applies, shared by every request.
#[derive(Debug)]
pub struct BodyLimits {
    max_bytes: usize,
    timeout: Duration,
    in_flight: Semaphore,
}

impl BodyLimits {
    /// Bounds of `limits`, with `max_bytes` per body.
    pub fn new(limits: &ApiLimits, max_bytes: usize) -> Arc<BodyLimits> {
        Arc::new(BodyLimits {
            max_bytes,
            timeout: limits.body_timeout,
            in_flight: Semaphore::new(limits.bodies_in_flight.max(1)),
        })
    }

    fn too_large(&self) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!(
                "request body over {} bytes ({} MiB)",
                self.max_bytes,
                self.max_bytes / (1024 * 1024)
            ),
        )
    }
}

/// The middleware: reads the body as the module docs say, or answers the refusal.
pub async fn read_body(
    State(limits): State<Arc<BodyLimits>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let declared = body.size_hint().lower();
    if usize::try_from(declared).map_or(true, |n| n > limits.max_bytes) {
        return limits.too_large().into_response();
    }
    let Ok(_permit) = limits.in_flight.acquire().await else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the daemon is shutting down",
        )
        .into_response();
    };
    match tokio::time::timeout(limits.timeout, axum::body::to_bytes(body, limits.max_bytes)).await {
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "request body not received within {} s",
                limits.timeout.as_secs_f64()
            ),
        )
        .into_response(),
        Ok(Err(e)) if is_length_limit(&e) => limits.too_large().into_response(),
        Ok(Err(e)) => {
            ApiError::bad_request(format!("reading the request body: {e}")).into_response()
        }
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    }
}

/// Whether a body error is [`http_body_util::LengthLimitError`] somewhere in its chain.
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}
