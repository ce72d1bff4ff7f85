//! `kartu card …`: the operator's card tools. Arguments, messages and printing only; the
//! protocol is in the `card` and `reader` crates, the virtual card in `cardsim`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use card::keyfile::{KeyFile, MasterKeySet};
use clap::Subcommand;
use reader::{MasterKeys, Personalized, ReaderError, TapUrl, Terminal};
use zeroize::Zeroizing;

#[derive(Subcommand, Debug)]
pub enum CardCmd {
    /// Decrypt and check one tap (SUN message): prints JSON {uid, counter, mac_valid,
    /// file_data, key_version} and exits non-zero when the MAC is not valid.
    InspectTap {
        /// The key file (TOML); every key version in it is tried, newest first.
        #[arg(long, conflicts_with_all = ["meta_key", "file_key"], required_unless_present_all = ["meta_key", "file_key"])]
        keys: Option<PathBuf>,
        /// The SDM meta read key (32 hex), shared by all cards.
        #[arg(long, requires = "file_key")]
        meta_key: Option<String>,
        /// The card's own SDM file read key (32 hex), already diversified.
        #[arg(long, requires = "meta_key")]
        file_key: Option<String>,
        /// PICCData from the tap URL (32 hex).
        #[arg(long)]
        picc_data: String,
        /// The truncated MAC from the tap URL (16 hex).
        #[arg(long)]
        cmac: String,
        /// Encrypted file data, when the card mirrors it (hex).
        #[arg(long)]
        enc_data: Option<String>,
    },
    /// Personalise a blank card (factory keys) in a PC/SC reader: set its diversified keys
    /// of one key version, write the tap URL https://<HOST>/t?picc_data=..&cmac=.. and
    /// enable SDM, then read one tap back and check it with the key file. Prints JSON
    /// {uid, key_version, reader, tap_verified, counter}.
    Personalize {
        /// The key file (TOML).
        #[arg(long)]
        keys: PathBuf,
        /// The key version to write, a [cards.N] of the key file (default: the newest).
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..))]
        key_version: Option<u8>,
        /// The host of the tap URL, e.g. kartu.example.org (the server's public name).
        #[arg(long)]
        host: String,
        /// The PC/SC reader to use (default: the first reader that holds a card).
        #[arg(long)]
        reader: Option<String>,
        /// How long to wait for a card.
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
    },
    /// Rotate a personalised card in a PC/SC reader to the keys of key version N, then
    /// record its new version through the API: authenticates with the card's key 0,
    /// changes keys 1 to 4 and then key 0 (only those not yet at N), reads one tap, checks
    /// it with the key file at exactly N, and shows it to the server (`POST
    /// /v1/cards/{id}/key-version`). Tear-safe: a card pulled away part-way still taps,
    /// and the same command, run again, finishes the job (also when only recording
    /// failed). Prints JSON {uid, card_id, key_version, counter, tap_verified, recorded}.
    Rotate {
        /// The issuance key file (TOML, with every version's app_master_key): the card's
        /// current keys are found among its versions, the new ones are [cards.N].
        #[arg(long)]
        keys: PathBuf,
        /// The key version N to rotate to, a [cards.N] of the key file.
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..))]
        to_version: u8,
        /// The PC/SC reader to use (default: the first reader that holds a card).
        #[arg(long)]
        reader: Option<String>,
        /// How long to wait for a card, in milliseconds.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
        /// The Kartu server, https://HOST[:PORT].
        #[arg(long, env = "KARTU_SERVER")]
        server: String,
        /// An operator token (better: --token-file or KARTU_TOKEN, which `ps` does not show).
        #[arg(long, env = "KARTU_TOKEN", required_unless_present = "token_file")]
        token: Option<String>,
        /// A file holding the operator token (one line; mode 0600).
        #[arg(long, env = "KARTU_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        /// A PEM file of the CA certificates to trust for an https:// server (else the
        /// system's roots).
        #[arg(long, env = "KARTU_CA_FILE")]
        ca_file: Option<PathBuf>,
    },
    /// Run a virtual NTAG 424 DNA connected to pcscd's vpcd driver, in the foreground until
    /// the process is killed (or `shutdown` arrives on the control socket). Prints JSON
    /// {uid, vpcd, state} once the card is ready.
    Sim {
        /// The card's state file (JSON; created as a factory card when missing). It holds
        /// the card's keys: keep it like a key file.
        #[arg(long)]
        state: PathBuf,
        /// vpcd's address, HOST:PORT (pcscd's reader configuration; Debian: 127.0.0.1:35963).
        #[arg(long)]
        vpcd: String,
        /// The UID of a new card (14 hex); default: random (04 and 6 random bytes).
        #[arg(long)]
        uid: Option<String>,
        /// A Unix socket for control by another process: status, tear, tear-on XX,
        /// tear-after N, tear-cancel, remove, insert, shutdown (one per line).
        #[arg(long)]
        control_socket: Option<PathBuf>,
    },
}

