//! `/healthz`, `/readyz` and Prometheus `/metrics`: requests by route and status, a latency
//! histogram, payments by result, and the audit log's checkpoint lag.

use std::time::Instant;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use actix_web::middleware::Next;
use actix_web::HttpMessage as _;
use actix_web::{web, HttpResponse};
use prometheus::{Counter, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::error::ApiError;
use crate::requests::{RequestLog, REQUEST_ID};
use crate::AppState;

/// The API's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    /// Payments (and captures, refunds, top-ups) by result code.
    pub payments: IntCounterVec,
    gauges: Gauges,
    counters: Counters,
    /// Held while a scrape brings the counters up to the writer's figures, so that two
    /// scrapes at once do not both add the same difference.
    sync: std::sync::Mutex<()>,
}

/// Figures that go up and down, set at each scrape.
#[derive(Debug)]
struct Gauges {
    leaves_unsigned: IntGauge,
    tree_size: IntGauge,
    checkpoint_age: IntGauge,
    unsigned_leaf_age: IntGauge,
    checkpoint_refused: IntGauge,
    writer_halted: IntGauge,
    offline_exposure: IntGauge,
    offline_cap: IntGauge,
    replica_lag_bytes: IntGauge,
    replica_lag_seconds: prometheus::Gauge,
}

/// Prometheus counters that mirror counts kept elsewhere (the writer's, the TLS reloader's):
/// each scrape adds what the source counted since the last one, so they only go up.
#[derive(Debug)]
struct Counters {
    writer_batches: IntCounter,
    writer_requests: IntCounter,
    writer_failed_batches: IntCounter,
    writer_busy: Counter,
    wal_checkpoints: IntCounter,
    wal_checkpoint_time: Counter,
    wal_passes: IntCounter,
    card_replays: IntCounter,
    tls_reloads: IntCounterVec,
}

impl Gauges {
    fn new(registry: &Registry) -> Gauges {
        let gauge = |name: &str, help: &str| register(registry, IntGauge::new(name, help).expect("valid metric"));
        Gauges {
            leaves_unsigned: gauge("kartu_audit_leaves_unsigned", "Leaves not yet covered by a signed checkpoint"),
            tree_size: gauge("kartu_audit_tree_size", "Leaves in the audit log"),
            checkpoint_age: gauge("kartu_audit_checkpoint_age_seconds", "Age of the newest signed checkpoint"),
            unsigned_leaf_age: gauge(
                "kartu_audit_unsigned_leaf_age_seconds",
                "Age of the oldest leaf no signed checkpoint covers (0 when every leaf is covered): the signer's lag",
            ),
            checkpoint_refused: gauge(
                "kartu_checkpoint_refused",
                "1 when the checkpoint signer refuses to sign: the log does not extend the last checkpoint it signed",
            ),
            writer_halted: gauge(
                "kartu_writer_halted",
                "1 when the ledger's writer stopped on a broken invariant and takes no more requests",
            ),
            offline_exposure: gauge(
                "kartu_offline_risk_exposure_minor",
                "The largest sum of one merchant's offline shortfalls in the last 24 h, minor units",
            ),
            offline_cap: gauge(
                "kartu_offline_risk_cap_minor",
                "The cap on one merchant's offline shortfalls in 24 h (offline_risk_per_merchant), minor units",
            ),
            replica_lag_bytes: gauge(
                "kartu_replica_lag_bytes",
                "WAL bytes the read replica has not replayed yet (0 without a replica)",
            ),
            replica_lag_seconds: register(
                registry,
                prometheus::Gauge::new(
                    "kartu_replica_lag_seconds",
                    "How long the read replica has been behind: since the last transaction it replayed (0 when caught up)",
                )
                .expect("valid metric"),
            ),
        }
    }
}

