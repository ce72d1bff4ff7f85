//! Public transport fares as one pure function of a card's taps (issue 18, first part):
//! the server's writer and an offline bus validator price with the same code and the same
//! fare table, so an upload that arrives late and out of order is repriced to exactly what
//! an always-online system would have charged ([`price`] over every tap of the card in
//! time order; the differences are the corrections).
//!
//! The rules, in the order they apply to each ride (docs/TRANSIT.md works examples):
//! 1. **The route's fare.** Flat: one fare per boarding. Distance: tap on and tap off;
//!    `base + per_stop × stops travelled`, at most the route's maximum; a ride with no tap
//!    off before the route's time limit (or before the card's next tap on) costs the
//!    maximum ("missing tap-off").
//! 2. **Concession** by the holder's category: a percentage off (100: free).
//! 3. **Transfer window.** A journey starts at a boarding; boardings within
//!    `window_minutes` of that first boarding, on any route and operator, join it, and a
//!    journey costs at most `integrated_fare` (scaled by the concession) in all, or its
//!    first ride's fare when that alone is more.
//! 4. **Daily and weekly caps** per card (local days and ISO weeks in the city's time
//!    zone, scaled by the concession): once reached, further rides cost nothing.
//!
//! Amounts are minor units. Every charge says which rules applied ([`Rule`]).

use std::collections::BTreeMap;

use chrono::{Datelike, TimeZone};
use serde::{Deserialize, Serialize};

/// A route's fare product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RouteFare {
    /// One fare per boarding; no tap off.
    Flat {
        /// The fare.
        fare_minor: i64,
    },
    /// Tap on and tap off; priced by the stops between.
    Distance {
        /// What any ride costs.
        base_minor: i64,
        /// Added per stop travelled.
        per_stop_minor: i64,
        /// The most a ride costs (and what a ride without a tap off costs).
        max_minor: i64,
        /// A ride not tapped off within this many minutes costs the maximum.
        time_limit_minutes: i64,
    },
}

impl RouteFare {
    /// The most one ride on the route costs (what a tap on holds).
    pub fn max_minor(&self) -> i64 {
        match self {
            RouteFare::Flat { fare_minor } => *fare_minor,
            RouteFare::Distance { max_minor, .. } => *max_minor,
        }
    }
}

/// A city's fare table: the routes' products, the transfer window, caps and concessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FareTable {
    /// By route id.
    pub routes: BTreeMap<i64, RouteFare>,
    /// The transfer window and the integrated fare, if the city has one.
    pub transfer: Option<Transfer>,
    /// The most a card pays in a local day.
    pub daily_cap_minor: Option<i64>,
    /// The most a card pays in an ISO week (Monday to Sunday, local).
    pub weekly_cap_minor: Option<i64>,
    /// Percent off by holder category (`student`, `senior`, …); 100 is free.
    pub concessions: BTreeMap<String, u8>,
}

/// An integrated fare across routes and operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Boardings within this many minutes of a journey's first boarding join it.
    pub window_minutes: i64,
    /// The most a journey costs.
    pub integrated_fare_minor: i64,
}

/// One tap at a validator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tap {
    /// When, µs since the Unix epoch.
    pub time_us: i64,
    /// The route (a bus line, a ferry, a rail line).
    pub route: i64,
    /// The stop's position along the route (0, 1, 2, …).
    pub stop: i64,
    /// Boarding or alighting.
    pub kind: TapKind,
}

/// Whether a tap boards or alights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TapKind {
    /// Tap on.
    On,
    /// Tap off.
    Off,
}

/// Why a ride costs what it costs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Rule {
    /// The route's flat fare.
    Flat,
    /// The distance fare for this many stops.
    Distance {
        /// Stops travelled.
        stops: i64,
    },
    /// No tap off in time: the route's maximum.
    MissingTapOff,
    /// A concession's percentage off.
    Concession {
        /// The holder category.
        category: String,
        /// Percent off.
        percent: u8,
    },
    /// Part of a journey that reached its integrated fare.
    Transfer {
        /// The window, minutes.
        window_minutes: i64,
    },
    /// The day's cap was reached.
    DailyCap,
    /// The week's cap was reached.
    WeeklyCap,
}

