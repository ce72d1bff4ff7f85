//! `kartu demo`'s public transport: the city's bus line and ferries (`demo_city::transit`,
//! the fare table of docs/TRANSIT.md approved by a second operator), ridden through the
//! validator terminal (`kartu terminal --mode validator`'s logic) with the virtual cards in
//! the demo's reader. Bus 2 is out of coverage all day: it prices its boardings itself with
//! the synced fare tables and journals them; at the depot in the evening it uploads, and
//! the server reprices the riders' journeys in tap order (a ferry ride taken after the bus
//! becomes a transfer and is refunded down).

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use client::Client;
use serde_json::{json, Value};
use terminal::{Direction, Mode, Terminal, ValidatorSettings};

use crate::demo_city::id;
use crate::stage::{Reader, Server, Wallet};

/// Bus 2's offline limits, minor units: per tap, per card per day, outstanding.
const BUS_LIMITS: (i64, i64, i64) = (6_000, 20_000, 100_000);

/// What the chapter rides with.
pub(crate) struct Riders<'a> {
    pub(crate) reader: &'a Reader,
    pub(crate) server: &'a Server,
    /// The API as the city's operator.
    pub(crate) op: &'a Client,
    pub(crate) work: &'a Path,
    /// The installation (a second operator is added to it, as `kartu operator add` does).
    pub(crate) data: &'a Path,
    /// Ani (resident), Budi (student; his replacement card), Citra (senior).
    pub(crate) ani: &'a mut Wallet,
    pub(crate) budi: &'a mut Wallet,
    pub(crate) citra: &'a mut Wallet,
}

/// Where validators are set up: the server, the operator, the terminals' directory.
#[derive(Clone, Copy)]
struct Depot<'a> {
    server: &'a Server,
    op: &'a Client,
    work: &'a Path,
}

/// A validator terminal on `url` (the live server, or an address where nothing listens).
fn validator(
    r: Depot<'_>,
    name: &str,
    url: &str,
    token: &str,
    direction: Direction,
    stop: Option<i64>,
) -> Result<Terminal> {
    let config = terminal::Config {
        mode: Mode::Validator,
        server: url.to_owned(),
        token: token.to_owned(),
        data_dir: r.work.join("terminals").join(name),
        currency: "IDR".into(),
        timeout: Duration::from_secs(2),
        ca_file: r.server.ca_file().map(Path::to_owned),
        validator: ValidatorSettings { direction, stop },
    };
    Terminal::open(config).with_context(|| format!("opening the validator {name}"))
}

/// A synced online validator.
fn online(r: Depot<'_>, name: &str, token: &Value, direction: Direction, stop: Option<i64>) -> Result<Terminal> {
    let token = token.as_str().context("a validator without its token")?;
    let mut t = validator(r, name, &r.server.url(), token, direction, stop)?;
    ensure!(t.sync()?.is_some(), "the validator {name} could not sync");
    Ok(t)
}

/// An address on this machine where nothing listens: a validator there is out of coverage.
fn no_coverage(server: &Server) -> Result<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let url = server.url();
    let scheme = url.split("://").next().unwrap_or("http");
    Ok(format!("{scheme}://localhost:{port}"))
}

/// Bus 2: its journal key registered with its credential and offline limits, bound to the
/// bus line, synced at the depot; the token.
fn bus_two(r: Depot<'_>, city: &Value) -> Result<String> {
    let key = validator(r, "bus-2", &r.server.url(), "kt_not_yet_registered", Direction::On, None)?.public_key_hex();
    let (per_tap, per_card_per_day, outstanding) = BUS_LIMITS;
    let body = json!({"role": "merchant_terminal", "name": "bus 2", "merchant_id": city["operator_id"], "public_key": key,
        "offline_limits": {"per_tap_minor": per_tap, "per_card_per_day_minor": per_card_per_day,
        "outstanding_minor": outstanding}});
    let credential: Value = r.op.post("/v1/credentials", "demo-cred-bus-2", &body)?;
    let token = credential["token"].as_str().context("bus 2's credential without its token")?.to_owned();
    let bind = json!({"credential_id": id(&credential)?, "route_id": city["bus_route"]});
    let _: Value = r.op.post("/v1/transit/validators", "demo-bind-bus-2", &bind)?;
    let mut depot = validator(r, "bus-2", &r.server.url(), &token, Direction::On, None)?;
    ensure!(depot.sync()?.is_some(), "bus 2 could not sync at the depot");
    Ok(token)
}

/// One tap of `card` at `at`; its outcome, which must open the gate.
fn ride(reader: &Reader, card: &mut Wallet, at: &mut Terminal) -> Result<terminal::Outcome> {
    let outcome = reader.present(card, |r| Ok(at.handle(&r.tap()?, None, None)?))?;
    ensure!(outcome.ok, "{}'s tap was refused: {}", card.holder, outcome.line);
    Ok(outcome)
}

fn balance(op: &Client, card: &Wallet) -> Result<String> {
    let v: Value = op.get(&format!("/v1/cards/{}", card.card_id))?;
    Ok(v["balance"]["amount"].as_str().unwrap_or("?").to_owned())
}

