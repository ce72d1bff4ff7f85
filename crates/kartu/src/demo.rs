//! `kartu demo`: a scripted day in the city, through the real pieces. The command enters
//! private mount and PID namespaces (as the end-to-end tests do, `pcsc_testkit`), starts a
//! pcscd of its own with the vpcd driver, and puts virtual NTAG 424 DNA cards (`cardsim`)
//! into its reader; it creates an installation (`kartu init`), serves it with `kartu serve`
//! as a child process on a free port, and plays the day: personalisation, issue, top-up,
//! grocery, parking, clinic, library, a lost card, a cloned card, an outage with offline
//! payments, public transport (`crate::demo_transit`: a bus out of coverage uploading at the
//! end of the day, a transfer, the daily cap), and `kartu audit verify` at the end. Taps are read from the cards through
//! PC/SC and go through the terminal library (`kartu terminal`'s logic) or the API.
//!
//! What it prints is a story with the figures; no token, key or NIK. With `--data-dir` the
//! installation stays for `kartu serve --data-dir` (the demo's tokens in
//! `DIR/demo-tokens.json`, 0600); `--json` writes the final state.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use client::wire::{CaptureBody, EntryView, NewHold, Tap};
use client::Client;
use serde_json::{json, Value};
use terminal::{Mode, Terminal};

use crate::demo_city::{self, id, CARDS};
use crate::stage::{minor, open_terminal, token, Reader, Server, Stage, Wallet, Wire, READER};

/// The UID of the blank card that replaces the lost one.
pub const REPLACEMENT_UID: &str = "04A1B2C3D4E504";
/// How long to wait for a signed checkpoint that covers the whole log.
const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(15);

/// The day's amounts (IDR). The end-to-end test computes the balances from its own copy.
/// Top-ups at the agent, for Ani, Budi and Citra.
const TOPUPS: [&str; 3] = ["200000.00", "150000.00", "100000.00"];
/// Ani's groceries.
const GROCERY_ANI: &str = "45500.00";
/// Budi's parking: held at the entry, captured at the exit.
const PARKING_HOLD: &str = "20000.00";
const PARKING_CAPTURE: &str = "12000.00";
/// Citra's groceries (online), the tap a clone then replays.
const GROCERY_CITRA: &str = "30000.00";
/// Citra's groceries while the server is down, in minor units.
const OFFLINE_CITRA_MINOR: i64 = 2_500_000;
/// The grocery till's offline limits, in minor units.
const OFFLINE_LIMITS: (i64, i64, i64) = (5_000_000, 10_000_000, 50_000_000);

/// `kartu demo`'s arguments.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Keep the installation in this directory (new or empty), so that `kartu serve
    /// --data-dir DIR` serves the day afterwards; the tokens the demo made are in
    /// DIR/demo-tokens.json (0600). Default: a temporary directory, removed at the end.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Write the day's final state as JSON to this file: cards and balances, entries,
    /// access decisions, the replay, the offline payment, the audit verification.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Instead of the day, time the terminal's taps (`make bench`): one card with money is
    /// presented N times to a POS (a payment each), N times to a gate (an access check
    /// each) and N times to each of two bus validators (online, and out of coverage), each
    /// tap timed from PC/SC reporting the card present to the answer; --json gets every
    /// tap's time (see `crate::tap_bench`).
    #[arg(long, value_name = "N", conflicts_with = "data_dir",
        value_parser = clap::value_parser!(u32).range(1..=crate::tap_bench::TAPS_MAX as i64))]
    pub tap_bench: Option<u32>,
    /// Serve the demo's installation over HTTPS with this PEM certificate (for `localhost`)
    /// and --tls-key; they go into its kartu.toml. Its clients trust --ca-file.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM, mode 0600).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A PEM file of the CA certificates the demo's clients trust for https:// (else
    /// the system's roots).
    #[arg(long, env = "KARTU_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

