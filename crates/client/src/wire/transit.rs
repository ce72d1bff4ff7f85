//! Public transport: a validator's tap and its answer, what a validator syncs to decide
//! offline, and the fare tables as published.

use serde::{Deserialize, Serialize};

use super::{Money, Receipt, Tap};

/// `POST /v1/transit/taps`: a card at a validator.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTransitTap {
    /// The card's SUN tap.
    pub tap: Tap,
    /// `on` (boarding, entry gate) or `off` (alighting, exit gate).
    pub direction: String,
    /// On a vehicle: the stop (its position on the route). A gate's stop is its own.
    pub stop: Option<i64>,
}

/// `POST /v1/transit/rides/{id}/tap-off`: where a rider who did not tap off alighted.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RideFix {
    /// The stop (its position on the ride's route).
    pub stop: i64,
}

/// One entry a tap made for a ride.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RideEntryView {
    /// The entry.
    pub entry_seq: String,
    /// hold (the fare so far of an open ride), capture, payment, refund or void.
    pub kind: String,
    /// The ride (its boarding tap's event).
    pub ride_id: String,
    /// The amount.
    pub amount: Money,
    /// The rules that priced the ride ("flat fare; transfer within 60 min").
    pub rules: Option<String>,
    /// The entry's leaf in the audit log.
    pub receipt: Receipt,
}

/// What a validator shows: the gate opens; what the card paid or holds, and why.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransitTapView {
    /// `open`: the tap is recorded (a refused tap is a problem, the gate stays shut);
    /// `fixed`: a ride's missing tap-off set by its operator.
    pub decision: String,
    /// The tap's event (a boarding's is its ride's id).
    pub event_id: i64,
    /// When the tap was recorded: the time fares count from (RFC 3339).
    pub time: String,
    /// The card.
    pub card_id: String,
    /// on or off.
    pub direction: String,
    /// The route.
    pub route_id: String,
    /// The stop.
    pub stop: i64,
    /// What the tap changed, ride by ride.
    pub entries: Vec<RideEntryView>,
    /// The card's balance after it.
    pub balance: Money,
}

/// A fare table in force from its start until the next one's.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FareTableView {
    /// Its number.
    pub id: String,
    /// When it takes effect (RFC 3339).
    pub effective_from: String,
    /// The city's time zone.
    pub time_zone: String,
    /// The table.
    #[schema(value_type = Object)]
    pub table: serde_json::Value,
    /// The approval decision's event.
    pub event_id: i64,
}

/// Every fare table, oldest first (public).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FareTableList {
    /// Oldest first.
    pub fare_tables: Vec<FareTableView>,
}

/// A tap as a validator syncs it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SyncedTap {
    /// µs since the Unix epoch.
    pub time_us: i64,
    /// The route.
    pub route_id: String,
    /// The stop.
    pub stop: i64,
    /// on or off.
    pub direction: String,
}

/// A card's recent taps, by UID.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CardJourney {
    /// The card's UID.
    pub uid: String,
    /// Its taps of the city's day so far (and the transfer window before it), oldest first.
    pub taps: Vec<SyncedTap>,
}

/// A card whose holder has a category some fare table gives a concession.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CardConcession {
    /// The card's UID.
    pub uid: String,
    /// The holder's categories.
    pub categories: Vec<String>,
}

/// What a validator needs to price taps offline with `domain::fares`, as the server does:
/// its route, the fare tables, concessions by card, and each card's recent taps. The deny
/// list and the offline limits come from `GET /v1/offline/deny-list` (its `sync_id` goes in
/// the records).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransitSync {
    /// The validator's route.
    pub route_id: String,
    /// A gate's stop.
    pub stop: Option<i64>,
    /// The route's stops.
    pub stops: Vec<String>,
    /// Every fare table.
    pub fare_tables: Vec<FareTableView>,
    /// Cards with a concession category.
    pub concessions: Vec<CardConcession>,
    /// Cards that tapped in the city's day so far (and the transfer window before it).
    pub journeys: Vec<CardJourney>,
}
