//! The async face of [`Client`]: each call runs the blocking client on tokio's blocking
//! pool, so an async program (the bench's set-up) awaits it without stalling its workers.
//! One HTTP stack, two faces: the rules (classification, problem parsing) are written once.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::blocking::Client;
use crate::error::ClientError;

/// An async client of one Kartu server (cheap to clone).
#[derive(Debug, Clone)]
pub struct AsyncClient {
    inner: Arc<Client>,
}

impl AsyncClient {
    /// The async face of `client`.
    pub fn new(client: Client) -> AsyncClient {
        AsyncClient { inner: Arc::new(client) }
    }

    /// The same client, sending `token` as its bearer token.
    pub fn with_token(&self, token: &str) -> AsyncClient {
        AsyncClient::new(self.inner.with_token(token))
    }

    /// The blocking client underneath.
    pub fn blocking(&self) -> &Client {
        &self.inner
    }

    /// Runs `call` with the blocking client on tokio's blocking pool.
    pub async fn run<T, F>(&self, call: F) -> Result<T, ClientError>
    where
        T: Send + 'static,
        F: FnOnce(&Client) -> Result<T, ClientError> + Send + 'static,
    {
        let client = self.inner.clone();
        tokio::task::spawn_blocking(move || call(&client))
            .await
            .map_err(|e| ClientError::Broken(format!("the client's blocking task failed: {e}")))?
    }

    /// `GET path`, parsed as `T` on a 2xx ([`Client::get`]).
    pub async fn get<T: DeserializeOwned + Send + 'static>(&self, path: &str) -> Result<T, ClientError> {
        let path = path.to_owned();
        self.run(move |c| c.get(&path)).await
    }

    /// `POST path` with `body` and the idempotency `key`, parsed as `T` on a 2xx
    /// ([`Client::post`]).
    pub async fn post<T, B>(&self, path: &str, key: &str, body: B) -> Result<T, ClientError>
    where
        T: DeserializeOwned + Send + 'static,
        B: Serialize + Send + 'static,
    {
        let (path, key) = (path.to_owned(), key.to_owned());
        self.run(move |c| c.post(&path, &key, &body)).await
    }
}
