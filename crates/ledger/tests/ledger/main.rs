//! The ledger's test suite: every test runs on SQLite and on PostgreSQL, each with a fresh
//! database. A custom harness (libtest-mimic) makes one trial per backend and lets the
//! binary double as the child process of the two-process test.
//!
//! PostgreSQL is required, not optional: set `KARTU_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); if it cannot be reached the postgres
//! trials fail.

mod audit;
mod cases;
mod integrity_model;
mod model;
mod schema;
mod support;
mod taps;
mod transit;
mod wal;

use ledger::Backend;
use libtest_mimic::{Arguments, Failed, Trial};

/// Set in the environment of a child process started by a test.
pub const CHILD_ENV: &str = "KARTU_TEST_CHILD";

type Case = fn(Backend) -> Result<(), String>;

const CASES: &[(&str, Case)] = &[
    ("payment_with_fee", cases::payment_with_fee),
    ("limits_are_enforced", cases::limits_are_enforced),
    ("bad_input_writes_nothing", cases::bad_input_writes_nothing),
    ("holds_capture_void_expiry", cases::holds_capture_void_expiry),
    ("refunds", cases::refunds),
    ("idempotency", cases::idempotency),
    ("card_taps_strictly_increasing", taps::strictly_increasing),
    ("card_taps_concurrent", taps::concurrent),
    ("events_in_the_log", taps::events_in_the_log),
    ("zero_legs_and_offline_payments", taps::zero_legs_and_offline_payments),
    ("offline_taps_once_not_in_order", taps::offline_taps_once_not_in_order),
    ("replaced_wallets_pass_credits_on", taps::replaced_wallets_pass_credits_on),
    ("offline_terms_are_enforced", taps::offline_terms_are_enforced),
    ("access_limits_in_the_writer", taps::access_limits_in_the_writer),
    ("reads", cases::reads),
    ("append_only", cases::append_only),
    ("broken_invariant_stops_the_writer", cases::broken_invariant_stops_the_writer),
    ("concurrent_debits", cases::concurrent_debits),
    ("two_processes", cases::two_processes),
    ("bulk_batch", cases::bulk_batch),
    ("urls_and_migrations", cases::urls_and_migrations),
    ("currencies", cases::currencies),
    ("agrees_with_model", model::agrees_with_model),
    ("integrity_agrees_with_model", integrity_model::integrity_agrees_with_model),
    ("audit_proofs", audit::proofs),
    ("audit_checkpoints_every_interval", audit::checkpoints_every_interval),
    ("audit_a_clean_stop_signs_the_last_leaf", audit::a_clean_stop_signs_the_last_leaf),
    ("audit_signed_rows_go_through_the_writer", audit::signed_rows_go_through_the_writer),
    ("audit_tampering_is_detected", audit::tampering_is_detected),
    ("schema_equals_migrations", schema::schema_equals_migrations),
    ("transit_worked_examples", transit::worked_examples),
    ("transit_late_uploads_match_always_online", transit::late_uploads_match_always_online),
    ("transit_refusals", transit::refusals),
    ("transit_offline_limits", transit::offline_limits),
];

fn main() {
    if let Ok(role) = std::env::var(CHILD_ENV) {
        let result = match role.as_str() {
            "debit-race" => cases::debit_race_child(),
            other => Err(format!("unknown child role {other}")),
        };
        if let Err(e) = result {
            eprintln!("child failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    for (name, case) in CASES {
        for (prefix, backend) in [("sqlite", Backend::Sqlite), ("postgres", Backend::Postgres)] {
            let case = *case;
            trials.push(Trial::test(format!("{prefix}::{name}"), move || case(backend).map_err(Failed::from)));
        }
    }
    trials.push(Trial::test("sqlite_wal_stays_bounded_under_load", || {
        wal::wal_stays_bounded_under_load().map_err(Failed::from)
    }));
    trials.push(Trial::test("audit_independent_verifier_vectors", || {
        audit::independent_verifier_vectors().map_err(Failed::from)
    }));
    libtest_mimic::run(&args, trials).exit();
}