/// Runs the demo: outside the private namespaces, re-executes itself inside them.
pub fn run(args: DemoArgs) -> Result<()> {
    if let Some(dir) = &args.data_dir {
        check_data_dir(dir)?;
    }
    let tls = args.tls_cert.as_deref().zip(args.tls_key.as_deref());
    let wire = Wire::of(tls, args.ca_file.as_deref())?;
    if let Some(file) = &args.json {
        let parent = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        ensure!(parent.is_dir(), "--json {}: the directory {} does not exist", file.display(), parent.display());
    }
    if !pcsc_testkit::is_inside() {
        preflight()?;
        let code = pcsc_testkit::reexec_in_namespace()
            .map_err(|e| anyhow!("kartu demo could not enter private namespaces: {e}"))?;
        // The demo inside has printed the story, or its error.
        std::process::exit(code);
    }
    let work = tempfile::Builder::new().prefix("kartu-demo-").tempdir().context("creating a temporary directory")?;
    let data = match &args.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.canonicalize().with_context(|| format!("{}", dir.display()))?
        }
        None => work.path().join("city"),
    };
    let pcscd = pcsc_testkit::Pcscd::start(&work.path().join("pcscd"), READER)
        .map_err(|e| anyhow!("starting pcscd with the vpcd driver: {e}"))?;
    let result = match args.tap_bench {
        Some(taps) => crate::tap_bench::run(&pcscd, work.path(), &data, &wire, taps),
        None => day(&pcscd, work.path(), &data, &wire, args.data_dir.is_some()),
    };
    pcscd.finish(result.is_err());
    let summary = match result {
        Ok(summary) => summary,
        Err(e) => {
            let log = std::fs::read_to_string(work.path().join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            if !tail.is_empty() {
                eprintln!("--- last lines of the kartu serve log ---");
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
            return Err(e);
        }
    };
    if let Some(file) = &args.json {
        std::fs::write(file, serde_json::to_string_pretty(&summary)? + "\n")
            .with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(())
}

/// A data directory for the demo must be new or empty.
fn check_data_dir(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => ensure!(
            entries.next().is_none(),
            "--data-dir {} is not empty: give kartu demo a new or empty directory",
            dir.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bail!("--data-dir {}: {e}", dir.display()),
    }
    Ok(())
}

/// What the demo needs of the machine, checked before anything starts.
fn preflight() -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).context("reading /proc/self")?;
    ensure!(
        uid == 0,
        "kartu demo runs a pcscd of its own in private mount and PID namespaces, which needs root \
         (unshare, mount): run it as root, e.g. with sudo"
    );
    ensure!(
        Path::new(pcsc_testkit::VPCD_DRIVER).exists(),
        "the vpcd driver {} is missing: scripts/setup.sh installs pcscd and vsmartcard-vpcd",
        pcsc_testkit::VPCD_DRIVER
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The story.

fn chapter(n: u32, title: &str) {
    println!();
    println!("{n}. {title}");
}

fn say(line: impl AsRef<str>) {
    println!("   {}", line.as_ref());
    let _ = std::io::stdout().flush();
}

/// "200000.00" → "Rp 200,000.00".
fn rp(amount: &str) -> String {
    let (whole, frac) = amount.split_once('.').unwrap_or((amount, "00"));
    let (sign, digits) = whole.strip_prefix('-').map_or(("", whole), |d| ("-", d));
    let mut grouped = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    format!("Rp {sign}{grouped}.{frac}")
}

fn rp_minor(minor: i64) -> String {
    rp(&format!("{}.{:02}", minor / 100, minor % 100))
}

fn amount_of(v: &Value) -> &str {
    v["amount"].as_str().unwrap_or("?")
}

// ---------------------------------------------------------------------------------------
// The day.

/// The day's cast: the stage, the cards, and the API as the operator.
struct Day {
    reader: Reader,
    server: Server,
    key_file: card::keyfile::KeyFile,
    init: api::server::Initialised,
    /// The API without a token (`with_token` gives a caller's).
    api: Client,
    /// The API as the city's operator.
    op: Client,
    work: PathBuf,
    /// The installation's data directory.
    data: PathBuf,
    cards: Vec<Wallet>,
    replacement: Wallet,
    /// What `--json` gets, filled chapter by chapter.
    summary: serde_json::Map<String, Value>,
}

/// The places of business and their terminals, once the city is open.
struct Open {
    places: demo_city::Places,
    library: Value,
    agent: Terminal,
    grocery: Terminal,
    clinic: Terminal,
    library_gate: Terminal,
    kiosk: Terminal,
    /// The API as the parking operator's gate.
    parking: Client,
    /// The API as the city's auditor.
    auditor: Client,
    auditor_token: String,
}

fn day(pcscd: &pcsc_testkit::Pcscd, work: &Path, data: &Path, wire: &Wire, keep: bool) -> Result<Value> {
    let started = Instant::now();
    let Stage { reader, init, key_file, server, client } = Stage::open(pcscd, work, data, wire)?;
    println!("Kartu demo: a day in the city, through pcscd, the vpcd driver, virtual NTAG 424 DNA cards");
    println!("and a kartu server (reader {:?}).", reader.name);
    let verifier_path = data.join("checkpoint-verifier.pub");
    std::fs::write(&verifier_path, format!("{}\n", init.verifier_key))
        .with_context(|| format!("writing {}", verifier_path.display()))?;
    say(format!("kartu init made a new installation; kartu serve answers on {}", server.url()));
    let cards = CARDS
        .iter()
        .enumerate()
        .map(|(i, (holder, _, uid, _))| Wallet::new(holder, uid, work.join(format!("card-{i}.json"))))
        .collect();
    let mut day = Day {
        op: client.with_token(&init.operator_token),
        api: client,
        reader,
        server,
        key_file,
        init,
        work: work.to_owned(),
        data: data.to_owned(),
        cards,
        replacement: Wallet::new(CARDS[1].0, REPLACEMENT_UID, work.join("card-replacement.json")),
        summary: serde_json::Map::new(),
    };
    chapter(1, "Three blank cards are personalised (diversified AES keys, SUN on the NDEF file)");
    for i in 0..day.cards.len() {
        day.personalize(Some(i))?;
    }
    chapter(2, "The city issues them (operator API) and opens for business");
    let (places, library) = day.issue()?;
    let mut open = day.open_for_business(places, library)?;
    day.topups(&mut open)?;
    day.groceries(&mut open)?;
    day.parking(&open)?;
    day.public_services(&mut open)?;
    day.lost_card(&mut open)?;
    day.clone_attack(&mut open)?;
    day.outage(&mut open)?;
    day.transit()?;
    day.audit(&open)?;
    day.finish(&open, started, data, keep, &verifier_path)
}

impl Day {
    /// Personalises card `i` (the replacement when `None`).
    fn personalize(&mut self, i: Option<usize>) -> Result<()> {
        let card = match i {
            Some(i) => &mut self.cards[i],
            None => &mut self.replacement,
        };
        let (uid, version, counter) = self.reader.personalize(&self.key_file, card)?;
        say(format!("card {uid}: key version {version}, check tap verified (read counter {})", counter.value()));
        Ok(())
    }

    /// The places, the library, and the holders with their cards.
    fn issue(&mut self) -> Result<(demo_city::Places, Value)> {
        let places = demo_city::create_places(&self.op)?;
        let library: Value = self.op.post(
            "/v1/service-points",
            "demo-library",
            &json!({"name": "Perpustakaan Kota", "service": "library",
                "policy": {"categories": ["student"], "timezone": "Asia/Makassar"}}),
        )?;
        for (i, (card, (name, nik, uid, categories))) in self.cards.iter_mut().zip(CARDS.iter()).enumerate() {
            let body = json!({"name": name, "nik": nik, "categories": categories});
            let h: Value = self.op.post("/v1/holders", &format!("demo-holder-{i}"), &body)?;
            let issued: Value =
                self.op.post("/v1/cards", &format!("demo-card-{i}"), &json!({"uid": uid, "holder_id": id(&h)?}))?;
            card.card_id = id(&issued)?;
            say(format!(
                "{name} ({}) gets card {uid}: card id {}, balance {}",
                categories.join(", "),
                card.card_id,
                rp(amount_of(&issued["balance"]))
            ));
        }
        Ok((places, library))
    }

    /// The credentials and terminals of every place.
    fn open_for_business(&self, places: demo_city::Places, library: Value) -> Result<Open> {
        let op = &self.op;
        let credential = |key: &str, role: &str, name: &str, (field, place): (&str, &Value)| -> Result<String> {
            let mut body = json!({"role": role, "name": name});
            body[field] = Value::String(id(place)?);
            token(op, key, body)
        };
        let agent_token = credential("demo-cred-agent", "top_up_agent", "agent counter", ("agent_id", &places.agent))?;
        let grocery_token = self.grocery_credential(&places)?;
        let parking_token =
            credential("demo-cred-parking", "merchant_terminal", "parking gate", ("merchant_id", &places.parking))?;
        let clinic_token =
            credential("demo-cred-clinic", "service_point", "clinic desk", ("service_point_id", &places.clinic))?;
        let library_token =
            credential("demo-cred-library", "service_point", "library gate", ("service_point_id", &library))?;
        let kiosk_token = token(op, "demo-cred-kiosk", json!({"role": "kiosk", "name": "city hall kiosk"}))?;
        let auditor_token = token(op, "demo-cred-auditor", json!({"role": "auditor", "name": "city auditor"}))?;
        let (work, server) = (&self.work, &self.server);
        let mut open = Open {
            agent: open_terminal(work, "agent", Mode::Agent, server, &agent_token)?,
            grocery: open_terminal(work, "grocery", Mode::Pos, server, &grocery_token)?,
            clinic: open_terminal(work, "clinic", Mode::Gate, server, &clinic_token)?,
            library_gate: open_terminal(work, "library", Mode::Gate, server, &library_token)?,
            kiosk: open_terminal(work, "kiosk", Mode::Kiosk, server, &kiosk_token)?,
            parking: self.api.with_token(&parking_token),
            auditor: self.api.with_token(&auditor_token),
            auditor_token,
            places,
            library,
        };
        ensure!(open.grocery.sync()?.is_some(), "the grocery till could not fetch its offline limits");
        let name = |v: &Value| v["name"].as_str().unwrap_or("?").to_owned();
        say(format!(
            "registered: {} (grocery, fee 0.7 %), {} (parking, 0.5 %), {} (clinic: insured and senior holders, \
             queue numbers), {} (library: students), {} with {} of float",
            name(&open.places.grocery),
            name(&open.places.parking),
            name(&open.places.clinic),
            name(&open.library),
            name(&open.places.agent),
            rp(demo_city::AGENT_FLOAT)
        ));
        let (per_tap, per_card_per_day, _) = OFFLINE_LIMITS;
        say(format!(
            "terminal credentials for the agent, the grocery till (offline up to {} a tap, {} a card a day), the \
             parking gate, the clinic desk, the library gate, a kiosk; an auditor",
            rp_minor(per_tap),
            rp_minor(per_card_per_day)
        ));
        Ok(open)
    }

    /// The grocery till's credential, with its public key and offline limits.
    fn grocery_credential(&self, places: &demo_city::Places) -> Result<String> {
        let grocery_key =
            open_terminal(&self.work, "grocery", Mode::Pos, &self.server, "kt_not_yet_registered")?.public_key_hex();
        let (per_tap, per_card_per_day, outstanding) = OFFLINE_LIMITS;
        token(
            &self.op,
            "demo-cred-grocery",
            json!({"role": "merchant_terminal", "name": "grocery till 1", "merchant_id": id(&places.grocery)?,
                "public_key": grocery_key, "offline_limits": {"per_tap_minor": per_tap,
                "per_card_per_day_minor": per_card_per_day, "outstanding_minor": outstanding}}),
        )
    }

    fn topups(&mut self, open: &mut Open) -> Result<()> {
        chapter(3, "Top-ups at the agent (tap, amount, receipt)");
        for (card, amount) in self.cards.iter_mut().zip(TOPUPS) {
            let outcome =
                self.reader.present(card, |r| Ok(open.agent.handle(&r.tap()?, Some(minor(amount)?), None)?))?;
            ensure!(outcome.ok && outcome.online, "the top-up of {} was refused: {}", card.holder, outcome.line);
            let t = outcome.detail.topup().context("the top-up's answer")?;
            say(format!(
                "{} tops up {}: balance {}, agent float {}, receipt #{}",
                card.holder,
                rp(&t.amount.amount),
                rp(&t.balance.amount),
                rp(&t.float.amount),
                t.receipt.entry_seq
            ));
        }
        Ok(())
    }

    fn groceries(&mut self, open: &mut Open) -> Result<()> {
        chapter(4, "Groceries");
        let ani = &mut self.cards[0];
        let outcome = self.reader.present(ani, |r| {
            Ok(open.grocery.handle(&r.tap()?, Some(minor(GROCERY_ANI)?), Some("receipt-ani-1"))?)
        })?;
        ensure!(outcome.ok && outcome.online, "Ani's payment was refused: {}", outcome.line);
        let p = outcome.detail.payment().context("the payment's answer")?;
        say(format!(
            "{} pays {} at the grocery: merchant fee {}, balance {}, receipt #{} (audit leaf {})",
            ani.holder,
            rp(&p.amount.amount),
            rp(&p.fee.amount),
            rp(&p.balance.amount),
            p.receipt.entry_seq,
            p.receipt.leaf_index.map_or("none".into(), |l| l.to_string())
        ));
        Ok(())
    }

    fn parking(&mut self, open: &Open) -> Result<()> {
        chapter(5, "Parking: a hold at the entry, a capture at the exit");
        let budi = &mut self.cards[1];
        let held = self.reader.present(budi, |r| {
            let t = r.tap()?;
            let hold = NewHold {
                tap: Tap { picc_data: t.picc_data, cmac: t.cmac },
                amount: PARKING_HOLD.into(),
                currency: None,
                reference: Some("ticket-0815".into()),
                expires_in_minutes: Some(360),
            };
            Ok(open.parking.hold("demo-parking-hold", &hold)?)
        })?;
        say(format!(
            "{} drives in: {} held (receipt #{}), balance {} left to spend",
            budi.holder,
            rp(&held.amount.amount),
            held.receipt.entry_seq,
            rp(&held.balance.amount)
        ));
        let capture = CaptureBody { amount: PARKING_CAPTURE.into(), currency: None };
        let captured = open.parking.capture(&held.id, "demo-parking-capture", &capture)?;
        say(format!(
            "3 hours later, out: {} captured (fee {}), {} released, balance {}, receipt #{}",
            rp(&captured.amount.amount),
            rp(&captured.fee.amount),
            rp_minor(minor(PARKING_HOLD)? - minor(PARKING_CAPTURE)?),
            rp(&captured.balance.amount),
            captured.receipt.entry_seq
        ));
        Ok(())
    }

    fn public_services(&mut self, open: &mut Open) -> Result<()> {
        chapter(6, "Public services: the clinic and the library");
        let ani = &mut self.cards[0];
        let at_clinic = self.reader.present(ani, |r| Ok(open.clinic.handle(&r.tap()?, None, None)?))?;
        ensure!(at_clinic.ok, "the clinic refused Ani: {}", at_clinic.line);
        let clinic = at_clinic.detail.decision().context("the clinic's decision")?;
        let queue_number = clinic.queue_number.context("the clinic gave no queue number")?;
        say(format!(
            "{} at {}: {} ({}), queue number {queue_number}",
            ani.holder,
            open.places.clinic["name"].as_str().unwrap_or("the clinic"),
            clinic.decision,
            clinic.reason
        ));
        let at_library = self.reader.present(ani, |r| Ok(open.library_gate.handle(&r.tap()?, None, None)?))?;
        let library = at_library.detail.decision().context("the library's decision")?;
        ensure!(
            !at_library.ok && library.reason == "not_entitled",
            "the library should refuse Ani (not a student): {}",
            at_library.line
        );
        say(format!(
            "{} at {}: {} ({}: the library is for students)",
            ani.holder,
            open.library["name"].as_str().unwrap_or("the library"),
            library.decision,
            library.reason
        ));
        self.note(
            "clinic",
            json!({"decision": clinic.decision, "reason": clinic.reason, "queue_number": queue_number}),
        );
        self.note("library", json!({"decision": library.decision, "reason": library.reason}));
        Ok(())
    }

    fn lost_card(&mut self, open: &mut Open) -> Result<()> {
        chapter(7, "A lost card: blocked, then replaced with its balance moved");
        let budi = &mut self.cards[1];
        let path = format!("/v1/cards/{}/block", budi.card_id);
        let blocked: Value = self.op.post(&path, "demo-block-lost", &json!({"reason": "lost"}))?;
        say(format!(
            "{} reports card {} lost: status {} ({}), balance {} frozen",
            budi.holder,
            budi.uid,
            blocked["status"].as_str().unwrap_or("?"),
            blocked["block_reason"].as_str().unwrap_or("?"),
            rp(amount_of(&blocked["balance"]))
        ));
        let finder =
            self.reader.present(budi, |r| Ok(open.grocery.handle(&r.tap()?, Some(minor("5000.00")?), None)?))?;
        let finder_code = finder.detail.code().unwrap_or("?").to_owned();
        ensure!(!finder.ok && finder_code == "card_blocked", "a tap of the lost card was not refused: {}", finder.line);
        say(format!("someone who found it tries to pay {} at the grocery: refused ({finder_code})", rp("5000.00")));
        self.note("lost_card_tap", json!({"code": finder_code}));
        self.personalize(None)?;
        let budi = &self.cards[1];
        let path = format!("/v1/cards/{}/replace", budi.card_id);
        let replaced: Value = self.op.post(&path, "demo-replace", &json!({"new_uid": REPLACEMENT_UID}))?;
        self.replacement.card_id = id(&replaced["new_card"])?;
        say(format!(
            "new card {} (card id {}) for {}: {} moved by receipt #{}; the old card is {}, balance {}",
            REPLACEMENT_UID,
            self.replacement.card_id,
            budi.holder,
            rp(amount_of(&replaced["moved"])),
            replaced["receipt"]["entry_seq"],
            replaced["old_card"]["status"].as_str().unwrap_or("?"),
            rp(amount_of(&replaced["old_card"]["balance"]))
        ));
        let shown = self.reader.present(&mut self.replacement, |r| Ok(open.kiosk.handle(&r.tap()?, None, None)?))?;
        ensure!(shown.ok, "the kiosk refused the new card: {}", shown.line);
        let balance = shown.detail.balance().map_or("?", |b| b.balance.as_str());
        say(format!("the new card at the city hall kiosk: balance {}", rp(balance)));
        Ok(())
    }

    fn clone_attack(&mut self, open: &mut Open) -> Result<()> {
        chapter(8, "A cloned card: the same tap presented twice");
        let citra = &mut self.cards[2];
        let (paid, replayed) = self.reader.present(citra, |r| {
            let t = r.tap()?;
            let paid = open.grocery.handle(&t, Some(minor(GROCERY_CITRA)?), Some("receipt-citra-1"))?;
            // A skimmer recorded the tap's bytes; a clone sends them again.
            let replayed = open.grocery.handle(&t, Some(minor(GROCERY_CITRA)?), Some("receipt-clone-1"))?;
            Ok((paid, replayed))
        })?;
        ensure!(paid.ok && paid.online, "Citra's payment was refused: {}", paid.line);
        let p = paid.detail.payment().context("the payment's answer")?;
        say(format!(
            "{} pays {} at the grocery: balance {}, receipt #{}",
            citra.holder,
            rp(&p.amount.amount),
            rp(&p.balance.amount),
            p.receipt.entry_seq
        ));
        let replay_code = replayed.detail.code().unwrap_or("?").to_owned();
        ensure!(!replayed.ok && replay_code == "card_replay", "the replayed tap was not refused: {}", replayed.line);
        let flagged: Value = self.op.get(&format!("/v1/cards/{}", citra.card_id))?;
        say(format!(
            "the same tap bytes again (a clone): refused, 409 {replay_code}; the operator sees card {} flagged \
             (suspected clone: {}, {} replay(s)), balance unchanged at {}",
            citra.uid,
            flagged["suspected_clone"],
            flagged["replays"],
            rp(amount_of(&flagged["balance"]))
        ));
        self.note("replay", json!({"code": replay_code}));
        Ok(())
    }

    fn outage(&mut self, open: &mut Open) -> Result<()> {
        chapter(9, "An outage: the server goes down, the grocery till goes on offline");
        self.server.kill()?;
        say("kartu serve is killed (SIGKILL)");
        let citra = &mut self.cards[2];
        let offline = self.reader.present(citra, |r| {
            Ok(open.grocery.handle(&r.tap()?, Some(OFFLINE_CITRA_MINOR), Some("receipt-citra-2"))?)
        })?;
        ensure!(offline.ok && !offline.online, "the offline payment was not taken offline: {}", offline.line);
        let offline_seq = offline.detail.record().context("no offline record")?.record.seq;
        say(format!(
            "{} pays {} with the server down: approved offline, signed record #{offline_seq} in the till's \
             hash-chained journal ({} waiting)",
            citra.holder,
            rp_minor(OFFLINE_CITRA_MINOR),
            open.grocery.pending()
        ));
        self.server.restart()?;
        let posted = open.grocery.sync()?.context("the restarted server could not be reached")?;
        let pending = open.grocery.pending();
        ensure!(posted == 1 && pending == 0, "the upload posted {posted} record(s), {pending} left");
        let entries = open.auditor.entries(1000, None)?;
        let offline_entries: Vec<&EntryView> =
            entries.entries.iter().filter(|e| e.memo.as_deref().is_some_and(|m| m.starts_with("offline"))).collect();
        ensure!(offline_entries.len() == 1, "{} offline entries posted, expected 1", offline_entries.len());
        let citra_now: Value = self.op.get(&format!("/v1/cards/{}", citra.card_id))?;
        let entry = offline_entries[0];
        say(format!(
            "kartu serve is back; the till uploads its journal: {posted} record posted as entry #{} ({}), {}'s \
             balance {}",
            entry.entry_seq,
            entry.memo.as_deref().unwrap_or("?"),
            citra.holder,
            rp(amount_of(&citra_now["balance"]))
        ));
        self.note("offline", json!({"record_seq": offline_seq, "posted": posted, "entry_seq": entry.entry_seq}));
        Ok(())
    }

    fn transit(&mut self) -> Result<()> {
        chapter(10, "Public transport: a bus out of coverage, a transfer, the daily cap");
        let [ani, _, citra] = self.cards.as_mut_slice() else { bail!("the demo has three cards") };
        let riders = crate::demo_transit::Riders {
            reader: &self.reader,
            server: &self.server,
            op: &self.op,
            work: &self.work,
            data: &self.data,
            ani,
            budi: &mut self.replacement,
            citra,
        };
        let summary = crate::demo_transit::chapter(riders, &|line| say(line))?;
        self.note("transit", summary);
        Ok(())
    }

    fn audit(&mut self, open: &Open) -> Result<()> {
        chapter(11, "The auditor: kartu audit verify");
        let verifier = merkle::Verifier::parse(&self.init.verifier_key).context("the checkpoint verifier key")?;
        let deadline = Instant::now() + CHECKPOINT_TIMEOUT;
        let origin = Some(self.init.config.origin.as_str());
        let report = loop {
            match crate::verify_url::verify(&open.auditor, &verifier, false, origin, None) {
                Ok(report) => break report,
                Err(e) if format!("{e:#}").contains("not yet covered") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e.context("audit verify FAILED")),
            }
        };
        let report = serde_json::to_value(&report)?;
        say(format!(
            "OK: {} leaves ({} journal entries, {} events) recomputed from the API; signed checkpoint of size {} \
             with root {}; every balance chain and the trial balance check",
            report["leaves"],
            report["entries"],
            report["events"],
            report["checkpoint_size"],
            report["root"].as_str().unwrap_or("?")
        ));
        let trial = open.auditor.trial_balance()?;
        self.note("entries", json!(trial.last_entry_seq));
        self.note("trial_balance_balanced", json!(trial.currencies.iter().all(|l| l.balanced)));
        self.note("verify", json!({"ok": true, "report": report}));
        Ok(())
    }

    /// The final state: every card's status and balance, the summary, the server stopped.
    fn finish(mut self, open: &Open, started: Instant, data: &Path, keep: bool, verifier_path: &Path) -> Result<Value> {
        let mut final_cards = Vec::new();
        for card in self.cards.iter().chain(std::iter::once(&self.replacement)) {
            let v: Value = self.op.get(&format!("/v1/cards/{}", card.card_id))?;
            final_cards.push(json!({"holder": card.holder, "uid": card.uid, "card_id": card.card_id,
                "status": v["status"], "balance": v["balance"]["amount"], "replays": v["replays"]}));
        }
        println!();
        println!("End of the day ({:.1} s):", started.elapsed().as_secs_f64());
        for card in &final_cards {
            say(format!(
                "{:<13} card {}  {:<8}  {}",
                card["holder"].as_str().unwrap_or("?"),
                card["uid"].as_str().unwrap_or("?"),
                card["status"].as_str().unwrap_or("?"),
                rp(card["balance"].as_str().unwrap_or("?"))
            ));
        }
        self.note("cards", Value::Array(final_cards));
        self.note("data_dir", json!(keep.then(|| data.display().to_string())));
        self.server.stop()?;
        if keep {
            let tokens = json!({"operator": self.init.operator_token, "auditor": open.auditor_token,
                "checkpoint_verifier_key_file": verifier_path.display().to_string()});
            files::create_private(&data.join("demo-tokens.json"), serde_json::to_string_pretty(&tokens)?.as_bytes())?;
            say(format!(
                "the installation stays in {}: kartu serve --data-dir {} (tokens in demo-tokens.json)",
                data.display(),
                data.display()
            ));
        }
        Ok(Value::Object(self.summary))
    }

    fn note(&mut self, key: &str, value: Value) {
        self.summary.insert(key.to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::rp;

    #[test]
    fn rupiah_amounts_are_grouped() {
        assert_eq!(rp("200000.00"), "Rp 200,000.00");
        assert_eq!(rp("5000.00"), "Rp 5,000.00");
        assert_eq!(rp("318.50"), "Rp 318.50");
        assert_eq!(rp("10000000.00"), "Rp 10,000,000.00");
        assert_eq!(rp("0.00"), "Rp 0.00");
    }
}
