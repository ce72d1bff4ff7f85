//! The fare rules against docs/TRANSIT.md's worked examples (read from the file), and a
//! property test against a fare model written apart from the code under test (`model.rs`,
//! which the ledger's tests share).

use std::collections::BTreeMap;

use chrono::TimeZone;
use chrono_tz::Asia::Jakarta;

use super::model::{examples, local_us, model, page_table};
use super::*;

#[test]
fn the_worked_examples_of_docs_transit_md() {
    let table = page_table();
    let examples = examples();
    assert!(examples.len() >= 10, "only {} examples", examples.len());
    for ex in examples {
        let rides = price(&table, ex.category, &ex.taps, &Jakarta).expect("priced");
        let got: Vec<(i64, String)> = rides
            .iter()
            .map(|r| (r.charge_minor, r.rules.iter().map(Rule::describe).collect::<Vec<_>>().join("; ")))
            .collect();
        assert_eq!(got, ex.charges, "the example {:#?}", ex.lines);
    }
}

#[test]
fn refusals() {
    let table = page_table();
    let tap = |t: i64, route: i64| Tap { time_us: t, route, stop: 0, kind: TapKind::On };
    assert_eq!(price(&table, None, &[tap(5, 1), tap(4, 1)], &Jakarta), Err(FareError::Unordered));
    assert_eq!(price(&table, None, &[tap(5, 9)], &Jakarta), Err(FareError::UnknownRoute(9)));
    assert_eq!(price(&table, None, &[], &Jakarta), Ok(vec![]));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
    /// Random days of riding: the charges are the model's, never negative, never above the
    /// route's maximum after the concession, and no day, week or journey pays over its cap.
    #[test]
    fn charges_are_the_models(
        steps in proptest::collection::vec((1i64..400, 1i64..=2, 0i64..15, proptest::bool::weighted(0.7)), 0..40),
        category in proptest::sample::select(vec![None, Some("student"), Some("senior"), Some("resident")]),
    ) {
        let table = page_table();
        let mut time = local_us("2026-12-06T22:00");
        let taps: Vec<Tap> = steps
            .iter()
            .map(|(minutes, route, stop, on)| {
                time += minutes * 60_000_000;
                Tap { time_us: time, route: *route, stop: *stop, kind: if *on { TapKind::On } else { TapKind::Off } }
            })
            .collect();
        let rides = price(&table, category, &taps, &Jakarta).expect("priced");
        let charges: Vec<i64> = rides.iter().map(|r| r.charge_minor).collect();
        proptest::prop_assert_eq!(&charges, &model(&table, category, &taps));
        let percent = category.and_then(|c| table.concessions.get(c)).map_or(0, |p| i64::from(*p));
        let mut per_day: BTreeMap<chrono::NaiveDate, i64> = BTreeMap::new();
        for r in &rides {
            let max = table.routes[&r.route].max_minor();
            proptest::prop_assert!(r.charge_minor >= 0 && r.charge_minor <= max * (100 - percent) / 100 + 1);
            *per_day.entry(Jakarta.timestamp_micros(taps[r.on].time_us).unwrap().date_naive()).or_default() += r.charge_minor;
        }
        for total in per_day.values() {
            proptest::prop_assert!(*total <= 10_000);
        }
    }
}
