//! `kartu card personalize` and `kartu card sim`: the card tools that need PC/SC (a reader
//! through libpcsclite, or pcscd's vpcd driver for the virtual card). Only with the `pcsc`
//! feature; the protocol is in the `card` and `reader` crates, the virtual card in `cardsim`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use card::keyfile::{KeyFile, MasterKeySet};
use reader::{MasterKeys, Personalized, ReaderError, Terminal};

/// `kartu card personalize` with the key file `key_file` (read from `keys_path`).
pub fn personalize(
    key_file: &KeyFile,
    keys_path: &Path,
    key_version: Option<u8>,
    host: &str,
    reader_name: Option<&str>,
    timeout: Duration,
) -> Result<()> {
    // Everything that can be checked without a card is checked first.
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
        personalize_in(&terminal, &reader, key_file, set, &keys_path.display().to_string(), host)?;
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

/// A reader error as an operator message.
pub(crate) fn explain(error: ReaderError, doing: &str) -> anyhow::Error {
    match error {
        ReaderError::NoReader => anyhow!("{doing}: no card reader is connected"),
        ReaderError::ServiceUnavailable { .. } => {
            anyhow!("{doing}: the PC/SC service is not available (is pcscd running?): {error}")
        }
        error @ ReaderError::CardRemoved { .. } => anyhow!("{doing}: {error}"),
        other => anyhow::Error::new(other).context(doing.to_string()),
    }
}

/// `kartu card sim`: the virtual card until it is shut down.
pub fn sim(state: PathBuf, vpcd: String, uid: Option<&str>, control_socket: Option<PathBuf>) -> Result<()> {
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
