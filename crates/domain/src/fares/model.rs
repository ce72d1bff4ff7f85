//! What the fare tests share with the ledger's (which include this file): docs/TRANSIT.md's
//! fare table and worked examples, read from the page, and a fare model written apart from
//! the code under test.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use chrono::{Datelike, NaiveDateTime, TimeZone};
use chrono_tz::Asia::Jakarta;
use domain::fares::{FareTable, RouteFare, Tap, TapKind, Transfer};

const PAGE: &str = include_str!("../../../../docs/TRANSIT.md");

/// The fenced blocks of `kind` in the page, as their lines.
pub fn blocks(kind: &str) -> Vec<Vec<&'static str>> {
    let fence = format!("```{kind}");
    let mut out = Vec::new();
    let mut lines = PAGE.lines();
    while let Some(line) = lines.next() {
        if line.trim() == fence {
            out.push(lines.by_ref().take_while(|l| l.trim() != "```").collect());
        }
    }
    out
}

pub fn number(word: Option<&str>) -> i64 {
    word.and_then(|w| w.parse().ok()).unwrap_or_else(|| panic!("a number, not {word:?}"))
}

/// The page's fare table.
pub fn page_table() -> FareTable {
    let mut t = FareTable {
        routes: BTreeMap::new(),
        transfer: None,
        daily_cap_minor: None,
        weekly_cap_minor: None,
        concessions: BTreeMap::new(),
    };
    let table = blocks("fare-table");
    assert_eq!(table.len(), 1, "one fare table on the page");
    for line in &table[0] {
        let w: Vec<&str> = line.split_whitespace().collect();
        let n = |i: usize| number(w.get(i).copied());
        match w[0] {
            "flat" => drop(t.routes.insert(n(1), RouteFare::Flat { fare_minor: n(2) })),
            "distance" => drop(t.routes.insert(
                n(1),
                RouteFare::Distance {
                    base_minor: n(3),
                    per_stop_minor: n(5),
                    max_minor: n(7),
                    time_limit_minutes: n(9),
                },
            )),
            "transfer" => t.transfer = Some(Transfer { window_minutes: n(1), integrated_fare_minor: n(2) }),
            "daily" => t.daily_cap_minor = Some(n(1)),
            "weekly" => t.weekly_cap_minor = Some(n(1)),
            "concession" => drop(t.concessions.insert(w[1].to_owned(), n(2) as u8)),
            other => panic!("unknown fare table line {other:?}"),
        }
    }
    t
}

pub fn local_us(text: &str) -> i64 {
    let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M").expect("a local time");
    Jakarta.from_local_datetime(&naive).single().expect("one instant").timestamp_micros()
}

/// One worked example of the page: the holder's category, the taps, and each ride's
/// charge with its rules as the page writes them.
#[derive(Debug, Clone)]
pub struct Example {
    /// The holder category, if any.
    pub category: Option<&'static str>,
    /// The taps in time order.
    pub taps: Vec<Tap>,
    /// `(charge, rules)` per ride.
    pub charges: Vec<(i64, String)>,
    /// The block's lines, for messages.
    pub lines: Vec<&'static str>,
}

/// Every worked example of the page.
pub fn examples() -> Vec<Example> {
    let mut out = Vec::new();
    for lines in blocks("fare-example") {
        let (mut category, mut taps, mut charges) = (None, Vec::new(), Vec::new());
        for line in &lines {
            let (key, value) = line.split_once(": ").expect("key: value");
            match key {
                "category" => category = Some(value),
                "tap" => {
                    let w: Vec<&str> = value.split_whitespace().collect();
                    let kind = if w[0] == "on" { TapKind::On } else { TapKind::Off };
                    taps.push(Tap {
                        time_us: local_us(w[3]),
                        route: number(Some(w[1])),
                        stop: number(Some(w[2])),
                        kind,
                    });
                }
                "charge" => {
                    let (amount, rules) = value.split_once(' ').expect("amount and rules");
                    charges.push((number(Some(amount)), rules.to_owned()));
                }
                other => panic!("unknown example line {other:?}"),
            }
        }
        out.push(Example { category, taps, charges, lines });
    }
    out
}

/// The model: the same rules, written as a walk over the taps with an open ride, journeys
/// as a list, and totals per calendar date and ISO week: what the city's fare rules say,
/// not how `price` computes them.
pub fn model(table: &FareTable, category: Option<&str>, taps: &[Tap]) -> Vec<i64> {
    let percent = category.and_then(|c| table.concessions.get(c)).map_or(0, |p| i64::from(*p));
    let pay = |minor: i64| minor - minor * percent / 100 - i64::from(minor * percent % 100 != 0);
    // Base fares, ride by ride, with the time of boarding.
    let mut rides: Vec<(i64, i64)> = Vec::new();
    let mut open: Option<&Tap> = None;
    for t in taps {
        if let Some(on) = open.take() {
            if let RouteFare::Distance { base_minor, per_stop_minor, max_minor, time_limit_minutes } =
                &table.routes[&on.route]
            {
                let ended = t.kind == TapKind::Off
                    && t.route == on.route
                    && t.time_us - on.time_us <= time_limit_minutes * 60_000_000;
                let fare = if ended {
                    (base_minor + per_stop_minor * (t.stop - on.stop).abs()).min(*max_minor)
                } else {
                    *max_minor
                };
                rides.push((on.time_us, fare));
            }
        }
        if t.kind == TapKind::On {
            match &table.routes[&t.route] {
                RouteFare::Flat { fare_minor } => rides.push((t.time_us, *fare_minor)),
                RouteFare::Distance { .. } => open = Some(t),
            }
        }
    }
    if let Some(on) = open {
        rides.push((on.time_us, table.routes[&on.route].max_minor()));
    }
    rides.sort_by_key(|r| r.0);
    let mut journeys: Vec<(i64, i64)> = Vec::new();
    let mut per_date: HashMap<chrono::NaiveDate, i64> = HashMap::new();
    let mut per_week: HashMap<(i32, u32), i64> = HashMap::new();
    let mut out = Vec::new();
    for (when, fare) in rides {
        let mut charge = pay(fare);
        let date = Jakarta.timestamp_micros(when).unwrap().date_naive();
        if let Some(t) = table.transfer {
            let joined = journeys.last().filter(|(start, _)| when - start <= t.window_minutes * 60_000_000).is_some();
            if joined {
                let spent = journeys.last().map_or(0, |j| j.1);
                charge = charge.min((pay(t.integrated_fare_minor) - spent).max(0));
            } else {
                journeys.push((when, 0));
            }
        }
        if let Some(cap) = table.daily_cap_minor {
            charge = charge.min((pay(cap) - per_date.get(&date).copied().unwrap_or(0)).max(0));
        }
        let week = (date.iso_week().year(), date.iso_week().week());
        if let Some(cap) = table.weekly_cap_minor {
            charge = charge.min((pay(cap) - per_week.get(&week).copied().unwrap_or(0)).max(0));
        }
        *per_date.entry(date).or_default() += charge;
        *per_week.entry(week).or_default() += charge;
        if let Some(j) = journeys.last_mut().filter(|_| table.transfer.is_some()) {
            j.1 += charge;
        }
        out.push(charge);
    }
    out
}
