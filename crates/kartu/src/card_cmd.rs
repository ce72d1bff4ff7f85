//! `kartu card …`: the operator's card tools. Arguments, messages and printing only; the
//! protocol is in the `card` crate. The tools that need a reader (or are a virtual card) are
//! in `card_reader`, with the `pcsc` feature.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use card::keyfile::KeyFile;
use clap::Subcommand;
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
    #[cfg(feature = "pcsc")]
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
    #[cfg(feature = "pcsc")]
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
    #[cfg(feature = "pcsc")]
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
        #[cfg(feature = "pcsc")]
        CardCmd::Personalize { keys, key_version, host, reader, timeout_secs } => {
            let key_file = read_key_file(&keys)?;
            let timeout = std::time::Duration::from_secs(timeout_secs);
            crate::card_reader::personalize(&key_file, &keys, key_version, &host, reader.as_deref(), timeout)
        }
        #[cfg(feature = "pcsc")]
        CardCmd::Sim { state, vpcd, uid, control_socket } => {
            crate::card_reader::sim(state, vpcd, uid.as_deref(), control_socket)
        }
        #[cfg(feature = "pcsc")]
        CardCmd::Rotate { keys, to_version, reader, timeout_ms, server, token, token_file, ca_file } => {
            let token = match (token, token_file) {
                (_, Some(path)) => files::read_secret_line(&path)?,
                (Some(token), None) if !token.trim().is_empty() => token.trim().to_owned(),
                _ => {
                    anyhow::bail!("give the operator token with --token-file FILE (or KARTU_TOKEN_FILE / KARTU_TOKEN)")
                }
            };
            let api = crate::card_rotate::Api { server, token, ca_file };
            let timeout = std::time::Duration::from_millis(timeout_ms);
            let key_file = read_key_file(&keys)?;
            crate::card_rotate::rotate(&key_file, &keys, to_version, reader.as_deref(), timeout, &api)
        }
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
