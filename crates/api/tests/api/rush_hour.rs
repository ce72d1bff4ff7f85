//! A rush hour through the API (issue 18): 10,000 riders, 50,000 taps on a bus line (20
//! buses, half of them offline all along and uploading their journals at the end) and a
//! rail line with gates at five stations. Every card's charges and every operator's takings
//! are compared with the fare model written apart from the code (`domain`'s
//! `fares/model.rs`), on each rider's taps at the times the server and the buses recorded.

use std::collections::HashMap;
use std::sync::Mutex;

use rand::{Rng, SeedableRng};

use serde_json::{json, Value};

use crate::support::{id, Backend, Body, City, TestCard, TestResult};

#[allow(unused_imports)]
#[path = "../../../domain/src/fares/model.rs"]
mod fare_model;

const RIDERS: usize = 10_000;
const TAPS_PER_RIDER: usize = 5;
const BUSES: usize = 20;
const STATIONS: i64 = 5;
const WORKERS: usize = 8;
/// Every rider starts with this much (minor units).
const FUNDS: i64 = 100_000;

/// A bus: its token, and (offline) its journal writer and sync.
struct Bus {
    token: String,
    offline: Option<Mutex<(offline::JournalWriter, Vec<offline::SignedRecord>, u64)>>,
}

/// The network: the bus line (route 1, flat) and the rail line (route 2, distance) of
/// docs/TRANSIT.md's fare table, their operators' accounts, buses and station gates.
struct Network {
    buses: Vec<Bus>,
    gates: Vec<String>,
    bus_account: String,
    rail_account: String,
}

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

fn time_us(v: &Value) -> Result<i64, String> {
    let t = v["time"].as_str().ok_or("time")?;
    chrono::DateTime::parse_from_rfc3339(t).map(|d| d.timestamp_micros()).map_err(|e| e.to_string())
}

/// A validator of `operator` bound to `route` (at `stop` for a gate); with a journal key
/// and limits when it works offline.
fn validator(c: &City, operator: &str, route: &str, stop: Option<i64>, key: Option<&[u8]>) -> Result<String, String> {
    let s = &c.s;
    let mut body = json!({"role": "merchant_terminal", "name": "validator", "merchant_id": operator});
    if let Some(key) = key {
        body["public_key"] = json!(offline::JournalWriter::new(key, None).map_err(|e| e.to_string())?.public_key_hex());
        body["offline_limits"] =
            json!({"per_tap_minor": 6000, "per_card_per_day_minor": 100000, "outstanding_minor": 100000000});
    }
    let v = s.post("/v1/credentials", &s.operator, &body)?;
    let v = v.expect(201)?;
    s.post("/v1/transit/validators", &s.operator, &json!({"credential_id": id(v)?, "route_id": route, "stop": stop}))?
        .expect(201)?;
    Ok(v["token"].as_str().ok_or("token")?.to_owned())
}

fn network(c: &City) -> Result<Network, String> {
    let s = &c.s;
    let (bus_op, bus_account) = s.merchant("Trans Kota", "transit", "0.02")?;
    let (rail_op, rail_account) = s.merchant("Kereta Kota", "transit", "0.02")?;
    let stops = |n: i64| (0..n).map(|i| format!("stop {i}")).collect::<Vec<_>>();
    let route = |op: &str, mode: &str, n: i64| -> Result<String, String> {
        id(s.post(
            "/v1/transit/routes",
            &s.operator,
            &json!({"merchant_id": op, "name": mode, "mode": mode, "stops": stops(n)}),
        )?
        .expect(201)?)
    };
    check_eq!(route(&bus_op, "bus", 20)?, "1");
    check_eq!(route(&rail_op, "rail", STATIONS)?, "2");
    let table = json!({"time_zone": "Asia/Jakarta", "table": fare_model::page_table()});
    let approval = id(s.post("/v1/transit/fares", &s.operator, &table)?.expect(202)?)?;
    s.post(&format!("/v1/approvals/{approval}/approve"), &c.operator2, &json!({}))?.expect(200)?;
    let mut buses = Vec::new();
    for i in 0..BUSES {
        let key = (i % 2 == 1).then(offline::generate_key).transpose().map_err(|e| e.to_string())?;
        let token = validator(c, &bus_op, "1", None, key.as_deref())?;
        let offline = match key {
            Some(key) => {
                let sync = s.get("/v1/offline/deny-list", &token)?.expect(200)?["sync_id"].as_u64().ok_or("sync")?;
                s.get("/v1/transit/sync", &token)?.expect(200)?;
                let writer = offline::JournalWriter::new(&key, None).map_err(|e| e.to_string())?;
                Some(Mutex::new((writer, Vec::new(), sync)))
            }
            None => None,
        };
        buses.push(Bus { token, offline });
    }
    let gates = (0..STATIONS).map(|st| validator(c, &rail_op, "2", Some(st), None)).collect::<Result<_, _>>()?;
    Ok(Network { buses, gates, bus_account, rail_account })
}