impl Rule {
    /// How a receipt names the rule (English; the pages translate).
    pub fn describe(&self) -> String {
        match self {
            Rule::Flat => "flat fare".into(),
            Rule::Distance { stops } => format!("{stops} stops"),
            Rule::MissingTapOff => "no tap-off: maximum fare".into(),
            Rule::Concession { category, percent } => format!("{category} {percent} %"),
            Rule::Transfer { window_minutes } => format!("transfer within {window_minutes} min"),
            Rule::DailyCap => "daily cap reached".into(),
            Rule::WeeklyCap => "weekly cap reached".into(),
        }
    }
}

/// A ride as priced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ride {
    /// Its boarding tap (the index in the taps given).
    pub on: usize,
    /// Its tap off, if it had one in time.
    pub off: Option<usize>,
    /// The route.
    pub route: i64,
    /// The route's fare before concession, transfer and caps.
    pub fare_minor: i64,
    /// What the card pays for it.
    pub charge_minor: i64,
    /// The rules that applied, in order.
    pub rules: Vec<Rule>,
}

/// Why taps cannot be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FareError {
    /// A tap on a route the table does not know.
    #[error("route {0} has no fare")]
    UnknownRoute(i64),
    /// Taps not in time order.
    #[error("taps must be in time order")]
    Unordered,
    /// A ride before the first fare table.
    #[error("no fare table was in force")]
    NoTable,
}

/// Prices every ride of one card's taps (in time order) as an always-online system would:
/// pairs taps on and off, then applies the concession of `category`, the transfer window
/// and the caps in the city's time zone `tz`. A tap off with no open ride is ignored.
pub fn price<Z: TimeZone>(
    table: &FareTable,
    category: Option<&str>,
    taps: &[Tap],
    tz: &Z,
) -> Result<Vec<Ride>, FareError> {
    let categories: Vec<String> = category.map(str::to_owned).into_iter().collect();
    price_with(&|_| Some(table), &categories, taps, tz)
}

/// A city's fare tables over time, each in force from its start (µs) until the next one's:
/// a ride is priced by the table in force when it boarded, so a new table never reprices
/// rides taken before it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule(Vec<(i64, FareTable)>);

impl Schedule {
    /// The tables with their start times (any order).
    pub fn new(mut tables: Vec<(i64, FareTable)>) -> Schedule {
        tables.sort_by_key(|(from, _)| *from);
        Schedule(tables)
    }

    /// The table in force at `time_us`, if any.
    pub fn at(&self, time_us: i64) -> Option<&FareTable> {
        let i = self.0.partition_point(|(from, _)| *from <= time_us);
        i.checked_sub(1).map(|i| &self.0[i].1)
    }

    /// Whether no table was ever set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Prices a card's taps like [`price`], each ride by the table in force when it
    /// boarded; a holder in several categories gets the largest concession of that table.
    pub fn price<Z: TimeZone>(&self, categories: &[String], taps: &[Tap], tz: &Z) -> Result<Vec<Ride>, FareError> {
        price_with(&|t| self.at(t), categories, taps, tz)
    }
}

impl FareTable {
    /// The holder category among `categories` with the largest concession, and its percent.
    pub fn concession(&self, categories: &[String]) -> Option<(String, u8)> {
        categories
            .iter()
            .filter_map(|c| self.concessions.get(c).map(|p| (c.clone(), (*p).min(100))))
            .max_by_key(|(_, p)| *p)
    }
}