impl Counters {
    fn new(registry: &Registry) -> Counters {
        let counter = |name: &str, help: &str| register(registry, IntCounter::new(name, help).expect("valid metric"));
        Counters {
            writer_batches: counter("kartu_writer_batches_total", "Ledger writer transactions (batches) since start"),
            writer_requests: counter("kartu_writer_requests_total", "Requests the ledger writer applied since start"),
            writer_failed_batches: counter(
                "kartu_writer_failed_batches_total",
                "Writer batches that failed as a whole (database error or broken invariant); nothing of them was written",
            ),
            writer_busy: register(
                registry,
                Counter::new("kartu_writer_busy_seconds_total", "Time the ledger writer spent inside batch transactions")
                    .expect("valid metric"),
            ),
            wal_checkpoints: counter(
                "kartu_sqlite_wal_checkpoints_total",
                "SQLite: WAL checkpoints the writer ran itself, between batches, to keep the WAL bounded",
            ),
            wal_checkpoint_time: register(
                registry,
                Counter::new(
                    "kartu_sqlite_wal_checkpoint_seconds_total",
                    "SQLite: time the writer spent in its own WAL checkpoints, when no batch runs",
                )
                .expect("valid metric"),
            ),
            wal_passes: counter(
                "kartu_sqlite_wal_passes_total",
                "SQLite: passes of the background thread that copies the WAL into the database file",
            ),
            card_replays: counter(
                "kartu_card_replays_total",
                "Taps refused as replays: a counter not above the card's last (a skimmed or cloned card)",
            ),
            tls_reloads: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "kartu_tls_reloads_total",
                        "TLS certificate reloads (SIGHUP): ok, or failed (the old certificate stays)",
                    ),
                    &["result"],
                )
                .expect("valid metric"),
            ),
        }
    }

    /// Brings the counters up to the writer's and the TLS reloader's own counts.
    fn sync(&self, state: &AppState) {
        let stats = state.ledger.writer_stats();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        advance(&self.writer_batches, load(&stats.batches));
        advance(&self.writer_requests, load(&stats.requests));
        advance(&self.writer_failed_batches, load(&stats.failed_batches));
        advance(&self.wal_checkpoints, load(&stats.wal_checkpoints));
        advance(&self.wal_passes, load(&stats.wal_passes));
        advance(&self.card_replays, load(&stats.card_replays));
        advance_seconds(&self.writer_busy, load(&stats.busy_us));
        advance_seconds(&self.wal_checkpoint_time, load(&stats.wal_checkpoint_us));
        if let Some(cert) = &state.settings.tls {
            let (ok, failed) = cert.reloads();
            advance(&self.tls_reloads.with_label_values(&["ok"]), ok);
            advance(&self.tls_reloads.with_label_values(&["failed"]), failed);
        }
    }
}

/// Adds to `counter` what `total` counted since the counter last caught up.
fn advance(counter: &IntCounter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

/// [`advance`] for a counter of seconds kept elsewhere in µs.
fn advance_seconds(counter: &Counter, total_us: u64) {
    let total = total_us as f64 / 1e6;
    if total > counter.get() {
        counter.inc_by(total - counter.get());
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers the metrics.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = register(
            &registry,
            IntCounterVec::new(
                Opts::new("kartu_http_requests_total", "HTTP requests by route and status"),
                &["method", "route", "status"],
            )
            .expect("valid metric"),
        );
        let latency = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new("kartu_http_request_duration_seconds", "HTTP request latency")
                    .buckets(vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
                &["route"],
            )
            .expect("valid metric"),
        );
        let payments = register(
            &registry,
            IntCounterVec::new(
                Opts::new("kartu_payments_total", "Card payments, captures, refunds and top-ups by result"),
                &["operation", "result"],
            )
            .expect("valid metric"),
        );
        Metrics {
            gauges: Gauges::new(&registry),
            counters: Counters::new(&registry),
            registry,
            requests,
            latency,
            payments,
            sync: std::sync::Mutex::new(()),
        }
    }

    /// Counts a payment-like operation's result (`approved` or the error code).
    pub fn payment(&self, operation: &str, result: &str) {
        self.payments.with_label_values(&[operation, result]).inc();
    }
}

/// Middleware: gives every request its id ([`RequestLog`]), counts and times it by its
/// route pattern (never the raw path, which would carry ids), logs one line (id, method,
/// route, status, credential id, duration: never a token, key, tap or NIK), and puts the
/// id in the `Request-Id` header and in a problem+json body.
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let log = RequestLog::new(req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()));
    req.extensions_mut().insert(log.clone());
    let res = next.call(req).await?.map_into_boxed_body();
    if let Some(state) = state {
        let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".into());
        let status = res.status().as_u16().to_string();
        let elapsed = started.elapsed();
        state.metrics.requests.with_label_values(&[&method, &route, &status]).inc();
        state.metrics.latency.with_label_values(&[&route]).observe(elapsed.as_secs_f64());
        let credential = log.credential().map(|c| c.to_string()).unwrap_or_else(|| "-".into());
        tracing::info!(request_id = %log.id, method = %method, route = %route, status = %status,
            credential_id = %credential, micros = elapsed.as_micros() as u64, "request");
    }
    with_request_id(res, &log.id).await
}

