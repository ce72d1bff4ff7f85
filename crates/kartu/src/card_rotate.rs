//! `kartu card rotate`: a personalised card in a PC/SC reader moved to another key version,
//! and the new version recorded through the API. Only with the `pcsc` feature.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use card::keyfile::KeyFile;
use reader::{MasterKeys, ReaderError, TapUrl, Terminal};

use crate::card_reader::explain;

/// Where `kartu card rotate` records the new key version.
pub struct Api {
    /// The Kartu server's base URL.
    pub server: String,
    /// An operator token.
    pub token: String,
    /// The CA certificates to trust for an https:// server.
    pub ca_file: Option<PathBuf>,
}

/// How long one API call of `kartu card rotate` may take.
const API_TIMEOUT: Duration = Duration::from_secs(30);

/// `kartu card rotate` with the key file `key_file` (read from `keys_path`).
pub fn rotate(
    key_file: &KeyFile,
    keys_path: &Path,
    to_version: u8,
    reader_name: Option<&str>,
    timeout: Duration,
    api: &Api,
) -> Result<()> {
    // Everything that can be checked without a card is checked first.
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
    let done = rotate_in(&terminal, &reader, &current, &new, key_file, &label)?;
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
