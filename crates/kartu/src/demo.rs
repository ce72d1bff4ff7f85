//! `kartu demo`: a scripted day in the city, through the real pieces. The command enters
//! private mount and PID namespaces (as the end-to-end tests do, `pcsc_testkit`), starts a
//! pcscd of its own with the vpcd driver, and puts virtual NTAG 424 DNA cards (`cardsim`)
//! into its reader; it creates an installation (`kartu init`), serves it with `kartu serve`
//! as a child process on a free port, and plays the day: personalisation, issue, top-up,
//! grocery, parking, clinic, library, a lost card, a cloned card, an outage with offline
//! payments, and `kartu audit verify` at the end. Taps are read from the cards through
//! PC/SC and go through the terminal library (`kartu terminal`'s logic) or the API.
//!
//! What it prints is a story with the figures; no token, key or NIK. With `--data-dir` the
//! installation stays for `kartu serve --data-dir` (the demo's tokens in
//! `DIR/demo-tokens.json`, 0600); `--json` writes the final state.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::{json, Value};
use terminal::{CardRead, Mode, Terminal};

use crate::demo_city::{self, id, Client, CARDS};

/// The host in the cards' tap URL.
const HOST: &str = "demo.kartu.example";
/// The reader's name in the demo's pcscd.
const READER: &str = "Kartu Demo Reader";
/// The system identifier of the demo installation's key diversification.
const SYSTEM_IDENTIFIER: &str = "KARTU-MKS";
/// The UID of the blank card that replaces the lost one.
pub const REPLACEMENT_UID: &str = "04A1B2C3D4E504";
/// How long a card may take to show in the reader, or to leave it.
const CARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `kartu serve` may take to answer `/healthz`.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopped server may take to finish.
const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(35);
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
    /// presented N times to a POS (a payment each) and N times to a gate (an access check
    /// each), each tap timed from PC/SC reporting the card present to the server's answer;
    /// --json gets every tap's time (see `crate::tap_bench`).
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

/// How the demo's clients reach its server: plain HTTP on loopback, or HTTPS with a
/// certificate and the CA that signed it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Wire {
    /// The server's certificate and key (absolute paths).
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
    /// The CA file the clients trust.
    pub(crate) ca_file: Option<PathBuf>,
}

impl Wire {
    fn of(args: &DemoArgs) -> Result<Wire> {
        let absolute = |p: &PathBuf| p.canonicalize().with_context(|| format!("{}", p.display()));
        Ok(Wire {
            tls: match (&args.tls_cert, &args.tls_key) {
                (Some(c), Some(k)) => Some((absolute(c)?, absolute(k)?)),
                _ => None,
            },
            ca_file: args.ca_file.as_ref().map(absolute).transpose()?,
        })
    }
}

