//! `kartu demo --tap-bench N`: the terminal tap time, for `make bench` (its "terminal"
//! part). On the demo's stage (a private pcscd with the vpcd driver, a new installation and
//! `kartu serve`, `crate::demo::Stage`), one virtual card is personalised, issued and
//! topped up at an agent's terminal; then, N times over, it is presented to a POS terminal
//! (a payment of Rp 1,000.00), to a gate (an access check at a service point that admits
//! every holder), and to two bus validators of the demo's network (`crate::demo_transit`):
//! bus 1 online, bus 2 out of coverage (it prices the boarding from its last sync and
//! journals it). Each tap is timed as `kartu terminal` times it: from the moment PC/SC
//! reports the card present to the answer, split into the card read (connect, UID, SUN
//! over APDUs, disconnect) and the rest (the API call; offline, the pricing and the
//! journal's fsync).
//!
//! Every payment must be approved online, every access allowed, every boarding opened
//! (online, or offline), and the card's balance at the end must be the top-up less the
//! payments and the fares the online bus reported; anything else fails the run. `--json`
//! gets every tap's times.

use std::time::Instant;

use anyhow::{ensure, Context, Result};
use client::Client;
use serde_json::{json, Value};
use terminal::Mode;

use crate::demo_city::{self, id, CARDS};
use crate::stage::{minor, open_terminal, token, Reader, Server, Stage, Wallet, Wire};

/// Most taps of each kind (the top-up must stay under the wallet's maximum balance).
pub const TAPS_MAX: u32 = 1000;
/// Each payment.
const PAYMENT: &str = "1000.00";
/// What the card keeps beyond the payments.
const SPARE: &str = "10000.00";

/// One timed tap.
struct Timed {
    /// Card present → answer, ms.
    total_ms: f64,
    /// Card present → the SUN read and the card disconnected, ms.
    card_ms: f64,
    /// The API call, ms.
    http_ms: f64,
    outcome: terminal::Outcome,
}

/// A balance from the API ("12500.00", possibly zero) in minor units.
fn balance_minor(v: &Value) -> Result<i64> {
    let text = v["amount"].as_str().context("no balance amount")?;
    Ok(ledger::money::parse_balance_minor(text, ledger::money::Currency::IDR)?)
}

fn ms(from: Instant, to: Instant) -> f64 {
    to.duration_since(from).as_secs_f64() * 1000.0
}

/// Presents the card and times one tap handled by `terminal`.
fn timed_tap(
    reader: &Reader,
    card: &mut Wallet,
    terminal: &mut terminal::Terminal,
    amount_minor: Option<i64>,
    reference: Option<&str>,
) -> Result<Timed> {
    reader.present(card, |r| {
        // `present` runs this as soon as PC/SC reports the card present.
        let present = Instant::now();
        let read = r.tap()?;
        let read_done = Instant::now();
        let outcome = terminal.handle(&read, amount_minor, reference)?;
        let answered = Instant::now();
        Ok(Timed {
            total_ms: ms(present, answered),
            card_ms: ms(present, read_done),
            http_ms: ms(read_done, answered),
            outcome,
        })
    })
}

/// The bench's terminals, on a card personalised, issued and topped up.
struct Bench {
    reader: Reader,
    server: Server,
    /// The API as the operator.
    op: Client,
    card: Wallet,
    pos: terminal::Terminal,
    gate: terminal::Terminal,
    /// A bus's validator, online.
    bus: terminal::Terminal,
    /// A bus's validator out of coverage: it decides from its last sync and journals.
    offline_bus: terminal::Terminal,
    /// The card's balance before the taps, minor units.
    before: i64,
}

/// Runs the tap benchmark on the demo's pcscd; returns what `--json` gets.
pub(crate) fn run(
    pcscd: &pcsc_testkit::Pcscd,
    work: &std::path::Path,
    data: &std::path::Path,
    wire: &Wire,
    taps: u32,
) -> Result<Value> {
    let mut bench = set_up(pcscd, work, data, wire, taps)?;
    let payment = minor(PAYMENT)?;
    let mut pos_taps = Vec::new();
    let mut gate_taps = Vec::new();
    let (mut rides, mut offline_rides) = (Vec::new(), Vec::new());
    let mut fares = 0;
    for i in 0..taps {
        let reference = format!("tap-bench-{i}");
        let paid = timed_tap(&bench.reader, &mut bench.card, &mut bench.pos, Some(payment), Some(&reference))?;
        let entry_seq = paid.outcome.detail.payment().map(|p| p.receipt.entry_seq);
        ensure!(
            paid.outcome.ok && paid.outcome.online && entry_seq.is_some(),
            "POS tap {i}: the payment was not approved online: {}",
            paid.outcome.line
        );
        pos_taps.push(json!({"ms": paid.total_ms, "card_ms": paid.card_ms, "http_ms": paid.http_ms,
            "approved": true, "entry_seq": entry_seq}));
        let passed = timed_tap(&bench.reader, &mut bench.card, &mut bench.gate, None, None)?;
        let allowed = passed.outcome.detail.decision().is_some_and(|d| d.decision == "allow");
        ensure!(
            passed.outcome.ok && passed.outcome.online && allowed,
            "gate tap {i}: the access was not allowed online: {}",
            passed.outcome.line
        );
        gate_taps.push(json!({"ms": passed.total_ms, "card_ms": passed.card_ms, "http_ms": passed.http_ms,
            "allowed": true}));
        let (ride, paid) = validator_tap(&mut bench, i, true)?;
        fares += paid;
        rides.push(ride);
        offline_rides.push(validator_tap(&mut bench, i, false)?.0);
    }
    let after_card: Value = bench.op.get(&format!("/v1/cards/{}", bench.card.card_id))?;
    let (before, after) = (bench.before, balance_minor(&after_card["balance"])?);
    ensure!(
        after == before - payment * i64::from(taps) - fares,
        "the card's balance is {after} (minor units) after {taps} payments of {payment} and {fares} of fares from \
         {before}"
    );
    bench.server.stop()?;
    println!(
        "kartu demo --tap-bench: {taps} POS payments approved (median {:.1} ms), {taps} gate entries allowed \
         (median {:.1} ms), {taps} bus boardings online (median {:.1} ms) and offline (median {:.1} ms), card \
         present to answer",
        median(&pos_taps),
        median(&gate_taps),
        median(&rides),
        median(&offline_rides)
    );
    Ok(json!({
        "taps": taps,
        "payment": PAYMENT,
        "balance_before_minor": before,
        "balance_after_minor": after,
        "pos": pos_taps,
        "gate": gate_taps,
        "validator": rides,
        "validator_offline": offline_rides,
        "fares_minor": fares,
    }))
}

