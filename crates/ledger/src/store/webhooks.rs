//! Webhooks: subscriptions, the outbox the writer fills in the entry's own transaction, the
//! deliveries it fans out to, and the log of every attempt. A sender claims a due delivery
//! with a lease (so two servers on one database rarely send the same one twice; a receiver
//! deduplicates by the event id, as at-least-once requires), then records the attempt.

use diesel::prelude::*;

use super::schema::{webhook_attempts, webhook_deliveries, webhook_outbox, webhook_subscriptions};
use super::{storage, Db};
use crate::LedgerError;

/// What the writer puts in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// `settlement.paid`, `hold.expired` or `card.replay_flagged`.
    pub kind: &'static str,
    /// The merchant account it concerns (its subscriptions receive it); `None`: operators'.
    pub account_id: Option<i64>,
    /// The entry it tells of.
    pub entry_seq: Option<i64>,
    /// The event's data, JSON.
    pub payload: String,
    /// When, µs.
    pub created_at_us: i64,
}

/// A subscription.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = webhook_subscriptions)]
pub struct Subscription {
    /// Its id.
    pub id: i64,
    /// Where events are POSTed.
    pub url: String,
    /// The HMAC-SHA256 key of its signatures.
    pub secret: String,
    /// The merchant account whose events it gets; `None`: every event (an operator's).
    pub account_id: Option<i64>,
    /// The event kinds it wants, comma-separated.
    pub kinds: String,
    /// Created, µs.
    pub created_at_us: i64,
    /// The operator action that created it.
    pub event_id: i64,
    /// Revoked, µs.
    pub revoked_at_us: Option<i64>,
}

impl Subscription {
    /// Whether it wants an event of `kind` about `account`.
    pub fn wants(&self, kind: &str, account: Option<i64>) -> bool {
        self.revoked_at_us.is_none()
            && self.kinds.split(',').any(|k| k == kind)
            && (self.account_id.is_none() || self.account_id == account)
    }
}

/// A delivery a sender has claimed: the event and where it goes.
#[derive(Debug, Clone)]
pub struct Due {
    /// The outbox row (the event's id).
    pub outbox_id: i64,
    /// The event kind.
    pub kind: String,
    /// Its data, JSON.
    pub payload: String,
    /// When it happened, µs.
    pub created_at_us: i64,
    /// The subscription.
    pub subscription_id: i64,
    /// Its URL.
    pub url: String,
    /// Its secret.
    pub secret: String,
    /// Attempts so far.
    pub attempts: i32,
}

/// One attempt, as logged.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = webhook_attempts)]
pub struct Attempt {
    /// Its id.
    pub id: i64,
    /// The event.
    pub outbox_id: i64,
    /// The subscription.
    pub subscription_id: i64,
    /// 1, 2, …
    pub attempt: i32,
    /// When, µs.
    pub time_us: i64,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<i32>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// How long it took, µs.
    pub duration_us: i64,
}

/// How an attempt ended, for [`Db::record_attempt`].
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The receiver's status, if it answered.
    pub status: Option<i32>,
    /// What went wrong (a non-2xx status, a connection error); `None`: delivered.
    pub error: Option<String>,
    /// How long it took, µs.
    pub duration_us: i64,
    /// When to try again if it failed (`None`: give up).
    pub retry_at_us: Option<i64>,
}

impl Db {
    /// Writes outbox rows and one pending delivery per subscription that wants each (called
    /// by the writer inside the batch's transaction).
    pub fn insert_outbox(&mut self, rows: &[OutboxRow]) -> Result<(), LedgerError> {
        if rows.is_empty() {
            return Ok(());
        }
        let subscriptions = self.webhook_subscriptions(false)?;
        for row in rows {
            let values = (
                webhook_outbox::kind.eq(row.kind),
                webhook_outbox::account_id.eq(row.account_id),
                webhook_outbox::entry_seq.eq(row.entry_seq),
                webhook_outbox::payload.eq(&row.payload),
                webhook_outbox::created_at_us.eq(row.created_at_us),
            );
            let id: i64 = on_db!(self, |c| diesel::insert_into(webhook_outbox::table)
                .values(values)
                .returning(webhook_outbox::id)
                .get_result(c))
            .map_err(storage)?;
            for s in subscriptions.iter().filter(|s| s.wants(row.kind, row.account_id)) {
                let delivery = (
                    webhook_deliveries::outbox_id.eq(id),
                    webhook_deliveries::subscription_id.eq(s.id),
                    webhook_deliveries::next_attempt_us.eq(row.created_at_us),
                );
                on_db!(self, |c| diesel::insert_into(webhook_deliveries::table).values(delivery).execute(c))
                    .map_err(storage)?;
            }
        }
        Ok(())
    }

