//! The OpenAPI 3.1 document, generated from the handlers' annotations, at `/openapi.json`,
//! and the Swagger UI (vendored: no download at build time) at `/docs`.

use actix_web::{web, HttpResponse};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::operator::approvals;
use crate::{access, audit, merchant, metrics, offline, operator, transit, transparency, webhooks};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Kartu API", description = "The city smart card: payments, top-ups, access to public services, and an audit log anyone can verify. Errors are RFC 9457 `application/problem+json` with a stable `code`; every write takes an `Idempotency-Key` header. A method a path does not take is answered `405 method_not_allowed` with an `Allow` header; a path no route has, `404 not_found`."),
    paths(
        operator::holders::create_holder, operator::cards::issue_card, operator::cards::get_card, operator::cards::block_card, operator::cards::unblock_card,
        operator::cards::replace_card, operator::key_versions::record_key_version, operator::merchants::create_merchant, operator::service_points::create_service_point, operator::agents::create_agent,
        operator::agents::fund_agent, operator::credentials::create_credential, operator::credentials::revoke_credential, operator::adjustments::request_adjustment,
        operator::adjustments::approve_adjustment, operator::settlements::settle,
        operator::lists::list_cards, operator::lists::list_holders, operator::lists::list_merchants,
        operator::lists::list_credentials, operator::lists::offline_terminals,
        approvals::list, approvals::get, approvals::approve, approvals::reject,
        merchant::pay, merchant::list_payments, merchant::refund, merchant::hold, merchant::capture, merchant::void,
        merchant::merchant_statement, merchant::topup, merchant::balance_inquiry,
        access::access_check,
        audit::leaves, audit::entries, audit::balance, audit::account_statement, audit::trial_balance,
        audit::latest_checkpoint, audit::inclusion, audit::consistency, audit::access_log, audit::public_key, audit::public_keys, audit::receipt,
        transparency::transparency,
        offline::upload, offline::head, offline::deny_list,
        webhooks::create, webhooks::list, webhooks::revoke, webhooks::attempts,
        transit::create_route, transit::list_routes, transit::bind_validator, operator::fares::request_fare_table,
        operator::fares::list_fare_tables, transit::tap, transit::fix_ride, transit::sync,
        metrics::healthz, metrics::readyz, metrics::metrics,
    ),
    modifiers(&Bearer),
    security(("bearer" = [])),
)]
#[derive(Debug)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("kt_…").build()),
        );
    }
}

/// Every route the server registers, as (method, path) in OpenAPI form; the test checks
/// that the document lists exactly these and that each answers.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/holders"),
    ("get", "/v1/holders"),
    ("post", "/v1/cards"),
    ("get", "/v1/cards"),
    ("get", "/v1/cards/{id}"),
    ("post", "/v1/cards/{id}/block"),
    ("post", "/v1/cards/{id}/unblock"),
    ("post", "/v1/cards/{id}/replace"),
    ("post", "/v1/cards/{id}/key-version"),
    ("post", "/v1/merchants"),
    ("get", "/v1/merchants"),
    ("post", "/v1/service-points"),
    ("post", "/v1/agents"),
    ("post", "/v1/agents/{id}/float"),
    ("post", "/v1/credentials"),
    ("get", "/v1/credentials"),
    ("delete", "/v1/credentials/{id}"),
    ("post", "/v1/adjustments"),
    ("post", "/v1/adjustments/{id}/approve"),
    ("post", "/v1/settlements"),
    ("get", "/v1/approvals"),
    ("get", "/v1/approvals/{id}"),
    ("post", "/v1/approvals/{id}/approve"),
    ("post", "/v1/approvals/{id}/reject"),
    ("post", "/v1/payments"),
    ("get", "/v1/payments"),
    ("post", "/v1/payments/{id}/refunds"),
    ("post", "/v1/holds"),
    ("post", "/v1/holds/{id}/capture"),
    ("post", "/v1/holds/{id}/void"),
    ("get", "/v1/merchant/statement"),
    ("post", "/v1/topups"),
    ("post", "/v1/balance-inquiries"),
    ("post", "/v1/access-checks"),
    ("get", "/v1/audit/leaves"),
    ("get", "/v1/audit/entries"),
    ("get", "/v1/audit/accounts/{id}/balance"),
    ("get", "/v1/audit/accounts/{id}/statement"),
    ("get", "/v1/audit/trial-balance"),
    ("get", "/v1/audit/checkpoints/latest"),
    ("get", "/v1/audit/proofs/inclusion"),
    ("get", "/v1/audit/proofs/consistency"),
    ("get", "/v1/audit/access-log"),
    ("get", "/v1/audit/public-key"),
    ("get", "/v1/audit/public-keys"),
    ("get", "/v1/receipts/{seq}"),
    ("get", "/v1/transparency"),
    ("post", "/v1/offline/journals"),
    ("get", "/v1/offline/head"),
    ("get", "/v1/offline/deny-list"),
    ("get", "/v1/offline/terminals"),
    ("post", "/v1/webhooks"),
    ("get", "/v1/webhooks"),
    ("delete", "/v1/webhooks/{id}"),
    ("get", "/v1/webhooks/{id}/attempts"),
    ("post", "/v1/transit/routes"),
    ("get", "/v1/transit/routes"),
    ("post", "/v1/transit/validators"),
    ("post", "/v1/transit/fares"),
    ("get", "/v1/transit/fares"),
    ("post", "/v1/transit/taps"),
    ("post", "/v1/transit/rides/{id}/tap-off"),
    ("get", "/v1/transit/sync"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

/// Registers `/openapi.json` and `/docs`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(serve_document)).route("/docs", web::get().to(docs)).service(
        utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}").config(utoipa_swagger_ui::Config::from("/openapi.json")),
    );
}

