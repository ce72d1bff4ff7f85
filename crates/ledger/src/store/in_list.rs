//! `column IN (values)` that SQLite prepares once. Diesel's `eq_any` writes one `?` per
//! value on SQLite, so each batch's lookup (its idempotency keys, card counters, wallets)
//! is a new statement text and is prepared again: the profile of the HTTP benchmark showed
//! 16 % of the writer's time in `sqlite3_prepare_v3`. [`in_list!`] writes
//! `column IN (SELECT value FROM json_each(?))` with the values as one JSON array instead:
//! one text for any number of values, prepared once and cached. On PostgreSQL it is
//! diesel's `eq_any` unchanged (`column = ANY($1)`, one array: already one statement).

use diesel::expression::{AppearsOnTable, Expression, SelectableExpression, ValidGrouping};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::Text;
use diesel::sqlite::Sqlite;

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct InList<C, A> {
    column: C,
    /// The values as a JSON array (SQLite).
    json: String,
    /// Diesel's `eq_any` of the same values (PostgreSQL).
    any: A,
}

impl<C, A> InList<C, A> {
    /// Use [`in_list!`]: `column IN (values)`, with `any` diesel's `column.eq_any(values)`.
    pub(crate) fn new<T: serde::Serialize>(column: C, values: &[T], any: A) -> InList<C, A> {
        // Integers and strings always serialise.
        InList { column, json: serde_json::to_string(values).unwrap_or_else(|_| "[]".into()), any }
    }
}

/// `in_list!(column, values)`: `column IN (values)`; see the module documentation.
macro_rules! in_list {
    ($column:expr, $values:expr) => {
        $crate::store::in_list::InList::new($column, &$values[..], $column.eq_any($values))
    };
}
pub(crate) use in_list;

impl<C, A: Expression> Expression for InList<C, A> {
    type SqlType = A::SqlType;
}

impl<C, A: AppearsOnTable<QS>, QS> AppearsOnTable<QS> for InList<C, A> {}

impl<C, A: SelectableExpression<QS>, QS> SelectableExpression<QS> for InList<C, A> {}

impl<C, A: ValidGrouping<GB>, GB> ValidGrouping<GB> for InList<C, A> {
    type IsAggregate = A::IsAggregate;
}

// Not a static id: diesel then caches the statement by its text, which is the same for any
// number of values.
impl<C, A> QueryId for InList<C, A> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<C: QueryFragment<Sqlite>, A> QueryFragment<Sqlite> for InList<C, A> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        self.column.walk_ast(out.reborrow())?;
        out.push_sql(" IN (SELECT value FROM json_each(");
        out.push_bind_param::<Text, String>(&self.json)?;
        out.push_sql("))");
        Ok(())
    }
}

impl<C, A: QueryFragment<Pg>> QueryFragment<Pg> for InList<C, A> {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.any.walk_ast(out)
    }
}
