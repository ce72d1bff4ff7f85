//! Check 8 for public transport (issue 18). The writer decides money with four tables
//! besides balances — `transit_routes` (which operator a ride pays), `fare_tables` (what it
//! costs), `transit_taps` (the card's rides) and `transit_entries` (what each ride has been
//! charged so far) — so each row must be what the log says:
//!
//! - a route is its `create_route` leaf, and every `create_route` leaf has its route;
//! - a validator is its `bind_validator` leaf, and its credential a merchant terminal of
//!   the route's operator;
//! - a fare table carries out an approved `fare_table` request: its `event_id` is the
//!   approval's `approve_request` decision, its time zone and table (as JSON) the request's,
//!   and it is in force from the requested start or the decision leaf's time, whichever is
//!   later; an approved `fare_table` request has its table, and its `result` names it;
//! - a tap is its `transit_tap` event (card, route, stop, direction, validator; the time,
//!   the event's online and the signed record's offline; offline, the sync the record
//!   names, and what the tap counted against the validator's limits at least the fare the
//!   validator charged), and every `transit_tap` event has its tap;
//! - a ride's entry link names an entry whose leaf has the link's card and the merchant
//!   reference `ride:<ride>`, the ride a boarding of that card and the maker a
//!   `transit_tap` or `transit_close` event of it; every entry whose reference names a
//!   boarding of its own card has its link (a merchant's own reference may read `ride:…`).
//!
//! Taps and entry links are journal tables as long as the log: they are read a page at a
//! time in key order, beside what the leaf pass kept in the same order.

use std::collections::{BTreeMap, HashMap};

use domain::fares::TapKind;
use domain::registry::Role;
use serde_json::Value;

use super::{json_column, show_int, show_text, text_of, Action, At, Model, Tables};
use crate::domain::{Entry, EventRecord, RideEntry, TapRow};
use crate::store::registry::{Approval, Credential};
use crate::store::transit::FareTableRow;
use crate::store::Db;
use crate::LedgerError;

/// The approval kind of a fare table (`api::operator::fares`).
const FARE_TABLE: &str = "fare_table";

/// Taps and entry links read per query.
const PAGE: i64 = 5_000;

/// A `transit_tap` event as its leaf says (its card, and its payload's route, stop,
/// direction and validator).
#[derive(Debug, Clone, Copy)]
struct TapLeaf {
    time_us: i64,
    card: Option<i64>,
    route: Option<i64>,
    stop: Option<i64>,
    direction: Option<TapKind>,
    validator: Option<i64>,
    /// An offline validator's tap (uploaded in its journal): the record's own time.
    offline_time_us: Option<i64>,
    /// An offline tap: the sync its record names, and the fare the validator charged.
    sync_id: Option<i64>,
    fare_minor: Option<i64>,
}

/// A journal entry whose merchant reference starts `ride:`, as its leaf says: its card
/// and the ride the reference names (none when what follows is no event id).
#[derive(Debug, Clone, Copy)]
struct RideLeaf {
    card: Option<i64>,
    ride: Option<i64>,
}

/// What the leaf pass keeps for public transport, by event id or entry number.
#[derive(Debug, Default)]
pub(super) struct TransitLeaves {
    taps: BTreeMap<i64, TapLeaf>,
    /// `transit_close` events and the card each closed rides of.
    closes: BTreeMap<i64, Option<i64>>,
    rides: BTreeMap<i64, RideLeaf>,
}

impl TransitLeaves {
    /// Keeps a `transit_tap` or `transit_close` event (other events name no transit row).
    pub(super) fn event(&mut self, e: &EventRecord) {
        match e.kind.as_str() {
            "transit_tap" => {
                let p: Value = serde_json::from_str(&e.payload).unwrap_or(Value::Null);
                let direction = match p["direction"].as_str() {
                    Some("on") => Some(TapKind::On),
                    Some("off") => Some(TapKind::Off),
                    _ => None,
                };
                let tap = TapLeaf {
                    time_us: e.time_us,
                    card: e.card_id,
                    route: p["route_id"].as_i64(),
                    stop: p["stop"].as_i64(),
                    direction,
                    validator: p["validator"].as_i64(),
                    offline_time_us: (p["offline_seq"].is_i64().then(|| p["terminal_time_us"].as_i64()).flatten())
                        .or_else(|| p["fix_of"].is_i64().then(|| p["tap_time_us"].as_i64()).flatten()),
                    sync_id: p["sync_id"].as_i64(),
                    fare_minor: p["fare_minor"].as_i64(),
                };
                self.taps.insert(e.id, tap);
            }
            "transit_close" => {
                self.closes.insert(e.id, e.card_id);
            }
            _ => {}
        }
    }

