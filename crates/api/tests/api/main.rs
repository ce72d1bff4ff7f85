//! The API's integration tests: a real server on a random port (`api::server::init`,
//! `load`, `server`) against SQLite and against PostgreSQL, spoken to over HTTP with
//! genuine SUN taps made with the installation's key file. Every case runs as a
//! `sqlite::` and a `postgres::` trial, each with a fresh database and data directory.
//!
//! PostgreSQL is required, not optional: set `KARTU_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); if it cannot be reached the postgres
//! trials fail.

#[macro_use]
mod support;
mod access;
mod approvals;
mod audit;
mod backoffice;
mod browser;
mod concurrency;
mod conformance;
mod custody;
mod idempotency;
mod integrity;
mod money;
mod openapi;
mod pages;
mod patterns;
mod registry;
mod rfc9162;
mod roles;
mod rotation;
mod rush_hour;
mod tls;
mod transit;
mod validation;
mod webhooks;

use libtest_mimic::{Arguments, Failed, Trial};
use support::Backend;

type Case = fn(Backend) -> Result<(), String>;

const CASES: &[(&str, Case)] = &[
    ("roles_and_scopes", roles::roles_and_scopes),
    ("payments_fees_and_refunds", money::payments_fees_and_refunds),
    ("topups_and_limits", money::topups_and_limits),
    ("holds_capture_void", money::holds_capture_void),
    ("holds_expire_on_their_own", money::holds_expire_on_their_own),
    ("card_lifecycle", money::card_lifecycle),
    ("settlement_lines", money::settlement_lines),
    ("adjustments_two_operators", money::adjustments_two_operators),
    ("approvals_review_chain_refused", approvals::the_review_chain_is_refused),
    ("approvals_float_threshold", approvals::float_threshold),
    ("bad_input_writes_nothing", validation::bad_input_writes_nothing),
    ("idempotent_retries", idempotency::idempotent_retries),
    ("concurrent_payments_one_card", concurrency::concurrent_payments_one_card),
    ("concurrent_debits_one_card", concurrency::concurrent_debits_one_card),
    ("access_policies", access::access_policies),
    ("kiosk_balance_inquiry", access::kiosk_balance_inquiry),
    ("auditor_reads_and_proofs", audit::auditor_reads_and_proofs),
    ("receipts_are_provable", audit::receipts_are_provable),
    ("transparency_and_secrets", audit::transparency_and_secrets),
    ("transparency_cache", audit::transparency_cache),
    ("offline_uploads_cannot_mint", integrity::offline_uploads_cannot_mint),
    ("offline_debt_repaid_once", integrity::offline_debt_repaid_once),
    ("replacement_follows_credits", integrity::replacement_follows_credits),
    ("settlement_pays_the_balance_at_its_sequence", integrity::settlement_pays_the_balance_at_its_sequence),
    ("skimmed_tap_is_refused", integrity::skimmed_tap_is_refused),
    ("access_quota_holds_under_concurrency", integrity::access_quota_holds_under_concurrency),
    ("captures_can_be_refunded", integrity::captures_can_be_refunded),
    ("amounts_above_the_limits", integrity::amounts_above_the_limits),
    ("card_key_versions", custody::card_key_versions),
    ("exposure_limits", custody::exposure_limits),
    ("key_split", custody::key_split),
    ("key_version_after_rotation", rotation::key_version_after_rotation),
    ("a_claimed_uid_never_picks_the_card", rotation::a_claimed_uid_never_picks_the_card),
    ("serving_role_cannot_edit_the_journal", custody::serving_role_cannot_edit_the_journal),
    ("verify_checks_the_registry", registry::verify_checks_the_registry),
    ("openapi_document_and_routes", openapi::openapi_document_and_routes),
    ("health_and_metrics", openapi::health_and_metrics),
    ("request_ids", openapi::request_ids),
    ("readyz_checkpoint_behind", openapi::readyz_checkpoint_behind),
    ("readyz_writer_stuck", openapi::readyz_writer_stuck),
    ("tls_https_and_sighup_reload", tls::https_and_sighup_reload),
    ("tls_metrics_on_its_own_listener", tls::metrics_on_its_own_listener),
    ("pages_card", pages::card_page),
    ("pages_receipt", pages::receipt_page),
    ("pages_books", pages::books_page),
    ("pages_check_the_books", pages::check_the_books),
    ("backoffice_lists_and_search", backoffice::lists_and_search),
    ("backoffice_csv_exports", backoffice::csv_exports),
    ("webhooks_delivered_once", webhooks::webhooks_delivered_once),
    ("transit_online_fares", transit::online_fares),
    ("transit_offline_bus_uploads_late", transit::offline_bus_uploads_late),
    ("transit_ride_fixed_by_its_operator", transit::ride_fixed_by_its_operator),
    ("transit_offline_bus_over_its_limits", transit::offline_bus_over_its_limits),
    ("transit_rush_hour", rush_hour::rush_hour),
];

fn main() {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    for (name, case) in CASES {
        for (prefix, backend) in [("sqlite", Backend::Sqlite), ("postgres", Backend::Postgres)] {
            let case = *case;
            trials.push(Trial::test(format!("{prefix}::{name}"), move || case(backend).map_err(Failed::from)));
        }
    }
    trials.push(Trial::test("independent_verifier_self_test", || rfc9162::self_test().map_err(Failed::from)));
    trials.push(Trial::test("openapi_patterns_match_the_parsers", || {
        patterns::patterns_match_the_parsers().map_err(Failed::from)
    }));
    trials.push(Trial::test("pages_script_self_test", || pages::script_self_test().map_err(Failed::from)));
    trials.push(Trial::test("openapi_conformance_self_test", || conformance::self_test().map_err(Failed::from)));
    let conclusion = libtest_mimic::run(&args, trials);
    // Every response the trials received was checked against /openapi.json as it came.
    if let Err(undocumented) = conformance::report() {
        eprintln!("\n{undocumented}");
        std::process::exit(101);
    }
    conclusion.exit();
}
