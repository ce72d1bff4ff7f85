//! Errors classified once, here: every failure of the database (or of what it returned)
//! becomes one [`LedgerError`] kind, and callers (the writer, the API) act on the kind,
//! never on the message text.
//!
//! | kind | what | the API |
//! |------|------|---------|
//! | [`LedgerError::Full`] | the disk is full | 507, retry later |
//! | [`LedgerError::Conflict`] | a racing writer took a unique key; a serialization failure | 503, retry |
//! | [`LedgerError::Invariant`] | the database holds what the code never writes (bad rows, a broken constraint, a missing row the code wrote) | 500; the writer stops |
//! | [`LedgerError::Unavailable`] | anything else: connection refused or lost, timeouts, a server crash | 503, retry |

use diesel::result::{DatabaseErrorKind, Error as DieselError};

use crate::LedgerError;

/// A failure the store turns into a [`LedgerError`] of the right kind.
pub(crate) trait Classify {
    /// The kind of this failure.
    fn classify(self) -> LedgerError;
}

/// A failure of the database or of what it returned, classified (see the module's table).
pub(crate) fn storage(e: impl Classify) -> LedgerError {
    e.classify()
}

/// A row that holds what the code never writes (a kind, a currency, a hash of the wrong
/// length): a broken invariant.
pub(crate) fn corrupt(what: &str, value: &str) -> LedgerError {
    LedgerError::Invariant(format!("unexpected {what} {value:?} in the database"))
}

impl Classify for DieselError {
    fn classify(self) -> LedgerError {
        let text = self.to_string();
        // Before the kinds: a full disk also shows as a failed COMMIT (diesel then wraps it).
        if is_disk_full(&text) {
            return LedgerError::Full(text);
        }
        match self {
            DieselError::DatabaseError(kind, _) => database_error(kind, text),
            DieselError::RollbackErrorOnCommit { commit_error, .. } => commit_error.classify(),
            // A query that must find its row (the head, a row just written) found none; a
            // value the schema says cannot be there.
            DieselError::NotFound | DieselError::DeserializationError(_) | DieselError::SerializationError(_) => {
                LedgerError::Invariant(text)
            }
            // Statements the code builds wrongly.
            DieselError::QueryBuilderError(_) | DieselError::InvalidCString(_) => LedgerError::Invariant(text),
            // A failed COMMIT or ROLLBACK leaves the connection's transaction manager broken:
            // the writer reconnects and a retry works. Anything else: the same.
            _ => LedgerError::Unavailable(text),
        }
    }
}

fn database_error(kind: DatabaseErrorKind, text: String) -> LedgerError {
    match kind {
        DatabaseErrorKind::UniqueViolation | DatabaseErrorKind::SerializationFailure => LedgerError::Conflict(text),
        // The schema's guards: only code that breaks the ledger's rules trips them.
        DatabaseErrorKind::ForeignKeyViolation
        | DatabaseErrorKind::NotNullViolation
        | DatabaseErrorKind::CheckViolation
        | DatabaseErrorKind::RestrictViolation => LedgerError::Invariant(text),
        // Closed connections, server crashes and restarts, timeouts, deadlocks, a read-only
        // replica: a retry may work.
        _ => LedgerError::Unavailable(text),
    }
}

/// The database cannot be reached (refused, bad address, authentication).
impl Classify for diesel::ConnectionError {
    fn classify(self) -> LedgerError {
        LedgerError::Unavailable(self.to_string())
    }
}

/// JSON the code stored and cannot read back.
impl Classify for serde_json::Error {
    fn classify(self) -> LedgerError {
        LedgerError::Invariant(format!("stored JSON: {self}"))
    }
}

/// SQLite says `database or disk is full` (SQLITE_FULL); PostgreSQL reports SQLSTATE
/// 53100 with `No space left on device` when it cannot extend or write a file. diesel keeps
/// PostgreSQL's message but not its SQLSTATE for these (its `DatabaseErrorKind` has no
/// "disk full"), so this one kind is told by the text, here and only here.
fn is_disk_full(text: &str) -> bool {
    text.contains("database or disk is full") || text.contains("No space left on device")
}

