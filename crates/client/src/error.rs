//! What a call can end in besides its answer: no answer ([`ClientError::Offline`], or
//! [`ClientError::Broken`] for a connection that is wrong), an error answer with the
//! server's problem document (its stable `code`), or an answer that is not what the API
//! documents.

use crate::transport::Failure;
use crate::wire::Problem;

/// Why a call gave no typed answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached (refused, reset, timed out, name unknown): a
    /// terminal may decide offline.
    #[error("{0}")]
    Offline(String),
    /// The connection is wrong (TLS, certificate, URL, protocol): a configuration error,
    /// never "offline".
    #[error("{0}")]
    Broken(String),
    /// The server answered an error status with its problem document.
    #[error("{call}: {status}: {} ({})", problem.detail, problem.code)]
    Problem {
        /// The call, e.g. `POST /v1/payments`.
        call: String,
        /// The HTTP status.
        status: u16,
        /// The problem document (RFC 9457 with `code`), boxed to keep the error small.
        problem: Box<Problem>,
    },
    /// The server answered an error status without a problem document (not Kartu, or a
    /// proxy in front of it).
    #[error("{call}: {status}: {body}")]
    Status {
        /// The call.
        call: String,
        /// The HTTP status.
        status: u16,
        /// The body as text.
        body: String,
    },
    /// A success status whose body is not the documented JSON.
    #[error("{call}: the answer is not the documented JSON: {reason}")]
    Decode {
        /// The call.
        call: String,
        /// What the parser said.
        reason: String,
    },
    /// The client was set up wrongly: a URL that is not `http(s)://HOST`, a CA file that
    /// cannot be read.
    #[error("{0}")]
    Config(String),
}

impl ClientError {
    /// The problem's stable `code`, when the server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Problem { problem, .. } => Some(&problem.code),
            _ => None,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Problem { status, .. } | ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The problem document, when the server answered with one.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ClientError::Problem { problem, .. } => Some(problem.as_ref()),
            _ => None,
        }
    }

    /// Whether the server could not be reached, or answered that it cannot serve now (a
    /// 5xx): what a terminal treats as offline.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ClientError::Offline(_)) || self.status().is_some_and(|s| s >= 500)
    }

    /// The error of an error answer: the problem document when the body is one, the text
    /// otherwise.
    pub(crate) fn answer(call: String, status: u16, body: &str) -> ClientError {
        match serde_json::from_str::<Problem>(body) {
            Ok(problem) => ClientError::Problem { call, status, problem: Box::new(problem) },
            Err(_) => ClientError::Status { call, status, body: body.to_owned() },
        }
    }
}

impl From<Failure> for ClientError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Offline(m) => ClientError::Offline(m),
            Failure::Broken(m) => ClientError::Broken(m),
        }
    }
}
