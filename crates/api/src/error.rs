//! RFC 9457 problem details with a stable `code` for every error the API returns.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use ledger::domain::Rejection;
use ledger::LedgerError;

/// An error answered as `application/problem+json`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable snake_case code; clients branch on it.
    pub code: &'static str,
    /// Human explanation of this occurrence.
    pub detail: String,
}

pub use client::wire::Problem;

/// The media type of every error (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError { status, code, detail: detail.into() }
    }
    /// A 400 Bad Request: the request itself is malformed (a header, a query).
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, detail)
    }
    /// A 422 Unprocessable Content: well-formed, but a field's value is refused.
    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }
    /// A 404 Not Found: the path names nothing this caller may see.
    pub fn not_found(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, detail)
    }
    /// 403 for a caller outside its role or scope.
    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }
    /// A 409 Conflict: the request contradicts what was already done.
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, detail)
    }
    /// 500; the detail is logged, not returned.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %detail, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; it was logged")
    }
}

fn title(status: StatusCode) -> String {
    status.canonical_reason().unwrap_or("Error").to_owned()
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        let body = Problem {
            type_: format!("urn:kartu:problem:{}", self.code),
            title: title(self.status),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_owned(),
            request_id: None,
        };
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response.insert_header((actix_web::http::header::RETRY_AFTER, "1"));
        }
        response.content_type(PROBLEM_JSON).json(body)
    }
}

/// The HTTP status of a ledger rejection.
pub fn rejection_status(r: Rejection) -> StatusCode {
    use Rejection::*;
    match r {
        IdempotencyConflict | CardReplay | HoldClosed | HoldExpired => StatusCode::CONFLICT,
        PaymentNotFound | HoldNotFound | AccountNotFound => StatusCode::NOT_FOUND,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> ApiError {
        match e {
            LedgerError::Rejected(r) => ApiError::new(rejection_status(r), r.code(), r.to_string()),
            LedgerError::Busy => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "the ledger is busy; retry with the same key")
            }
            LedgerError::Stopped => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the ledger is shutting down; retry")
            }
            // The kinds `store` classified: the API maps the kind, never the message. After
            // each, nothing of the request's batch was written, so a retry with the same key
            // never charges twice.
            LedgerError::Full(detail) => {
                tracing::error!(error = %detail, "storage full");
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "storage_full",
                    "the database's disk is full; retry later with the same Idempotency-Key",
                )
            }
            LedgerError::Unavailable(detail) => {
                tracing::error!(error = %detail, "storage error");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the database failed or cannot be reached; retry with the same Idempotency-Key",
                )
            }
            LedgerError::Conflict(detail) => {
                tracing::warn!(error = %detail, "storage conflict");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_conflict",
                    "a concurrent request changed the same records; retry with the same Idempotency-Key",
                )
            }
            LedgerError::Invariant(detail) => ApiError::internal(format!("broken invariant: {detail}")),
            other => ApiError::internal(other),
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> ApiError {
        ApiError::internal(e)
    }
}

/// Errors of JSON bodies: syntax is 400, shape and types 422, size 413, media type 415.
pub fn json_error(err: actix_web::error::JsonPayloadError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as J;
    let e = match &err {
        J::OverflowKnownLength { .. } | J::Overflow { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", err.to_string())
        }
        J::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ),
        J::Deserialize(d) if d.is_data() => ApiError::unprocessable("invalid_body", d.to_string()),
        J::Deserialize(d) if d.is_eof() && d.line() == 1 && d.column() == 0 => {
            ApiError::bad_request("malformed_json", "the body is empty; send a JSON object")
        }
        J::Deserialize(d) => ApiError::bad_request("malformed_json", d.to_string()),
        J::Payload(actix_web::error::PayloadError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", e.to_string())
        }
        other => ApiError::bad_request("malformed_json", other.to_string()),
    };
    e.into()
}

/// Errors of query strings: 400 `invalid_query`.
pub fn query_error(err: actix_web::error::QueryPayloadError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    ApiError::bad_request("invalid_query", err.to_string()).into()
}

/// Errors of path parameters: 404 `not_found` (an id that is not a number names nothing).
pub fn path_error(err: actix_web::error::PathError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    ApiError::not_found("not_found", err.to_string()).into()
}

/// Errors of set-up (`kartu init`, `kartu serve`'s configuration, keys and certificates),
/// with a message for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);
