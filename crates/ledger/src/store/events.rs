//! Card counters, refused replays and audit events.

use std::collections::{HashMap, HashSet};

use diesel::prelude::*;
use diesel::upsert::excluded;

use super::cached::{Cached, SET_CARD_COUNTER};
use super::in_list::in_list;
use super::schema::{audit_events, card_counters, card_replays};
use super::{hash32, storage, Db};
use crate::domain::{AuditRef, CardReplay, EventRecord, IdempotencyKey};
use crate::LedgerError;

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_events, treat_none_as_default_value = false)]
struct EventRow {
    id: i64,
    kind: String,
    time_us: i64,
    scope: Option<String>,
    card_id: Option<i64>,
    card_read_counter: Option<i64>,
    queue_key: Option<String>,
    queue_number: Option<i64>,
    idempotency_key: Option<String>,
    request_hash: Option<Vec<u8>>,
    payload: String,
    leaf_index: Option<i64>,
    holder_key: Option<String>,
}

impl EventRow {
    fn of(e: &EventRecord) -> EventRow {
        EventRow {
            id: e.id,
            kind: e.kind.clone(),
            time_us: e.time_us,
            scope: e.scope.clone(),
            card_id: e.card_id,
            card_read_counter: e.card_read_counter,
            queue_key: e.queue_key.clone(),
            queue_number: e.queue_number,
            idempotency_key: e.idempotency_key.as_ref().map(|k| k.as_str().to_owned()),
            request_hash: e.request_hash.map(|h| h.to_vec()),
            payload: e.payload.clone(),
            leaf_index: e.audit.map(|a| a.leaf_index),
            holder_key: e.holder_key.clone(),
        }
    }

    fn into_record(self, leaf_hash: Option<[u8; 32]>) -> Result<EventRecord, LedgerError> {
        let idempotency_key = match self.idempotency_key {
            Some(k) => Some(IdempotencyKey::parse(&k).map_err(|_| super::corrupt("idempotency key", &k))?),
            None => None,
        };
        let request_hash = self.request_hash.as_deref().map(hash32).transpose()?;
        Ok(EventRecord {
            id: self.id,
            kind: self.kind,
            time_us: self.time_us,
            scope: self.scope,
            card_id: self.card_id,
            card_read_counter: self.card_read_counter,
            queue_key: self.queue_key,
            queue_number: self.queue_number,
            idempotency_key,
            request_hash,
            payload: self.payload,
            holder_key: self.holder_key,
            audit: self.leaf_index.zip(leaf_hash).map(|(leaf_index, leaf_hash)| AuditRef { leaf_index, leaf_hash }),
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = card_replays, treat_none_as_default_value = false)]
struct ReplayRow<'a> {
    card_id: i64,
    counter: i64,
    last_counter: i64,
    time_us: i64,
    source: Option<&'a str>,
}

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this scope.
    pub scope: Option<String>,
    /// Only this card.
    pub card_id: Option<i64>,
    /// Only events recorded at or after this time, µs.
    pub since_us: Option<i64>,
}

impl Db {
    /// The last accepted counter of each of these cards that has one, and when it was
    /// raised.
    pub fn card_counters(&mut self, cards: &HashSet<i64>) -> Result<HashMap<i64, (i64, i64)>, LedgerError> {
        if cards.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<i64> = cards.iter().copied().collect();
        let rows: Vec<(i64, i64, i64)> = on_db!(self, |c| card_counters::table
            .filter(in_list!(card_counters::card_id, &ids))
            .select((card_counters::card_id, card_counters::last_counter, card_counters::time_us))
            .load(c))
        .map_err(storage)?;
        Ok(rows.into_iter().map(|(card, last, t)| (card, (last, t))).collect())
    }

