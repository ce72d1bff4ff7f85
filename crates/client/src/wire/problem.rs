//! The error document every endpoint answers with (`application/problem+json`).

use serde::{Deserialize, Serialize};

/// The problem document (RFC 9457) plus `code`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:kartu:problem:<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Short summary of the problem type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// This occurrence.
    pub detail: String,
    /// Stable code.
    pub code: String,
    /// The request's id, as in the `Request-Id` header and the server's log: quote it when
    /// reporting the problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}
