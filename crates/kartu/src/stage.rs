//! The demo's stage, what every run of `kartu demo` (the day, and `--tap-bench`) starts
//! with: virtual cards that take turns in the reader of the demo's pcscd, `kartu serve` as
//! a child process on a new installation, the terminals, and an API client.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use client::{Client, ClientError};
use serde_json::Value;
use terminal::{CardRead, Mode, Terminal};

/// The host in the cards' tap URL.
const HOST: &str = "demo.kartu.example";
/// The reader's name in the demo's pcscd.
pub(crate) const READER: &str = "Kartu Demo Reader";
/// The system identifier of the demo installation's key diversification.
const SYSTEM_IDENTIFIER: &str = "KARTU-MKS";
/// How long a card may take to show in the reader, or to leave it.
const CARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `kartu serve` may take to answer `/healthz`.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopped server may take to finish.
const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(35);

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
    /// HTTPS with `tls` (certificate, key) when given; the clients trust `ca_file`.
    pub(crate) fn of(tls: Option<(&Path, &Path)>, ca_file: Option<&Path>) -> Result<Wire> {
        let absolute = |p: &Path| p.canonicalize().with_context(|| format!("{}", p.display()));
        Ok(Wire {
            tls: match tls {
                Some((c, k)) => Some((absolute(c)?, absolute(k)?)),
                None => None,
            },
            ca_file: ca_file.map(absolute).transpose()?,
        })
    }
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
    pub(crate) name: String,
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
            crate::card_reader::personalize_in(
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

    pub(crate) fn restart(&mut self) -> Result<()> {
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
        let client = Client::new(&self.url(), self.ca_file(), Some(Duration::from_secs(2)))?;
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        loop {
            match client.healthz() {
                Ok(status) if (200..300).contains(&status) => return Ok(()),
                // Not up yet is fine; a certificate the demo's clients refuse is not.
                Err(ClientError::Broken(why)) => bail!("kartu serve answers, but not usably: {why}"),
                _ => {}
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
    pub(crate) fn kill(&mut self) -> Result<()> {
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
        validator: terminal::ValidatorSettings::default(),
    };
    Terminal::open(config).with_context(|| format!("opening the {name} terminal"))
}

pub(crate) fn minor(amount: &str) -> Result<i64> {
    terminal::parse_amount(amount, "IDR").map_err(|e| anyhow!("{e}"))
}

/// Creates a credential as the operator `op`; its token (shown only this once).
pub(crate) fn token(op: &Client, key: &str, body: Value) -> Result<String> {
    let v: Value = op.post("/v1/credentials", key, &body)?;
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
    /// An API client for the server (without a token: `with_token` gives one).
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
        let client = Client::new(&server.url(), server.ca_file(), None)?;
        Ok(Stage { reader, init, key_file, server, client })
    }
}
