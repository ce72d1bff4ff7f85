//! The blocking client: a server's base URL, an optional bearer token and a ureq agent
//! ([`crate::transport::agent`]). Each route the clients call is a method that sends the
//! wire type and returns the wire type of the answer; any other route is reached with
//! [`Client::get`] and [`Client::post`].

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ClientError;
use crate::transport;
use crate::wire::{
    AccessCheck, CaptureBody, ConsistencyProof, Decision, DenyList, Entries, Head, InclusionProof, InquiryView, Leaves,
    NewHold, NewInquiry, NewPayment, NewRefund, NewTopup, NewTransitTap, PaymentView, ReceiptDetail, TopupView,
    TransitSync, TransitTapView, Transparency, TrialBalance, Upload, Uploaded,
};

/// A blocking client of one Kartu server.
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

/// An answer as it came: the status, the content type and the body's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The `Content-Type` header (empty when there is none).
    pub content_type: String,
    /// The body as text.
    pub body: String,
}

impl Client {
    /// A client of `base` (`http(s)://HOST[:PORT]`), trusting only the CA certificates of
    /// `ca_file` for `https://` (else the system's roots), giving up on a request after
    /// `timeout` (none: never).
    pub fn new(base: &str, ca_file: Option<&Path>, timeout: Option<Duration>) -> Result<Client, ClientError> {
        transport::check_url(base).map_err(ClientError::Config)?;
        let agent = transport::agent(ca_file, timeout).map_err(ClientError::Config)?;
        Ok(Client::with_agent(agent, base))
    }

    /// A client of `base` over an agent made elsewhere (tests, a shared pool). The URL is
    /// taken as given.
    pub fn with_agent(agent: ureq::Agent, base: &str) -> Client {
        Client { agent, base: base.trim_end_matches('/').to_owned(), token: None }
    }

    /// The same client, sending `token` as its bearer token.
    pub fn with_token(&self, token: &str) -> Client {
        Client { token: Some(token.to_owned()), ..self.clone() }
    }

    /// The base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The agent (for a caller that needs a request this client does not make).
    pub fn agent(&self) -> &ureq::Agent {
        &self.agent
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn failed(&self, e: &ureq::Error) -> ClientError {
        transport::classify(&self.base, e).into()
    }

    /// `GET path`, the answer whatever its status; an error only when there is none.
    pub fn get_raw(&self, path: &str) -> Result<RawAnswer, ClientError> {
        let mut request = self.agent.get(&self.url(path));
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let response = request.call().map_err(|e| self.failed(&e))?;
        self.read(&format!("GET {path}"), response)
    }

    /// `POST path` with a JSON body and an `Idempotency-Key`, the answer whatever its
    /// status; an error only when there is none.
    pub fn post_raw(&self, path: &str, key: &str, body: &impl Serialize) -> Result<RawAnswer, ClientError> {
        let mut request = self.agent.post(&self.url(path)).header("Idempotency-Key", key);
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let response = request.send_json(body).map_err(|e| self.failed(&e))?;
        self.read(&format!("POST {path}"), response)
    }

    /// `POST path` with `body` sent as it is, of `content_type` (a fuzzer's bytes), the
    /// answer whatever its status.
    pub fn post_bytes(&self, path: &str, key: &str, content_type: &str, body: &[u8]) -> Result<RawAnswer, ClientError> {
        let mut request =
            self.agent.post(&self.url(path)).header("Idempotency-Key", key).header("Content-Type", content_type);
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let response = request.send(body).map_err(|e| self.failed(&e))?;
        self.read(&format!("POST {path}"), response)
    }

    fn read(&self, call: &str, mut response: ureq::http::Response<ureq::Body>) -> Result<RawAnswer, ClientError> {
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let body = response.body_mut().read_to_string().map_err(|e| match self.failed(&e) {
            ClientError::Offline(m) => ClientError::Offline(format!("{call}: reading the answer: {m}")),
            other => other,
        })?;
        Ok(RawAnswer { status, content_type, body })
    }

    /// `GET path`: the body's text on a 2xx, else the error answer.
    pub fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let answer = self.get_raw(path)?;
        success(&format!("GET {path}"), answer)
    }

    /// `GET path`, parsed as `T` on a 2xx.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let call = format!("GET {path}");
        decode(&call, &success(&call, self.get_raw(path)?)?)
    }

    /// `POST path` with `body` and the idempotency `key`, parsed as `T` on a 2xx.
    pub fn post<T: DeserializeOwned>(&self, path: &str, key: &str, body: &impl Serialize) -> Result<T, ClientError> {
        let call = format!("POST {path}");
        decode(&call, &success(&call, self.post_raw(path, key, body)?)?)
    }
}

/// The body of a 2xx answer, or the error answer.
fn success(call: &str, answer: RawAnswer) -> Result<String, ClientError> {
    if (200..300).contains(&answer.status) {
        Ok(answer.body)
    } else {
        Err(ClientError::answer(call.to_owned(), answer.status, &answer.body))
    }
}

/// Parses a 2xx body as the documented type.
pub(crate) fn decode<T: DeserializeOwned>(call: &str, body: &str) -> Result<T, ClientError> {
    serde_json::from_str(body).map_err(|e| ClientError::Decode { call: call.to_owned(), reason: e.to_string() })
}

/// The routes the clients call, typed.
impl Client {
    /// `GET /healthz`: whether the server answers (any status is an answer).
    pub fn healthz(&self) -> Result<u16, ClientError> {
        Ok(self.get_raw("/healthz")?.status)
    }

