//! `kartu demo --tap-bench N`: the terminal tap time, for `make bench` (its "terminal"
//! part). On the demo's stage (a private pcscd with the vpcd driver, a new installation and
//! `kartu serve`, `crate::demo::Stage`), one virtual card is personalised, issued and
//! topped up at an agent's terminal; then, N times over, it is presented to a POS terminal
//! (a payment of Rp 1,000.00) and to a gate (an access check at a service point that admits
//! every holder). Each tap is timed as `kartu terminal` times it: from the moment PC/SC
//! reports the card present to the server's answer, split into the card read (connect,
//! UID, SUN over APDUs, disconnect) and the API call (the terminal library's POST).
//!
//! Every payment must be approved online and every access allowed, and the card's balance
//! at the end must be the top-up less the payments; anything else fails the run. `--json`
//! gets every tap's times.

use std::time::Instant;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use terminal::Mode;

use crate::demo::{minor, open_terminal, token, Reader, Stage, Wallet};
use crate::demo_city::{self, id, CARDS};

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

/// Runs the tap benchmark on the demo's pcscd; returns what `--json` gets.
pub(crate) fn run(
    pcscd: &pcsc_testkit::Pcscd,
    work: &std::path::Path,
    data: &std::path::Path,
    wire: &crate::demo::Wire,
    taps: u32,
) -> Result<Value> {
    let Stage { reader, init, key_file, mut server, client: c } = Stage::open(pcscd, work, data, wire)?;
    let op = init.operator_token.clone();
    let (name, nik, uid, categories) = CARDS[0];
    let mut card = Wallet::new(name, uid, work.join("card-bench.json"));
    reader.personalize(&key_file, &mut card)?;

    let places = demo_city::create_places(&c, &op)?;
    let gate = c.post(
        &op,
        "/v1/service-points",
        "bench-gate",
        json!({"name": "Halte Pantai Losari", "service": "other",
            "policy": {"categories": [], "timezone": "Asia/Makassar"}}),
    )?;
    let holder =
        c.post(&op, "/v1/holders", "bench-holder", json!({"name": name, "nik": nik, "categories": categories}))?;
    let issued = c.post(&op, "/v1/cards", "bench-card", json!({"uid": uid, "holder_id": id(&holder)?}))?;
    card.card_id = id(&issued)?;
    let agent_token = token(
        &c,
        &op,
        "bench-cred-agent",
        json!({"role": "top_up_agent", "name": "agent counter", "agent_id": id(&places.agent)?}),
    )?;
    let pos_token = token(
        &c,
        &op,
        "bench-cred-pos",
        json!({"role": "merchant_terminal", "name": "grocery till 1", "merchant_id": id(&places.grocery)?}),
    )?;
    let gate_token = token(
        &c,
        &op,
        "bench-cred-gate",
        json!({"role": "service_point", "name": "bus stop gate", "service_point_id": id(&gate)?}),
    )?;
    let mut agent = open_terminal(work, "agent", Mode::Agent, &server, &agent_token)?;
    let mut pos = open_terminal(work, "pos", Mode::Pos, &server, &pos_token)?;
    let mut gate_terminal = open_terminal(work, "gate", Mode::Gate, &server, &gate_token)?;

    let payment = minor(PAYMENT)?;
    let topup = payment * i64::from(taps) + minor(SPARE)?;
    let topped = reader.present(&mut card, |r| Ok(agent.handle(&r.tap()?, Some(topup), None)?))?;
    ensure!(topped.ok && topped.online, "the top-up was refused: {}", topped.line);
    let before = balance_minor(&topped.detail["balance"])?;

    let mut pos_taps = Vec::new();
    let mut gate_taps = Vec::new();
    for i in 0..taps {
        let reference = format!("tap-bench-{i}");
        let paid = timed_tap(&reader, &mut card, &mut pos, Some(payment), Some(&reference))?;
        ensure!(
            paid.outcome.ok && paid.outcome.online,
            "POS tap {i}: the payment was not approved online: {}",
            paid.outcome.line
        );
        pos_taps.push(json!({"ms": paid.total_ms, "card_ms": paid.card_ms, "http_ms": paid.http_ms,
            "approved": true, "entry_seq": paid.outcome.detail["entry_seq"]}));
        let passed = timed_tap(&reader, &mut card, &mut gate_terminal, None, None)?;
        ensure!(
            passed.outcome.ok && passed.outcome.online && passed.outcome.detail["decision"] == "allow",
            "gate tap {i}: the access was not allowed online: {}",
            passed.outcome.line
        );
        gate_taps.push(json!({"ms": passed.total_ms, "card_ms": passed.card_ms, "http_ms": passed.http_ms,
            "allowed": true}));
    }
    let after_card = c.get(&op, &format!("/v1/cards/{}", card.card_id))?;
    let after = balance_minor(&after_card["balance"])?;
    ensure!(
        after == before - payment * i64::from(taps),
        "the card's balance is {after} (minor units) after {taps} payments of {payment} from {before}"
    );
    server.stop()?;

    let median = |v: &[Value]| {
        let mut ms: Vec<f64> = v.iter().filter_map(|t| t["ms"].as_f64()).collect();
        ms.sort_by(f64::total_cmp);
        ms.get(ms.len() / 2).copied().unwrap_or(f64::NAN)
    };
    println!(
        "kartu demo --tap-bench: {taps} POS payments approved (median {:.1} ms) and {taps} gate entries allowed \
         (median {:.1} ms), card present to answer",
        median(&pos_taps),
        median(&gate_taps)
    );
    Ok(json!({
        "taps": taps,
        "payment": PAYMENT,
        "balance_before_minor": before,
        "balance_after_minor": after,
        "pos": pos_taps,
        "gate": gate_taps,
    }))
}
