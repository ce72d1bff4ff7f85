//! `kartu backup` and `kartu restore`: an SQLite installation copied while it serves, with
//! its configuration and keys, as one tar archive encrypted to age recipients
//! (age-encryption.org/v1, the `age` crate; `age -d` opens it too).
//!
//! The copy is consistent: the signer's `checkpoint.latest` and the other files are copied
//! first, then the database with `VACUUM INTO` (one read transaction, beside the serving
//! writer). The signer writes a checkpoint's row before its file, so the copied file's
//! checkpoint is in the copied database, and the restored server's signer starts from it.
//! PostgreSQL installations are backed up with PostgreSQL's tools (docs/OPERATIONS.md).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use anyhow::{bail, Context, Result};
use diesel::connection::SimpleConnection as _;
use diesel::{Connection as _, QueryableByName, RunQueryDsl as _};
use serde::{Deserialize, Serialize};

/// The archive's table of contents, its first member.
const MANIFEST: &str = "MANIFEST.json";
/// The database's name in the archive and in a restored data directory.
const DATABASE: &str = "kartu.db";
/// The data directory's files a backup holds besides the database, when present. Not the
/// issuance key file: card key 0 belongs on the personalisation workstation.
const FILES: [&str; 4] = [
    api::server::CONFIG_FILE,
    api::server::KEY_FILE,
    api::server::NIK_KEY_FILE,
    ledger::signer::TRUSTED_CHECKPOINT_FILE,
];

/// What a backup holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// This format's version.
    pub format: u32,
    /// The last journal entry.
    pub entries: i64,
    /// Leaves of the audit log.
    pub leaves: i64,
    /// The newest signed checkpoint in the database, if any.
    pub checkpoint: Option<String>,
    /// Every other member: (name, bytes, SHA-256 hex).
    pub files: Vec<(String, u64, String)>,
}

impl Manifest {
    /// One line per fact, for the operator.
    pub fn describe(&self) -> String {
        let size = self.checkpoint.as_deref().and_then(|n| n.lines().nth(1)).unwrap_or("none");
        let files: Vec<&str> = self.files.iter().map(|(n, _, _)| n.as_str()).collect();
        format!(
            "entries: {}\nleaves: {}\nlatest checkpoint: {size}\nfiles: {}",
            self.entries,
            self.leaves,
            files.join(", ")
        )
    }
}

#[derive(QueryableByName)]
struct Head {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    entries: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    leaves: i64,
}

#[derive(QueryableByName)]
struct Note {
    #[diesel(sql_type = diesel::sql_types::Text)]
    note: String,
}

/// The entries, leaves and newest checkpoint of an SQLite database file.
fn read_head(db: &Path) -> Result<(i64, i64, Option<String>)> {
    let mut c = diesel::sqlite::SqliteConnection::establish(&db.display().to_string())
        .with_context(|| format!("opening {}", db.display()))?;
    let head: Head = diesel::sql_query(
        "SELECT (SELECT last_seq FROM ledger_head) AS entries, (SELECT count(*) FROM audit_leaves) AS leaves",
    )
    .get_result(&mut c)
    .context("reading the ledger's head")?;
    let note: Option<Note> = diesel::sql_query("SELECT note FROM checkpoints ORDER BY tree_size DESC LIMIT 1")
        .get_results(&mut c)
        .context("reading the newest checkpoint")?
        .pop();
    Ok((head.entries, head.leaves, note.map(|n| n.note)))
}

fn sha256_file(path: &Path) -> Result<(u64, String)> {
    let mut file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            return Ok((total, hex::encode(ctx.finish())));
        }
        ctx.update(&buf[..n]);
        total += n as u64;
    }
}

/// The SQLite file of a data directory's configuration; PostgreSQL is refused.
fn sqlite_file(data_dir: &Path) -> Result<PathBuf> {
    let config = api::server::Config::load(data_dir)?;
    match config.database_url.strip_prefix("sqlite://") {
        Some(path) => Ok(PathBuf::from(path)),
        None => bail!(
            "this installation's database is PostgreSQL: back it up with pg_dump or a base backup and WAL \
             archiving (docs/OPERATIONS.md, \"Back up and restore\"); the keys with it"
        ),
    }
}

/// Backs up `data_dir` into `out` (which must not exist), encrypted to `recipients`
/// (`age1…`). Returns what it holds.
pub fn backup(data_dir: &Path, out: &Path, recipients: &[String]) -> Result<Manifest> {
    let db = sqlite_file(data_dir)?;
    if recipients.is_empty() {
        bail!("give at least one --recipient (an age public key, age1…; `age-keygen` makes one)");
    }
    let recipients = recipients
        .iter()
        .map(|r| age::x25519::Recipient::from_str(r.trim()).map_err(|e| anyhow::anyhow!("recipient {r:?}: {e}")))
        .collect::<Result<Vec<_>>>()?;
    if out.exists() {
        bail!("{} exists: a backup never overwrites a file", out.display());
    }
    let work = tempfile::tempdir().context("a temporary folder")?;
    let mut files = Vec::new();
    for name in FILES {
        let from = data_dir.join(name);
        if from.exists() {
            std::fs::copy(&from, work.path().join(name)).with_context(|| format!("copying {}", from.display()))?;
            files.push(name.to_owned());
        }
    }
    // After the files: the copied checkpoint's row is in this copy of the database.
    let copy = work.path().join(DATABASE);
    let mut c = diesel::sqlite::SqliteConnection::establish(&db.display().to_string())
        .with_context(|| format!("opening {}", db.display()))?;
    let quoted = copy.display().to_string().replace('\'', "''");
    c.batch_execute(&format!("PRAGMA busy_timeout = 10000; VACUUM INTO '{quoted}'")).context("copying the database")?;
    drop(c);
    files.insert(0, DATABASE.to_owned());
    let (entries, leaves, checkpoint) = read_head(&copy)?;
    let mut listed = Vec::new();
    for name in &files {
        let (bytes, sha) = sha256_file(&work.path().join(name))?;
        listed.push((name.clone(), bytes, sha));
    }
    let manifest = Manifest { format: 1, entries, leaves, checkpoint, files: listed };
    write_archive(work.path(), &manifest, out, &recipients)?;
    Ok(manifest)
}

