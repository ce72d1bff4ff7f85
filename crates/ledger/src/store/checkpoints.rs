//! Signed checkpoints of the audit log (`checkpoints`).

use diesel::prelude::*;

use super::schema::checkpoints;
use super::{storage, Db};
use crate::LedgerError;

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = checkpoints)]
pub struct CheckpointRow {
    /// The tree size it commits to.
    pub tree_size: i64,
    /// The root hash at that size.
    pub root: Vec<u8>,
    /// When it was made, µs.
    pub time_us: i64,
    /// The whole signed note.
    pub note: String,
}

/// Checkpoints: the newest, a range, and storing one.
impl Db {
    pub fn latest_checkpoint(&mut self) -> Result<Option<CheckpointRow>, LedgerError> {
        on_db!(self, |c| checkpoints::table
            .order(checkpoints::tree_size.desc())
            .select(CheckpointRow::as_select())
            .first(c)
            .optional())
        .map_err(storage)
    }

    /// Checkpoints with `tree_size > after`, in size order, at most `limit`.
    pub fn checkpoints(&mut self, after: i64, limit: i64) -> Result<Vec<CheckpointRow>, LedgerError> {
        on_db!(self, |c| checkpoints::table
            .filter(checkpoints::tree_size.gt(after))
            .order(checkpoints::tree_size)
            .limit(limit)
            .select(CheckpointRow::as_select())
            .load(c))
        .map_err(storage)
    }

    /// Stores a checkpoint unless one of that size exists (several processes may race).
    pub fn insert_checkpoint(&mut self, row: &CheckpointRow) -> Result<(), LedgerError> {
        on_db!(self, |c| diesel::insert_into(checkpoints::table).values(row).on_conflict_do_nothing().execute(c))
            .map_err(storage)?;
        Ok(())
    }
}