    /// Keeps an entry whose merchant reference starts `ride:`.
    pub(super) fn entry(&mut self, e: &Entry) {
        let r = &e.references;
        if let Some(ride) = r.merchant_reference.as_deref().and_then(|m| m.strip_prefix("ride:")) {
            let ride = ride.parse().ok().filter(|_| ride.bytes().all(|b| b.is_ascii_digit()));
            self.rides.insert(e.seq, RideLeaf { card: r.card_id, ride });
        }
    }

    /// Whether `event` is a boarding (a `transit_tap` on) of `card`: what a ride's id names.
    fn boarding_of(&self, event: i64, card: i64) -> bool {
        self.taps.get(&event).is_some_and(|t| t.card == Some(card) && t.direction == Some(TapKind::On))
    }

    /// Whether `event` is a `transit_tap` or `transit_close` event of `card`: what makes a
    /// ride's entries.
    fn tap_or_close_of(&self, event: i64, card: i64) -> bool {
        self.taps.get(&event).is_some_and(|t| t.card == Some(card)) || self.closes.get(&event) == Some(&Some(card))
    }
}

/// Compares public transport's tables with the leaves; returns how many tap and entry-link
/// rows it read (the routes, validators and fare tables are in `t`).
pub(super) fn check(m: &mut Model<'_>, t: &Tables, db: &mut Db, leaves: &TransitLeaves) -> Result<usize, LedgerError> {
    let operators = routes(m, t);
    validators(m, t, &operators);
    fare_tables(m, t);
    approved_fare_tables(m, t);
    Ok(taps(m, db, leaves)? + ride_entries(m, db, leaves)?)
}

/// Routes: each its `create_route` leaf, and each such leaf its route (a request stopped
/// between the log and the table leaves none: its retry under the same key makes it).
/// Gives each route's operator as its leaf says (the row's when the leaf does not).
fn routes(m: &mut Model<'_>, t: &Tables) -> HashMap<i64, i64> {
    let mut operators = HashMap::new();
    let mut seen = HashMap::new();
    for r in &t.routes {
        let at = At { table: "transit_routes", row: r.id, label: format!("name {:?}", r.name) };
        let mut operator = r.merchant_id;
        if let Some(a) = m.creation(&at, r.event_id, &["create_route"], &mut seen) {
            let d = &a.details;
            m.int(&at, "merchant_id", Some(r.merchant_id), d["merchant_id"].as_i64());
            m.text(&at, "name", Some(&r.name), text_of(&d["name"]));
            m.text(&at, "mode", Some(&r.mode), text_of(&d["mode"]));
            m.value(&at, "stops", &json_column(Some(&r.stops)), &d["stops"]);
            operator = d["merchant_id"].as_i64().unwrap_or(operator);
        }
        operators.insert(r.id, operator);
    }
    let actions = m.actions;
    for (event, a) in actions.iter().filter(|(e, a)| a.action == "create_route" && !seen.contains_key(*e)) {
        m.missing(
            "transit_routes",
            format!("name {}", show_text(text_of(&a.details["name"]))),
            "event_id",
            format!(
                "has no row, but its create_route leaf (event {event}) made one: deleted, or its request stopped \
                 before the table (a retry under the same Idempotency-Key makes it)"
            ),
        );
    }
    operators
}

/// Validators: each its `bind_validator` leaf, binding a merchant terminal of the route's
/// operator (`operators`: each route's, as its leaf says).
fn validators(m: &mut Model<'_>, t: &Tables, operators: &HashMap<i64, i64>) {
    let credentials: HashMap<i64, &Credential> = t.credentials.iter().map(|c| (c.id, c)).collect();
    let mut seen = HashMap::new();
    for v in &t.validators {
        let at = At { table: "transit_validators", row: v.credential_id, label: format!("route {}", v.route_id) };
        let Some(a) = m.creation(&at, v.event_id, &["bind_validator"], &mut seen) else { continue };
        let d = &a.details;
        m.int(&at, "credential_id", Some(v.credential_id), d["credential_id"].as_i64());
        m.int(&at, "route_id", Some(v.route_id), d["route_id"].as_i64());
        m.int(&at, "stop", v.stop, d["stop"].as_i64());
        // What the leaf bound (a row that differs is reported above, once).
        let (credential, route) = (d["credential_id"].as_i64(), d["route_id"].as_i64());
        let operator = route.and_then(|r| operators.get(&r).copied());
        let c = credential.and_then(|c| credentials.get(&c));
        let fits =
            c.is_some_and(|c| c.role == Role::MerchantTerminal && c.merchant_id.is_some_and(|x| Some(x) == operator));
        if !fits {
            m.report(
                &at,
                "credential_id",
                format!(
                    "binds credential {} (role {}, merchant {}), which is not a merchant_terminal of route {}'s \
                     operator (merchant {})",
                    show_int(credential),
                    c.map_or("none", |c| c.role.as_str()),
                    show_int(c.and_then(|c| c.merchant_id)),
                    show_int(route),
                    show_int(operator)
                ),
            );
        }
    }
}

