//! The ledger head (`ledger_head`): the last sequence number, the last entry's time and the
//! audit log's size, and the write lock every batch takes on it.

use diesel::prelude::*;

use super::cached::{Cached, ADVANCE_HEAD};
use super::schema::ledger_head;
use super::{storage, Db};
use crate::LedgerError;

/// The ledger head as read under the write lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub last_seq: i64,
    pub last_time_us: i64,
    /// Leaves in the audit log.
    pub tree_size: i64,
}

impl Db {
    /// Runs `f` in a write transaction that holds the ledger head lock: SQLite's
    /// `BEGIN IMMEDIATE`, PostgreSQL's `SELECT … FOR UPDATE` on the head row. Every writer
    /// of every process takes this lock first, so batches are applied one at a time and
    /// each sees what the one before it committed. Any error rolls everything back.
    pub fn write_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Db, Head) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        self.transaction(|db| {
            let head = db.locked_head()?;
            f(db, head)
        })
    }

    fn locked_head(&mut self) -> Result<Head, LedgerError> {
        use ledger_head::dsl as h;
        let cols = (h::last_seq, h::last_time_us, h::tree_size);
        let row: (i64, i64, i64) = match self {
            Db::Sqlite(c) => h::ledger_head.find(1).select(cols).get_result(c),
            Db::Pg(c) => h::ledger_head.find(1).select(cols).for_update().get_result(c),
        }
        .map_err(storage)?;
        Ok(Head { last_seq: row.0, last_time_us: row.1, tree_size: row.2 })
    }

    /// Moves the head from `old` to `new`; exactly one row must change.
    pub fn advance_head(&mut self, old: Head, new: Head) -> Result<(), LedgerError> {
        // A cached statement: diesel prepares its own UPDATE anew every time.
        let update = Cached::new(ADVANCE_HEAD, [new.last_seq, new.last_time_us, new.tree_size, old.last_seq]);
        let changed = on_db!(self, |c| update.execute(c)).map_err(storage)?;
        if changed == 1 {
            Ok(())
        } else {
            Err(LedgerError::Invariant("the ledger head moved under the write lock".into()))
        }
    }

    pub fn last_seq(&mut self) -> Result<i64, LedgerError> {
        on_db!(self, |c| ledger_head::table.find(1).select(ledger_head::last_seq).get_result(c)).map_err(storage)
    }

    pub fn tree_size(&mut self) -> Result<i64, LedgerError> {
        on_db!(self, |c| ledger_head::table.find(1).select(ledger_head::tree_size).get_result(c)).map_err(storage)
    }
}