/// The median of the taps' total times, ms.
fn median(taps: &[Value]) -> f64 {
    let mut ms: Vec<f64> = taps.iter().filter_map(|t| t["ms"].as_f64()).collect();
    ms.sort_by(f64::total_cmp);
    ms.get(ms.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One boarding at the online bus validator (`online`) or the one out of coverage; the
/// tap's times, and what the card paid for it online (minor units: payments less refunds).
fn validator_tap(bench: &mut Bench, i: u32, online: bool) -> Result<(Value, i64)> {
    let at = if online { &mut bench.bus } else { &mut bench.offline_bus };
    let ride = timed_tap(&bench.reader, &mut bench.card, at, None, None)?;
    ensure!(
        ride.outcome.ok && ride.outcome.online == online,
        "bus tap {i} ({}): {}",
        if online { "online" } else { "offline" },
        ride.outcome.line
    );
    let mut paid = 0;
    for e in ride.outcome.detail.ride().map(|r| r.entries.as_slice()).unwrap_or_default() {
        let minor = minor(&e.amount.amount)?;
        paid += match e.kind.as_str() {
            "payment" | "capture" => minor,
            "refund" => -minor,
            _ => 0,
        };
    }
    let times = json!({"ms": ride.total_ms, "card_ms": ride.card_ms, "http_ms": ride.http_ms, "opened": true});
    Ok((times, paid))
}

/// The stage, the card personalised, issued and topped up for `taps` payments, the
/// terminals registered.
fn set_up(
    pcscd: &pcsc_testkit::Pcscd,
    work: &std::path::Path,
    data: &std::path::Path,
    wire: &Wire,
    taps: u32,
) -> Result<Bench> {
    let Stage { reader, init, key_file, server, client } = Stage::open(pcscd, work, data, wire)?;
    let op = client.with_token(&init.operator_token);
    let (name, nik, uid, categories) = CARDS[0];
    let mut card = Wallet::new(name, uid, work.join("card-bench.json"));
    reader.personalize(&key_file, &mut card)?;
    let places = demo_city::create_places(&op)?;
    let gate: Value = op.post(
        "/v1/service-points",
        "bench-gate",
        &json!({"name": "Halte Pantai Losari", "service": "other",
            "policy": {"categories": [], "timezone": "Asia/Makassar"}}),
    )?;
    let holder: Value =
        op.post("/v1/holders", "bench-holder", &json!({"name": name, "nik": nik, "categories": categories}))?;
    let issued: Value = op.post("/v1/cards", "bench-card", &json!({"uid": uid, "holder_id": id(&holder)?}))?;
    card.card_id = id(&issued)?;
    let agent_token = token(
        &op,
        "bench-cred-agent",
        json!({"role": "top_up_agent", "name": "agent counter", "agent_id": id(&places.agent)?}),
    )?;
    let pos_token = token(
        &op,
        "bench-cred-pos",
        json!({"role": "merchant_terminal", "name": "grocery till 1", "merchant_id": id(&places.grocery)?}),
    )?;
    let gate_token = token(
        &op,
        "bench-cred-gate",
        json!({"role": "service_point", "name": "bus stop gate", "service_point_id": id(&gate)?}),
    )?;
    let mut agent = open_terminal(work, "agent", Mode::Agent, &server, &agent_token)?;
    let pos = open_terminal(work, "pos", Mode::Pos, &server, &pos_token)?;
    let gate = open_terminal(work, "gate", Mode::Gate, &server, &gate_token)?;
    let (bus, offline_bus) = crate::demo_transit::bench_validators(&op, data, work, &server)?;
    let topup = minor(PAYMENT)? * i64::from(taps) + minor(SPARE)?;
    let topped = reader.present(&mut card, |r| Ok(agent.handle(&r.tap()?, Some(topup), None)?))?;
    ensure!(topped.ok && topped.online, "the top-up was refused: {}", topped.line);
    let balance = &topped.detail.topup().context("the top-up's answer")?.balance.amount;
    let before = ledger::money::parse_balance_minor(balance, ledger::money::Currency::IDR)?;
    Ok(Bench { reader, server, op, card, pos, gate, bus, offline_bus, before })
}