/// `/docs` (SPEC §9) is the UI's home: the UI itself is served under `/docs/`.
async fn docs() -> HttpResponse {
    HttpResponse::PermanentRedirect().insert_header((actix_web::http::header::LOCATION, "/docs/")).finish()
}

async fn serve_document() -> HttpResponse {
    HttpResponse::Ok().json(document())
}

/// The document as served at `/openapi.json`: [`ApiDoc`] (each handler's own annotation:
/// its body, parameters, success responses and the errors only it gives) completed by
/// [`contract`] with the answers every handler gives through the extractors it shares.
pub fn document() -> &'static serde_json::Value {
    static DOCUMENT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        contract(&mut doc);
        doc
    })
}

pub use crate::error::PROBLEM_JSON;

/// The longest client `Idempotency-Key` (the server prefixes the credential).
const IDEMPOTENCY_KEY_MAX: usize = crate::auth::CLIENT_KEY_MAX;

/// Completes every operation of the document with what the server's shared parts answer:
/// the bearer check ([`crate::auth::Caller`]: 401, 403, 429), the `Idempotency-Key`
/// header (400, 409, 507), the JSON body extractor and the body limit (400, 408, 413, 415,
/// 422), path ids (404), query strings (400), and the ledger (500, 503). Every error is
/// `application/problem+json` with the `Problem` schema. A status a handler documents
/// itself keeps its own description.
pub fn contract(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else { return };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for op in item.values_mut() {
            complete(op);
        }
    }
}

/// What one operation's shared parts answer, as (status, why) pairs.
fn shared_answers(op: &serde_json::Value) -> Vec<(u16, &'static str)> {
    let public =
        op["security"].as_array().is_some_and(|s| s.iter().all(|r| r.as_object().is_some_and(|r| r.is_empty())));
    let params = op["parameters"].as_array().cloned().unwrap_or_default();
    let has = |place: &str| params.iter().any(|p| p["in"] == place);
    let write = params.iter().any(|p| p["in"] == "header" && p["name"] == "Idempotency-Key");
    let body = op.get("requestBody").is_some();
    let mut out = vec![
        (500, "`internal`: a bug; it was logged"),
        (503, "`busy`, `unavailable` or `storage_unavailable`: retry (a write with the same Idempotency-Key)"),
    ];
    if !public {
        out.extend([
            (401, "`unauthorized`: no, an unknown or a revoked bearer token"),
            (403, "`forbidden`: the credential's role or scope may not do this"),
            (429, "`rate_limited`: beyond the credential's rate; retry after `Retry-After` seconds"),
        ]);
    }
    if write {
        out.extend([
            (400, "`idempotency_key_required` or `idempotency_key_invalid`"),
            (409, "`idempotency_conflict`: this Idempotency-Key was used for another request"),
            (413, "`body_too_large`"),
            (507, "`storage_full`: the database's disk is full; retry later with the same Idempotency-Key"),
        ]);
    }
    if body {
        out.extend([
            (400, "`malformed_json`: the body is not JSON"),
            (408, "`request_timeout`: the body did not arrive in time"),
            (413, "`body_too_large`"),
            (415, "`unsupported_media_type`: no body, or not `application/json`"),
            (422, "`invalid_body`: a field is missing, unknown or of the wrong type"),
        ]);
    }
    if has("path") {
        out.push((404, "`not_found`: nothing has this id (an id that is not a number names nothing)"));
    }
    if has("query") {
        out.push((400, "`invalid_query`: a query parameter is malformed or out of bounds"));
    }
    out
}

