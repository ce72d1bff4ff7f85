//! Background jobs: the checkpoint signer and SQLite's WAL checkpoints, each on a thread
//! of its own, and the expiry of holds (run by whoever calls it, e.g. `kartu serve`).

use std::sync::Arc;

use super::{Ledger, PAGE_MAX, WAL_CHECKPOINT_INTERVAL};
use crate::domain::{Command, Posted, References, Request};
use crate::store::{Backend, Db};
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
                    return;
                }
                if let Err(e) = ledger.checkpoint_now() {
                    tracing::warn!(error = %e, "checkpoint failed; trying again");
                }
            })?;
        }
        if self.inner.backend == Backend::Sqlite {
            let url = &self.inner.url;
            let mut wal = Db::open(url)?;
            let log = self.inner.wal_log.clone();
            self.every(WAL_CHECKPOINT_INTERVAL, "ledger-wal", move |_| match wal.wal_checkpoint() {
                // The writer reads it to decide when to finish the copy itself.
                Ok(bytes) => log.store(bytes, std::sync::atomic::Ordering::Relaxed),
                Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; trying again"),
            })?;
        }
        Ok(())
    }

    /// Runs `task` every `interval` on a thread of its own until the ledger stops. The
    /// thread holds a weak reference, so dropping the last handle still stops everything.
    fn every(
        &self,
        interval: std::time::Duration,
        name: &str,
        mut task: impl FnMut(&Ledger) + Send + 'static,
    ) -> Result<(), LedgerError> {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let weak = Arc::downgrade(&self.inner);
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(interval) {
                    let Some(inner) = weak.upgrade() else { break };
                    task(&Ledger { inner });
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
}