/// When an approved fare table takes effect: the requested start or the decision leaf's
/// time, whichever is later (`api::operator::fares::put_in_force`).
fn effective_from(request: &Value, decision: &Action) -> i64 {
    request["effective_from_us"].as_i64().unwrap_or(decision.time_us).max(decision.time_us)
}

/// A time for a reader (RFC 3339, µs, UTC).
fn show_time(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map_or_else(|| us.to_string(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// Fare tables: each carries out a `fare_table` request that its decision approved, with
/// the request's time zone and table, in force from [`effective_from`].
fn fare_tables(m: &mut Model<'_>, t: &Tables) {
    let approvals: HashMap<i64, &Approval> = t.approvals.iter().map(|a| (a.id, a)).collect();
    let mut seen = HashMap::new();
    for f in &t.fare_tables {
        let at = At { table: "fare_tables", row: f.id, label: format!("from {}", show_time(f.effective_from_us)) };
        let Some(decision) = m.creation(&at, f.event_id, &["approve_request"], &mut seen) else { continue };
        let Some(request) = fare_request(m, &at, f.event_id, decision, &approvals) else { continue };
        let r = &request.details["request"];
        m.text(&at, "time_zone", Some(&f.time_zone), text_of(&r["time_zone"]));
        m.value(&at, "body", &json_column(Some(&f.body)), &r["table"]);
        let from = effective_from(r, decision);
        if f.effective_from_us != from {
            m.report(
                &at,
                "effective_from_us",
                format!(
                    "effective_from_us {} ({}) but its leaves say {from} ({}: the later of the requested start and \
                     the approval, event {})",
                    f.effective_from_us,
                    show_time(f.effective_from_us),
                    show_time(from),
                    f.event_id
                ),
            );
        }
    }
}

/// The `request_approval` leaf a fare table's decision (event `event`) carries out: a
/// `fare_table` request whose approval row says this decision approved it (the approvals
/// check holds that row to its leaves). Reports why not, when not.
fn fare_request<'a>(
    m: &mut Model<'a>,
    at: &At,
    event: i64,
    decision: &Action,
    approvals: &HashMap<i64, &Approval>,
) -> Option<&'a Action> {
    let d = &decision.details;
    if d["kind"].as_str() != Some(FARE_TABLE) {
        let kind = d["kind"].as_str().unwrap_or("?");
        m.report(
            at,
            "event_id",
            format!("has no approved fare_table request: its event_id {event} approves a {kind} request"),
        );
        return None;
    }
    let request_event = d["request_event_id"].as_i64();
    let actions = m.actions;
    let request = request_event
        .and_then(|e| actions.get(&e))
        .filter(|l| l.action == "request_approval" && l.details["kind"].as_str() == Some(FARE_TABLE));
    let approval = d["approval_id"].as_i64().and_then(|id| approvals.get(&id));
    let approved = approval.is_some_and(|a| {
        a.kind == FARE_TABLE
            && a.status == "approved"
            && a.decided_event_id == Some(event)
            && Some(a.event_id) == request_event
    });
    match (request, approval) {
        (Some(r), _) if approved => Some(r),
        (None, _) => {
            m.report(
                at,
                "event_id",
                format!("its approve_request leaf (event {event}) names no fare_table request leaf"),
            );
            None
        }
        (Some(_), a) => {
            let state = a.map_or("not in the table".to_owned(), |a| {
                format!("{} by event {}", a.status, show_int(a.decided_event_id))
            });
            m.report(
                at,
                "event_id",
                format!(
                    "has no approved fare_table request: its event_id {event} decides approval {}, which is {state}",
                    show_int(d["approval_id"].as_i64())
                ),
            );
            None
        }
    }
}

/// Approved `fare_table` requests: each carried out by a fare table recorded under its
/// decision, whose id and start its `result` names.
fn approved_fare_tables(m: &mut Model<'_>, t: &Tables) {
    let by_event: HashMap<i64, &FareTableRow> = t.fare_tables.iter().map(|f| (f.event_id, f)).collect();
    for x in t.approvals.iter().filter(|a| a.kind == FARE_TABLE && a.status == "approved") {
        // An approved row with no decision is the approvals check's finding.
        let Some(decided) = x.decided_event_id else { continue };
        let at = At { table: "approvals", row: x.id, label: format!("kind {}", x.kind) };
        let Some(f) = by_event.get(&decided) else {
            m.report(&at, "result", format!("approved by event {decided}, but no fare_tables row carries it out"));
            continue;
        };
        let actions = m.actions;
        let from =
            actions.get(&decided).zip(actions.get(&x.event_id)).map(|(d, r)| effective_from(&r.details["request"], d));
        let result = json_column(x.result.as_deref());
        let said_from = result["effective_from"]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.timestamp_micros());
        let id = f.id.to_string();
        if result["fare_table_id"].as_str() != Some(id.as_str()) || from.is_some_and(|from| said_from != Some(from)) {
            m.report(
                &at,
                "result",
                format!(
                    "result {result} but its decision (event {decided}) made fare table {id}, in force from {}",
                    from.map_or_else(|| "?".to_owned(), show_time)
                ),
            );
        }
    }
}