/// Completes one operation (see [`contract`]).
fn complete(op: &mut serde_json::Value) {
    let answers = shared_answers(op);
    if let Some(params) = op.get_mut("parameters").and_then(|p| p.as_array_mut()) {
        for p in params.iter_mut().filter(|p| p["in"] == "header" && p["name"] == "Idempotency-Key") {
            *p = idempotency_key_parameter();
        }
    }
    let Some(responses) = op.get_mut("responses").and_then(|r| r.as_object_mut()) else { return };
    for r in responses.values_mut() {
        as_problem(r);
    }
    let mut why: std::collections::BTreeMap<u16, Vec<&str>> = std::collections::BTreeMap::new();
    for (status, reason) in answers {
        let reasons = why.entry(status).or_default();
        if !reasons.contains(&reason) {
            reasons.push(reason);
        }
    }
    for (status, reasons) in why {
        let shared = reasons.join("; ");
        match responses.get_mut(&status.to_string()) {
            None => {
                responses.insert(status.to_string(), problem_response(status, &shared));
            }
            // The handler's own reasons first, then what its shared parts add.
            Some(r) => {
                let own = r["description"].as_str().unwrap_or("").trim().to_owned();
                r["description"] = if own.is_empty() { shared.into() } else { format!("{own}; {shared}").into() };
            }
        }
    }
    // What a handler documents without words (a success) gets the status's own name.
    for (status, r) in responses.iter_mut() {
        if r["description"].as_str().is_none_or(str::is_empty) {
            let name = status.parse().ok().and_then(|s| actix_web::http::StatusCode::from_u16(s).ok());
            r["description"] = name.and_then(|s| s.canonical_reason()).unwrap_or("").into();
        }
    }
}

/// A response documented with the `Problem` schema is sent as `application/problem+json`.
fn as_problem(response: &mut serde_json::Value) {
    let Some(content) = response.get_mut("content").and_then(|c| c.as_object_mut()) else { return };
    let problem = content.get("application/json").is_some_and(|c| c["schema"]["$ref"] == PROBLEM_REF);
    if problem {
        if let Some(c) = content.remove("application/json") {
            content.insert(PROBLEM_JSON.to_owned(), c);
        }
    }
}

const PROBLEM_REF: &str = "#/components/schemas/Problem";

/// A problem response of one status.
fn problem_response(status: u16, description: &str) -> serde_json::Value {
    let mut r = serde_json::json!({
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}},
    });
    if status == 429 {
        r["headers"] = serde_json::json!({"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}});
    }
    r
}

/// The `Idempotency-Key` header as [`crate::auth::IdempotencyHeader`] reads it.
fn idempotency_key_parameter() -> serde_json::Value {
    serde_json::json!({
        "name": "Idempotency-Key",
        "in": "header",
        "required": true,
        "description": "unique per write: a retry with the same key and body gets the first answer",
        "schema": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX, "pattern": "^[!-~]+$"},
    })
}

/// The methods the document lists for a path (a concrete one: `{id}` matches any one
/// segment); empty when no route has this path.
pub fn methods_of(path: &str) -> Vec<&'static str> {
    let segments: Vec<&str> = path.split('/').collect();
    let matches = |template: &str| {
        let t: Vec<&str> = template.split('/').collect();
        t.len() == segments.len()
            && t.iter().zip(&segments).all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}') && !s.is_empty()))
    };
    let mut out: Vec<&'static str> = ROUTES.iter().filter(|(_, t)| matches(t)).map(|(m, _)| *m).collect();
    if path == "/openapi.json" || path == "/docs" || crate::pages::PAGES.iter().any(|p| matches(p)) {
        out.push("get");
    }
    out
}