    /// The highest read counter of a card used by an entry or event recorded at or before
    /// `time_us`: the card's last counter as of then.
    pub fn card_counter_at(&mut self, card_id: i64, time_us: i64) -> Result<Option<i64>, LedgerError> {
        use super::schema::journal_entries;
        let entries: Option<i64> = on_db!(self, |c| journal_entries::table
            .filter(journal_entries::card_id.eq(card_id))
            .filter(journal_entries::time_us.le(time_us))
            .select(diesel::dsl::max(journal_entries::card_read_counter))
            .get_result(c))
        .map_err(storage)?;
        let events: Option<i64> = on_db!(self, |c| audit_events::table
            .filter(audit_events::card_id.eq(card_id))
            .filter(audit_events::time_us.le(time_us))
            .select(diesel::dsl::max(audit_events::card_read_counter))
            .get_result(c))
        .map_err(storage)?;
        Ok(entries.max(events))
    }

    /// Which of these `(card, counter)` pairs an entry or an event already used.
    pub fn used_counters(&mut self, pairs: &HashSet<(i64, i64)>) -> Result<HashSet<(i64, i64)>, LedgerError> {
        use super::schema::journal_entries;
        if pairs.is_empty() {
            return Ok(HashSet::new());
        }
        let cards: Vec<i64> = pairs.iter().map(|p| p.0).collect();
        let counters: Vec<i64> = pairs.iter().map(|p| p.1).collect();
        let found: Vec<(Option<i64>, Option<i64>)> = on_db!(self, |c| journal_entries::table
            .filter(in_list!(journal_entries::card_id, &cards))
            .filter(in_list!(journal_entries::card_read_counter, &counters))
            .select((journal_entries::card_id, journal_entries::card_read_counter))
            .load(c))
        .map_err(storage)?;
        let events: Vec<(Option<i64>, Option<i64>)> = on_db!(self, |c| audit_events::table
            .filter(in_list!(audit_events::card_id, &cards))
            .filter(in_list!(audit_events::card_read_counter, &counters))
            .select((audit_events::card_id, audit_events::card_read_counter))
            .load(c))
        .map_err(storage)?;
        Ok(found
            .into_iter()
            .chain(events)
            .filter_map(|(card, ctr)| card.zip(ctr))
            .filter(|p| pairs.contains(p))
            .collect())
    }

    /// Moves cards' last counters forward (a trigger refuses any step back).
    pub fn set_card_counters(&mut self, counters: &HashMap<i64, i64>, time_us: i64) -> Result<(), LedgerError> {
        // PostgreSQL: one statement for the batch (a round trip per card cost more than
        // the rest of a batch under the HTTP benchmark). SQLite: one cached statement per
        // card (a multi-row statement would be prepared anew for every batch size; diesel's
        // own upsert is never cached, see `store::cached`).
        if let Db::Pg(c) = self {
            if counters.is_empty() {
                return Ok(());
            }
            let rows: Vec<_> = counters
                .iter()
                .map(|(card, counter)| {
                    (
                        card_counters::card_id.eq(*card),
                        card_counters::last_counter.eq(*counter),
                        card_counters::time_us.eq(time_us),
                    )
                })
                .collect();
            diesel::insert_into(card_counters::table)
                .values(&rows)
                .on_conflict(card_counters::card_id)
                .do_update()
                .set((
                    card_counters::last_counter.eq(excluded(card_counters::last_counter)),
                    card_counters::time_us.eq(excluded(card_counters::time_us)),
                ))
                .execute(c)
                .map_err(storage)?;
            return Ok(());
        }
        for (card, counter) in counters {
            on_db!(self, |c| Cached::new(SET_CARD_COUNTER, [*card, *counter, time_us]).execute(c)).map_err(storage)?;
        }
        Ok(())
    }

    /// Records refused replays.
    pub fn insert_card_replays(&mut self, replays: &[CardReplay]) -> Result<(), LedgerError> {
        for r in replays {
            let row = ReplayRow {
                card_id: r.card_id,
                counter: r.counter,
                last_counter: r.last_counter,
                time_us: r.time_us,
                source: r.source.as_deref(),
            };
            on_db!(self, |c| diesel::insert_into(card_replays::table).values(&row).execute(c)).map_err(storage)?;
        }
        Ok(())
    }