pub fn run(command: CardCmd) -> Result<()> {
    match command {
        CardCmd::InspectTap { keys, meta_key, file_key, picc_data, cmac, enc_data } => {
            inspect_tap(keys.as_deref(), meta_key, file_key, &picc_data, &cmac, enc_data.as_deref())
        }
        CardCmd::Personalize { keys, key_version, host, reader, timeout_secs } => {
            personalize(&keys, key_version, &host, reader.as_deref(), Duration::from_secs(timeout_secs))
        }
        CardCmd::Rotate { keys, to_version, reader, timeout_ms, server, token, token_file, ca_file } => {
            let token = match (token, token_file) {
                (_, Some(path)) => files::read_secret_line(&path)?,
                (Some(token), None) if !token.trim().is_empty() => token.trim().to_owned(),
                _ => {
                    anyhow::bail!("give the operator token with --token-file FILE (or KARTU_TOKEN_FILE / KARTU_TOKEN)")
                }
            };
            let api = Api { server, token, ca_file };
            rotate(&keys, to_version, reader.as_deref(), Duration::from_millis(timeout_ms), &api)
        }
        CardCmd::Sim { state, vpcd, uid, control_socket } => sim(state, vpcd, uid.as_deref(), control_socket),
    }
}

/// Reads and parses the key file; the text is zeroized after parsing.
pub fn read_key_file(path: &Path) -> Result<KeyFile> {
    let text = Zeroizing::new(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?);
    KeyFile::parse(&text).with_context(|| format!("{} is not a valid Kartu key file", path.display()))
}

fn inspect_tap(
    keys: Option<&Path>,
    meta_key: Option<String>,
    file_key: Option<String>,
    picc_data: &str,
    cmac: &str,
    enc_data: Option<&str>,
) -> Result<()> {
    let tap = card::SunTap::from_hex(picc_data, cmac, enc_data).context("reading the tap")?;
    let (message, key_version) = match (keys, meta_key, file_key) {
        (Some(path), _, _) => {
            let (message, version) = read_key_file(path)?.verify_tap(&tap).context("decrypting the tap")?;
            (message, Some(version))
        }
        (None, Some(meta), Some(file)) => {
            let meta = card::Key::from_hex(&Zeroizing::new(meta)).context("--meta-key")?;
            let file = card::Key::from_hex(&Zeroizing::new(file)).context("--file-key")?;
            (tap.verify(&meta, &card::FileReadKey::Direct(&file)).context("decrypting the tap")?, None)
        }
        _ => anyhow::bail!("give --keys FILE, or --meta-key and --file-key"),
    };
    let out = serde_json::json!({
        "uid": message.uid().to_string(),
        "counter": message.counter().value(),
        "mac_valid": message.mac_valid(),
        "file_data": message.file_data().map(hex::encode_upper),
        "key_version": key_version,
    });
    println!("{out}");
    anyhow::ensure!(message.mac_valid(), "the MAC is not valid: not a genuine tap for these keys");
    Ok(())
}

fn personalize(
    keys_path: &Path,
    key_version: Option<u8>,
    host: &str,
    reader_name: Option<&str>,
    timeout: Duration,
) -> Result<()> {
    // Everything that can be checked without a card is checked first.
    let key_file = read_key_file(keys_path)?;
    let set: &MasterKeySet = match key_version {
        Some(version) => key_file
            .version(version)
            .with_context(|| format!("{} has no key version {version} ([cards.{version}])", keys_path.display()))?,
        None => key_file.newest(),
    };
    anyhow::ensure!(
        set.app_master_key().is_some(),
        "{} is the server's key file (no app_master_key); personalise with the issuance key file \
         (issuance-keys.toml, written by `kartu init`)",
        keys_path.display()
    );
    card::ndef::kartu_tap_url_file(host).with_context(|| format!("--host {host:?} cannot be the tap URL's host"))?;

    let terminal = Terminal::establish().map_err(|error| explain(error, "connecting to the PC/SC service"))?;
    let readers = terminal.list_readers().map_err(|error| explain(error, "listing the card readers"))?;
    if let Some(wanted) = reader_name {
        if !readers.iter().any(|name| name == wanted) {
            anyhow::bail!("there is no reader named {wanted:?}; connected readers: {}", readers.join(", "));
        }
    }
    let place = reader_name.map_or_else(|| "any reader".to_string(), |name| format!("reader {name:?}"));
    eprintln!("kartu: waiting up to {} s for a blank card in {place}", timeout.as_secs());
    let reader = match terminal.wait_for_card(reader_name, timeout) {
        Ok(reader) => reader,
        Err(ReaderError::Timeout { .. }) => {
            anyhow::bail!("no card was presented in {place} within {} s; nothing was changed", timeout.as_secs())
        }
        Err(error) => return Err(explain(error, "waiting for a card")),
    };

    let (uid, version, counter) =
        personalize_in(&terminal, &reader, &key_file, set, &keys_path.display().to_string(), host)?;
    let out = serde_json::json!({
        "uid": uid.to_string(),
        "key_version": version,
        "reader": reader,
        "tap_verified": true,
        "counter": counter.value(),
    });
    println!("{out}");
    Ok(())
}