#[cfg(test)]
mod tests {
    use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind as K, Error as E};

    use super::storage;
    use crate::LedgerError;

    /// What a database says: its kind and message.
    struct Info(&'static str);

    impl DatabaseErrorInformation for Info {
        fn message(&self) -> &str {
            self.0
        }
        fn details(&self) -> Option<&str> {
            None
        }
        fn hint(&self) -> Option<&str> {
            None
        }
        fn table_name(&self) -> Option<&str> {
            None
        }
        fn column_name(&self) -> Option<&str> {
            None
        }
        fn constraint_name(&self) -> Option<&str> {
            None
        }
        fn statement_position(&self) -> Option<i32> {
            None
        }
    }

    fn db(kind: K, message: &'static str) -> E {
        E::DatabaseError(kind, Box::new(Info(message)))
    }

    /// The kind's name, so that a table row reads as one line.
    fn kind(e: &LedgerError) -> &'static str {
        match e {
            LedgerError::Full(_) => "full",
            LedgerError::Conflict(_) => "conflict",
            LedgerError::Invariant(_) => "invariant",
            LedgerError::Unavailable(_) => "unavailable",
            _ => "other",
        }
    }

    fn check(error: E, expect: &str) {
        let text = error.to_string();
        let classified = storage(error);
        assert_eq!(kind(&classified), expect, "{text} → {classified:?}");
    }

    /// Each backend's failures as diesel gives them, and their kind.
    #[test]
    fn failures_are_classified_once() {
        // SQLite's SQLITE_FULL, PostgreSQL's SQLSTATE 53100 (on a table file or the WAL).
        check(db(K::Unknown, "database or disk is full"), "full");
        check(db(K::Unknown, r#"could not extend file "base/16384/16385": No space left on device"#), "full");
        check(db(K::Unknown, r#"could not write to file "pg_wal/xlogtemp.123": No space left on device"#), "full");
        // A full disk met at COMMIT: diesel wraps it.
        let commit = db(K::Unknown, "database or disk is full");
        let rollback = E::BrokenTransactionManager;
        check(E::RollbackErrorOnCommit { commit_error: Box::new(commit), rollback_error: Box::new(rollback) }, "full");
        // Races.
        check(db(K::UniqueViolation, r#"duplicate key value violates unique constraint "cards_uid_key""#), "conflict");
        check(db(K::SerializationFailure, "could not serialize access due to concurrent update"), "conflict");
        // What only wrong code writes.
        check(db(K::ForeignKeyViolation, "FOREIGN KEY constraint failed"), "invariant");
        check(db(K::CheckViolation, r#"new row violates check constraint "postings_amount_check""#), "invariant");
        check(db(K::NotNullViolation, "NOT NULL constraint failed: postings.account_id"), "invariant");
        check(E::NotFound, "invariant");
        // The connection, the server, time.
        check(db(K::ClosedConnection, "server closed the connection unexpectedly"), "unavailable");
        check(db(K::UnableToSendCommand, "no connection to the server"), "unavailable");
        check(db(K::Unknown, "terminating connection due to administrator command"), "unavailable");
        check(db(K::Unknown, "database is locked"), "unavailable");
        check(db(K::Unknown, "deadlock detected"), "unavailable");
        check(E::BrokenTransactionManager, "unavailable");
    }

    #[test]
    fn connections_and_stored_json() {
        let refused = diesel::ConnectionError::BadConnection("connection refused".into());
        assert!(matches!(storage(refused), LedgerError::Unavailable(_)));
        let json = serde_json::from_str::<Vec<String>>("{").expect_err("bad JSON");
        assert!(matches!(storage(json), LedgerError::Invariant(_)));
    }
}