/// The chapter; what `--json` gets of it.
pub(crate) fn chapter(r: Riders<'_>, say: &dyn Fn(String)) -> Result<Value> {
    let city = open_the_network(r.op, r.data)?;
    let depot = Depot { server: r.server, op: r.op, work: r.work };
    say("Trans Mamminasata: bus line Koridor 1 (Rp 35.00), the island ferry (Rp 20.00 + Rp 5.00 a stop, at \
         most Rp 60.00) and the Selayar ferry (Rp 150.00); its fare table is docs/TRANSIT.md's, asked for by one \
         operator and put in force by a second: a journey within 60 minutes costs at most Rp 50.00, a day Rp \
         100.00; students pay half, seniors ride free"
        .into());
    let bus_token = bus_two(depot, &city)?;
    let mut bus_one = online(depot, "bus-1", &city["bus_validator"], Direction::On, Some(3))?;
    let mut ferry_in = online(depot, "ferry-in", &city["ferry_in"], Direction::On, None)?;
    let mut ferry_out = online(depot, "ferry-out", &city["ferry_out"], Direction::Off, None)?;
    let mut selayar = online(depot, "selayar", &city["selayar_gate"], Direction::On, None)?;
    let mut bus_two = validator(depot, "bus-2", &no_coverage(r.server)?, &bus_token, Direction::On, Some(1))?;

    let a = ride(r.reader, r.ani, &mut bus_two)?;
    ensure!(!a.online, "bus 2 reached the server: {}", a.line);
    say(format!("{} boards bus 2 at Karebosi, out of coverage: {}", r.ani.holder, a.line));
    let c = ride(r.reader, r.citra, &mut bus_two)?;
    say(format!("{} boards bus 2 too: {}", r.citra.holder, c.line));
    let held = ride(r.reader, r.ani, &mut ferry_in)?;
    say(format!(
        "{} takes the island ferry at Kayu Bangkoa, which knows nothing of bus 2: {}",
        r.ani.holder, held.line
    ));
    let off = ride(r.reader, r.ani, &mut ferry_out)?;
    say(format!("{} leaves it at Samalona: {}", r.ani.holder, off.line));
    let capped = ride(r.reader, r.budi, &mut selayar)?;
    say(format!("{} (a student) takes the Selayar ferry: {}", r.budi.holder, capped.line));
    let free = ride(r.reader, r.budi, &mut bus_one)?;
    say(format!("{} takes bus 1 from Pasar Sentral, his day capped: {}", r.budi.holder, free.line));

    let before = balance(r.op, r.ani)?;
    drop(bus_two);
    let mut back = validator(depot, "bus-2", &r.server.url(), &bus_token, Direction::On, Some(1))?;
    let posted = back.sync()?.context("bus 2 could not reach the server at the depot")?;
    ensure!(posted == 2 && back.pending() == 0, "bus 2 posted {posted} records, {} left", back.pending());
    let after = balance(r.op, r.ani)?;
    say(format!(
        "Evening: bus 2 is back at the depot and uploads its journal ({posted} records). The server puts {}'s \
         bus ride before her ferry ride: the ferry becomes a transfer within 60 minutes and is refunded down to \
         Rp 15.00; her balance goes from {before} to {after} (Rp 50.00 for the journey, as if bus 2 had been online)",
        r.ani.holder
    ));
    let entries = |o: &terminal::Outcome| -> Value {
        o.detail.ride().map_or(json!([]), |v| {
            json!(v.entries.iter().map(|e| json!([e.kind, e.amount.amount, e.rules])).collect::<Vec<_>>())
        })
    };
    Ok(json!({
        "offline_bus": [a.line, c.line],
        "ani_ferry": [entries(&held), entries(&off)],
        "budi": [entries(&capped), entries(&free)],
        "bus_uploaded": posted,
        "ani_balance": [before, after],
    }))
}

/// The network, its validators and its fare table, put in force by a second operator
/// (added to the installation in `data` as `kartu operator add` adds one).
fn open_the_network(op: &Client, data: &Path) -> Result<Value> {
    let (_, approver) = api::server::add_operator(data, None, "Demo Approver")
        .map_err(|e| anyhow::anyhow!("adding the demo's second operator: {e}"))?;
    crate::demo_city::transit(op, &op.with_token(&approver))
}

/// `make bench`'s validators (`crate::tap_bench`): bus 1 online at stop 3, and bus 2 out
/// of coverage at stop 1 (synced at the depot first).
pub(crate) fn bench_validators(op: &Client, data: &Path, work: &Path, server: &Server) -> Result<(Terminal, Terminal)> {
    let city = open_the_network(op, data)?;
    let depot = Depot { server, op, work };
    let token = bus_two(depot, &city)?;
    let bus_one = online(depot, "bus-1", &city["bus_validator"], Direction::On, Some(3))?;
    let bus_two = validator(depot, "bus-2", &no_coverage(server)?, &token, Direction::On, Some(1))?;
    Ok((bus_one, bus_two))
}