/// Personalises the blank card in `reader` with key version `set` of `key_file` (named
/// `keys_label` in messages), then reads one tap back and checks it as the server would:
/// the card's UID, key version and counter. `kartu card personalize` and `kartu demo`.
pub(crate) fn personalize_in(
    terminal: &Terminal,
    reader: &str,
    key_file: &KeyFile,
    set: &MasterKeySet,
    keys_label: &str,
    host: &str,
) -> Result<(card::CardUid, u8, card::ReadCounter)> {
    let master = MasterKeys::try_from(set).map_err(|error| explain(error, keys_label))?;
    let mut connection = terminal.connect(reader).map_err(|error| explain(error, "connecting to the card"))?;
    let result =
        connection.transaction(|channel| reader::personalize(channel, &master, key_file.system_identifier(), host));
    // A reset ends the card's authenticated session whatever happened.
    let _ = connection.disconnect();
    let done = match result {
        Ok(done) => done,
        Err(ReaderError::NotBlank { key_version }) => {
            let verdict = match tap_with_key_file(terminal, reader, key_file) {
                Ok((uid, version, _)) => format!(
                    "it is card {uid}, already personalised: its taps verify with key version {version} of {keys_label}"
                ),
                Err(error) => format!("its taps do not verify with {keys_label} ({error:#})"),
            };
            let key_0 = if key_version == 0 {
                "its application master key is not the factory key".to_string()
            } else {
                format!("its application master key has version {key_version}")
            };
            anyhow::bail!("the card in {reader:?} is not blank ({key_0}); {verdict}. Nothing was changed")
        }
        Err(ReaderError::CardRemoved { cause }) => anyhow::bail!(
            "the card left the reader during personalisation ({cause}). Put it back and run the same command \
             again: a repeated run finishes an interrupted personalisation"
        ),
        Err(error) => return Err(explain(error, &format!("personalising the card in {reader:?}"))),
    };

    // One tap as a terminal reads it, checked as the server checks it.
    let (uid, version, counter) = tap_with_key_file(terminal, reader, key_file)
        .context("the card was personalised, but the tap read back does not verify")?;
    check_read_back(&done, set.version(), uid, version, counter)?;
    Ok((uid, version, counter))
}

/// Reads one tap from the card in `reader` and checks it against every version of the
/// key file: the UID, key version and counter of a tap with a valid MAC.
fn tap_with_key_file(
    terminal: &Terminal,
    reader: &str,
    key_file: &KeyFile,
) -> Result<(card::CardUid, u8, card::ReadCounter)> {
    let mut connection = terminal.connect(reader).map_err(|error| explain(error, "connecting to the card"))?;
    let url = connection.read_sun();
    let _ = connection.disconnect();
    let url = url.map_err(|error| explain(error, "reading a tap"))?;
    let (message, version) = key_file.verify_tap(url.tap()).context("checking the tap with the key file")?;
    anyhow::ensure!(message.mac_valid(), "the tap's MAC is not valid for any key version of the key file");
    Ok((message.uid(), version, message.counter()))
}

fn check_read_back(
    done: &Personalized,
    expected_version: u8,
    uid: card::CardUid,
    version: u8,
    counter: card::ReadCounter,
) -> Result<()> {
    anyhow::ensure!(uid == done.uid, "the tap read back comes from card {uid}, not from {}", done.uid);
    anyhow::ensure!(
        version == expected_version && done.key_version == expected_version,
        "the tap read back verifies with key version {version}, not {expected_version}"
    );
    anyhow::ensure!(
        counter > done.counter,
        "the tap read back has counter {counter}, not above the personalisation's check tap ({})",
        done.counter
    );
    Ok(())
}

