//! Public transport's storage (issue 18): routes and validators (registry rows), fare
//! tables, and the journal of taps and of the entries each ride made, which the writer
//! prices again from.

use diesel::prelude::*;
use domain::fares::{FareTable, Schedule, Tap, TapKind};
use domain::money::FeeRate;

use super::in_list::in_list;
use super::registry::Registry;
use super::schema::{
    fare_tables, journal_entries, merchants, transit_entries, transit_routes, transit_taps, transit_validators,
};
use super::{storage, Db};
use crate::domain::{AccountId, RideEntry, RouteOperators, TapRow};
use crate::LedgerError;

/// The columns of a [`RideEntry`], in the order of its fields.
const RIDE_ENTRY: (
    transit_entries::entry_seq,
    transit_entries::card_id,
    transit_entries::ride_event_id,
    transit_entries::event_id,
) = (transit_entries::entry_seq, transit_entries::card_id, transit_entries::ride_event_id, transit_entries::event_id);

/// A [`RIDE_ENTRY`] row.
fn ride_entry((entry_seq, card_id, ride_event_id, event_id): (i64, i64, i64, i64)) -> RideEntry {
    RideEntry { entry_seq, card_id, ride_event_id, event_id }
}

/// A transit route of an operator, with its stops in order.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = transit_routes)]
pub struct Route {
    /// The route's id, as fare tables and taps name it.
    pub id: i64,
    /// The transit operator (a merchant of category transit).
    pub merchant_id: i64,
    /// The route's public name ("Koridor 1", "Ferry Pulau Seribu").
    pub name: String,
    /// bus, brt, ferry or rail.
    pub mode: String,
    /// The stops' names in order, as a JSON array; a stop is its position (0, 1, …).
    pub stops: String,
    /// Created, µs.
    pub created_at_us: i64,
    /// The operator_action event that created it.
    pub event_id: i64,
}

impl Route {
    /// The stops' names in order.
    pub fn stop_names(&self) -> Vec<String> {
        serde_json::from_str(&self.stops).unwrap_or_default()
    }
}

/// A validator: a merchant_terminal credential bound to a route, and to one stop of it
/// when it is a station gate (none: on a vehicle, told the stop with each tap).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = transit_validators)]
pub struct Validator {
    /// The credential.
    pub credential_id: i64,
    /// The route.
    pub route_id: i64,
    /// The gate's stop.
    pub stop: Option<i64>,
    /// The operator_action event that bound it.
    pub event_id: i64,
}

/// A fare table as stored: in force from `effective_from_us` until the next one's start.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = fare_tables)]
pub struct FareTableRow {
    /// Its number.
    pub id: i64,
    /// When it takes effect, µs.
    pub effective_from_us: i64,
    /// The city's time zone for days and weeks (IANA name).
    pub time_zone: String,
    /// The table, JSON ([`FareTable`]).
    pub body: String,
    /// Recorded, µs.
    pub created_at_us: i64,
    /// The approval decision's event.
    pub event_id: i64,
}

impl FareTableRow {
    /// The table.
    pub fn table(&self) -> Result<FareTable, LedgerError> {
        serde_json::from_str(&self.body)
            .map_err(|e| LedgerError::Invariant(format!("fare table {} does not parse: {e}", self.id)))
    }
}

impl Db {
    /// Every fare table and the time zone of the latest (the city's).
    pub(crate) fn fare_schedule(&mut self) -> Result<(Schedule, Option<String>), LedgerError> {
        let rows: Vec<FareTableRow> =
            on_db!(self, |c| fare_tables::table.order(fare_tables::id).select(FareTableRow::as_select()).load(c))
                .map_err(storage)?;
        let tz = rows.last().map(|r| r.time_zone.clone());
        let tables =
            rows.iter().map(|r| Ok((r.effective_from_us, r.table()?))).collect::<Result<Vec<_>, LedgerError>>()?;
        Ok((Schedule::new(tables), tz))
    }