    /// Subscriptions by id (revoked ones too when asked).
    pub fn webhook_subscriptions(&mut self, revoked: bool) -> Result<Vec<Subscription>, LedgerError> {
        let rows: Vec<Subscription> = on_db!(self, |c| webhook_subscriptions::table
            .order(webhook_subscriptions::id)
            .select(Subscription::as_select())
            .load(c))
        .map_err(storage)?;
        Ok(rows.into_iter().filter(|s| revoked || s.revoked_at_us.is_none()).collect())
    }

    /// The subscription `id` (revoked or not).
    pub fn webhook_subscription(&mut self, id: i64) -> Result<Option<Subscription>, LedgerError> {
        on_db!(self, |c| webhook_subscriptions::table
            .find(id)
            .select(Subscription::as_select())
            .get_result(c)
            .optional())
        .map_err(storage)
    }

    /// Adds a subscription, as the operator action `event_id` asked (idempotent by it).
    pub fn insert_webhook_subscription(
        &mut self,
        url: &str,
        secret: &str,
        account_id: Option<i64>,
        kinds: &str,
        now_us: i64,
        event_id: i64,
    ) -> Result<Subscription, LedgerError> {
        let found: Option<Subscription> = on_db!(self, |c| webhook_subscriptions::table
            .filter(webhook_subscriptions::event_id.eq(event_id))
            .select(Subscription::as_select())
            .get_result(c)
            .optional())
        .map_err(storage)?;
        if let Some(s) = found {
            return Ok(s);
        }
        let values = (
            webhook_subscriptions::url.eq(url),
            webhook_subscriptions::secret.eq(secret),
            webhook_subscriptions::account_id.eq(account_id),
            webhook_subscriptions::kinds.eq(kinds),
            webhook_subscriptions::created_at_us.eq(now_us),
            webhook_subscriptions::event_id.eq(event_id),
        );
        on_db!(self, |c| diesel::insert_into(webhook_subscriptions::table)
            .values(values)
            .returning(Subscription::as_returning())
            .get_result(c))
        .map_err(storage)
    }

    /// Revokes a subscription (once: false when it was revoked already or does not exist).
    /// Its pending deliveries are given up.
    pub fn revoke_webhook_subscription(&mut self, id: i64, now_us: i64) -> Result<bool, LedgerError> {
        let n = on_db!(self, |c| diesel::update(
            webhook_subscriptions::table.find(id).filter(webhook_subscriptions::revoked_at_us.is_null())
        )
        .set(webhook_subscriptions::revoked_at_us.eq(now_us))
        .execute(c))
        .map_err(storage)?;
        on_db!(self, |c| diesel::update(
            webhook_deliveries::table
                .filter(webhook_deliveries::subscription_id.eq(id))
                .filter(webhook_deliveries::state.eq("pending"))
        )
        .set((webhook_deliveries::state.eq("failed"), webhook_deliveries::done_at_us.eq(now_us)))
        .execute(c))
        .map_err(storage)?;
        Ok(n == 1)
    }