/// The answer with `Request-Id`, and a problem+json body with `request_id`.
async fn with_request_id(
    res: ServiceResponse<BoxBody>,
    id: &str,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let (req, mut response) = res.into_parts();
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert(HeaderName::from_static(REQUEST_ID), value);
    }
    let problem = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(crate::error::PROBLEM_JSON.as_bytes()));
    if !problem {
        return Ok(ServiceResponse::new(req, response));
    }
    let (response, body) = response.into_parts();
    let bytes = actix_web::body::to_bytes(body).await.unwrap_or_default();
    let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(mut v) if v.is_object() => {
            v["request_id"] = serde_json::Value::String(id.to_owned());
            serde_json::to_vec(&v).map_or(bytes, Into::into)
        }
        _ => bytes,
    };
    Ok(ServiceResponse::new(req, response.set_body(BoxBody::new(body))))
}

/// Where `/metrics` is served when it has a listener of its own (`metrics_listen`).
#[derive(Debug, Clone, Copy)]
pub struct Listeners {
    /// The metrics listener's address; `None`: `/metrics` is on the main listener.
    pub metrics: Option<std::net::SocketAddr>,
}

/// Middleware: with a metrics listener, `/metrics` is answered there only and that listener
/// answers nothing else; both answer `404 not_found` for what is not theirs.
pub async fn split_listeners<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let metrics = req.app_data::<web::Data<Listeners>>().and_then(|l| l.metrics);
    if let Some(metrics) = metrics {
        let on_metrics_listener = req.app_config().local_addr() == metrics;
        if on_metrics_listener != (req.path() == "/metrics") {
            let e = ApiError::not_found("not_found", "no such route");
            return Ok(req.into_response(actix_web::ResponseError::error_response(&e)).map_into_right_body());
        }
    }
    next.call(req).await.map(ServiceResponse::map_into_left_body)
}

/// Registers the operational routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

/// `/healthz`'s answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`: the process answers.
    #[schema(pattern = "^ok$")]
    pub status: String,
}

/// `/readyz`'s answer when ready.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Ready {
    /// Always `ready`.
    #[schema(pattern = "^ready$")]
    pub status: String,
    /// Leaves in the audit log now.
    #[schema(minimum = 0)]
    pub tree_size: i64,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses((status = 200, description = "alive", body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok".into() })
}

/// The database answers, the writer takes requests (it has not stopped on a broken
/// invariant, and no batch has run longer than `writer_stall_max_ms`), the checkpoint signer does not refuse (a log that does not extend the last
/// signed checkpoint is not ready) and is not behind: the oldest leaf no signed checkpoint
/// covers is at most `checkpoint_lag_max_ms` old (default 10 s). Otherwise 503 with the
/// reason.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, description = "ready", body = Ready), (status = 503, description = "`writer_stopped`, `writer_stuck`, `checkpoint_refused`, `checkpoint_behind` or `not_ready`: not ready", body = crate::error::Problem)))]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let unavailable = |code: &'static str, detail: String| {
        ApiError::new(actix_web::http::StatusCode::SERVICE_UNAVAILABLE, code, detail)
    };
    if let Some(reason) = state.ledger.writer_halted() {
        return Err(unavailable(
            "writer_stopped",
            format!("the ledger's writer stopped on a broken invariant: {reason}"),
        ));
    }
    if let Some(reason) = state.ledger.checkpoint_refusal() {
        return Err(unavailable("checkpoint_refused", format!("the checkpoint signer refuses to sign: {reason}")));
    }
    let stall_max = state.settings.writer_stall_max;
    if let Some(running) = state.ledger.writer_stats().batch_running_for().filter(|t| *t > stall_max) {
        return Err(unavailable(
            "writer_stuck",
            format!(
                "the ledger's writer has been in one batch for {:.1} s (at most {:.1} s): the database does not \
                 answer it or something holds its lock",
                running.as_secs_f64(),
                stall_max.as_secs_f64()
            ),
        ));
    }
    let ledger = state.ledger.clone();
    let signs = state.settings.verifier_key.is_some();
    let (size, unsigned_since) = crate::blocking(move || {
        let size = ledger.tree_size()?;
        let since = if signs { oldest_unsigned_leaf(&ledger, size)? } else { None };
        Ok((size, since))
    })
    .await
    .map_err(|e| unavailable("not_ready", format!("database: {}", e.detail)))?;
    let max = state.settings.checkpoint_lag_max;
    if let Some(since) = unsigned_since {
        let age = std::time::Duration::from_micros(state.ledger.now_us().saturating_sub(since).max(0) as u64);
        if age > max {
            return Err(unavailable(
                "checkpoint_behind",
                format!(
                    "the oldest leaf no signed checkpoint covers is {:.1} s old (at most {:.1} s): the checkpoint \
                     signer is behind or stopped",
                    age.as_secs_f64(),
                    max.as_secs_f64()
                ),
            ));
        }
    }
    Ok(HttpResponse::Ok().json(Ready { status: "ready".into(), tree_size: size }))
}

