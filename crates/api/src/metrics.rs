//! `/healthz`, `/readyz` and Prometheus `/metrics`: requests by route and status, a latency
//! histogram, payments by result, and the audit log's checkpoint lag.

use std::time::Instant;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use actix_web::middleware::Next;
use actix_web::HttpMessage as _;
use actix_web::{web, HttpResponse};
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

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
    leaves_unsigned: IntGauge,
    tree_size: IntGauge,
    checkpoint_age: IntGauge,
    writer_batches: IntGauge,
    writer_requests: IntGauge,
    writer_busy_us: IntGauge,
    checkpoint_refused: IntGauge,
    tls_reloads: IntGaugeVec,
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
        let gauge = |name: &str, help: &str| register(&registry, IntGauge::new(name, help).expect("valid metric"));
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
        let tls_reloads = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "kartu_tls_reloads_total",
                    "TLS certificate reloads (SIGHUP) since start: ok, or failed (the old certificate stays)",
                ),
                &["result"],
            )
            .expect("valid metric"),
        );
        Metrics {
            leaves_unsigned: gauge("kartu_audit_leaves_unsigned", "Leaves not yet covered by a signed checkpoint"),
            tree_size: gauge("kartu_audit_tree_size", "Leaves in the audit log"),
            checkpoint_age: gauge("kartu_audit_checkpoint_age_seconds", "Age of the newest signed checkpoint"),
            writer_batches: gauge("kartu_writer_batches_total", "Ledger writer transactions (batches) since start"),
            writer_requests: gauge("kartu_writer_requests_total", "Requests the ledger writer applied since start"),
            writer_busy_us: gauge(
                "kartu_writer_busy_microseconds_total",
                "Time the ledger writer spent inside batch transactions since start, µs",
            ),
            checkpoint_refused: gauge(
                "kartu_checkpoint_refused",
                "1 when the checkpoint signer refuses to sign: the log does not extend the last checkpoint it signed",
            ),
            registry,
            requests,
            latency,
            payments,
            tls_reloads,
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
    let ledger = state.ledger.clone();
    let (size, checkpoint) = crate::blocking(move || Ok((ledger.tree_size()?, ledger.latest_checkpoint()?))).await?;
    let m = &state.metrics;
    m.tree_size.set(size);
    m.leaves_unsigned.set(size - checkpoint.as_ref().map_or(0, |c| c.tree_size));
    let now = state.ledger.now_us();
    m.checkpoint_age.set(checkpoint.map_or(0, |c| (now - c.time_us) / 1_000_000));
    let stats = state.ledger.writer_stats();
    let get = |a: &std::sync::atomic::AtomicU64| {
        i64::try_from(a.load(std::sync::atomic::Ordering::Relaxed)).unwrap_or(i64::MAX)
    };
    m.writer_batches.set(get(&stats.batches));
    m.writer_requests.set(get(&stats.requests));
    m.writer_busy_us.set(get(&stats.busy_us));
    m.checkpoint_refused.set(i64::from(state.ledger.checkpoint_refusal().is_some()));
    if let Some(cert) = &state.settings.tls {
        let (ok, failed) = cert.reloads();
        m.tls_reloads.with_label_values(&["ok"]).set(i64::try_from(ok).unwrap_or(i64::MAX));
        m.tls_reloads.with_label_values(&["failed"]).set(i64::try_from(failed).unwrap_or(i64::MAX));
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
