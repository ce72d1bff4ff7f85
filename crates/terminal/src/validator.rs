//! A transit validator's own knowledge, to decide taps when the server cannot be reached:
//! its last `GET /v1/transit/sync` (its route and stops, the fare tables, concessions by
//! card, every card's recent taps) and the taps it saw itself since. It prices a tap with
//! `domain::fares` — the function the ledger's writer prices with — so that what the rider
//! is shown offline is what the server will charge when the journal is uploaded, unless a
//! tap elsewhere that the validator could not know changes the journey (the server then
//! corrects the ride, and says so on the receipt).

use std::collections::{BTreeSet, HashMap};

use client::wire::TransitSync;
use domain::fares::{FareTable, RouteFare, Schedule, Tap as FareTap, TapKind};

/// Which way a validator's taps go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Every tap boards (an entry gate, a flat-fare bus).
    On,
    /// Every tap alights (an exit gate).
    Off,
    /// A card with an open ride on this route taps off, any other taps on (one validator at
    /// a bus's door on a distance-priced route).
    #[default]
    Auto,
}

impl Direction {
    /// Parses `on`, `off`, `auto`.
    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "on" => Some(Direction::On),
            "off" => Some(Direction::Off),
            "auto" => Some(Direction::Auto),
            _ => None,
        }
    }
}

/// A validator's settings: the direction of its taps, and on a vehicle the stop it is at
/// (a gate's stop is its own, from the sync).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ValidatorSettings {
    /// Which way taps go.
    pub direction: Direction,
    /// On a vehicle: the stop (its position on the route).
    pub stop: Option<i64>,
}

/// What an offline tap comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    /// The ride's charge after the tap (a distance ride's tap on: its maximum, as the
    /// server holds it), minor units.
    pub charge_minor: i64,
    /// The rules that priced it ("flat fare; transfer within 60 min").
    pub rules: String,
}

/// Why a tap cannot be priced offline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    /// Never synced.
    #[error("this validator has no transit sync (route, fare tables) to decide with")]
    NoSync,
    /// The sync has no usable fare table for the tap.
    #[error("no fare for this tap: {0}")]
    NoFare(String),
}

/// The validator's last transit sync and what it saw since.
#[derive(Debug, Default)]
pub struct Journeys {
    sync: Option<TransitSync>,
    schedule: Schedule,
    /// The time zones of the fare tables, by start.
    zones: Vec<(i64, chrono_tz::Tz)>,
    route: Option<i64>,
    /// Taps this validator made since the sync, by UID (upper case).
    seen: HashMap<String, Vec<FareTap>>,
}

pub(crate) fn rfc3339_us(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text).ok().map(|d| d.timestamp_micros())
}

impl Journeys {
    /// From a sync; a table the validator cannot read is left out (its rides are then
    /// refused offline, not priced by a wrong table).
    pub fn new(sync: Option<TransitSync>) -> Journeys {
        let Some(sync) = sync else { return Journeys::default() };
        let mut tables = Vec::new();
        let mut zones = Vec::new();
        for t in &sync.fare_tables {
            let from = rfc3339_us(&t.effective_from);
            let table = serde_json::from_value::<FareTable>(t.table.clone()).ok();
            let zone = t.time_zone.parse::<chrono_tz::Tz>().ok();
            if let (Some(from), Some(table), Some(zone)) = (from, table, zone) {
                tables.push((from, table));
                zones.push((from, zone));
            }
        }
        zones.sort_by_key(|z| z.0);
        let route = sync.route_id.parse().ok();
        Journeys { schedule: Schedule::new(tables), zones, route, sync: Some(sync), seen: HashMap::new() }
    }

    /// The validator's route.
    pub fn route(&self) -> Option<i64> {
        self.route
    }

    /// A gate's own stop (none on a vehicle).
    pub fn gate_stop(&self) -> Option<i64> {
        self.sync.as_ref().and_then(|s| s.stop)
    }

