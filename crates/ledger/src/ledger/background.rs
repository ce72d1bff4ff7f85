//! Background jobs: the checkpoint signer and SQLite's WAL checkpoints, each on a thread
//! of its own, and the expiry of holds (run by whoever calls it, e.g. `kartu serve`).

use std::sync::Arc;

use super::{wal_checkpoint_wait, Ledger, PAGE_MAX, WAL_CHECKPOINT_INTERVAL};
use crate::domain::{Command, Event, Op, Outcome, Posted, Recorded, References, Request, TransitTap};
use crate::store::{Backend, Db, WalCheckpoint};
use crate::LedgerError;

impl Ledger {
    /// Starts the checkpoint signer (when this process signs) and, on SQLite, the WAL
    /// checkpoints.
    pub(super) fn start_background(&self) -> Result<(), LedgerError> {
        if let Some(settings) = self.inner.config.checkpoints.clone() {
            let interval = settings.interval;
            self.every(interval, "ledger-checkpointer", move |ledger| {
                // A refusal is logged once, when it happens; then the signer only waits.
                if ledger.checkpoint_refusal().is_some() {
                    return interval;
                }
                if let Err(e) = ledger.checkpoint_now() {
                    tracing::warn!(error = %e, "checkpoint failed; trying again");
                }
                interval
            })?;
        }
        if self.inner.backend == Backend::Sqlite {
            let url = &self.inner.url;
            let mut wal = Db::open(url)?;
            let log = self.inner.wal_log.clone();
            let (bound, stats) = (self.inner.config.wal_checkpoint_bytes, self.inner.stats.clone());
            self.every(WAL_CHECKPOINT_INTERVAL, "ledger-wal", move |_| {
                stats.wal_passes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match wal.wal_checkpoint(WalCheckpoint::Passive) {
                    // The writer reads it to decide when to finish the copy itself.
                    Ok(bytes) => {
                        log.store(bytes, std::sync::atomic::Ordering::Relaxed);
                        wal_checkpoint_wait(bytes, bound)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "WAL checkpoint failed; trying again");
                        WAL_CHECKPOINT_INTERVAL
                    }
                }
            })?;
        }
        Ok(())
    }

    /// Runs `task` on a thread of its own until the ledger stops, first after `first`, then
    /// after the wait each run returns. The thread holds a weak reference, so dropping the
    /// last handle still stops everything.
    fn every(
        &self,
        first: std::time::Duration,
        name: &str,
        mut task: impl FnMut(&Ledger) -> std::time::Duration + Send + 'static,
    ) -> Result<(), LedgerError> {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let weak = Arc::downgrade(&self.inner);
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut wait = first;
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(wait) {
                    let Some(inner) = weak.upgrade() else { break };
                    wait = task(&Ledger { inner });
                }
            })
            .map_err(|e| LedgerError::Unavailable(format!("cannot start {name}: {e}")))?;
        if let Ok(mut b) = self.inner.background.lock() {
            b.push((stop_tx, handle));
        }
        Ok(())
    }

    /// Voids every open hold that expired at or before now; returns the voids written.
    pub fn expire_holds(&self) -> Result<Vec<Posted>, LedgerError> {
        let now = (self.inner.config.clock)();
        let expired = self.read(|db| db.expired_open_holds(now, PAGE_MAX))?;
        let requests = expired
            .into_iter()
            .map(|hold_seq| {
                Request::new(Command::Void { hold_seq })
                    .with_references(References { memo: Some("expired".into()), ..Default::default() })
            })
            .collect();
        // A hold captured or voided meanwhile is refused as closed: that is fine.
        Ok(self.submit_many_blocking(requests)?.into_iter().filter_map(Result::ok).collect())
    }

    /// Closes transit rides whose time limit passed without a tap off: each card with a
    /// ride hold past its limit gets a `transit_close` event, and the writer charges those
    /// rides the maximum (capturing their holds). Returns the events recorded.
    pub fn close_due_rides(&self) -> Result<Vec<Recorded>, LedgerError> {
        let now = (self.inner.config.clock)();
        let cards = self.read(|db| db.cards_with_open_ride_holds(now + crate::machine::RIDE_HOLD_GRACE_US))?;
        let mut ops = Vec::with_capacity(cards.len());
        for card_id in cards {
            let Some((card, holder)) = self.registry(|r| {
                let card = r.card(card_id)?;
                let holder = match &card {
                    Some(c) => r.holder(c.holder_id)?,
                    None => None,
                };
                Ok(card.zip(holder))
            })?
            else {
                continue;
            };
            ops.push(Op::Event(Event {
                kind: "transit_close".into(),
                scope: None,
                card_id: Some(card_id),
                card_read_counter: None,
                queue_key: None,
                idempotency_key: None,
                payload: serde_json::json!({"reason": "time limit"}).to_string(),
                access: None,
                transit: Some(TransitTap {
                    wallet: card.account_id,
                    categories: holder.categories.names(),
                    tap: None,
                    credential_id: 0,
                    offline: None,
                    fix: false,
                }),
            }));
        }
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let results = self.write_blocking(ops)?;
        Ok(results
            .into_iter()
            .filter_map(|r| match r {
                Ok(Outcome::Recorded(r)) if !r.entries.is_empty() => Some(r),
                _ => None,
            })
            .collect())
    }
}
