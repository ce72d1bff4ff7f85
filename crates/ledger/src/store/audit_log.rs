//! The audit log's storage: leaves (`audit_leaves`) and the stored Merkle nodes
//! (`merkle_nodes`; the levels below [`NODE_LEVEL_STORED_MIN`] are folded from leaf hashes).

use std::collections::HashMap;

use diesel::prelude::*;

use super::in_list::in_list;
use super::schema::{audit_leaves, merkle_nodes};
use super::{corrupt, storage, Db};
use crate::LedgerError;

/// Merkle nodes below this level are not stored: they are folded from at most
/// 2^(level-1) leaf hashes when read, which saves a row per entry on the write path.
pub(crate) const NODE_LEVEL_STORED_MIN: u8 = 4;

pub(crate) fn hash32(bytes: &[u8]) -> Result<[u8; 32], LedgerError> {
    <[u8; 32]>::try_from(bytes).map_err(|_| corrupt("hash", &hex::encode(bytes)))
}

/// A leaf of the audit log as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_leaves, treat_none_as_default_value = false)]
pub struct LeafRow {
    /// 0-based position in the log.
    pub leaf_index: i64,
    /// What the leaf records (`entry`, later `access`, `operator`).
    pub kind: String,
    /// The canonical bytes.
    pub leaf: Vec<u8>,
    /// SHA-256(0x00 || leaf).
    pub leaf_hash: Vec<u8>,
}

#[derive(Insertable)]
#[diesel(table_name = merkle_nodes, treat_none_as_default_value = false)]
struct NodeRow {
    level: i32,
    idx: i64,
    hash: Vec<u8>,
}

#[derive(QueryableByName)]
struct NodeHashRow {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    level: i32,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    idx: i64,
    #[diesel(sql_type = diesel::sql_types::Binary)]
    hash: Vec<u8>,
}

/// The audit log's storage.
impl Db {
    pub fn insert_leaves(&mut self, leaves: &[LeafRow]) -> Result<(), LedgerError> {
        match self {
            Db::Sqlite(c) => sqlite_insert_chunked!(c, audit_leaves::table, leaves),
            Db::Pg(c) => {
                diesel::copy_from(audit_leaves::table).from_insertable(leaves).execute(c).map_err(storage)?;
            }
        }
        Ok(())
    }

    /// Stores the perfect-subtree hashes of level [`NODE_LEVEL_STORED_MIN`] and up; lower
    /// levels are folded from the leaf hashes in `audit_leaves` when read.
    pub fn insert_nodes(&mut self, nodes: &[merkle::Node]) -> Result<(), LedgerError> {
        let rows: Vec<NodeRow> = nodes
            .iter()
            .filter(|n| n.coord.level >= NODE_LEVEL_STORED_MIN)
            .map(|n| NodeRow { level: i32::from(n.coord.level), idx: n.coord.index as i64, hash: n.hash.to_vec() })
            .collect();
        match self {
            Db::Sqlite(c) => sqlite_insert_chunked!(c, merkle_nodes::table, rows),
            Db::Pg(c) => {
                diesel::copy_from(merkle_nodes::table).from_insertable(&rows).execute(c).map_err(storage)?;
            }
        }
        Ok(())
    }

    /// The hashes of these perfect subtrees: one query for the leaf hashes (levels below
    /// [`NODE_LEVEL_STORED_MIN`] are folded from them) and one for the stored nodes.
    pub fn nodes(&mut self, coords: &[merkle::NodeCoord]) -> Result<HashMap<merkle::NodeCoord, [u8; 32]>, LedgerError> {
        let mut out = HashMap::with_capacity(coords.len());
        let low: Vec<merkle::NodeCoord> = coords.iter().filter(|c| c.level < NODE_LEVEL_STORED_MIN).copied().collect();
        let leaves: Vec<i64> = low
            .iter()
            .flat_map(|c| {
                let width = 1u64 << c.level;
                (c.index * width..(c.index + 1) * width).map(|i| i as i64)
            })
            .collect();
        let hashes = self.leaf_hashes(&leaves)?;
        for c in low {
            let width = 1u64 << c.level;
            let mut level: Vec<[u8; 32]> = (c.index * width..(c.index + 1) * width)
                .map(|i| hashes.get(&(i as i64)).copied().ok_or_else(|| corrupt("missing leaf", &i.to_string())))
                .collect::<Result<_, _>>()?;
            while level.len() > 1 {
                level = level.chunks(2).map(|p| merkle::node_hash(&p[0], &p[1])).collect();
            }
            out.insert(c, level[0]);
        }
        let upper: Vec<String> = coords
            .iter()
            .filter(|c| c.level >= NODE_LEVEL_STORED_MIN)
            .map(|c| format!("(level = {} AND idx = {})", c.level, c.index))
            .collect();
        if !upper.is_empty() {
            // Integers only, so formatting them into the statement is safe.
            let sql = format!("SELECT level, idx, hash FROM merkle_nodes WHERE {}", upper.join(" OR "));
            let rows: Vec<NodeHashRow> = on_db!(self, |c| diesel::sql_query(&sql).load(c)).map_err(storage)?;
            for r in rows {
                let level = u8::try_from(r.level).map_err(|_| corrupt("node level", &r.level.to_string()))?;
                out.insert(merkle::NodeCoord::new(level, r.idx as u64), hash32(&r.hash)?);
            }
        }
        Ok(out)
    }

    pub fn leaves(&mut self, from: i64, limit: i64) -> Result<Vec<LeafRow>, LedgerError> {
        on_db!(self, |c| audit_leaves::table
            .filter(audit_leaves::leaf_index.ge(from))
            .order(audit_leaves::leaf_index)
            .limit(limit)
            .select(LeafRow::as_select())
            .load(c))
        .map_err(storage)
    }

    pub(super) fn leaf_hashes(&mut self, indexes: &[i64]) -> Result<HashMap<i64, [u8; 32]>, LedgerError> {
        if indexes.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<(i64, Vec<u8>)> = on_db!(self, |c| audit_leaves::table
            .filter(in_list!(audit_leaves::leaf_index, indexes))
            .select((audit_leaves::leaf_index, audit_leaves::leaf_hash))
            .load(c))
        .map_err(storage)?;
        rows.into_iter().map(|(i, h)| Ok((i, hash32(&h)?))).collect()
    }
}