    /// Refused replays of a card, oldest first.
    pub fn card_replays(&mut self, card_id: i64, limit: i64) -> Result<Vec<CardReplay>, LedgerError> {
        let rows: Vec<(i64, i64, i64, i64, Option<String>)> = on_db!(self, |c| card_replays::table
            .filter(card_replays::card_id.eq(card_id))
            .order(card_replays::id)
            .limit(limit)
            .select((
                card_replays::card_id,
                card_replays::counter,
                card_replays::last_counter,
                card_replays::time_us,
                card_replays::source
            ))
            .load(c))
        .map_err(storage)?;
        Ok(rows
            .into_iter()
            .map(|(card_id, counter, last_counter, time_us, source)| CardReplay {
                card_id,
                counter,
                last_counter,
                time_us,
                source,
            })
            .collect())
    }

    /// The last accepted counter of one card.
    pub fn card_last_counter(&mut self, card_id: i64) -> Result<Option<i64>, LedgerError> {
        on_db!(self, |c| card_counters::table
            .find(card_id)
            .select(card_counters::last_counter)
            .get_result(c)
            .optional())
        .map_err(storage)
    }

    pub fn insert_events(&mut self, events: &[EventRecord]) -> Result<(), LedgerError> {
        for e in events {
            let row = EventRow::of(e);
            on_db!(self, |c| diesel::insert_into(audit_events::table).values(&row).execute(c)).map_err(storage)?;
        }
        Ok(())
    }

    pub fn last_event_id(&mut self) -> Result<i64, LedgerError> {
        let max: Option<i64> =
            on_db!(self, |c| audit_events::table.select(diesel::dsl::max(audit_events::id)).get_result(c))
                .map_err(storage)?;
        Ok(max.unwrap_or(0))
    }

    /// The highest number taken in each of these queues.
    pub fn queue_max(&mut self, queues: &HashSet<String>) -> Result<HashMap<String, i64>, LedgerError> {
        let mut out = HashMap::new();
        for q in queues {
            let max: Option<i64> = on_db!(self, |c| audit_events::table
                .filter(audit_events::queue_key.eq(q))
                .select(diesel::dsl::max(audit_events::queue_number))
                .get_result(c))
            .map_err(storage)?;
            out.insert(q.clone(), max.unwrap_or(0));
        }
        Ok(out)
    }

    fn with_leaf_hashes(&mut self, rows: Vec<EventRow>) -> Result<Vec<EventRecord>, LedgerError> {
        let indexes: Vec<i64> = rows.iter().filter_map(|r| r.leaf_index).collect();
        let hashes = self.leaf_hashes(&indexes)?;
        rows.into_iter()
            .map(|r| {
                let h = r.leaf_index.and_then(|i| hashes.get(&i).copied());
                r.into_record(h)
            })
            .collect()
    }

    pub fn events_by_key(&mut self, keys: &[&str]) -> Result<Vec<EventRecord>, LedgerError> {
        let rows: Vec<EventRow> = on_db!(self, |c| audit_events::table
            .filter(in_list!(audit_events::idempotency_key, keys))
            .select(EventRow::as_select())
            .load(c))
        .map_err(storage)?;
        self.with_leaf_hashes(rows)
    }

    /// Events after `after_id` matching `filter`, oldest first.
    pub fn events(&mut self, filter: &EventFilter, after_id: i64, limit: i64) -> Result<Vec<EventRecord>, LedgerError> {
        // A boxed query is typed by its backend: build it once per backend.
        macro_rules! query {
            () => {{
                let mut q = audit_events::table.filter(audit_events::id.gt(after_id)).into_boxed();
                if let Some(k) = &filter.kind {
                    q = q.filter(audit_events::kind.eq(k.clone()));
                }
                if let Some(s) = &filter.scope {
                    q = q.filter(audit_events::scope.eq(s.clone()));
                }
                if let Some(card) = filter.card_id {
                    q = q.filter(audit_events::card_id.eq(card));
                }
                if let Some(t) = filter.since_us {
                    q = q.filter(audit_events::time_us.ge(t));
                }
                q.order(audit_events::id).limit(limit).select(EventRow::as_select())
            }};
        }
        let rows: Vec<EventRow> = on_db!(self, |c| query!().load(c)).map_err(storage)?;
        self.with_leaf_hashes(rows)
    }
}