/// Where `kartu card rotate` records the new key version.
struct Api {
    server: String,
    token: String,
    ca_file: Option<PathBuf>,
}

/// How long one API call of `kartu card rotate` may take.
const API_TIMEOUT: Duration = Duration::from_secs(30);

fn rotate(keys_path: &Path, to_version: u8, reader_name: Option<&str>, timeout: Duration, api: &Api) -> Result<()> {
    // Everything that can be checked without a card is checked first.
    let key_file = read_key_file(keys_path)?;
    let label = keys_path.display().to_string();
    let Some(set) = key_file.version(to_version) else {
        let known: Vec<String> = key_file.versions().map(|set| set.version().to_string()).collect();
        anyhow::bail!(
            "{label} has no key version {to_version} ([cards.{to_version}]); its versions are {}. Nothing was changed",
            known.join(", ")
        );
    };
    anyhow::ensure!(
        set.app_master_key().is_some(),
        "{label} is the server's key file (no app_master_key); rotate with the issuance key file \
         (issuance-keys.toml, written by `kartu init`). Nothing was changed"
    );
    let new = MasterKeys::try_from(set).map_err(|error| explain(error, &label))?;
    let current = key_file
        .versions()
        .filter(|set| set.version() != to_version)
        .map(MasterKeys::try_from)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| explain(error, &label))?;
    let client = client::Client::new(&api.server, api.ca_file.as_deref(), Some(API_TIMEOUT))
        .with_context(|| format!("--server {}", api.server))?
        .with_token(&api.token);

    let terminal = Terminal::establish().map_err(|error| explain(error, "connecting to the PC/SC service"))?;
    let place = reader_name.map_or_else(|| "any reader".to_string(), |name| format!("reader {name:?}"));
    eprintln!("kartu: waiting up to {} ms for a personalised card in {place}", timeout.as_millis());
    let reader = match terminal.wait_for_card(reader_name, timeout) {
        Ok(reader) => reader,
        Err(ReaderError::Timeout { .. }) => {
            anyhow::bail!("no card was presented in {place} within {} ms; nothing was changed", timeout.as_millis())
        }
        Err(error) => return Err(explain(error, "waiting for a card")),
    };
    let current: Vec<&MasterKeys> = current.iter().collect();
    let done = rotate_in(&terminal, &reader, &current, &new, &key_file, &label)?;
    let (card_id, recorded) = record_rotation(&client, &done, &api.server)?;
    let out = serde_json::json!({
        "uid": done.uid.to_string(),
        "card_id": card_id,
        "key_version": to_version,
        "counter": done.counter.value(),
        "tap_verified": true,
        "recorded": recorded,
    });
    println!("{out}");
    Ok(())
}

/// A rotated card and the tap read from it afterwards, verified at the new version.
struct Rotated {
    uid: card::CardUid,
    key_version: u8,
    counter: card::ReadCounter,
    tap: TapUrl,
}

/// Rotates the card in `reader` to `new`, then reads one tap and checks that both its SDM
/// keys are at `new`'s version.
fn rotate_in(
    terminal: &Terminal,
    reader: &str,
    current: &[&MasterKeys],
    new: &MasterKeys,
    key_file: &KeyFile,
    label: &str,
) -> Result<Rotated> {
    let mut connection = terminal.connect(reader).map_err(|error| explain(error, "connecting to the card"))?;
    let result =
        connection.transaction(|channel| reader::rotate_keys(channel, current, new, key_file.system_identifier()));
    // A reset ends the card's authenticated session whatever happened.
    let _ = connection.disconnect();
    let target = new.version();
    let done = match result {
        Ok(done) => done,
        Err(ReaderError::CardRemoved { cause }) => anyhow::bail!(
            "the card left the reader during the rotation ({cause}). Put the card back and run the same command \
             again: a repeated run finishes an interrupted rotation (the card still taps meanwhile)"
        ),
        Err(ReaderError::UnknownKeyVersion { key_no, version }) => anyhow::bail!(
            "key {key_no} of the card in {reader:?} has version {version}, which {label} does not hold: \
             not a card of these keys, or rotated with another key file. Nothing was changed"
        ),
        Err(ReaderError::KeyVersionNewer { key_no, version, .. }) => anyhow::bail!(
            "key {key_no} of the card in {reader:?} has version {version}, newer than {target}: a rotation only \
             goes forward. Nothing was changed"
        ),
        Err(error) => return Err(explain(error, &format!("rotating the card in {reader:?}"))),
    };
    // One tap as a terminal reads it, checked at exactly the new version (both SDM keys).
    let mut connection = terminal.connect(reader).map_err(|error| explain(error, "connecting to the card"))?;
    let tap = connection.read_sun();
    let _ = connection.disconnect();
    let tap = tap.map_err(|error| match error {
        ReaderError::CardRemoved { cause } => anyhow!(
            "the card left the reader while its tap was read ({cause}). Put the card back and run the same \
             command again: its keys are at version {target}, the run only reads a tap and records it"
        ),
        other => explain(other, "reading a tap"),
    })?;
    let (message, versions) = key_file.verify_tap_versions(tap.tap()).context("checking the tap with the key file")?;
    anyhow::ensure!(
        message.mac_valid()
            && versions.meta_read == target
            && versions.file_read == target
            && message.uid() == done.uid,
        "the tap read after the rotation does not verify at key version {target} (meta-read key {}, file-read \
         key {}, valid MAC: {})",
        versions.meta_read,
        versions.file_read,
        message.mac_valid()
    );
    Ok(Rotated { uid: done.uid, key_version: done.key_version, counter: message.counter(), tap })
}

