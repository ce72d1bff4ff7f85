//! Kartu's HTTP API (SPEC §8–§10): actix-web over the ledger, the audit log and the card
//! checks. Only this crate knows HTTP. Handlers check the caller's role and scope, parse
//! and check the body, verify the tap, and hand the ledger one request; the ledger's
//! writer decides (funds, limits, replays) and its answer is the response.

pub mod access;
pub mod audit;
pub mod auth;
pub mod error;
pub mod merchant;
pub mod metrics;
pub mod offline;
pub mod openapi;
pub mod operator;
pub mod pages;
pub mod requests;
pub mod rotate;
pub mod server;
pub mod taps;
pub mod tls;
pub mod transit;
pub mod transparency;
pub mod webhooks;
pub mod wire;

use std::collections::HashMap;
use std::sync::Mutex;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse, ResponseError};
use ledger::domain::{AccountId, AccountKind};
use ledger::money::Currency;
use ledger::registry::Merchant;
use ledger::Ledger;

use crate::error::ApiError;

/// Largest request body accepted.
pub const BODY_LIMIT_BYTES: usize = 16 * 1024;

/// Installation settings the API needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The installation's currency (used when a request omits `currency`).
    pub currency: Currency,
    /// Largest amount of one payment, top-up or transfer, minor units.
    pub amount_max_minor: i64,
    /// Longest hold.
    pub hold_minutes_max: i64,
    /// The checkpoint verifier key line (`<name>+<id>+<key>`), served to anyone.
    pub verifier_key: Option<String>,
    /// The log's first checkpoint key, where the chain of key rotations starts (the data
    /// directory's `checkpoint.keys`, else `verifier_key`).
    pub first_checkpoint_key: Option<String>,
    /// How often `server` voids expired holds (`None`: never).
    pub hold_sweep_interval: Option<std::time::Duration>,
    /// How often `server` sends due webhooks (`None`: never).
    pub webhook_poll: Option<std::time::Duration>,
    /// The first webhook retry's wait; doubled at each next one.
    pub webhook_retry_base: std::time::Duration,
    /// Money limits (`[limits]` in `kartu.toml`).
    pub limits: MoneyLimits,
    /// An agent float above this (minor units) waits for a second operator's approval.
    pub float_approval_threshold_minor: i64,
    /// Requests per second each credential may make (0: no limit), and the burst.
    pub rate_limit: (u32, u32),
    /// Whether the rate limit applies to requests from this machine too.
    pub rate_limit_loopback: bool,
    /// The bearer token `/metrics` requires (none: open).
    pub metrics_token: Option<String>,
    /// How long a client may take to send a request's headers (then `408`).
    pub request_timeout: std::time::Duration,
    /// How long a client may take to send a request's body (then `408`).
    pub body_timeout: std::time::Duration,
    /// Most open connections per worker.
    pub max_connections: usize,
    /// How long `/v1/transparency` may answer today's totals from its cache.
    pub transparency_cache: std::time::Duration,
    /// The certificate `server` serves HTTPS with (none: plain HTTP).
    pub tls: Option<std::sync::Arc<tls::ReloadingCert>>,
    /// Where `server` serves `/metrics` alone (plain HTTP); the main listener then answers
    /// 404 for it. None: `/metrics` is on the main listener.
    pub metrics_listen: Option<String>,
    /// The city's time zone: the days of the books and the times the pages show.
    pub timezone: chrono_tz::Tz,
    /// How old the oldest unsigned leaf may be before `/readyz` says the signer is behind.
    pub checkpoint_lag_max: std::time::Duration,
    /// How long one writer batch may run before `/readyz` says the writer is stuck.
    pub writer_stall_max: std::time::Duration,
}

/// The installation's money limits, minor units: an amount above them is refused with
/// `422 amount_too_large` and writes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoneyLimits {
    /// Largest card payment, hold or offline payment.
    pub payment_max_minor: i64,
    /// Largest top-up.
    pub topup_max_minor: i64,
    /// Largest funding of an agent's float.
    pub float_funding_max_minor: i64,
    /// Most the city covers in shortfalls of one merchant's offline payments in 24 hours.
    pub offline_risk_per_merchant_minor: i64,
    /// Oldest offline record accepted when a terminal's limits do not say (µs).
    pub offline_max_age_us: i64,
}

impl Default for MoneyLimits {
    fn default() -> Self {
        MoneyLimits {
            payment_max_minor: 1_000_000_000,
            topup_max_minor: 200_000_000,
            float_funding_max_minor: 100_000_000_000,
            offline_risk_per_merchant_minor: 500_000_000,
            offline_max_age_us: 72 * 3600 * 1_000_000,
        }
    }
}

