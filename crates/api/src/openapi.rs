//! The OpenAPI 3.1 document, generated from the handlers' annotations, at `/openapi.json`,
//! and the Swagger UI (vendored: no download at build time) at `/docs`.

use actix_web::{web, HttpResponse};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{access, approvals, audit, merchant, metrics, offline, operator, transparency};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Kartu API", description = "The city smart card: payments, top-ups, access to public services, and an audit log anyone can verify. Errors are RFC 9457 problem+json with a stable `code`; every write takes an `Idempotency-Key` header."),
    paths(
        operator::holders::create_holder, operator::cards::issue_card, operator::cards::get_card, operator::cards::block_card, operator::cards::unblock_card,
        operator::cards::replace_card, operator::merchants::create_merchant, operator::service_points::create_service_point, operator::agents::create_agent,
        operator::agents::fund_agent, operator::credentials::create_credential, operator::credentials::revoke_credential, operator::adjustments::request_adjustment,
        operator::adjustments::approve_adjustment, operator::settlements::settle,
        approvals::list, approvals::get, approvals::approve, approvals::reject,
        merchant::pay, merchant::list_payments, merchant::refund, merchant::hold, merchant::capture, merchant::void,
        merchant::merchant_statement, merchant::topup, merchant::balance_inquiry,
        access::access_check,
        audit::leaves, audit::entries, audit::balance, audit::account_statement, audit::trial_balance,
        audit::latest_checkpoint, audit::inclusion, audit::consistency, audit::access_log, audit::public_key,
        transparency::transparency,
        offline::upload, offline::head, offline::deny_list,
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
    ("post", "/v1/cards"),
    ("get", "/v1/cards/{id}"),
    ("post", "/v1/cards/{id}/block"),
    ("post", "/v1/cards/{id}/unblock"),
    ("post", "/v1/cards/{id}/replace"),
    ("post", "/v1/merchants"),
    ("post", "/v1/service-points"),
    ("post", "/v1/agents"),
    ("post", "/v1/agents/{id}/float"),
    ("post", "/v1/credentials"),
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
    ("get", "/v1/transparency"),
    ("post", "/v1/offline/journals"),
    ("get", "/v1/offline/head"),
    ("get", "/v1/offline/deny-list"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

/// Registers `/openapi.json` and `/docs`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(document))
        .route("/docs", web::get().to(docs))
        .service(utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", ApiDoc::openapi()));
}

/// `/docs` (SPEC §9) is the UI's home: the UI itself is served under `/docs/`.
async fn docs() -> HttpResponse {
    HttpResponse::PermanentRedirect().insert_header((actix_web::http::header::LOCATION, "/docs/")).finish()
}

async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