    /// Every route's operator account and fee rate.
    pub(crate) fn route_operators(&mut self) -> Result<RouteOperators, LedgerError> {
        let rows: Vec<(i64, i64, String)> = on_db!(self, |c| transit_routes::table
            .inner_join(merchants::table.on(merchants::id.eq(transit_routes::merchant_id)))
            .select((transit_routes::id, merchants::account_id, merchants::fee_rate))
            .load(c))
        .map_err(storage)?;
        rows.into_iter()
            .map(|(route, account, rate)| {
                let rate = FeeRate::parse(&rate).map_err(|_| {
                    LedgerError::Invariant(format!("route {route}: its operator's fee rate is malformed"))
                })?;
                Ok((route, (AccountId(account), rate)))
            })
            .collect()
    }

    /// A card's taps from `since_us` on, in time order (then recording order).
    pub(crate) fn card_taps(&mut self, card: i64, since_us: i64) -> Result<Vec<TapRow>, LedgerError> {
        let rows: Vec<TapColumns> = on_db!(self, |c| transit_taps::table
            .filter(transit_taps::card_id.eq(card).and(transit_taps::tap_time_us.ge(since_us)))
            .order((transit_taps::tap_time_us, transit_taps::event_id))
            .select(TAP_COLUMNS)
            .load(c))
        .map_err(storage)?;
        Ok(rows.into_iter().map(tap_row).collect())
    }

    /// The taps of these cards from `since_us` on, in time order (then recording order): the
    /// writer's one read of a batch's cards.
    pub(crate) fn cards_taps(&mut self, cards: &[i64], since_us: i64) -> Result<Vec<TapRow>, LedgerError> {
        if cards.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<TapColumns> = on_db!(self, |c| transit_taps::table
            .filter(in_list!(transit_taps::card_id, cards).and(transit_taps::tap_time_us.ge(since_us)))
            .order((transit_taps::tap_time_us, transit_taps::event_id))
            .select(TAP_COLUMNS)
            .load(c))
        .map_err(storage)?;
        Ok(rows.into_iter().map(tap_row).collect())
    }

    /// The entries of these rides of these cards, as `(card, entry seq, ride event)`, in
    /// entry order: the writer's one read of a batch's rides.
    pub(crate) fn cards_ride_entries(
        &mut self,
        cards: &[i64],
        rides: &[i64],
    ) -> Result<Vec<(i64, i64, i64)>, LedgerError> {
        if rides.is_empty() {
            return Ok(Vec::new());
        }
        on_db!(self, |c| transit_entries::table
            .filter(in_list!(transit_entries::card_id, cards).and(in_list!(transit_entries::ride_event_id, rides)))
            .order(transit_entries::entry_seq)
            .select((transit_entries::card_id, transit_entries::entry_seq, transit_entries::ride_event_id))
            .load(c))
        .map_err(storage)
    }

    /// Up to `limit` taps with an event id above `after`, in event order (`kartu audit
    /// verify` pages through them beside the log's `transit_tap` leaves).
    pub(crate) fn taps_after(&mut self, after: i64, limit: i64) -> Result<Vec<TapRow>, LedgerError> {
        let rows: Vec<TapColumns> = on_db!(self, |c| transit_taps::table
            .filter(transit_taps::event_id.gt(after))
            .order(transit_taps::event_id)
            .limit(limit)
            .select(TAP_COLUMNS)
            .load(c))
        .map_err(storage)?;
        Ok(rows.into_iter().map(tap_row).collect())
    }

    /// Up to `limit` links of rides' entries with an entry number above `after`, in entry
    /// order (`kartu audit verify` pages through them beside the log's entries).
    pub(crate) fn ride_entries_after(&mut self, after: i64, limit: i64) -> Result<Vec<RideEntry>, LedgerError> {
        let rows: Vec<(i64, i64, i64, i64)> = on_db!(self, |c| transit_entries::table
            .filter(transit_entries::entry_seq.gt(after))
            .order(transit_entries::entry_seq)
            .limit(limit)
            .select(RIDE_ENTRY)
            .load(c))
        .map_err(storage)?;
        Ok(rows.into_iter().map(ride_entry).collect())
    }