/// Refuses an amount above a configured limit.
pub fn within(amount: &ledger::money::Amount, max_minor: i64, what: &str) -> Result<(), ApiError> {
    if amount.minor() > max_minor {
        return Err(ApiError::unprocessable(
            "amount_too_large",
            format!("{what} may be at most {}", amount.currency().format_minor(max_minor)),
        ));
    }
    Ok(())
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            currency: Currency::IDR,
            amount_max_minor: ledger::money::AMOUNT_MAX_MINOR,
            hold_minutes_max: 7 * 24 * 60,
            verifier_key: None,
            first_checkpoint_key: None,
            hold_sweep_interval: None,
            webhook_poll: None,
            webhook_retry_base: std::time::Duration::from_secs(1),
            float_approval_threshold_minor: server::DEFAULT_FLOAT_APPROVAL_THRESHOLD_MINOR,
            rate_limit: (0, 0),
            rate_limit_loopback: false,
            metrics_token: None,
            request_timeout: std::time::Duration::from_secs(5),
            body_timeout: std::time::Duration::from_secs(10),
            max_connections: 25_000,
            transparency_cache: std::time::Duration::from_secs(5),
            tls: None,
            metrics_listen: None,
            limits: MoneyLimits::default(),
            timezone: chrono_tz::Asia::Jakarta,
            checkpoint_lag_max: std::time::Duration::from_secs(10),
            writer_stall_max: std::time::Duration::from_secs(10),
        }
    }
}

/// Everything a handler needs; shared by all workers.
pub struct AppState {
    /// The ledger.
    pub ledger: Ledger,
    /// The installation's settings (currency, limits, exposure) from kartu.toml.
    pub settings: Settings,
    /// Card keys for tap verification.
    pub taps: taps::TapKeys,
    /// Key of the NIK's keyed hash (HMAC-SHA-256); NIKs are never stored in clear.
    pub nik_key: ring::hmac::Key,
    /// Prometheus metrics.
    pub metrics: metrics::Metrics,
    merchants: Mutex<HashMap<i64, Merchant>>,
    system: Mutex<HashMap<(AccountKind, Currency), AccountId>>,
    /// Token buckets of the per-credential rate limit: (tokens, last refill).
    buckets: Mutex<HashMap<i64, (f64, std::time::Instant)>>,
    /// `/v1/transparency` answers by day.
    pub transparency: transparency::TransparencyCache,
    /// Where audit, statement, transparency and report reads go: a streaming replica's
    /// read-only handle, or the ledger itself.
    pub reports: Ledger,
    /// Whether `reports` is a replica.
    pub replica: bool,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl AppState {
    /// A new state.
    pub fn new(ledger: Ledger, settings: Settings, taps: taps::TapKeys, nik_key: &[u8]) -> AppState {
        AppState {
            settings,
            taps,
            nik_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, nik_key),
            metrics: metrics::Metrics::new(),
            merchants: Mutex::new(HashMap::new()),
            system: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            transparency: transparency::TransparencyCache::default(),
            reports: ledger.clone(),
            replica: false,
            ledger,
        }
    }

    /// The same state with audit, statement, transparency and report reads on `replica`
    /// (a read-only handle on a streaming replica); `None` keeps them on the ledger.
    pub fn with_replica(mut self, replica: Option<Ledger>) -> AppState {
        if let Some(r) = replica {
            self.reports = r;
            self.replica = true;
        }
        self
    }

    /// A merchant (merchants never change, so they are cached).
    pub fn merchant(&self, id: i64) -> Result<Option<Merchant>, ApiError> {
        if let Some(m) = self.merchants.lock().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(Some(m));
        }
        let found = self.ledger.registry(|r| r.merchant(id))?;
        if let (Some(m), Ok(mut cache)) = (&found, self.merchants.lock()) {
            cache.insert(id, m.clone());
        }
        Ok(found)
    }

    /// A system account (fee revenue, city bank, suspense...), cached.
    pub fn system_account(&self, kind: AccountKind, currency: Currency) -> Result<AccountId, ApiError> {
        if let Some(id) = self.system.lock().ok().and_then(|m| m.get(&(kind, currency)).copied()) {
            return Ok(id);
        }
        let id = self.ledger.system_account(kind, currency)?.id;
        if let Ok(mut cache) = self.system.lock() {
            cache.insert((kind, currency), id);
        }
        Ok(id)
    }

    /// The per-credential rate limit (a token bucket): `429 rate_limited` with
    /// `Retry-After` beyond it. Requests from this machine pass unless configured otherwise.
    pub fn admit(&self, credential: i64, loopback: bool) -> Result<(), ApiError> {
        let (rate, burst) = self.settings.rate_limit;
        if rate == 0 || (loopback && !self.settings.rate_limit_loopback) {
            return Ok(());
        }
        let now = std::time::Instant::now();
        let mut buckets = self.buckets.lock().map_err(|_| ApiError::internal("rate limiter"))?;
        let (tokens, last) = buckets.entry(credential).or_insert((f64::from(burst.max(1)), now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * f64::from(rate)).min(f64::from(burst.max(1)));
        *last = now;
        if *tokens < 1.0 {
            return Err(ApiError::new(
                actix_web::http::StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("at most {rate} requests a second per credential; retry after the Retry-After seconds"),
            ));
        }
        *tokens -= 1.0;
        Ok(())
    }

    /// The keyed hash of a NIK.
    pub fn nik_hash(&self, nik: &str) -> Vec<u8> {
        ring::hmac::sign(&self.nik_key, nik.as_bytes()).as_ref().to_vec()
    }
}