/// When the oldest leaf that no signed checkpoint covers was written (µs), if any.
fn oldest_unsigned_leaf(ledger: &ledger::Ledger, size: i64) -> Result<Option<i64>, ApiError> {
    let signed = ledger.latest_checkpoint()?.map_or(0, |c| c.tree_size);
    if signed >= size {
        return Ok(None);
    }
    let Some(leaf) = ledger.leaves(signed, 1)?.into_iter().next() else { return Ok(None) };
    let time = match leaf.leaf.get(1) {
        Some(1) => ledger::audit::decode_entry_leaf(&leaf.leaf).map(|e| e.time_us),
        _ => ledger::audit::decode_event_leaf(&leaf.leaf).map(|e| e.time_us),
    };
    time.map(Some).map_err(|e| ApiError::internal(format!("leaf {signed}: {e}")))
}

/// Prometheus text exposition. Open unless the installation sets `metrics_token`, which a
/// scraper then sends as a bearer token (it is not a credential's token).
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 401, description = "`unauthorized`: the installation sets `metrics_token` and the request does not send it", body = crate::error::Problem),
        (status = 404, description = "`not_found`: `/metrics` has a listener of its own (`metrics_listen`)", body = crate::error::Problem)))]
pub async fn metrics(state: web::Data<AppState>, req: actix_web::HttpRequest) -> Result<HttpResponse, ApiError> {
    // With `metrics_token` set, only a scraper that knows it reads the figures.
    if let Some(expected) = &state.settings.metrics_token {
        let given = req.headers().get(actix_web::http::header::AUTHORIZATION).and_then(|h| h.to_str().ok());
        let given = given.and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
        let same = subtle::ConstantTimeEq::ct_eq(
            crate::auth::token_hash(given).as_slice(),
            crate::auth::token_hash(expected).as_slice(),
        );
        if !bool::from(same) {
            return Err(ApiError::new(
                actix_web::http::StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send Authorization: Bearer <metrics_token>",
            ));
        }
    }
    let (ledger, reports, replica) = (state.ledger.clone(), state.reports.clone(), state.replica);
    let signs = state.settings.verifier_key.is_some();
    let (size, checkpoint, unsigned_since, exposure, lag) = crate::blocking(move || {
        let size = ledger.tree_size()?;
        let since = if signs { oldest_unsigned_leaf(&ledger, size)? } else { None };
        let lag = match replica.then(|| ledger.wal_position()).transpose()?.flatten() {
            Some(lsn) => Some(reports.replay_lag(&lsn)?),
            None => None,
        };
        Ok((size, ledger.latest_checkpoint()?, since, ledger.offline_risk_exposure()?, lag))
    })
    .await?;
    let (m, g) = (&state.metrics, &state.metrics.gauges);
    let now = state.ledger.now_us();
    g.tree_size.set(size);
    g.leaves_unsigned.set(size - checkpoint.as_ref().map_or(0, |c| c.tree_size));
    g.checkpoint_age.set(checkpoint.map_or(0, |c| (now - c.time_us) / 1_000_000));
    g.unsigned_leaf_age.set(unsigned_since.map_or(0, |t| (now - t).max(0) / 1_000_000));
    g.checkpoint_refused.set(i64::from(state.ledger.checkpoint_refusal().is_some()));
    g.writer_halted.set(i64::from(state.ledger.writer_halted().is_some()));
    g.offline_exposure.set(exposure.map_or(0, |(_, sum)| sum));
    g.offline_cap.set(state.settings.limits.offline_risk_per_merchant_minor);
    g.replica_lag_bytes.set(lag.map_or(0, |l| l.bytes));
    g.replica_lag_seconds.set(lag.map_or(0.0, |l| l.seconds));
    {
        let _one_at_a_time = m.sync.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        m.counters.sync(&state);
    }
    let mut out = Vec::new();
    prometheus::TextEncoder::new().encode(&m.registry.gather(), &mut out).map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(out))
}

/// Registers a metric once and hands it back (a clone shares the same values).
fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry.register(Box::new(metric.clone())).expect("metric registered once");
    metric
}
