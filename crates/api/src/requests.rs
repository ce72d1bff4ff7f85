//! A request's identity for the log: its id and, once its token is looked up, its
//! credential. The metrics middleware makes one per request; the bearer token extractor
//! records the credential in it.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// A request's id and, once its token is looked up, its credential: what the request log
/// line says about who asked. The id comes from the caller's `Request-Id` header when it is
/// a plain token (a load balancer's), else it is made here; every answer carries it in
/// `Request-Id`, and every problem+json in `request_id`.
#[derive(Debug, Clone)]
pub struct RequestLog {
    /// The request's id.
    pub id: Arc<str>,
    credential: Arc<AtomicI64>,
}

/// The header that carries a request's id, both ways.
pub const REQUEST_ID: &str = "request-id";

impl RequestLog {
    pub(crate) fn new(incoming: Option<&str>) -> RequestLog {
        static PREFIX: OnceLock<String> = OnceLock::new();
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = match incoming.filter(|v| {
            (1..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }) {
            Some(v) => v.to_owned(),
            None => {
                let prefix = PREFIX.get_or_init(|| {
                    let mut bytes = [0u8; 4];
                    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
                    hex::encode(bytes)
                });
                format!("{prefix}-{:010x}", NEXT.fetch_add(1, Ordering::Relaxed))
            }
        };
        RequestLog { id: id.into(), credential: Arc::new(AtomicI64::new(0)) }
    }

    /// Records the credential that the request's token named.
    pub fn set_credential(&self, id: i64) {
        self.credential.store(id, Ordering::Relaxed);
    }

    pub(crate) fn credential(&self) -> Option<i64> {
        Some(self.credential.load(Ordering::Relaxed)).filter(|id| *id > 0)
    }
}