/// A rider: its card, its category, and the taps the server or a bus recorded.
struct Rider {
    card: TestCard,
    category: Option<&'static str>,
    taps: Vec<domain::fares::Tap>,
}

/// 10,000 holders and cards (a tenth students, a twentieth seniors), each topped up.
fn riders(c: &City) -> Result<Vec<Rider>, String> {
    let s = &c.s;
    let made: Mutex<Vec<(usize, Rider)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| -> Result<(), String> {
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let made = &made;
                scope.spawn(move || -> Result<(), String> {
                    for i in (w..RIDERS).step_by(WORKERS) {
                        let category = match i % 20 {
                            0 | 1 => Some("student"),
                            2 => Some("senior"),
                            _ => None,
                        };
                        let holder = s.holder(
                            &format!("rider {i}"),
                            &format!("73{i:014}"),
                            &category.into_iter().collect::<Vec<_>>(),
                        )?;
                        let card = s.card(&holder, 100 + i as u32)?;
                        let topup = json!({"card_id": card.id, "amount": "1000.00"});
                        let r = s.post("/v1/topups", &c.teller, &topup)?;
                        r.expect(201).map_err(|e| format!("rider {i}'s top-up: {e}"))?;
                        made.lock().map_err(|_| "lock")?.push((i, Rider { card, category, taps: Vec::new() }));
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| "a worker panicked")??;
        }
        Ok(())
    })?;
    let mut made = made.into_inner().map_err(|_| "lock")?;
    made.sort_by_key(|(i, _)| *i);
    Ok(made.into_iter().map(|(_, r)| r).collect())
}

/// One tap of a rider: online at a gate or an online bus (the server's time), or
/// journaled by an offline bus (its own time).
fn ride_tap(c: &City, n: &Network, rider: &mut Rider, step: &Step) -> TestResult {
    let s = &c.s;
    let tap = s.tap(&rider.card);
    match *step {
        Step::Bus { bus, stop } => {
            let b = &n.buses[bus];
            match &b.offline {
                None => {
                    let r =
                        s.post("/v1/transit/taps", &b.token, &json!({"tap": tap, "direction": "on", "stop": stop}))?;
                    let at = time_us(r.expect(201)?)?;
                    rider.taps.push(domain::fares::Tap {
                        time_us: at,
                        route: 1,
                        stop,
                        kind: domain::fares::TapKind::On,
                    });
                }
                Some(journal) => {
                    let mut j = journal.lock().map_err(|_| "lock")?;
                    let at = now_us();
                    let record = offline::NewRecord {
                        time_us: at,
                        kind: offline::RecordKind::Transit,
                        uid: rider.card.uid.clone(),
                        picc_data: tap["picc_data"].as_str().unwrap_or_default().to_owned(),
                        cmac: tap["cmac"].as_str().unwrap_or_default().to_owned(),
                        amount_minor: 3500,
                        currency: "IDR".into(),
                        reference: None,
                        decision: Some(format!("on:{stop}")),
                        sync_id: j.2,
                    };
                    let signed = j.0.append(record).map_err(|e| e.to_string())?;
                    j.1.push(signed);
                    rider.taps.push(domain::fares::Tap {
                        time_us: at,
                        route: 1,
                        stop,
                        kind: domain::fares::TapKind::On,
                    });
                }
            }
        }
        Step::Rail { station, on } => {
            let direction = if on { "on" } else { "off" };
            let body = json!({"tap": tap, "direction": direction});
            // Every tenth rail tap is sent twice with the same key (a gate that did not
            // hear the answer): the second answer is the first, nothing is charged twice.
            let key = format!("rail-{}-{}", rider.card.id, rider.taps.len());
            let gate = Some(n.gates[station as usize].as_str());
            let r = s.send("POST", "/v1/transit/taps", gate, Some(&key), Body::Json(&body))?;
            r.expect(201).map_err(|e| format!("card {} at station {station} {direction}: {e}", rider.card.id))?;
            if rider.card.counter.load(std::sync::atomic::Ordering::SeqCst).is_multiple_of(10) {
                let again = s.send("POST", "/v1/transit/taps", gate, Some(&key), Body::Json(&body))?;
                let same = (again.expect(201)?["event_id"].clone(), again.json["entries"].clone());
                check_eq!(same, (r.json["event_id"].clone(), r.json["entries"].clone()));
            }
            let at = time_us(&r.json)?;
            let kind = if on { domain::fares::TapKind::On } else { domain::fares::TapKind::Off };
            rider.taps.push(domain::fares::Tap { time_us: at, route: 2, stop: station, kind });
        }
    }
    Ok(())
}

/// One tap of a rider's day.
enum Step {
    Bus { bus: usize, stop: i64 },
    Rail { station: i64, on: bool },
}