    /// Claims up to `limit` deliveries due at `now_us` for `lease_us` (a delivery another
    /// sender holds is skipped).
    pub fn claim_due_webhooks(&mut self, now_us: i64, lease_us: i64, limit: i64) -> Result<Vec<Due>, LedgerError> {
        type Row = (i64, String, String, i64, i64, String, String, i32);
        let rows: Vec<Row> = on_db!(self, |c| webhook_deliveries::table
            .inner_join(webhook_outbox::table.on(webhook_outbox::id.eq(webhook_deliveries::outbox_id)))
            .inner_join(
                webhook_subscriptions::table.on(webhook_subscriptions::id.eq(webhook_deliveries::subscription_id)),
            )
            .filter(webhook_deliveries::state.eq("pending"))
            .filter(webhook_deliveries::next_attempt_us.le(now_us))
            .filter(webhook_deliveries::lease_until_us.le(now_us))
            .order((webhook_deliveries::next_attempt_us, webhook_deliveries::outbox_id))
            .limit(limit)
            .select((
                webhook_outbox::id,
                webhook_outbox::kind,
                webhook_outbox::payload,
                webhook_outbox::created_at_us,
                webhook_subscriptions::id,
                webhook_subscriptions::url,
                webhook_subscriptions::secret,
                webhook_deliveries::attempts,
            ))
            .load(c))
        .map_err(storage)?;
        let mut claimed = Vec::with_capacity(rows.len());
        for (outbox_id, kind, payload, created_at_us, subscription_id, url, secret, attempts) in rows {
            let n = on_db!(self, |c| diesel::update(
                webhook_deliveries::table
                    .find((outbox_id, subscription_id))
                    .filter(webhook_deliveries::lease_until_us.le(now_us))
                    .filter(webhook_deliveries::state.eq("pending"))
            )
            .set(webhook_deliveries::lease_until_us.eq(now_us + lease_us))
            .execute(c))
            .map_err(storage)?;
            if n == 1 {
                claimed.push(Due { outbox_id, kind, payload, created_at_us, subscription_id, url, secret, attempts });
            }
        }
        Ok(claimed)
    }

    /// Logs an attempt at `due` and moves its delivery on: delivered, to be tried again at
    /// the outcome's time, or given up.
    pub fn record_attempt(&mut self, due: &Due, now_us: i64, outcome: &Outcome) -> Result<(), LedgerError> {
        let attempt = due.attempts + 1;
        let values = (
            webhook_attempts::outbox_id.eq(due.outbox_id),
            webhook_attempts::subscription_id.eq(due.subscription_id),
            webhook_attempts::attempt.eq(attempt),
            webhook_attempts::time_us.eq(now_us),
            webhook_attempts::status.eq(outcome.status),
            webhook_attempts::error.eq(outcome.error.as_deref()),
            webhook_attempts::duration_us.eq(outcome.duration_us),
        );
        on_db!(self, |c| diesel::insert_into(webhook_attempts::table).values(values).execute(c)).map_err(storage)?;
        let (state, next, done) = match (&outcome.error, outcome.retry_at_us) {
            (None, _) => ("delivered", now_us, Some(now_us)),
            (Some(_), Some(at)) => ("pending", at, None),
            (Some(_), None) => ("failed", now_us, Some(now_us)),
        };
        on_db!(self, |c| diesel::update(webhook_deliveries::table.find((due.outbox_id, due.subscription_id)))
            .set((
                webhook_deliveries::attempts.eq(attempt),
                webhook_deliveries::state.eq(state),
                webhook_deliveries::next_attempt_us.eq(next),
                webhook_deliveries::lease_until_us.eq(0_i64),
                webhook_deliveries::done_at_us.eq(done),
            ))
            .execute(c))
        .map_err(storage)?;
        Ok(())
    }

    /// A subscription's attempts with an id above `after`, oldest first (the delivery log).
    pub fn webhook_attempts(&mut self, subscription: i64, after: i64, limit: i64) -> Result<Vec<Attempt>, LedgerError> {
        on_db!(self, |c| webhook_attempts::table
            .filter(webhook_attempts::subscription_id.eq(subscription))
            .filter(webhook_attempts::id.gt(after))
            .order(webhook_attempts::id)
            .limit(limit)
            .select(Attempt::as_select())
            .load(c))
        .map_err(storage)
    }
}
