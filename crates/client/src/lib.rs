//! `kartu-client`: how a program talks to a Kartu server. Only this crate speaks HTTP as a
//! client (the bench's load loop keeps its own minimal writer for speed; the API's test
//! suite has its own).
//!
//! - [`wire`]: the API's request and response bodies, one definition each, shared with the
//!   server (`kartu-api` derives its OpenAPI document from them);
//! - [`transport`]: ureq over rustls, the CA file, and the sorting of a failed request into
//!   offline or broken (feature `http`, on by default);
//! - [`Client`]: a blocking client of one server with a bearer token, a method per route
//!   the clients call, errors typed ([`ClientError`]: the problem's `code` and status, or
//!   offline, or broken);
//! - [`AsyncClient`]: the same calls for async code, run on tokio's blocking pool.

pub mod wire;

#[cfg(feature = "http")]
mod blocking;
#[cfg(feature = "http")]
mod error;
#[cfg(feature = "http")]
mod nonblocking;
#[cfg(feature = "http")]
pub mod transport;

#[cfg(feature = "http")]
pub use blocking::{Client, RawAnswer};
#[cfg(feature = "http")]
pub use error::ClientError;
#[cfg(feature = "http")]
pub use nonblocking::AsyncClient;
#[cfg(feature = "http")]
pub use transport::{Failure, CA_FILE_ENV};
