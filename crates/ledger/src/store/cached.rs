//! Statements of fixed text that diesel prepares once per connection. Diesel never caches
//! an `UPDATE` or an upsert (`ON CONFLICT … DO UPDATE`): their text may vary with the
//! columns set, so it prepares them anew every time they run. The writer runs two of them
//! in every batch: the head's move, and on SQLite the card counters' upsert, once per card
//! tapped. On `make profile`'s HTTP part the SQLite writer spent 10 % of its time in
//! `sqlite3_prepare_v3` for them (0.5 % in the ledger part, whose payments carry no tap).
//! [`Cached`] writes the same statements as one fixed text with integer parameters, which
//! diesel caches by that text.

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, HasSqlType};
use diesel::RunQueryDsl;

/// A statement of fixed text whose `?` marks are its integer parameters, in order; each
/// backend gets its own placeholders (`?` on SQLite, `$1`… on PostgreSQL).
#[derive(Debug, Clone)]
pub(crate) struct Cached<const N: usize> {
    sql: &'static str,
    binds: [i64; N],
}

impl<const N: usize> Cached<N> {
    /// `sql` must hold exactly `N` `?` marks (checked in the tests below and, in debug
    /// builds, at every use).
    pub(crate) fn new(sql: &'static str, binds: [i64; N]) -> Cached<N> {
        debug_assert_eq!(sql.matches('?').count(), N, "{sql}");
        Cached { sql, binds }
    }
}

// Not a static id: diesel then caches the statement by its text, which never changes.
impl<const N: usize> QueryId for Cached<N> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB, const N: usize> QueryFragment<DB> for Cached<N>
where
    DB: Backend + HasSqlType<BigInt>,
    i64: ToSql<BigInt, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> diesel::QueryResult<()> {
        let mut parts = self.sql.split('?');
        if let Some(first) = parts.next() {
            out.push_sql(first);
        }
        for (part, bind) in parts.zip(&self.binds) {
            out.push_bind_param::<BigInt, i64>(bind)?;
            out.push_sql(part);
        }
        Ok(())
    }
}

impl<Conn, const N: usize> RunQueryDsl<Conn> for Cached<N> {}

/// Moves the ledger head, only from the sequence number the batch read under its lock.
pub(crate) const ADVANCE_HEAD: &str =
    "UPDATE ledger_head SET last_seq = ?, last_time_us = ?, tree_size = ? WHERE id = 1 AND last_seq = ?";

/// Sets one card's last read counter (SQLite: one cached statement per card; PostgreSQL
/// moves a batch's counters in one multi-row statement instead).
pub(crate) const SET_CARD_COUNTER: &str =
    "INSERT INTO card_counters (card_id, last_counter, time_us) VALUES (?, ?, ?) \
     ON CONFLICT (card_id) DO UPDATE SET last_counter = excluded.last_counter, time_us = excluded.time_us";

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::connection::{Connection, SimpleConnection};
    use diesel::sqlite::SqliteConnection;

    /// The statements run, and run again from diesel's cache: the second run sees the
    /// first's rows (an upsert that only inserted would fail on the key).
    #[test]
    fn cached_statements_run_twice_on_sqlite() {
        let mut c = SqliteConnection::establish(":memory:").unwrap();
        c.batch_execute(
            "CREATE TABLE card_counters (card_id BIGINT PRIMARY KEY, last_counter BIGINT NOT NULL, time_us BIGINT NOT NULL);
             CREATE TABLE ledger_head (id INTEGER PRIMARY KEY, last_seq BIGINT NOT NULL, last_time_us BIGINT NOT NULL,
                                       tree_size BIGINT NOT NULL);
             INSERT INTO ledger_head VALUES (1, 0, 0, 0);",
        )
        .unwrap();
        for (counter, time) in [(5, 10), (9, 20)] {
            assert_eq!(Cached::new(SET_CARD_COUNTER, [7, counter, time]).execute(&mut c).unwrap(), 1);
        }
        assert_eq!(Cached::new(ADVANCE_HEAD, [3, 30, 4, 0]).execute(&mut c).unwrap(), 1);
        // From a sequence number the head has left: nothing moves.
        assert_eq!(Cached::new(ADVANCE_HEAD, [5, 40, 6, 0]).execute(&mut c).unwrap(), 0);
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = BigInt)]
            a: i64,
            #[diesel(sql_type = BigInt)]
            b: i64,
        }
        let r: Row = diesel::sql_query("SELECT last_counter AS a, time_us AS b FROM card_counters WHERE card_id = 7")
            .get_result(&mut c)
            .unwrap();
        assert_eq!((r.a, r.b), (9, 20));
        let r: Row =
            diesel::sql_query("SELECT last_seq AS a, tree_size AS b FROM ledger_head").get_result(&mut c).unwrap();
        assert_eq!((r.a, r.b), (3, 4));
    }
}