    /// How many stops the route has.
    pub fn stops(&self) -> usize {
        self.sync.as_ref().map_or(0, |s| s.stops.len())
    }

    /// Notes a tap this validator made (online or offline).
    pub fn saw(&mut self, uid: &str, tap: FareTap) {
        self.seen.entry(uid.to_ascii_uppercase()).or_default().push(tap);
    }

    /// The card's known taps, oldest first: the sync's and this validator's since.
    fn taps_of(&self, uid: &str) -> Vec<FareTap> {
        let uid = uid.to_ascii_uppercase();
        let mut taps: BTreeSet<(i64, i64, i64, bool)> = BTreeSet::new();
        let synced = self.sync.iter().flat_map(|s| s.journeys.iter()).filter(|j| j.uid.eq_ignore_ascii_case(&uid));
        for t in synced.flat_map(|j| j.taps.iter()) {
            if let Ok(route) = t.route_id.parse() {
                taps.insert((t.time_us, route, t.stop, t.direction == "on"));
            }
        }
        for t in self.seen.get(&uid).into_iter().flatten() {
            taps.insert((t.time_us, t.route, t.stop, t.kind == TapKind::On));
        }
        taps.into_iter()
            .map(|(time_us, route, stop, on)| FareTap {
                time_us,
                route,
                stop,
                kind: if on { TapKind::On } else { TapKind::Off },
            })
            .collect()
    }

    /// The route's time limit for a tap off, when it is priced by distance.
    fn limit_us(&self, route: i64, at_us: i64) -> Option<i64> {
        match self.schedule.at(at_us)?.routes.get(&route)? {
            RouteFare::Distance { time_limit_minutes, .. } => Some(time_limit_minutes * 60_000_000),
            RouteFare::Flat { .. } => None,
        }
    }

    /// The direction of a card's tap now: `Auto` alights a card whose last known tap
    /// boarded this (distance-priced) route within its time limit.
    pub fn direction(&self, uid: &str, wanted: Direction, now_us: i64) -> TapKind {
        match wanted {
            Direction::On => TapKind::On,
            Direction::Off => TapKind::Off,
            Direction::Auto => {
                let last = self.taps_of(uid).last().copied();
                let open = last.filter(|t| t.kind == TapKind::On && Some(t.route) == self.route);
                let within = open.and_then(|t| self.limit_us(t.route, t.time_us).map(|l| now_us < t.time_us + l));
                if within == Some(true) {
                    TapKind::Off
                } else {
                    TapKind::On
                }
            }
        }
    }

    /// Prices a tap of `uid` as the server will: `domain::fares` over the card's known taps
    /// and this one, with the holder's concession categories from the sync.
    pub fn price(&self, uid: &str, tap: FareTap) -> Result<Priced, PriceError> {
        let sync = self.sync.as_ref().ok_or(PriceError::NoSync)?;
        let categories: Vec<String> = sync
            .concessions
            .iter()
            .filter(|c| c.uid.eq_ignore_ascii_case(uid))
            .flat_map(|c| c.categories.iter().cloned())
            .collect();
        let mut taps = self.taps_of(uid);
        let at = taps.partition_point(|t| t.time_us <= tap.time_us);
        taps.insert(at, tap);
        let zone = self.zones.iter().rev().find(|z| z.0 <= tap.time_us).map(|z| z.1).unwrap_or(chrono_tz::UTC);
        let rides = self.schedule.price(&categories, &taps, &zone).map_err(|e| PriceError::NoFare(e.to_string()))?;
        let ride = rides.iter().find(|r| r.on == at || r.off == Some(at));
        Ok(match ride {
            Some(r) => Priced {
                charge_minor: r.charge_minor,
                rules: r.rules.iter().map(|x| x.describe()).collect::<Vec<_>>().join("; "),
            },
            // A tap off with no open ride ends nothing and costs nothing.
            None => Priced { charge_minor: 0, rules: "no ride to end".into() },
        })
    }
}