/// [`price`] with the table in force at each time given by `table_at`.
fn price_with<'t, Z: TimeZone>(
    table_at: &dyn Fn(i64) -> Option<&'t FareTable>,
    categories: &[String],
    taps: &[Tap],
    tz: &Z,
) -> Result<Vec<Ride>, FareError> {
    if taps.windows(2).any(|w| w[0].time_us > w[1].time_us) {
        return Err(FareError::Unordered);
    }
    let mut rides = pair(table_at, taps)?;
    let mut journey: Option<(i64, i64)> = None; // (first boarding µs, charged so far)
    let mut days: BTreeMap<(i32, u32), i64> = BTreeMap::new();
    let mut weeks: BTreeMap<(i32, u32), i64> = BTreeMap::new();
    for ride in &mut rides {
        let when = taps[ride.on].time_us;
        let table = table_at(when).ok_or(FareError::NoTable)?;
        let concession = table.concession(categories);
        let scale = |amount: i64| concession.as_ref().map_or(amount, |(_, p)| amount * i64::from(100 - p) / 100);
        let mut charge = scale(ride.fare_minor);
        if let Some((category, percent)) = concession.as_ref().filter(|(_, p)| *p > 0) {
            ride.rules.push(Rule::Concession { category: category.clone(), percent: *percent });
        }
        match table.transfer {
            Some(t) => match journey.filter(|(start, _)| when - start <= t.window_minutes * 60_000_000) {
                // A boarding that joins a journey: the journey costs at most the integrated
                // fare (or its first ride's fare, when that alone is more).
                Some((_, spent)) => {
                    let room = (scale(t.integrated_fare_minor) - spent).max(0);
                    if charge > room {
                        charge = room;
                        ride.rules.push(Rule::Transfer { window_minutes: t.window_minutes });
                    }
                }
                None => journey = Some((when, 0)),
            },
            None => journey = None,
        }
        let local = tz.timestamp_micros(when).single().map(|t| t.naive_local()).unwrap_or_default();
        let day = days.entry((local.year(), local.ordinal())).or_default();
        charge = cap(charge, table.daily_cap_minor.map(scale), *day, Rule::DailyCap, ride);
        let week = weeks.entry((local.iso_week().year(), local.iso_week().week())).or_default();
        charge = cap(charge, table.weekly_cap_minor.map(scale), *week, Rule::WeeklyCap, ride);
        // What the card pays counts towards the journey, the day and the week.
        *week += charge;
        *day += charge;
        if let Some((_, spent)) = journey.as_mut() {
            *spent += charge;
        }
        ride.charge_minor = charge;
    }
    Ok(rides)
}

/// `charge` limited to what is left under `limit` after `spent`; names `rule` when it cut.
fn cap(charge: i64, limit: Option<i64>, spent: i64, rule: Rule, ride: &mut Ride) -> i64 {
    let Some(limit) = limit else { return charge };
    let room = (limit - spent).max(0);
    if charge > room {
        ride.rules.push(rule);
        room
    } else {
        charge
    }
}

/// Pairs each tap on with the tap off that ends it (the next tap of the card, if it is a
/// tap off on the same route within the time limit), and prices the route's fare.
fn pair<'t>(table_at: &dyn Fn(i64) -> Option<&'t FareTable>, taps: &[Tap]) -> Result<Vec<Ride>, FareError> {
    let mut rides = Vec::new();
    for (i, tap) in taps.iter().enumerate() {
        if tap.kind != TapKind::On {
            continue;
        }
        let table = table_at(tap.time_us).ok_or(FareError::NoTable)?;
        let fare = table.routes.get(&tap.route).ok_or(FareError::UnknownRoute(tap.route))?;
        let (fare_minor, off, rule) = match fare {
            RouteFare::Flat { fare_minor } => (*fare_minor, None, Rule::Flat),
            RouteFare::Distance { base_minor, per_stop_minor, max_minor, time_limit_minutes } => {
                let off = taps.get(i + 1).filter(|t| {
                    t.kind == TapKind::Off
                        && t.route == tap.route
                        && t.time_us - tap.time_us <= time_limit_minutes * 60_000_000
                });
                match off {
                    Some(o) => {
                        let stops = (o.stop - tap.stop).abs();
                        ((base_minor + per_stop_minor * stops).min(*max_minor), Some(i + 1), Rule::Distance { stops })
                    }
                    None => (*max_minor, None, Rule::MissingTapOff),
                }
            }
        };
        rides.push(Ride { on: i, off, route: tap.route, fare_minor, charge_minor: 0, rules: vec![rule] });
    }
    Ok(rides)
}

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;