/// Runs the demo: outside the private namespaces, re-executes itself inside them.
pub fn run(args: DemoArgs) -> Result<()> {
    if let Some(dir) = &args.data_dir {
        check_data_dir(dir)?;
    }
    let wire = Wire::of(&args)?;
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
// The cards: virtual cards that take turns in the reader's slot 0.

pub(crate) struct Wallet {
    pub(crate) holder: &'static str,
    pub(crate) uid: String,
    state: PathBuf,
    sim: Option<cardsim::SimHandle>,
    pub(crate) card_id: String,
}

impl Wallet {
    /// A card not yet in the reader (a virtual card kept in the `state` file).
    pub(crate) fn new(holder: &'static str, uid: &str, state: PathBuf) -> Wallet {
        Wallet { holder, uid: uid.to_owned(), state, sim: None, card_id: String::new() }
    }
}

pub(crate) struct Reader {
    pcsc: reader::Terminal,
    name: String,
    vpcd: String,
}

impl Reader {
    /// Puts the card into the reader, runs `f` with it there, and takes it out. `f` starts
    /// as soon as PC/SC reports the card present.
    pub(crate) fn present<T>(&self, card: &mut Wallet, f: impl FnOnce(&Self) -> Result<T>) -> Result<T> {
        match &card.sim {
            Some(sim) => sim.insert(),
            None => {
                let mut config = cardsim::SimConfig::new(self.vpcd.clone(), card.state.clone());
                config.uid = Some(card::CardUid::from_hex(&card.uid).map_err(|e| anyhow!("card UID: {e}"))?);
                card.sim = Some(cardsim::spawn(config).context("starting the virtual card")?);
            }
        }
        self.pcsc
            .wait_for_card(Some(&self.name), CARD_TIMEOUT)
            .with_context(|| format!("card {} did not show in {}", card.uid, self.name))?;
        let result = f(self);
        if let Some(sim) = &card.sim {
            sim.remove();
        }
        self.pcsc.wait_for_removal(&self.name, CARD_TIMEOUT).context("the card did not leave the reader")?;
        result
    }

    /// Personalises the blank card with the installation's newest keys (SUN on the NDEF
    /// file) and checks that the card in the reader was that one; returns its UID, key
    /// version and the read counter of its check tap.
    pub(crate) fn personalize(
        &self,
        key_file: &card::keyfile::KeyFile,
        card: &mut Wallet,
    ) -> Result<(card::CardUid, u8, card::ReadCounter)> {
        let expected = card.uid.clone();
        let (uid, version, counter) = self.present(card, |r| {
            crate::card_cmd::personalize_in(
                &r.pcsc,
                &r.name,
                key_file,
                key_file.newest(),
                api::server::ISSUANCE_KEY_FILE,
                HOST,
            )
        })?;
        ensure!(uid.to_string() == expected, "the card personalised is {uid}, not {expected}");
        Ok((uid, version, counter))
    }

    /// One tap as a terminal reads it: the UID, and the SUN message from the card's URL.
    pub(crate) fn tap(&self) -> Result<CardRead> {
        let mut connection = self.pcsc.connect(&self.name).context("connecting to the card")?;
        let uid = connection.read_uid().context("reading the card's UID")?;
        let sun = connection.read_sun().context("reading the card's tap")?;
        let _ = connection.disconnect();
        Ok(CardRead { uid: hex::encode_upper(uid.as_bytes()), picc_data: sun.picc_data_hex(), cmac: sun.cmac_hex() })
    }
}

// ---------------------------------------------------------------------------------------
// `kartu serve` as a child process.

pub(crate) struct Server {
    child: Option<Child>,
    data: PathBuf,
    database_url: String,
    listen: String,
    log: PathBuf,
    wire: Wire,
}

impl Server {
    fn start(data: &Path, database_url: &str, listen: &str, log: &Path, wire: &Wire) -> Result<Server> {
        let mut server = Server {
            child: None,
            data: data.to_owned(),
            database_url: database_url.to_owned(),
            listen: listen.to_owned(),
            log: log.to_owned(),
            wire: wire.clone(),
        };
        server.restart()?;
        Ok(server)
    }

    /// Its base URL: `https://localhost:PORT` with a certificate (made for `localhost`).
    pub(crate) fn url(&self) -> String {
        match &self.wire.tls {
            Some(_) => format!("https://localhost:{}", self.listen.rsplit_once(':').map_or("", |(_, p)| p)),
            None => format!("http://{}", self.listen),
        }
    }

    /// The CA file its clients trust.
    pub(crate) fn ca_file(&self) -> Option<&Path> {
        self.wire.ca_file.as_deref()
    }

    fn restart(&mut self) -> Result<()> {
        let exe = std::env::current_exe().context("finding the kartu binary")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(exe)
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--listen", &self.listen, "--database-url", &self.database_url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting kartu serve")?;
        self.child = Some(child);
        let agent =
            terminal::client::agent(self.ca_file(), Some(Duration::from_secs(2))).map_err(anyhow::Error::msg)?;
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        loop {
            let url = format!("{}/healthz", self.url());
            match agent.get(&url).call() {
                Ok(r) if r.status().is_success() => return Ok(()),
                Err(e) => {
                    // Not up yet is fine; a certificate the demo's clients refuse is not.
                    if let terminal::client::Failure::Broken(why) = terminal::client::classify(&url, &e) {
                        bail!("kartu serve answers, but not usably: {why}");
                    }
                }
                Ok(_) => {}
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("kartu serve exited at start ({status})");
                }
            }
            ensure!(Instant::now() < deadline, "kartu serve did not answer /healthz within {SERVER_START_TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// An outage: the process is killed (SIGKILL), nothing is finished.
    fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("killing kartu serve")?;
            child.wait()?;
        }
        Ok(())
    }

    /// A clean stop: SIGTERM, in-flight requests finish, queued writes are written.
    pub(crate) fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let sent = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        if !sent.is_ok_and(|s| s.success()) {
            child.kill()?;
        }
        let deadline = Instant::now() + SERVER_STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                ensure!(status.success(), "kartu serve stopped with {status}");
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("kartu serve did not stop within {SERVER_STOP_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_listen_address() -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.to_string())
}

// ---------------------------------------------------------------------------------------
// The terminals.

pub(crate) fn open_terminal(work: &Path, name: &str, mode: Mode, server: &Server, token: &str) -> Result<Terminal> {
    let config = terminal::Config {
        mode,
        server: server.url(),
        token: token.to_owned(),
        data_dir: work.join("terminals").join(name),
        currency: "IDR".into(),
        timeout: Duration::from_secs(2),
        ca_file: server.ca_file().map(Path::to_owned),
    };
    Terminal::open(config).with_context(|| format!("opening the {name} terminal"))
}

pub(crate) fn minor(amount: &str) -> Result<i64> {
    terminal::parse_amount(amount, "IDR").map_err(|e| anyhow!("{e}"))
}

pub(crate) fn token(c: &Client, op: &str, key: &str, body: Value) -> Result<String> {
    let v = c.post(op, "/v1/credentials", key, body)?;
    v["token"].as_str().map(str::to_owned).context("a credential came back without its token")
}

// ---------------------------------------------------------------------------------------
// The stage: what every run of the demo starts with.

/// The reader of the demo's pcscd, a new installation (as `kartu init` makes it) and
/// `kartu serve` on it.
pub(crate) struct Stage {
    pub(crate) reader: Reader,
    pub(crate) init: api::server::Initialised,
    pub(crate) key_file: card::keyfile::KeyFile,
    pub(crate) server: Server,
    /// An API client for the server.
    pub(crate) client: Client,
}

impl Stage {
    pub(crate) fn open(pcscd: &pcsc_testkit::Pcscd, work: &Path, data: &Path, wire: &Wire) -> Result<Stage> {
        let reader = Reader {
            pcsc: reader::Terminal::establish().context("connecting to the demo's pcscd")?,
            name: pcscd.reader_name(0),
            vpcd: pcscd.vpcd_address(0),
        };
        let init = api::server::init(data, None, SYSTEM_IDENTIFIER).context("kartu init")?;
        // The demo plays the personalisation workstation too: it issues with the issuance file.
        let key_file = crate::card_cmd::read_key_file(&init.issuance_key_file)?;
        if let Some((cert, key)) = &wire.tls {
            // Into kartu.toml, as an operator would: `kartu serve --data-dir` serves it so too.
            let path = data.join(api::server::CONFIG_FILE);
            let mut config = init.config.clone();
            config.tls_cert = Some(cert.clone());
            config.tls_key = Some(key.clone());
            std::fs::write(&path, toml::to_string(&config)?).with_context(|| format!("writing {}", path.display()))?;
        }
        let listen = free_listen_address()?;
        let server = Server::start(data, &init.config.database_url, &listen, &work.join("server.log"), wire)?;
        let client = Client::new(&server.url(), server.ca_file())?;
        Ok(Stage { reader, init, key_file, server, client })
    }
}

// ---------------------------------------------------------------------------------------
// The day.

#[allow(clippy::too_many_lines)]
fn day(pcscd: &pcsc_testkit::Pcscd, work: &Path, data: &Path, wire: &Wire, keep: bool) -> Result<Value> {
    let started = Instant::now();
    let Stage { reader, init, key_file, mut server, client: c } = Stage::open(pcscd, work, data, wire)?;
    println!("Kartu demo: a day in the city, through pcscd, the vpcd driver, virtual NTAG 424 DNA cards");
    println!("and a kartu server (reader {:?}).", reader.name);
    let op = init.operator_token.clone();
    let verifier_path = data.join("checkpoint-verifier.pub");
    std::fs::write(&verifier_path, format!("{}\n", init.verifier_key))
        .with_context(|| format!("writing {}", verifier_path.display()))?;
    let url = server.url();
    say(format!("kartu init made a new installation; kartu serve answers on {url}"));

    let mut cards: Vec<Wallet> = CARDS
        .iter()
        .enumerate()
        .map(|(i, (holder, _, uid, _))| Wallet::new(holder, uid, work.join(format!("card-{i}.json"))))
        .collect();
    let mut replacement = Wallet::new(CARDS[1].0, REPLACEMENT_UID, work.join("card-replacement.json"));

    chapter(1, "Three blank cards are personalised (diversified AES keys, SUN on the NDEF file)");
    let personalize = |card: &mut Wallet| -> Result<()> {
        let (uid, version, counter) = reader.personalize(&key_file, card)?;
        say(format!("card {uid}: key version {version}, check tap verified (read counter {})", counter.value()));
        Ok(())
    };
    for card in &mut cards {
        personalize(card)?;
    }

    chapter(2, "The city issues them (operator API) and opens for business");
    let places = demo_city::create_places(&c, &op)?;
    let library = c.post(
        &op,
        "/v1/service-points",
        "demo-library",
        json!({"name": "Perpustakaan Kota", "service": "library",
            "policy": {"categories": ["student"], "timezone": "Asia/Makassar"}}),
    )?;
    for (i, (card, (name, nik, uid, categories))) in cards.iter_mut().zip(CARDS.iter()).enumerate() {
        let h = c.post(
            &op,
            "/v1/holders",
            &format!("demo-holder-{i}"),
            json!({"name": name, "nik": nik, "categories": categories}),
        )?;
        let issued = c.post(&op, "/v1/cards", &format!("demo-card-{i}"), json!({"uid": uid, "holder_id": id(&h)?}))?;
        card.card_id = id(&issued)?;
        say(format!(
            "{name} ({}) gets card {uid}: card id {}, balance {}",
            categories.join(", "),
            card.card_id,
            rp(amount_of(&issued["balance"]))
        ));
    }
    let agent_token = token(
        &c,
        &op,
        "demo-cred-agent",
        json!({"role": "top_up_agent", "name": "agent counter", "agent_id": id(&places.agent)?}),
    )?;
    let grocery_key = open_terminal(work, "grocery", Mode::Pos, &server, "kt_not_yet_registered")?.public_key_hex();
    let (per_tap, per_card_per_day, outstanding) = OFFLINE_LIMITS;
    let grocery_token = token(
        &c,
        &op,
        "demo-cred-grocery",
        json!({"role": "merchant_terminal", "name": "grocery till 1", "merchant_id": id(&places.grocery)?,
            "public_key": grocery_key, "offline_limits": {"per_tap_minor": per_tap,
            "per_card_per_day_minor": per_card_per_day, "outstanding_minor": outstanding}}),
    )?;
    let parking_token = token(
        &c,
        &op,
        "demo-cred-parking",
        json!({"role": "merchant_terminal", "name": "parking gate", "merchant_id": id(&places.parking)?}),
    )?;
    let clinic_token = token(
        &c,
        &op,
        "demo-cred-clinic",
        json!({"role": "service_point", "name": "clinic desk", "service_point_id": id(&places.clinic)?}),
    )?;
    let library_token = token(
        &c,
        &op,
        "demo-cred-library",
        json!({"role": "service_point", "name": "library gate", "service_point_id": id(&library)?}),
    )?;
    let kiosk_token = token(&c, &op, "demo-cred-kiosk", json!({"role": "kiosk", "name": "city hall kiosk"}))?;
    let auditor_token = token(&c, &op, "demo-cred-auditor", json!({"role": "auditor", "name": "city auditor"}))?;
    let mut agent = open_terminal(work, "agent", Mode::Agent, &server, &agent_token)?;
    let mut grocery = open_terminal(work, "grocery", Mode::Pos, &server, &grocery_token)?;
    let mut clinic = open_terminal(work, "clinic", Mode::Gate, &server, &clinic_token)?;
    let mut library_gate = open_terminal(work, "library", Mode::Gate, &server, &library_token)?;
    let mut kiosk = open_terminal(work, "kiosk", Mode::Kiosk, &server, &kiosk_token)?;
    ensure!(grocery.sync()?.is_some(), "the grocery till could not fetch its offline limits");
    say(format!(
        "registered: {} (grocery, fee 0.7 %), {} (parking, 0.5 %), {} (clinic: insured and senior holders, \
         queue numbers), {} (library: students), {} with {} of float",
        places.grocery["name"].as_str().unwrap_or("?"),
        places.parking["name"].as_str().unwrap_or("?"),
        places.clinic["name"].as_str().unwrap_or("?"),
        library["name"].as_str().unwrap_or("?"),
        places.agent["name"].as_str().unwrap_or("?"),
        rp(demo_city::AGENT_FLOAT)
    ));
    say(format!(
        "terminal credentials for the agent, the grocery till (offline up to {} a tap, {} a card a day), the \
         parking gate, the clinic desk, the library gate, a kiosk; an auditor",
        rp_minor(per_tap),
        rp_minor(per_card_per_day)
    ));

    chapter(3, "Top-ups at the agent (tap, amount, receipt)");
    for (card, amount) in cards.iter_mut().zip(TOPUPS) {
        let outcome = reader.present(card, |r| Ok(agent.handle(&r.tap()?, Some(minor(amount)?), None)?))?;
        ensure!(outcome.ok && outcome.online, "the top-up of {} was refused: {}", card.holder, outcome.line);
        let d = &outcome.detail;
        say(format!(
            "{} tops up {}: balance {}, agent float {}, receipt #{}",
            card.holder,
            rp(amount_of(&d["amount"])),
            rp(amount_of(&d["balance"])),
            rp(amount_of(&d["float"])),
            d["entry_seq"]
        ));
    }

    chapter(4, "Groceries");
    let ani = &mut cards[0];
    let outcome =
        reader.present(ani, |r| Ok(grocery.handle(&r.tap()?, Some(minor(GROCERY_ANI)?), Some("receipt-ani-1"))?))?;
    ensure!(outcome.ok && outcome.online, "Ani's payment was refused: {}", outcome.line);
    let d = &outcome.detail;
    say(format!(
        "{} pays {} at the grocery: merchant fee {}, balance {}, receipt #{} (audit leaf {})",
        ani.holder,
        rp(amount_of(&d["amount"])),
        rp(amount_of(&d["fee"])),
        rp(amount_of(&d["balance"])),
        d["entry_seq"],
        d["leaf_index"]
    ));

    chapter(5, "Parking: a hold at the entry, a capture at the exit");
    let budi = &mut cards[1];
    let held = reader.present(budi, |r| {
        let t = r.tap()?;
        c.post(
            &parking_token,
            "/v1/holds",
            "demo-parking-hold",
            json!({"tap": {"picc_data": t.picc_data, "cmac": t.cmac}, "amount": PARKING_HOLD,
                "reference": "ticket-0815", "expires_in_minutes": 360}),
        )
    })?;
    say(format!(
        "{} drives in: {} held (receipt #{}), balance {} left to spend",
        budi.holder,
        rp(amount_of(&held["amount"])),
        held["entry_seq"],
        rp(amount_of(&held["balance"]))
    ));
    let captured = c.post(
        &parking_token,
        &format!("/v1/holds/{}/capture", id(&held)?),
        "demo-parking-capture",
        json!({"amount": PARKING_CAPTURE}),
    )?;
    say(format!(
        "3 hours later, out: {} captured (fee {}), {} released, balance {}, receipt #{}",
        rp(amount_of(&captured["amount"])),
        rp(amount_of(&captured["fee"])),
        rp_minor(minor(PARKING_HOLD)? - minor(PARKING_CAPTURE)?),
        rp(amount_of(&captured["balance"])),
        captured["entry_seq"]
    ));

    chapter(6, "Public services: the clinic and the library");
    let ani = &mut cards[0];
    let at_clinic = reader.present(ani, |r| Ok(clinic.handle(&r.tap()?, None, None)?))?;
    ensure!(at_clinic.ok, "the clinic refused Ani: {}", at_clinic.line);
    let queue_number = at_clinic.detail["queue_number"].as_i64().context("the clinic gave no queue number")?;
    say(format!(
        "{} at {}: {} ({}), queue number {queue_number}",
        ani.holder,
        places.clinic["name"].as_str().unwrap_or("the clinic"),
        at_clinic.detail["decision"].as_str().unwrap_or("?"),
        at_clinic.detail["reason"].as_str().unwrap_or("?")
    ));
    let at_library = reader.present(ani, |r| Ok(library_gate.handle(&r.tap()?, None, None)?))?;
    let library_reason = at_library.detail["reason"].as_str().unwrap_or("?").to_owned();
    ensure!(
        !at_library.ok && library_reason == "not_entitled",
        "the library should refuse Ani (not a student): {}",
        at_library.line
    );
    say(format!(
        "{} at {}: {} ({library_reason}: the library is for students)",
        ani.holder,
        library["name"].as_str().unwrap_or("the library"),
        at_library.detail["decision"].as_str().unwrap_or("?")
    ));

    chapter(7, "A lost card: blocked, then replaced with its balance moved");
    let budi = &mut cards[1];
    let blocked =
        c.post(&op, &format!("/v1/cards/{}/block", budi.card_id), "demo-block-lost", json!({"reason": "lost"}))?;
    say(format!(
        "{} reports card {} lost: status {} ({}), balance {} frozen",
        budi.holder,
        budi.uid,
        blocked["status"].as_str().unwrap_or("?"),
        blocked["block_reason"].as_str().unwrap_or("?"),
        rp(amount_of(&blocked["balance"]))
    ));
    let finder = reader.present(budi, |r| Ok(grocery.handle(&r.tap()?, Some(minor("5000.00")?), None)?))?;
    let finder_code = finder.detail["code"].as_str().unwrap_or("?").to_owned();
    ensure!(!finder.ok && finder_code == "card_blocked", "a tap of the lost card was not refused: {}", finder.line);
    say(format!("someone who found it tries to pay {} at the grocery: refused ({finder_code})", rp("5000.00")));
    personalize(&mut replacement)?;
    let replaced = c.post(
        &op,
        &format!("/v1/cards/{}/replace", budi.card_id),
        "demo-replace",
        json!({"new_uid": REPLACEMENT_UID}),
    )?;
    replacement.card_id = id(&replaced["new_card"])?;
    say(format!(
        "new card {} (card id {}) for {}: {} moved by receipt #{}; the old card is {}, balance {}",
        REPLACEMENT_UID,
        replacement.card_id,
        budi.holder,
        rp(amount_of(&replaced["moved"])),
        replaced["receipt"]["entry_seq"],
        replaced["old_card"]["status"].as_str().unwrap_or("?"),
        rp(amount_of(&replaced["old_card"]["balance"]))
    ));
    let shown = reader.present(&mut replacement, |r| Ok(kiosk.handle(&r.tap()?, None, None)?))?;
    ensure!(shown.ok, "the kiosk refused the new card: {}", shown.line);
    say(format!(
        "the new card at the city hall kiosk: balance {}",
        rp(shown.detail["balance"].as_str().unwrap_or("?"))
    ));

    chapter(8, "A cloned card: the same tap presented twice");
    let citra = &mut cards[2];
    let (paid, replayed) = reader.present(citra, |r| {
        let t = r.tap()?;
        let paid = grocery.handle(&t, Some(minor(GROCERY_CITRA)?), Some("receipt-citra-1"))?;
        // A skimmer recorded the tap's bytes; a clone sends them again.
        let replayed = grocery.handle(&t, Some(minor(GROCERY_CITRA)?), Some("receipt-clone-1"))?;
        Ok((paid, replayed))
    })?;
    ensure!(paid.ok && paid.online, "Citra's payment was refused: {}", paid.line);
    say(format!(
        "{} pays {} at the grocery: balance {}, receipt #{}",
        citra.holder,
        rp(amount_of(&paid.detail["amount"])),
        rp(amount_of(&paid.detail["balance"])),
        paid.detail["entry_seq"]
    ));
    let replay_code = replayed.detail["code"].as_str().unwrap_or("?").to_owned();
    ensure!(!replayed.ok && replay_code == "card_replay", "the replayed tap was not refused: {}", replayed.line);
    let flagged = c.get(&op, &format!("/v1/cards/{}", citra.card_id))?;
    say(format!(
        "the same tap bytes again (a clone): refused, 409 {replay_code}; the operator sees card {} flagged \
         (suspected clone: {}, {} replay(s)), balance unchanged at {}",
        citra.uid,
        flagged["suspected_clone"],
        flagged["replays"],
        rp(amount_of(&flagged["balance"]))
    ));

    chapter(9, "An outage: the server goes down, the grocery till goes on offline");
    server.kill()?;
    say("kartu serve is killed (SIGKILL)");
    let offline = reader
        .present(citra, |r| Ok(grocery.handle(&r.tap()?, Some(OFFLINE_CITRA_MINOR), Some("receipt-citra-2"))?))?;
    ensure!(offline.ok && !offline.online, "the offline payment was not taken offline: {}", offline.line);
    let offline_seq = offline.detail["record"]["seq"].as_u64().context("no offline record number")?;
    say(format!(
        "{} pays {} with the server down: approved offline, signed record #{offline_seq} in the till's \
         hash-chained journal ({} waiting)",
        citra.holder,
        rp_minor(OFFLINE_CITRA_MINOR),
        grocery.pending()
    ));
    server.restart()?;
    let posted = grocery.sync()?.context("the restarted server could not be reached")?;
    ensure!(posted == 1 && grocery.pending() == 0, "the upload posted {posted} record(s), {} left", grocery.pending());
    let entries = c.get(&auditor_token, "/v1/audit/entries?limit=1000")?;
    let offline_entries: Vec<&Value> = entries["entries"]
        .as_array()
        .map(|a| a.iter().filter(|e| e["memo"].as_str().is_some_and(|m| m.starts_with("offline"))).collect())
        .unwrap_or_default();
    ensure!(offline_entries.len() == 1, "{} offline entries posted, expected 1", offline_entries.len());
    let citra_now = c.get(&op, &format!("/v1/cards/{}", citra.card_id))?;
    say(format!(
        "kartu serve is back; the till uploads its journal: {posted} record posted as entry #{} ({}), {}'s \
         balance {}",
        offline_entries[0]["entry_seq"],
        offline_entries[0]["memo"].as_str().unwrap_or("?"),
        citra.holder,
        rp(amount_of(&citra_now["balance"]))
    ));

    chapter(10, "The auditor: kartu audit verify");
    let verifier = merkle::Verifier::parse(&init.verifier_key).context("the checkpoint verifier key")?;
    let deadline = Instant::now() + CHECKPOINT_TIMEOUT;
    let auditor_client = terminal::client::agent(server.ca_file(), None).map_err(anyhow::Error::msg)?;
    let origin = Some(init.config.origin.as_str());
    let report = loop {
        match crate::verify_url::verify(&auditor_client, &url, &auditor_token, &verifier, false, origin, None) {
            Ok(report) => break report,
            Err(e) if format!("{e:#}").contains("not yet covered") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e.context("audit verify FAILED")),
        }
    };
    let report = serde_json::to_value(&report)?;
    let trial = c.get(&auditor_token, "/v1/audit/trial-balance")?;
    say(format!(
        "OK: {} leaves ({} journal entries, {} events) recomputed from the API; signed checkpoint of size {} \
         with root {}; every balance chain and the trial balance check",
        report["leaves"],
        report["entries"],
        report["events"],
        report["checkpoint_size"],
        report["root"].as_str().unwrap_or("?")
    ));

    // The final state.
    let mut final_cards = Vec::new();
    for card in cards.iter().chain(std::iter::once(&replacement)) {
        let v = c.get(&op, &format!("/v1/cards/{}", card.card_id))?;
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
    let balanced = trial["currencies"].as_array().is_some_and(|a| a.iter().all(|l| l["balanced"] == true));
    let summary = json!({
        "cards": final_cards,
        "entries": trial["last_entry_seq"],
        "trial_balance_balanced": balanced,
        "clinic": {"decision": at_clinic.detail["decision"], "reason": at_clinic.detail["reason"], "queue_number": queue_number},
        "library": {"decision": at_library.detail["decision"], "reason": library_reason},
        "lost_card_tap": {"code": finder_code},
        "replay": {"code": replay_code},
        "offline": {"record_seq": offline_seq, "posted": posted, "entry_seq": offline_entries[0]["entry_seq"]},
        "verify": {"ok": true, "report": report},
        "data_dir": keep.then(|| data.display().to_string()),
    });
    server.stop()?;
    if keep {
        let tokens = json!({"operator": op, "auditor": auditor_token,
            "checkpoint_verifier_key_file": verifier_path.display().to_string()});
        write_private(&data.join("demo-tokens.json"), &serde_json::to_string_pretty(&tokens)?)?;
        say(format!(
            "the installation stays in {}: kartu serve --data-dir {} (tokens in demo-tokens.json)",
            data.display(),
            data.display()
        ));
    }
    Ok(summary)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    Ok(files::create_private(path, text.as_bytes())?)
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