fn write_archive(from: &Path, manifest: &Manifest, out: &Path, recipients: &[age::x25519::Recipient]) -> Result<()> {
    let partial = out.with_extension("partial");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode_private()
        .open(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let encryptor = age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
        .context("age recipients")?;
    let writer = encryptor.wrap_output(std::io::BufWriter::new(file)).context("age")?;
    let mut tar = tar::Builder::new(writer);
    let json = serde_json::to_vec_pretty(manifest)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(json.len() as u64);
    header.set_mode(0o600);
    header.set_cksum();
    tar.append_data(&mut header, MANIFEST, json.as_slice())?;
    for (name, _, _) in &manifest.files {
        let mut f = std::fs::File::open(from.join(name))?;
        tar.append_file(name, &mut f).with_context(|| format!("archiving {name}"))?;
    }
    let mut buffered = tar.into_inner().context("finishing the archive")?.finish().context("finishing age")?;
    buffered.flush()?;
    let file = buffered.into_inner().map_err(|e| anyhow::anyhow!("{}", e.error()))?;
    file.sync_all()?;
    std::fs::rename(&partial, out).with_context(|| format!("renaming to {}", out.display()))?;
    Ok(())
}

trait PrivateMode {
    fn mode_private(&mut self) -> &mut Self;
}

impl PrivateMode for std::fs::OpenOptions {
    fn mode_private(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt as _;
        self.mode(0o600)
    }
}

/// Restores `input` into `data_dir` (absent or empty) with the age identities in
/// `identity_file`; the configuration's `database_url` is set to the restored file.
pub fn restore(input: &Path, data_dir: &Path, identity_file: &Path) -> Result<Manifest> {
    if data_dir.exists() && std::fs::read_dir(data_dir)?.next().is_some() {
        bail!("{} is not empty: restore into a new folder", data_dir.display());
    }
    let identities = std::fs::read_to_string(identity_file)
        .with_context(|| format!("reading {}", identity_file.display()))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| age::x25519::Identity::from_str(l).map_err(|e| anyhow::anyhow!("{}: {e}", identity_file.display())))
        .collect::<Result<Vec<_>>>()?;
    let file = std::fs::File::open(input).with_context(|| format!("reading {}", input.display()))?;
    let decryptor = age::Decryptor::new(std::io::BufReader::new(file)).context("not an age file")?;
    let reader = decryptor
        .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
        .context("decrypting: none of these identities is a recipient of this backup")?;
    std::fs::create_dir_all(data_dir)?;
    files::set_mode(data_dir, 0o700)?;
    let manifest = unpack(reader, data_dir)?;
    for (name, bytes, sha) in &manifest.files {
        let got = sha256_file(&data_dir.join(name))?;
        if got != (*bytes, sha.clone()) {
            bail!("{name} differs from the backup's manifest: the archive is damaged");
        }
    }
    let config_path = data_dir.join(api::server::CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path).context("the backup has no kartu.toml")?;
    let mut config: api::server::Config = toml::from_str(&text).context("kartu.toml")?;
    config.database_url = format!("sqlite://{}", data_dir.join(DATABASE).display());
    files::replace_private(&config_path, toml::to_string(&config)?.as_bytes())?;
    let (entries, leaves, checkpoint) = read_head(&data_dir.join(DATABASE))?;
    if (entries, leaves, &checkpoint) != (manifest.entries, manifest.leaves, &manifest.checkpoint) {
        bail!("the restored database does not hold what the manifest says");
    }
    Ok(manifest)
}

/// Extracts the archive's members (plain names only) into `dir`, 0600; its manifest.
fn unpack(reader: impl Read, dir: &Path) -> Result<Manifest> {
    let mut archive = tar::Archive::new(reader);
    let mut manifest: Option<Manifest> = None;
    for entry in archive.entries().context("reading the archive")? {
        let mut entry = entry.context("reading the archive")?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if name == MANIFEST {
            let mut text = String::new();
            entry.read_to_string(&mut text)?;
            manifest = Some(serde_json::from_str(&text).context("the manifest")?);
            continue;
        }
        let expected = manifest.as_ref().is_some_and(|m| m.files.iter().any(|(n, _, _)| *n == name));
        if !expected || name.contains('/') || name.starts_with('.') {
            bail!("the archive holds {name:?}, which its manifest does not list");
        }
        let path = dir.join(&name);
        let mut out = std::fs::OpenOptions::new().write(true).create_new(true).mode_private().open(&path)?;
        std::io::copy(&mut entry, &mut out).with_context(|| format!("writing {}", path.display()))?;
        out.sync_all()?;
    }
    manifest.context("the archive has no manifest")
}