    /// The entries of these rides of a card, as `(entry seq, ride event)`.
    pub(crate) fn ride_entries(&mut self, card: i64, rides: &[i64]) -> Result<Vec<(i64, i64)>, LedgerError> {
        if rides.is_empty() {
            return Ok(Vec::new());
        }
        on_db!(self, |c| transit_entries::table
            .filter(transit_entries::card_id.eq(card).and(in_list!(transit_entries::ride_event_id, rides)))
            .order(transit_entries::entry_seq)
            .select((transit_entries::entry_seq, transit_entries::ride_event_id))
            .load(c))
        .map_err(storage)
    }

    /// Stores a batch's taps and the rides its entries belong to.
    pub(crate) fn insert_transit(&mut self, taps: &[TapRow], entries: &[RideEntry]) -> Result<(), LedgerError> {
        for t in taps {
            let row = (
                transit_taps::event_id.eq(t.event_id),
                transit_taps::card_id.eq(t.card_id),
                transit_taps::credential_id.eq(t.credential_id),
                transit_taps::route_id.eq(t.tap.route),
                transit_taps::stop.eq(t.tap.stop),
                transit_taps::direction.eq(if t.tap.kind == TapKind::On { "on" } else { "off" }),
                transit_taps::tap_time_us.eq(t.tap.time_us),
                transit_taps::offline.eq(t.offline),
                transit_taps::sync_id.eq(t.sync_id),
                transit_taps::offline_minor.eq(t.offline_minor),
            );
            on_db!(self, |c| diesel::insert_into(transit_taps::table).values(row).execute(c)).map_err(storage)?;
        }
        for e in entries {
            let row = (
                transit_entries::entry_seq.eq(e.entry_seq),
                transit_entries::card_id.eq(e.card_id),
                transit_entries::ride_event_id.eq(e.ride_event_id),
                transit_entries::event_id.eq(e.event_id),
            );
            on_db!(self, |c| diesel::insert_into(transit_entries::table).values(row).execute(c)).map_err(storage)?;
        }
        Ok(())
    }

    /// Cards with a ride hold that is still open and expires at or before `expiring_us`
    /// (a ride hold expires a grace period after its time limit: the sweep closes the
    /// rides whose limit passed).
    pub(crate) fn cards_with_open_ride_holds(&mut self, expiring_us: i64) -> Result<Vec<i64>, LedgerError> {
        let holds: Vec<(i64, i64)> = on_db!(self, |c| transit_entries::table
            .inner_join(journal_entries::table.on(journal_entries::seq.eq(transit_entries::entry_seq)))
            .filter(journal_entries::kind.eq("hold").and(journal_entries::expires_at_us.le(expiring_us)))
            .select((transit_entries::entry_seq, transit_entries::card_id))
            .load(c))
        .map_err(storage)?;
        let seqs: Vec<i64> = holds.iter().map(|h| h.0).collect();
        let closed: std::collections::HashSet<i64> =
            self.related(&seqs, &["capture", "void"])?.into_iter().map(|(s, _)| s).collect();
        let mut cards: Vec<i64> = holds.into_iter().filter(|(s, _)| !closed.contains(s)).map(|(_, c)| c).collect();
        cards.sort_unstable();
        cards.dedup();
        Ok(cards)
    }
}

/// A `transit_taps` row as selected: event, card, credential, route, stop, direction, time,
/// offline, sync, what an offline tap counted.
type TapColumns = (i64, i64, i64, i64, i64, String, i64, bool, Option<i64>, Option<i64>);

/// The columns of [`TapColumns`], in its order.
const TAP_COLUMNS: (
    transit_taps::event_id,
    transit_taps::card_id,
    transit_taps::credential_id,
    transit_taps::route_id,
    transit_taps::stop,
    transit_taps::direction,
    transit_taps::tap_time_us,
    transit_taps::offline,
    transit_taps::sync_id,
    transit_taps::offline_minor,
) = (
    transit_taps::event_id,
    transit_taps::card_id,
    transit_taps::credential_id,
    transit_taps::route_id,
    transit_taps::stop,
    transit_taps::direction,
    transit_taps::tap_time_us,
    transit_taps::offline,
    transit_taps::sync_id,
    transit_taps::offline_minor,
);

