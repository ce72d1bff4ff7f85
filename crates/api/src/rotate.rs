//! `kartu audit rotate-key`: a new checkpoint signing key, handed over in the log itself
//! ([`ledger::keys`]). Run on the host with every server stopped; it can be run again after
//! a crash at any point and finishes the same rotation.
//!
//! Steps, each safe to repeat: (1) the new key is made once and kept in the data
//! directory's [`PENDING_KEY_FILE`] (0600) until the end; (2) the old key signs the tree as
//! it is and a rotation leaf naming the new key, and the new key signs the tree with that
//! leaf ([`ledger::Ledger::rotate_checkpoint_key`]), unless the log already announces the
//! pending key; (3) the key file gets the new key in place of the old; (4) the public
//! history [`ledger::keys::KEY_HISTORY_FILE`] lists every key; (5) the pending file goes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use card::keyfile::CheckpointSecret;
use ledger::{CheckpointSettings, Ledger, LedgerConfig};

use crate::error::SetupError;
use crate::server::{checkpoint_settings, err, load_keys, write_secret, Config, KEY_FILE};

/// The new key while a rotation is under way (hex PKCS#8, mode 0600).
pub const PENDING_KEY_FILE: &str = "checkpoint.pending.key";

/// What a rotation did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyRotated {
    /// The key that signed until the rotation.
    pub previous_key: String,
    /// The key that signs from the rotation leaf on.
    pub new_key: String,
    /// The rotation leaf.
    pub rotation_leaf: i64,
    /// Every key of the log, oldest first.
    pub keys: Vec<String>,
    /// False when an earlier run had already recorded the rotation and this one finished it.
    pub recorded_now: bool,
}

/// Rotates the checkpoint key of the installation in `data_dir` (`database_url` overrides
/// its configuration's).
pub fn rotate_checkpoint_key(data_dir: &Path, database_url: Option<&str>) -> Result<KeyRotated, SetupError> {
    let mut config = Config::load(data_dir)?;
    if let Some(url) = database_url {
        config.database_url = url.to_owned();
    }
    let (keys, _) = load_keys(data_dir)?;
    let pending_path = data_dir.join(PENDING_KEY_FILE);
    let new_pkcs8 = pending_key(&pending_path)?;
    let new = Arc::new(merkle::Signer::from_pkcs8(&config.origin, &new_pkcs8).map_err(|e| err("the new key", e))?);
    let new_key = new.verifier_key();
    // The server's own checkpoint settings (the key in force, the trusted file, the first
    // key); the background signer waits a day, so only the rotation signs.
    let settings = checkpoint_settings(&config, data_dir, &keys)?
        .ok_or_else(|| SetupError(format!("{KEY_FILE} holds no checkpoint key")))?;
    let first_key = settings.first_key_line();
    let checkpoints = CheckpointSettings { interval: Duration::from_secs(86_400), ..settings };
    let ledger =
        Ledger::open(&config.database_url, LedgerConfig { checkpoints: Some(checkpoints), ..LedgerConfig::default() })
            .map_err(|e| err("opening the ledger", e))?;
    let outcome = rotate_in_log(&ledger, new, &first_key);
    ledger.shutdown();
    let (previous_key, rotation_leaf, keys_now, recorded_now) = outcome?;
    // The key file: the new key in place of the old; the history; then the pending file goes.
    let text = keys.with_checkpoint(CheckpointSecret::from_bytes(new_pkcs8)).to_toml();
    files::replace_private(&data_dir.join(KEY_FILE), text.as_bytes()).map_err(|e| err("writing the key file", e))?;
    let history: String = keys_now.iter().map(|k| format!("{k}\n")).collect();
    files::replace_private(&data_dir.join(ledger::keys::KEY_HISTORY_FILE), history.as_bytes())
        .map_err(|e| err("writing the key history", e))?;
    std::fs::remove_file(&pending_path).map_err(|e| err("removing the pending key", e))?;
    Ok(KeyRotated { previous_key, new_key, rotation_leaf, keys: keys_now, recorded_now })
}

/// The pending new key: the one an earlier run made, else a new one, kept first.
fn pending_key(path: &Path) -> Result<Vec<u8>, SetupError> {
    match std::fs::read_to_string(path) {
        Ok(text) => hex::decode(text.trim()).map_err(|e| err(&format!("{}", path.display()), e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pkcs8 = merkle::Signer::generate_pkcs8(&ring::rand::SystemRandom::new())
                .map_err(|e| err("a new checkpoint key", e))?;
            write_secret(path, &format!("{}\n", hex::encode(&pkcs8)))?;
            Ok(pkcs8)
        }
        Err(e) => Err(err(&format!("reading {}", path.display()), e)),
    }
}

/// Records the rotation unless the log already announces `new` (an earlier run stopped
/// after it): the previous key, the rotation leaf, every key, and whether it was recorded now.
fn rotate_in_log(
    ledger: &Ledger,
    new: Arc<merkle::Signer>,
    first_key: &str,
) -> Result<(String, i64, Vec<String>, bool), SetupError> {
    let new_key = new.verifier_key();
    let periods = ledger.checkpoint_keys(first_key).map_err(|e| err("the log's keys", e))?;
    let recorded_now = periods.last().map(|p| p.key.as_str()) != Some(new_key.as_str());
    if recorded_now {
        ledger.rotate_checkpoint_key(new).map_err(|e| err("rotating", e))?;
    }
    let periods = ledger.checkpoint_keys(first_key).map_err(|e| err("the log's keys", e))?;
    let n = periods.len();
    let (Some(last), Some(before)) = (periods.last(), n.checked_sub(2).map(|i| &periods[i])) else {
        return Err(SetupError("the log announces no rotation".into()));
    };
    let leaf = last.rotation_leaf.unwrap_or_default();
    Ok((before.key.clone(), leaf, periods.iter().map(|p| p.key.clone()).collect(), recorded_now))
}