/// Registers every route, the JSON limits and the error handlers.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::JsonConfig::default().limit(BODY_LIMIT_BYTES).error_handler(error::json_error))
        .app_data(web::QueryConfig::default().error_handler(error::query_error))
        .app_data(web::PathConfig::default().error_handler(error::path_error))
        .configure(operator::routes)
        .configure(operator::approvals::routes)
        .configure(merchant::routes)
        .configure(access::routes)
        .configure(audit::routes)
        .configure(offline::routes)
        .configure(webhooks::routes)
        .configure(transit::routes)
        .configure(metrics::routes)
        .configure(openapi::routes)
        .configure(pages::routes)
        .default_service(web::to(not_found));
}

/// Middleware: refuses any request that declares a body larger than [`BODY_LIMIT_BYTES`]
/// with 413 `body_too_large` (JSON bodies are limited by their extractor too; this covers
/// the writes that take no body, which would otherwise accept any size), and gives the body
/// `settings.body_timeout` to arrive: a client that stalls mid-body gets `408
/// request_timeout` instead of holding a worker's connection for ever.
pub async fn limit_body<B: MessageBody + 'static>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A terminal's offline journal is the one larger body (its own limit, per upload).
    let limit = if req.path() == "/v1/offline/journals" { offline::UPLOAD_BYTES_MAX } else { BODY_LIMIT_BYTES };
    if declared.is_some_and(|n| n > limit as u64) {
        let e = ApiError::new(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("a request body here may be at most {limit} bytes"),
        );
        return Ok(req.into_response(e.error_response()).map_into_right_body());
    }
    // Only a request that carries a body gets a deadline (GETs and empty POSTs cost nothing).
    let chunked = req.headers().contains_key(actix_web::http::header::TRANSFER_ENCODING);
    if declared.is_some_and(|n| n > 0) || chunked {
        if let Some(timeout) = req.app_data::<web::Data<AppState>>().map(|s| s.settings.body_timeout) {
            let payload = actix_web::HttpMessage::take_payload(&mut req);
            let deadline: std::pin::Pin<
                Box<dyn futures_core::Stream<Item = Result<actix_web::web::Bytes, actix_web::error::PayloadError>>>,
            > = Box::pin(BodyDeadline { inner: payload, until: tokio::time::Instant::now() + timeout, sleep: None });
            req.set_payload(actix_web::dev::Payload::from(deadline));
        }
    }
    next.call(req).await.map(ServiceResponse::map_into_left_body)
}

/// A request body that fails with a timed-out I/O error once its deadline passes. The timer
/// is armed only when the body is not all there yet (a small body usually arrives with the
/// headers, so the tap path sets no timer).
struct BodyDeadline {
    inner: actix_web::dev::Payload,
    until: tokio::time::Instant,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl futures_core::Stream for BodyDeadline {
    type Item = Result<actix_web::web::Bytes, actix_web::error::PayloadError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::future::Future as _;
        if let std::task::Poll::Ready(chunk) = std::pin::Pin::new(&mut self.inner).poll_next(cx) {
            return std::task::Poll::Ready(chunk);
        }
        let until = self.until;
        match self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until))).as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Some(Err(actix_web::error::PayloadError::Io(
                std::io::Error::new(std::io::ErrorKind::TimedOut, "the request body did not arrive in time"),
            )))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

/// What no route answered: `405 method_not_allowed` with an `Allow` header when the path
/// is a route's but the method is not one it takes, else `404 not_found`.
pub(crate) async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    let methods = openapi::methods_of(req.path());
    let method = req.method().as_str().to_ascii_lowercase();
    if methods.is_empty() || methods.contains(&method.as_str()) {
        return ApiError::not_found("not_found", "no such route").error_response();
    }
    let allow = methods.iter().map(|m| m.to_ascii_uppercase()).collect::<Vec<_>>().join(", ");
    let e = ApiError::new(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} takes {allow}", req.path()),
    );
    let mut response = e.error_response();
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&allow) {
        response.headers_mut().insert(actix_web::http::header::ALLOW, value);
    }
    response
}

/// Runs the reads of a hot-path handler (the payment): on SQLite inline on the worker, since
/// a lookup in the embedded database's cached pages takes a few microseconds and a trip to
/// the blocking pool costs two thread switches more (the profile of the HTTP benchmark
/// showed the server's time going to context switches); on PostgreSQL, whose reads wait on
/// the network, on the blocking pool.
pub async fn hot_reads<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    match state.ledger.backend() {
        ledger::Backend::Sqlite => f(),
        ledger::Backend::Postgres => blocking(f).await,
    }
}

/// Runs `f` (blocking database work) on actix's blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    web::block(f).await?
}