/// A stored tap as the writer prices it (the table's CHECK allows `on` and `off` only).
fn tap_row(row: TapColumns) -> TapRow {
    let (event_id, card_id, credential_id, route, stop, direction, time_us, offline, sync_id, offline_minor) = row;
    let kind = if direction == "on" { TapKind::On } else { TapKind::Off };
    TapRow {
        event_id,
        card_id,
        credential_id,
        tap: Tap { time_us, route, stop, kind },
        offline,
        sync_id,
        offline_minor,
    }
}

/// A new route.
#[derive(Debug, Clone, Copy)]
pub struct NewRouteRow<'a> {
    /// The transit operator.
    pub merchant_id: i64,
    /// Its public name.
    pub name: &'a str,
    /// bus, brt, ferry or rail.
    pub mode: &'a str,
    /// The stops' names in order, JSON.
    pub stops: &'a str,
}

impl Registry<'_> {
    /// Adds a route.
    pub fn insert_route(&mut self, new: NewRouteRow<'_>, now_us: i64, event_id: i64) -> Result<Route, LedgerError> {
        let values = (
            transit_routes::merchant_id.eq(new.merchant_id),
            transit_routes::name.eq(new.name),
            transit_routes::mode.eq(new.mode),
            transit_routes::stops.eq(new.stops),
            transit_routes::created_at_us.eq(now_us),
            transit_routes::event_id.eq(event_id),
        );
        on_db!(self.0, |c| diesel::insert_into(transit_routes::table)
            .values(values)
            .returning(Route::as_returning())
            .get_result(c))
        .map_err(storage)
    }

    /// Every route.
    pub fn routes(&mut self) -> Result<Vec<Route>, LedgerError> {
        on_db!(self.0, |c| transit_routes::table.order(transit_routes::id).select(Route::as_select()).load(c))
            .map_err(storage)
    }

    /// A route by id.
    pub fn route(&mut self, id: i64) -> Result<Option<Route>, LedgerError> {
        on_db!(self.0, |c| transit_routes::table.find(id).select(Route::as_select()).first(c).optional())
            .map_err(storage)
    }

    /// The route its operator_action event created (a retried request finds it).
    pub fn route_by_event(&mut self, event_id: i64) -> Result<Option<Route>, LedgerError> {
        on_db!(self.0, |c| transit_routes::table
            .filter(transit_routes::event_id.eq(event_id))
            .select(Route::as_select())
            .first(c)
            .optional())
        .map_err(storage)
    }

    /// Binds a validator's credential to a route (and a gate's stop).
    pub fn insert_validator(&mut self, v: &Validator) -> Result<(), LedgerError> {
        let values = (
            transit_validators::credential_id.eq(v.credential_id),
            transit_validators::route_id.eq(v.route_id),
            transit_validators::stop.eq(v.stop),
            transit_validators::event_id.eq(v.event_id),
        );
        on_db!(self.0, |c| diesel::insert_into(transit_validators::table).values(values).execute(c))
            .map_err(storage)?;
        Ok(())
    }

    /// What a credential is bound to, if it is a validator.
    pub fn validator(&mut self, credential_id: i64) -> Result<Option<Validator>, LedgerError> {
        on_db!(self.0, |c| transit_validators::table
            .find(credential_id)
            .select(Validator::as_select())
            .first(c)
            .optional())
        .map_err(storage)
    }

    /// Every validator.
    pub fn validators(&mut self) -> Result<Vec<Validator>, LedgerError> {
        on_db!(self.0, |c| transit_validators::table
            .order(transit_validators::credential_id)
            .select(Validator::as_select())
            .load(c))
        .map_err(storage)
    }

    /// Records a fare table (after its approval).
    pub fn insert_fare_table(
        &mut self,
        effective_from_us: i64,
        time_zone: &str,
        body: &str,
        now_us: i64,
        event_id: i64,
    ) -> Result<FareTableRow, LedgerError> {
        let values = (
            fare_tables::effective_from_us.eq(effective_from_us),
            fare_tables::time_zone.eq(time_zone),
            fare_tables::body.eq(body),
            fare_tables::created_at_us.eq(now_us),
            fare_tables::event_id.eq(event_id),
        );
        on_db!(self.0, |c| diesel::insert_into(fare_tables::table)
            .values(values)
            .returning(FareTableRow::as_returning())
            .get_result(c))
        .map_err(storage)
    }

    /// Every fare table, oldest first.
    pub fn fare_tables(&mut self) -> Result<Vec<FareTableRow>, LedgerError> {
        on_db!(self.0, |c| fare_tables::table.order(fare_tables::id).select(FareTableRow::as_select()).load(c))
            .map_err(storage)
    }

    /// A card's taps from `since_us` on, as `(event id, credential, tap, offline)`.
    pub fn card_taps(&mut self, card: i64, since_us: i64) -> Result<Vec<(i64, i64, Tap, bool)>, LedgerError> {
        Ok(self
            .0
            .card_taps(card, since_us)?
            .into_iter()
            .map(|t| (t.event_id, t.credential_id, t.tap, t.offline))
            .collect())
    }

    /// Every fare table in force from its start, as the writer prices with it.
    pub fn fare_schedule(&mut self) -> Result<Schedule, LedgerError> {
        Ok(self.0.fare_schedule()?.0)
    }

    /// The tap an event recorded, as `(card, tap)`; none when the event was no tap.
    pub fn tap_of_event(&mut self, event_id: i64) -> Result<Option<(i64, Tap)>, LedgerError> {
        let row: Option<TapColumns> = on_db!(self.0, |c| transit_taps::table
            .filter(transit_taps::event_id.eq(event_id))
            .select(TAP_COLUMNS)
            .first(c)
            .optional())
        .map_err(storage)?;
        Ok(row.map(tap_row).map(|t| (t.card_id, t.tap)))
    }

    /// Every tap from `since_us` on, as `(card, tap)`, in time order (what validators sync).
    pub fn taps_since(&mut self, since_us: i64) -> Result<Vec<(i64, Tap)>, LedgerError> {
        let rows: Vec<(i64, i64, i64, String, i64)> = on_db!(self.0, |c| transit_taps::table
            .filter(transit_taps::tap_time_us.ge(since_us))
            .order((transit_taps::tap_time_us, transit_taps::event_id))
            .select((
                transit_taps::card_id,
                transit_taps::route_id,
                transit_taps::stop,
                transit_taps::direction,
                transit_taps::tap_time_us,
            ))
            .load(c))
        .map_err(storage)?;
        Ok(rows
            .into_iter()
            .map(|(card, route, stop, direction, time_us)| {
                let kind = if direction == "on" { TapKind::On } else { TapKind::Off };
                (card, Tap { time_us, route, stop, kind })
            })
            .collect())
    }

    /// The entries of a card's rides, as `(entry seq, ride event)`.
    pub fn ride_entries(&mut self, card: i64, rides: &[i64]) -> Result<Vec<(i64, i64)>, LedgerError> {
        self.0.ride_entries(card, rides)
    }

    /// The entries a tap (or close) event made, oldest first.
    pub fn entries_of_tap(&mut self, event_id: i64) -> Result<Vec<RideEntry>, LedgerError> {
        let rows: Vec<(i64, i64, i64, i64)> = on_db!(self.0, |c| transit_entries::table
            .filter(transit_entries::event_id.eq(event_id))
            .order(transit_entries::entry_seq)
            .select(RIDE_ENTRY)
            .load(c))
        .map_err(storage)?;
        Ok(rows.into_iter().map(ride_entry).collect())
    }
}