fn direction(kind: TapKind) -> &'static str {
    match kind {
        TapKind::On => "on",
        TapKind::Off => "off",
    }
}

/// Taps against the `transit_tap` leaves, both in event order, a page of rows at a time: a
/// row with no leaf, a leaf with no row, every field that differs. Returns the rows read.
fn taps(m: &mut Model<'_>, db: &mut Db, leaves: &TransitLeaves) -> Result<usize, LedgerError> {
    let mut pending = leaves.taps.iter().peekable();
    let (mut after, mut rows) = (0, 0);
    loop {
        let page = db.taps_after(after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.event_id;
        rows += page.len();
        for row in &page {
            while let Some((id, leaf)) = pending.next_if(|(id, _)| **id < row.event_id) {
                tap_without_row(m, *id, leaf);
            }
            match pending.next_if(|(id, _)| **id == row.event_id) {
                Some((_, leaf)) => tap(m, row, leaf),
                None => m.report(
                    &tap_at(row.event_id, Some(row.card_id)),
                    "event_id",
                    format!("has no transit_tap leaf: event {} is no transit_tap event in the log", row.event_id),
                ),
            }
        }
    }
    for (id, leaf) in pending {
        tap_without_row(m, *id, leaf);
    }
    Ok(rows)
}

fn tap_at(event: i64, card: Option<i64>) -> At {
    At { table: "transit_taps", row: event, label: format!("card {}", show_int(card)) }
}

/// A tap row against its leaf: card, route, stop, direction and validator; whether it was
/// uploaded offline (its leaf names the journal record); its time, which is the event's
/// for an online tap and the signed record's for an offline one; and an offline tap's
/// sync and what it counted against the validator's limits (at least the validator's fare:
/// a row lowered below it would let the validator take more offline than its limits).
fn tap(m: &mut Model<'_>, row: &TapRow, leaf: &TapLeaf) {
    let at = tap_at(row.event_id, Some(row.card_id));
    m.int(&at, "card_id", Some(row.card_id), leaf.card);
    m.int(&at, "route_id", Some(row.tap.route), leaf.route);
    m.int(&at, "stop", Some(row.tap.stop), leaf.stop);
    m.text(&at, "direction", Some(direction(row.tap.kind)), leaf.direction.map(direction));
    m.int(&at, "credential_id", Some(row.credential_id), leaf.validator);
    let offline = leaf.offline_time_us.is_some();
    m.text(
        &at,
        "offline",
        Some(if row.offline { "true" } else { "false" }),
        Some(if offline { "true" } else { "false" }),
    );
    m.int(&at, "tap_time_us", Some(row.tap.time_us), Some(leaf.offline_time_us.unwrap_or(leaf.time_us)));
    m.int(&at, "sync_id", row.sync_id, leaf.sync_id);
    // A leaf that names a sync is held to its limits (taps uploaded before they were
    // counted name none).
    let counted_ok = match (leaf.sync_id, row.offline_minor) {
        // A tap off counts nothing (its boarding counted or held the ride).
        (Some(_), Some(n)) if leaf.direction == Some(TapKind::Off) => n == 0,
        (Some(_), Some(n)) => n >= leaf.fare_minor.unwrap_or(0),
        (Some(_), None) => false,
        (None, n) => n.is_none(),
    };
    if !counted_ok {
        let counted = show_int(row.offline_minor);
        let detail = match leaf.sync_id {
            Some(sync) => format!(
                "offline_minor {counted} but its leaf's record (sync {sync}) charged {}: an offline boarding \
                 counts at least its fare, a tap off nothing",
                show_int(leaf.fare_minor)
            ),
            None => format!("offline_minor {counted} but its leaf names no sync: it counts against no limit"),
        };
        m.report(&at, "offline_minor", detail);
    }
}

/// A `transit_tap` event with no row: the writer writes both in one transaction.
fn tap_without_row(m: &mut Model<'_>, event: i64, leaf: &TapLeaf) {
    m.report(
        &tap_at(event, leaf.card),
        "event_id",
        format!("is missing: the log's transit_tap event {event} has no row"),
    );
}

/// Entry links against the entries' leaves, both in entry order, a page of rows at a time.
/// Returns the rows read.
fn ride_entries(m: &mut Model<'_>, db: &mut Db, leaves: &TransitLeaves) -> Result<usize, LedgerError> {
    let mut pending = leaves.rides.iter().peekable();
    let (mut after, mut rows) = (0, 0);
    loop {
        let page = db.ride_entries_after(after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.entry_seq;
        rows += page.len();
        for row in &page {
            while let Some((seq, leaf)) = pending.next_if(|(seq, _)| **seq < row.entry_seq) {
                ride_without_row(m, leaves, *seq, leaf);
            }
            let leaf = pending.next_if(|(seq, _)| **seq == row.entry_seq).map(|(_, l)| l);
            ride_entry(m, leaves, row, leaf);
        }
    }
    for (seq, leaf) in pending {
        ride_without_row(m, leaves, *seq, leaf);
    }
    Ok(rows)
}

/// An entry link against its entry's leaf (`leaf`: none when the entry names no ride), the
/// ride's boarding and the event that made it.
fn ride_entry(m: &mut Model<'_>, leaves: &TransitLeaves, row: &RideEntry, leaf: Option<&RideLeaf>) {
    let at = At {
        table: "transit_entries",
        row: row.entry_seq,
        label: format!("card {}, ride {}", row.card_id, row.ride_event_id),
    };
    let names_ride = match leaf {
        None => {
            let detail =
                format!("names entry {}, whose leaf names no ride (no ride: merchant_reference)", row.entry_seq);
            m.report(&at, "entry_seq", detail);
            true
        }
        Some(l) => {
            m.int(&at, "card_id", Some(row.card_id), l.card);
            if l.ride != Some(row.ride_event_id) {
                let detail =
                    format!("ride_event_id {} but its entry's leaf says ride:{}", row.ride_event_id, show_int(l.ride));
                m.report(&at, "ride_event_id", detail);
            }
            l.ride == Some(row.ride_event_id)
        }
    };
    if names_ride && !leaves.boarding_of(row.ride_event_id, row.card_id) {
        let detail =
            format!("ride_event_id {} is no boarding (transit_tap, on) of card {}", row.ride_event_id, row.card_id);
        m.report(&at, "ride_event_id", detail);
    }
    if !leaves.tap_or_close_of(row.event_id, row.card_id) {
        let detail =
            format!("event_id {} is no transit_tap or transit_close event of card {}", row.event_id, row.card_id);
        m.report(&at, "event_id", detail);
    }
}

/// An entry whose reference names a ride with no link: the writer links every entry it
/// makes for a ride. A reference that names no boarding of the entry's own card is a
/// merchant's, not a ride's.
fn ride_without_row(m: &mut Model<'_>, leaves: &TransitLeaves, seq: i64, leaf: &RideLeaf) {
    let (Some(card), Some(ride)) = (leaf.card, leaf.ride) else { return };
    if !leaves.boarding_of(ride, card) {
        return;
    }
    let at = At { table: "transit_entries", row: seq, label: format!("card {card}, ride {ride}") };
    m.report(
        &at,
        "entry_seq",
        format!("is missing: the log's entry {seq} is ride {ride}'s (ride:{ride}) but has no row"),
    );
}