/// Records the rotation through the API: finds the card by UID, and shows the server the
/// tap read at the new version. Returns the card's id and whether it is recorded.
fn record_rotation(client: &client::Client, done: &Rotated, server: &str) -> Result<(String, bool)> {
    let (uid, version) = (done.uid, done.key_version);
    let retry = format!(
        "The card holds key version {version}'s keys; once the cause is fixed, run the same command again \
         (it reads a new tap and records it)"
    );
    let list: serde_json::Value =
        client.get(&format!("/v1/cards?uid={uid}")).map_err(|error| api_refused(&error, server, &retry))?;
    let Some(found) = list["cards"].as_array().and_then(|cards| cards.first()) else {
        anyhow::bail!("card {uid} is not registered on {server}. {retry}, or issue it with key_version {version}");
    };
    let card_id = found["id"].as_str().context("the card list has no id")?.to_owned();
    let recorded_version = found["key_version"].as_i64().unwrap_or(0);
    if recorded_version >= i64::from(version) {
        anyhow::ensure!(
            recorded_version == i64::from(version),
            "{server} records card {uid} at key version {recorded_version}, newer than {version}"
        );
        eprintln!("kartu: {server} already records card {uid} at key version {version}");
        return Ok((card_id, true));
    }
    let body = serde_json::json!({
        "key_version": version,
        "tap": {"picc_data": done.tap.picc_data_hex(), "cmac": done.tap.cmac_hex()},
    });
    let key = format!("rotate:{uid}:{version}:{}", done.counter.value());
    let view: serde_json::Value = client
        .post(&format!("/v1/cards/{card_id}/key-version"), &key, &body)
        .map_err(|error| api_refused(&error, server, &retry))?;
    anyhow::ensure!(
        view["key_version"].as_i64() == Some(i64::from(version)),
        "{server} answered key version {} for card {uid}, not {version}",
        view["key_version"]
    );
    Ok((card_id, true))
}

/// An API error of `kartu card rotate` as an operator message.
fn api_refused(error: &client::ClientError, server: &str, retry: &str) -> anyhow::Error {
    match error.problem() {
        Some(problem) => anyhow!(
            "{server} refused to record the rotation: {} ({}, HTTP {}). {retry}",
            problem.detail,
            problem.code,
            error.status().unwrap_or(0)
        ),
        None => anyhow!("recording the rotation on {server} failed: {error}. {retry}"),
    }
}

/// A reader error as an operator message.
fn explain(error: ReaderError, doing: &str) -> anyhow::Error {
    match error {
        ReaderError::NoReader => anyhow!("{doing}: no card reader is connected"),
        ReaderError::ServiceUnavailable { .. } => {
            anyhow!("{doing}: the PC/SC service is not available (is pcscd running?): {error}")
        }
        error @ ReaderError::CardRemoved { .. } => anyhow!("{doing}: {error}"),
        other => anyhow::Error::new(other).context(doing.to_string()),
    }
}

fn sim(state: PathBuf, vpcd: String, uid: Option<&str>, control_socket: Option<PathBuf>) -> Result<()> {
    let uid = uid.map(card::CardUid::from_hex).transpose().context("--uid")?;
    let mut config = cardsim::SimConfig::new(vpcd.clone(), state.clone());
    config.uid = uid;
    config.control_socket = control_socket;
    let handle = cardsim::spawn(config).context("starting the virtual card")?;
    let out = serde_json::json!({
        "uid": handle.uid().to_string(),
        "vpcd": vpcd,
        "state": state.display().to_string(),
    });
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{out}").and_then(|()| stdout.flush()).context("writing to stdout")?;
    drop(stdout);
    handle.run_until_shutdown().context("running the virtual card")
}