/// A rider's day of five taps: buses, and rail trips tapped on and off.
fn day(rng: &mut rand::rngs::StdRng) -> Vec<Step> {
    let mut steps = Vec::new();
    while steps.len() < TAPS_PER_RIDER {
        if steps.len() + 2 <= TAPS_PER_RIDER && rng.random_bool(0.4) {
            let (a, b) = (rng.random_range(0..STATIONS), rng.random_range(0..STATIONS));
            steps.push(Step::Rail { station: a, on: true });
            steps.push(Step::Rail { station: b, on: false });
        } else {
            steps.push(Step::Bus { bus: rng.random_range(0..BUSES), stop: rng.random_range(0..20) });
        }
    }
    steps
}

/// Every rider rides its day, eight riders at a time.
fn rush(c: &City, n: &Network, riders: &mut [Rider]) -> TestResult {
    let chunks: Vec<&mut [Rider]> = riders.chunks_mut(RIDERS.div_ceil(WORKERS)).collect();
    std::thread::scope(|scope| -> TestResult {
        let workers: Vec<_> = chunks
            .into_iter()
            .enumerate()
            .map(|(w, chunk)| {
                scope.spawn(move || -> TestResult {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(1800 + w as u64);
                    let days: Vec<Vec<Step>> = chunk.iter().map(|_| day(&mut rng)).collect();
                    for t in 0..TAPS_PER_RIDER {
                        for (rider, steps) in chunk.iter_mut().zip(&days) {
                            ride_tap(c, n, rider, &steps[t])?;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| "a worker panicked")??;
        }
        Ok(())
    })
}

/// The offline buses upload their journals, all at once, 100 records an upload (a short
/// request each, as a bus on a weak link would send them).
fn uploads(c: &City, n: &Network) -> TestResult {
    std::thread::scope(|scope| -> TestResult {
        let workers: Vec<_> = n
            .buses
            .iter()
            .filter_map(|b| b.offline.as_ref().map(|j| (b, j)))
            .map(|(b, j)| {
                scope.spawn(move || -> TestResult {
                    let records = std::mem::take(&mut j.lock().map_err(|_| "lock")?.1);
                    for part in records.chunks(100) {
                        let r = c.s.post("/v1/offline/journals", &b.token, &json!({"records": part}))?;
                        for result in r.expect(200)?["records"].as_array().ok_or("records")? {
                            let text = result["result"].as_str().unwrap_or_default();
                            check!(text.starts_with("priced:event:"), "a record was {text}");
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| "a worker panicked")??;
        }
        Ok(())
    })
}

/// The rush hour, then: each card paid what the model charges for its taps, the operators
/// got their rides' fares less the fee, nothing is held, the books balance.
pub fn rush_hour(backend: Backend) -> TestResult {
    let c = City::new(backend, "0.00")?;
    let n = network(&c)?;
    let mut riders = riders(&c)?;
    let started = std::time::Instant::now();
    rush(&c, &n, &mut riders)?;
    let online = started.elapsed();
    uploads(&c, &n)?;
    eprintln!(
        "rush hour: {} taps in {online:?} online, uploads after {:?}",
        RIDERS * TAPS_PER_RIDER,
        started.elapsed()
    );
    let due = every_card_paid_the_model(&c, &mut riders)?;
    let s = &c.s;
    for (route, account) in [(1, &n.bus_account), (2, &n.rail_account)] {
        let want = due.get(&route).copied().unwrap_or(0);
        let want = format!("{}.{:02}", want / 100, want % 100);
        check_eq!(s.balance(&c.auditor, account)?, want);
    }
    let (_, balanced) = s.trial(&c.auditor)?;
    check!(balanced, "the books balance");
    Ok(())
}

/// Each card's balance is its funds less what the model charges for its taps (eight
/// readers at a time); returns what each route's operator is owed (fares less the fee).
fn every_card_paid_the_model(c: &City, riders: &mut [Rider]) -> Result<HashMap<i64, i64>, String> {
    let table = fare_model::page_table();
    let due: Mutex<HashMap<i64, i64>> = Mutex::new(HashMap::new());
    std::thread::scope(|scope| -> TestResult {
        let workers: Vec<_> = riders
            .chunks_mut(RIDERS.div_ceil(WORKERS))
            .map(|chunk| {
                let (due, table) = (&due, &table);
                scope.spawn(move || -> TestResult {
                    for r in chunk {
                        r.taps.sort_by_key(|t| t.time_us);
                        let charges = fare_model::model(table, r.category, &r.taps);
                        let ons = r.taps.iter().filter(|t| t.kind == domain::fares::TapKind::On);
                        for (on, charge) in ons.zip(&charges) {
                            *due.lock().map_err(|_| "lock")?.entry(on.route).or_default() += charge - charge * 2 / 100;
                        }
                        let left = FUNDS - charges.iter().sum::<i64>();
                        let want = format!("{}.{:02}", left / 100, left % 100);
                        let balance = c.s.balance(&c.auditor, &r.card.account_id)?;
                        check!(
                            balance == want,
                            "card {} ({:?}): {balance}, the model {want} ({charges:?})",
                            r.card.id,
                            r.category
                        );
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| "a worker panicked")??;
        }
        Ok(())
    })?;
    due.into_inner().map_err(|_| "lock".into())
}