    /// `POST /v1/payments`.
    pub fn pay(&self, key: &str, body: &NewPayment) -> Result<PaymentView, ClientError> {
        self.post("/v1/payments", key, body)
    }

    /// `POST /v1/payments/{id}/refunds`.
    pub fn refund(&self, payment_id: &str, key: &str, body: &NewRefund) -> Result<PaymentView, ClientError> {
        self.post(&format!("/v1/payments/{payment_id}/refunds"), key, body)
    }

    /// `POST /v1/holds`.
    pub fn hold(&self, key: &str, body: &NewHold) -> Result<PaymentView, ClientError> {
        self.post("/v1/holds", key, body)
    }

    /// `POST /v1/holds/{id}/capture`.
    pub fn capture(&self, hold_id: &str, key: &str, body: &CaptureBody) -> Result<PaymentView, ClientError> {
        self.post(&format!("/v1/holds/{hold_id}/capture"), key, body)
    }

    /// `POST /v1/topups`.
    pub fn topup(&self, key: &str, body: &NewTopup) -> Result<TopupView, ClientError> {
        self.post("/v1/topups", key, body)
    }

    /// `POST /v1/balance-inquiries`.
    pub fn balance_inquiry(&self, key: &str, body: &NewInquiry) -> Result<InquiryView, ClientError> {
        self.post("/v1/balance-inquiries", key, body)
    }

    /// `POST /v1/access-checks`.
    pub fn access_check(&self, key: &str, body: &AccessCheck) -> Result<Decision, ClientError> {
        self.post("/v1/access-checks", key, body)
    }

    /// `GET /v1/offline/head`.
    pub fn offline_head(&self) -> Result<Head, ClientError> {
        self.get("/v1/offline/head")
    }

    /// `GET /v1/offline/deny-list`.
    pub fn deny_list(&self) -> Result<DenyList, ClientError> {
        self.get("/v1/offline/deny-list")
    }

    /// `POST /v1/offline/journals`.
    pub fn upload_journal(&self, key: &str, body: &Upload) -> Result<Uploaded, ClientError> {
        self.post("/v1/offline/journals", key, body)
    }

    /// `POST /v1/transit/taps`: a card at a validator.
    pub fn transit_tap(&self, key: &str, body: &NewTransitTap) -> Result<TransitTapView, ClientError> {
        self.post("/v1/transit/taps", key, body)
    }

    /// `GET /v1/transit/sync`: what a validator needs to price taps offline.
    pub fn transit_sync(&self) -> Result<TransitSync, ClientError> {
        self.get("/v1/transit/sync")
    }

    /// `GET /v1/audit/leaves?from=…&limit=…`.
    pub fn leaves(&self, from: u64, limit: u64) -> Result<Leaves, ClientError> {
        self.get(&format!("/v1/audit/leaves?from={from}&limit={limit}"))
    }

    /// `GET /v1/audit/entries?limit=…` (and the cursor of the previous page).
    pub fn entries(&self, limit: u64, cursor: Option<&str>) -> Result<Entries, ClientError> {
        match cursor {
            Some(c) => self.get(&format!("/v1/audit/entries?limit={limit}&cursor={c}")),
            None => self.get(&format!("/v1/audit/entries?limit={limit}")),
        }
    }

    /// `GET /v1/audit/trial-balance`.
    pub fn trial_balance(&self) -> Result<TrialBalance, ClientError> {
        self.get("/v1/audit/trial-balance")
    }

    /// `GET /v1/audit/checkpoints/latest`: the signed note.
    pub fn latest_checkpoint(&self) -> Result<String, ClientError> {
        self.get_text("/v1/audit/checkpoints/latest")
    }

    /// `GET /v1/audit/public-key`: the checkpoint verifier key line.
    pub fn public_key(&self) -> Result<String, ClientError> {
        Ok(self.get_text("/v1/audit/public-key")?.trim().to_owned())
    }

    /// `GET /v1/audit/public-keys`: the log's checkpoint keys, oldest first.
    pub fn public_keys(&self) -> Result<crate::wire::CheckpointKeys, ClientError> {
        self.get("/v1/audit/public-keys")
    }

    /// `GET /v1/audit/proofs/consistency?first=…&second=…`.
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<ConsistencyProof, ClientError> {
        self.get(&format!("/v1/audit/proofs/consistency?first={first}&second={second}"))
    }

    /// `GET /v1/audit/proofs/inclusion?leaf_index=…&tree_size=…`.
    pub fn inclusion_proof(&self, leaf_index: u64, tree_size: u64) -> Result<InclusionProof, ClientError> {
        self.get(&format!("/v1/audit/proofs/inclusion?leaf_index={leaf_index}&tree_size={tree_size}"))
    }

    /// `GET /v1/receipts/{seq}?h=…`: a receipt's leaf, for anyone holding its leaf hash.
    pub fn receipt(&self, seq: i64, leaf_hash: &str) -> Result<ReceiptDetail, ClientError> {
        self.get(&format!("/v1/receipts/{seq}?h={leaf_hash}"))
    }

    /// `GET /v1/transparency` (today's totals, or those of `date`, YYYY-MM-DD).
    pub fn transparency(&self, date: Option<&str>) -> Result<Transparency, ClientError> {
        match date {
            Some(d) => self.get(&format!("/v1/transparency?date={d}")),
            None => self.get("/v1/transparency"),
        }
    }
}
