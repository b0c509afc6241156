//! Every error is an [`ErrorBody`], whoever makes it.
//!
//! Handlers answer [`ApiError`]s, which are already JSON. The other errors come from
//! the framework: a JSON body that does not decode (mapped by [`ApiJson`]), a query or
//! path that does not parse, a method a route does not have, a route that does not
//! exist. [`json_errors`] is the net under all of them: an answer of 400 or above that
//! is not JSON becomes an `ErrorBody` with the same status, the framework's text as
//! `error` and the code of the status ([`code_for`]).

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

use super::server::ApiError;
use super::types::ErrorBody;

/// Longest framework error text kept (they are one line; this only bounds the read).
const MAX_TEXT: usize = 16 * 1024;

/// The `code` of an [`ErrorBody`] for an HTTP status, as `docs/api.md` lists them.
pub fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad-request",
        403 => "forbidden",
        404 => "not-found",
        405 => "method-not-allowed",
        408 => "timeout",
        409 => "conflict",
        413 => "too-large",
        415 => "unsupported-media-type",
        422 => "invalid",
        426 => "upgrade-required",
        502 => "unreachable",
        503 => "unavailable",
        _ if status.is_server_error() => "internal",
        _ => "bad-request",
    }
}

/// A JSON request body whose refusals are [`ApiError`]s: 415 `unsupported-media-type`
/// without `Content-Type: application/json`, 400 `bad-request` for JSON that does not
/// parse or does not have the request's shape, 413 `too-large` over the body limit.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(rejected(rejection)),
        }
    }
}

fn rejected(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code_for(StatusCode::UNSUPPORTED_MEDIA_TYPE),
            "the body must be JSON, sent with `Content-Type: application/json`",
        ),
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::bad_request(format!("the body is not valid JSON: {}", e.body_text()))
        }
        JsonRejection::JsonDataError(e) => ApiError::bad_request(format!(
            "the body is not this request's JSON: {}",
            e.body_text()
        )),
        other => {
            let status = other.status();
            ApiError::new(status, code_for(status), other.body_text())
        }
    }
}

/// Whether an answer already is JSON.
fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The net (a `map_response` layer over the whole router): a non-JSON error answer
/// becomes an [`ErrorBody`] with the same status, as the module docs say.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if status.as_u16() < 400 || is_json(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_TEXT).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let error = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    let body = ErrorBody {
        error,
        code: code_for(status).to_string(),
        problems: Vec::new(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    match serde_json::to_vec(&body) {
        Ok(json) => Response::from_parts(parts, Body::from(json)),
        Err(_) => (status, Json(body)).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_status_has_its_code() {
        for (status, code) in [
            (400, "bad-request"),
            (403, "forbidden"),
            (404, "not-found"),
            (405, "method-not-allowed"),
            (408, "timeout"),
            (409, "conflict"),
            (413, "too-large"),
            (415, "unsupported-media-type"),
            (422, "invalid"),
            (426, "upgrade-required"),
            (500, "internal"),
            (502, "unreachable"),
            (503, "unavailable"),
            (504, "internal"),
            (418, "bad-request"),
        ] {
            assert_eq!(
                code_for(StatusCode::from_u16(status).unwrap()),
                code,
                "{status}"
            );
        }
    }

    #[tokio::test]
    async fn a_plain_text_error_becomes_an_error_body_and_json_is_left_alone() {
        let plain = (StatusCode::METHOD_NOT_ALLOWED, "").into_response();
        let out = json_errors(plain).await;
        assert_eq!(out.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(out.headers()[header::CONTENT_TYPE], "application/json");
        let bytes = axum::body::to_bytes(out.into_body(), 1 << 20)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["code"], "method-not-allowed");
        assert_eq!(v["error"], "method not allowed");

        let text = (
            StatusCode::BAD_REQUEST,
            "Failed to deserialize query string",
        )
            .into_response();
        let bytes = axum::body::to_bytes(json_errors(text).await.into_body(), 1 << 20)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"], "Failed to deserialize query string");
        assert_eq!(v["code"], "bad-request");

        let ours = ApiError::not_found("vm/x not found").into_response();
        let bytes = axum::body::to_bytes(json_errors(ours).await.into_body(), 1 << 20)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"], "vm/x not found");

        let ok = (StatusCode::OK, "plain success").into_response();
        let bytes = axum::body::to_bytes(json_errors(ok).await.into_body(), 1 << 20)
            .await
            .unwrap();
        assert_eq!(&bytes[..], b"plain success");
    }
}
