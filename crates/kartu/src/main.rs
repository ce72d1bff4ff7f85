//! `kartu`: a thin command line over the library crates. It parses arguments, calls the
//! libraries and prints; no business rule lives here.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ledger::domain::AccountId;
use ledger::{Ledger, LedgerConfig};

mod backup;
mod card_cmd;
#[cfg(feature = "pcsc")]
mod card_reader;
#[cfg(feature = "pcsc")]
mod card_rotate;
#[cfg(feature = "pcsc")]
mod demo;
mod demo_city;
#[cfg(feature = "pcsc")]
mod demo_transit;
mod progress;
mod receipt;
#[cfg(feature = "pcsc")]
mod stage;
#[cfg(feature = "pcsc")]
mod tap_bench;
mod verify_url;
mod watch;

#[derive(Parser, Debug)]
#[command(name = "kartu", version, about = "Kartu: the city smart card backend")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a data directory: configuration, card master keys, checkpoint key, the
    /// database, and the first operator token (printed once, on a line starting with kt_).
    Init {
        #[arg(long, env = "KARTU_DATA_DIR")]
        data_dir: std::path::PathBuf,
        /// PostgreSQL (or SQLite) URL; SQLite in the data directory when omitted.
        #[arg(long)]
        database_url: Option<String>,
        /// The system identifier in the card key diversification input (ASCII).
        #[arg(long, default_value = "KARTU-MKS")]
        system_identifier: String,
        /// The person the first operator credential belongs to.
        #[arg(long, default_value = api::server::FIRST_OPERATOR)]
        operator_name: String,
        /// PostgreSQL: the role `kartu serve` connects as, created if missing and granted
        /// only what serving needs (default: the database's name and `_serve`);
        /// --database-url is then the tables' owner's, and kartu.toml gets the role's URL.
        #[arg(long)]
        serve_role: Option<String>,
        /// A file (mode 0600) holding the serving role's password, set on the role and
        /// written into kartu.toml's database URL.
        #[arg(long, requires = "serve_role")]
        serve_password_file: Option<std::path::PathBuf>,
    },
    /// Operator credentials made on the host, without a second operator's approval.
    Operator {
        #[command(subcommand)]
        command: OperatorCmd,
    },
    /// Run a terminal (POS, gate, kiosk, top-up agent) over a PC/SC reader; offline within
    /// its limits when the server cannot be reached.
    #[cfg(feature = "pcsc")]
    Terminal(TerminalArgs),
    /// Serve the HTTP API until SIGINT or SIGTERM; in-flight requests finish first. HTTPS
    /// when kartu.toml names tls_cert and tls_key; SIGHUP reloads them.
    Serve {
        #[arg(long, env = "KARTU_DATA_DIR")]
        data_dir: std::path::PathBuf,
        /// Address to listen on (overrides kartu.toml and KARTU_LISTEN).
        #[arg(long)]
        listen: Option<String>,
        /// Database URL (overrides kartu.toml and KARTU_DATABASE_URL).
        #[arg(long)]
        database_url: Option<String>,
        /// A PostgreSQL streaming replica for audit, statement, transparency and report reads
        /// (never a write; payments and receipts stay on the primary). Overrides kartu.toml
        /// and KARTU_READ_DATABASE_URL.
        #[arg(long)]
        read_database_url: Option<String>,
        /// On first start, create a small demo city through the API (needs the first
        /// operator token in this file) and print tokens and a curl example.
        #[arg(long)]
        demo_city: Option<std::path::PathBuf>,
        /// PostgreSQL: serve even as a database user that owns the journal tables (or is a
        /// superuser): it could rewrite history. For a laptop demo only.
        #[arg(long)]
        allow_owner: bool,
    },
    /// Create or upgrade the database schema (sqlite://PATH or postgres://...). On
    /// PostgreSQL, run it as the tables' owner: serving roles already set up are granted
    /// again, so new tables are covered.
    Migrate {
        #[arg(long, env = "KARTU_DATABASE_URL")]
        database_url: String,
        /// PostgreSQL: create this role for `kartu serve` if missing (LOGIN NOSUPERUSER
        /// NOCREATEDB NOCREATEROLE NOBYPASSRLS) and grant it only what serving needs:
        /// SELECT and INSERT on the journal, UPDATE of a few columns where the design moves
        /// rows forward, never DELETE or TRUNCATE, and ownership of nothing.
        #[arg(long)]
        serve_role: Option<String>,
        /// A file (mode 0600) holding the serving role's password to set.
        #[arg(long, requires = "serve_role")]
        serve_password_file: Option<std::path::PathBuf>,
    },
    /// Card tools for operators.
    Card {
        #[command(subcommand)]
        command: card_cmd::CardCmd,
    },
    /// Check the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
    /// A scripted day in the city through a private pcscd, the vpcd driver, virtual cards
    /// and a kartu server: personalise, issue, top up, pay, park, clinic, library, a lost
    /// card, a cloned card, an outage with offline payments, and the audit verified. Prints
    /// the story; needs root (private namespaces), pcscd and vsmartcard-vpcd.
    #[cfg(feature = "pcsc")]
    Demo(demo::DemoArgs),
    /// Back up an SQLite installation while it serves: the database (a consistent copy),
    /// its configuration and keys, in one archive encrypted to age recipients; prints what
    /// it holds. PostgreSQL: see docs/OPERATIONS.md.
    Backup {
        /// The installation's data directory.
        #[arg(long)]
        data_dir: std::path::PathBuf,
        /// The archive to write (it must not exist).
        #[arg(long)]
        out: std::path::PathBuf,
        /// An age recipient (`age1…`, from `age-keygen`); repeat for several.
        #[arg(long = "recipient", required = true)]
        recipients: Vec<String>,
    },
    /// Restore a backup into a new data directory, then `kartu audit verify` it.
    Restore {
        /// The archive `kartu backup` wrote.
        #[arg(long = "in")]
        input: std::path::PathBuf,
        /// The new data directory (absent or empty).
        #[arg(long)]
        data_dir: std::path::PathBuf,
        /// A file of age identities (`AGE-SECRET-KEY-1…`), one of them a recipient.
        #[arg(long)]
        identity: std::path::PathBuf,
    },
    /// Read the ledger.
    Ledger {
        #[arg(long, env = "KARTU_DATABASE_URL", global = true)]
        database_url: Option<String>,
        #[command(subcommand)]
        read: LedgerCmd,
    },
}

#[derive(Subcommand, Debug)]
enum OperatorCmd {
    /// Create an operator credential for a person and print its token (once). Over the
    /// API, a new operator credential needs a second operator's approval; with one person
    /// only, nobody could give it. Whoever holds the data directory holds the database, so
    /// this is done here. The creation is logged in the audit log.
    Add {
        #[arg(long, env = "KARTU_DATA_DIR")]
        data_dir: std::path::PathBuf,
        /// The person the credential belongs to.
        #[arg(long)]
        person: String,
        /// Database URL (overrides kartu.toml and KARTU_DATABASE_URL).
        #[arg(long)]
        database_url: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCmd {
    /// Recompute every leaf hash, the root at every signed checkpoint, every signature,
    /// every balance chain, zero sums and the gapless sequence; name the first entry that
    /// fails.
    Verify {
        /// Verify this database directly.
        #[arg(long, env = "KARTU_DATABASE_URL", required_unless_present = "url", conflicts_with = "url")]
        database_url: Option<String>,
        /// Verify a live server through its API (auditor token needed).
        #[arg(long)]
        url: Option<String>,
        /// An auditor (or operator) token for --url (better: --token-file or KARTU_TOKEN).
        #[arg(long, env = "KARTU_TOKEN")]
        token: Option<String>,
        /// A file holding the token for --url (one line; mode 0600).
        #[arg(long, env = "KARTU_TOKEN_FILE")]
        token_file: Option<std::path::PathBuf>,
        /// File holding the checkpoint verifier key line (`<name>+<key id>+<base64 key>`).
        #[arg(long)]
        public_key: std::path::PathBuf,
        /// Accept leaves newer than the last signed checkpoint (a live log's last second).
        #[arg(long)]
        allow_unsigned_tail: bool,
        /// Require checkpoints to carry this origin line.
        #[arg(long)]
        origin: Option<String>,
        /// An earlier signed checkpoint you kept (the note as served by
        /// /v1/audit/checkpoints/latest): the log must extend it.
        #[arg(long)]
        trusted_checkpoint: Option<std::path::PathBuf>,
        /// For --url: a PEM file of the CA certificates to trust (else the system's roots).
        #[arg(long, env = "KARTU_CA_FILE")]
        ca_file: Option<std::path::PathBuf>,
    },
    /// Check one receipt against a live server, as its page does in a browser: the leaf
    /// bytes hash to the receipt's leaf hash and are that entry, the latest checkpoint is
    /// signed by the city's key, and the inclusion proof leads to its root. No token.
    Receipt {
        /// The server's base URL.
        #[arg(long)]
        url: String,
        /// The entry's sequence number, as printed on the receipt.
        #[arg(long)]
        seq: i64,
        /// The receipt's leaf hash (64 hex digits).
        #[arg(long)]
        leaf_hash: String,
        /// File holding the city's published checkpoint verifier key line; else the
        /// server's own /v1/audit/public-key.
        #[arg(long)]
        public_key: Option<std::path::PathBuf>,
        /// A PEM file of the CA certificates to trust for an https:// URL (else the system's roots).
        #[arg(long, env = "KARTU_CA_FILE")]
        ca_file: Option<std::path::PathBuf>,
    },
    /// Hand checkpoint signing to a new key, in the log: the key in force signs the tree
    /// and a rotation leaf naming the new key, the new key signs from there on, the key
    /// file gets the new key and checkpoint.keys the history. Stop every server first;
    /// after a crash, run it again to finish the same rotation.
    RotateKey {
        #[arg(long, env = "KARTU_DATA_DIR")]
        data_dir: std::path::PathBuf,
        /// Database URL (overrides kartu.toml and KARTU_DATABASE_URL).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Poll a server and check that each new signed checkpoint extends the last one
    /// verified (kept in --state): signature, consistency proof, and the new leaves
    /// rehashed. Exits non-zero on a rollback, a fork or a bad signature.
    Watch {
        /// The server's base URL.
        #[arg(long)]
        url: String,
        /// The file keeping the last verified checkpoint (created on the first run).
        #[arg(long)]
        state: std::path::PathBuf,
        /// Seconds between polls.
        #[arg(long, default_value_t = 60)]
        interval: u64,
        /// File holding the checkpoint verifier key line; else the key pinned in the
        /// state, or on the first run the server's /v1/audit/public-key.
        #[arg(long)]
        public_key: Option<std::path::PathBuf>,
        /// An auditor (or operator) token: the leaves need one (better: --token-file or
        /// KARTU_TOKEN).
        #[arg(long, env = "KARTU_TOKEN", required_unless_present = "token_file")]
        token: Option<String>,
        /// A file holding the token (one line; mode 0600).
        #[arg(long, env = "KARTU_TOKEN_FILE")]
        token_file: Option<std::path::PathBuf>,
        /// Poll once and exit (0 when the log extends the state).
        #[arg(long)]
        once: bool,
        /// A PEM file of the CA certificates to trust for an https:// URL (else the system's roots).
        #[arg(long, env = "KARTU_CA_FILE")]
        ca_file: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum LedgerCmd {
    /// Per currency: the sum of all balances (zero when the books balance), debits and credits.
    TrialBalance,
    /// An account's balance now, or at a past time (microseconds since the Unix epoch).
    Balance {
        account: AccountId,
        #[arg(long)]
        at_us: Option<i64>,
    },
    /// The journal as CSV on stdout, one row per posting (the columns of `GET
    /// /v1/audit/entries` with `Accept: text/csv`), from entry --from-seq to the end.
    Export {
        /// csv (the only format).
        #[arg(long, default_value = "csv", value_parser = ["csv"])]
        format: String,
        /// The first entry to export.
        #[arg(long, default_value_t = 1)]
        from_seq: i64,
    },
    /// Journal entries with their postings, as JSON lines.
    Entries {
        #[arg(long, default_value_t = 1)]
        from: i64,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

/// `kartu terminal`'s options.
#[cfg(feature = "pcsc")]
#[derive(Debug, clap::Args)]
struct TerminalArgs {
    /// pos, gate, kiosk, agent or validator (transit: a bus's or a station gate's).
    #[arg(long)]
    mode: String,
    /// A validator's taps: on (an entry gate, a flat-fare bus), off (an exit gate), or auto
    /// (a card with an open ride on this route taps off, others on).
    #[arg(long, default_value = "auto")]
    direction: String,
    /// A validator on a vehicle: the stop it is at (its position on the route, from 0);
    /// asked on stdin before each tap when omitted. A gate's stop is its own.
    #[arg(long)]
    stop: Option<i64>,
    /// The API's base URL.
    #[arg(long, env = "KARTU_SERVER")]
    server: String,
    /// The terminal's credential token (better: --token-file or KARTU_TOKEN, which `ps`
    /// does not show).
    #[arg(long, env = "KARTU_TOKEN", required_unless_present_any = ["token_file", "print_public_key"])]
    token: Option<String>,
    /// A file holding the token (one line; mode 0600).
    #[arg(long, env = "KARTU_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// The reader's name (the first reader with a card when omitted).
    #[arg(long)]
    reader: Option<String>,
    /// Where the terminal keeps its key and offline journal.
    #[arg(long, default_value = ".kartu-terminal")]
    data_dir: std::path::PathBuf,
    /// The amount of every tap (POS, agent), for scripted use; else asked on stdin.
    #[arg(long)]
    amount: Option<String>,
    /// Stop after this many taps.
    #[arg(long)]
    taps: Option<usize>,
    /// The ISO 4217 currency of amounts.
    #[arg(long, default_value = "IDR")]
    currency: String,
    /// How long to wait for the server before deciding offline, ms.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Print the terminal's Ed25519 public key (to register with its credential) and exit.
    #[arg(long)]
    print_public_key: bool,
    /// A PEM file of the CA certificates to trust for an https:// server (else the system's roots).
    #[arg(long, env = "KARTU_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
}

fn main() {
    // Structured logs on stderr: KARTU_LOG sets the filter (e.g. `info` logs every request),
    // KARTU_LOG_FORMAT=json writes one JSON object per line.
    let filter = tracing_subscriber::EnvFilter::try_from_env("KARTU_LOG").unwrap_or_else(|_| "warn".into());
    // Colours only on a terminal: a log file or journald gets plain `key=value` text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    if std::env::var("KARTU_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
    if let Err(e) = run(Cli::parse()) {
        eprintln!("kartu: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Migrate { database_url, serve_role, serve_password_file } => {
            migrate(&database_url, serve_role, serve_password_file.as_deref())
        }
        Cmd::Card { command } => card_cmd::run(command),
        #[cfg(feature = "pcsc")]
        Cmd::Demo(args) => demo::run(args),
        Cmd::Operator { command: OperatorCmd::Add { data_dir, person, database_url } } => {
            let (id, token) = api::server::add_operator(&data_dir, database_url.as_deref(), &person)?;
            eprintln!("kartu: operator credential {id} for {person:?}; its token follows, shown this once:");
            println!("{token}");
            Ok(())
        }
        Cmd::Init { data_dir, database_url, system_identifier, operator_name, serve_role, serve_password_file } => {
            let password = serve_password_file.as_deref().map(read_password_file).transpose()?;
            let role = api::server::ServeRole { name: serve_role, password };
            let done =
                api::server::init_full(&data_dir, database_url.as_deref(), &system_identifier, &operator_name, &role)?;
            report_init(&data_dir, &done);
            Ok(())
        }
        #[cfg(feature = "pcsc")]
        Cmd::Terminal(args) => terminal_cmd(args),
        Cmd::Serve { data_dir, listen, database_url, read_database_url, demo_city, allow_owner } => {
            let urls = (database_url, read_database_url);
            serve(&data_dir, listen, urls, demo_city, allow_owner)
        }
        Cmd::Audit { command } => audit_cmd(command),
        Cmd::Backup { data_dir, out, recipients } => {
            let m = backup::backup(&data_dir, &out, &recipients).context("backup FAILED")?;
            println!("{}", m.describe());
            eprintln!("kartu: backup written to {}", out.display());
            Ok(())
        }
        Cmd::Restore { input, data_dir, identity } => {
            let m = backup::restore(&input, &data_dir, &identity).context("restore FAILED")?;
            println!("{}", m.describe());
            eprintln!("kartu: restored into {}; check it with `kartu audit verify`", data_dir.display());
            Ok(())
        }
        Cmd::Ledger { database_url, read } => {
            let url = database_url.context("--database-url or KARTU_DATABASE_URL is required")?;
            let ledger = Ledger::open(&url, LedgerConfig::default()).context("opening the ledger")?;
            ledger_read(&ledger, read)
        }
    }
}

/// `kartu audit verify | receipt | watch`.
fn audit_cmd(command: AuditCmd) -> Result<()> {
    match command {
        AuditCmd::Verify {
            database_url,
            url,
            token,
            token_file,
            public_key,
            allow_unsigned_tail,
            origin,
            trusted_checkpoint,
            ca_file,
        } => match (database_url, url) {
            (Some(db), None) => audit_verify(&db, &public_key, allow_unsigned_tail, origin, trusted_checkpoint),
            (None, Some(url)) => {
                let token = secret(token, token_file, "token")?;
                let trust = Trust { public_key, origin, trusted_checkpoint, allow_unsigned_tail };
                audit_verify_url(&url, &token, &trust, ca_file.as_deref())
            }
            _ => anyhow::bail!("give --database-url or --url"),
        },
        AuditCmd::Receipt { url, seq, leaf_hash, public_key, ca_file } => {
            if public_key.is_none() {
                eprintln!("kartu: no --public-key: checking against the server's own key");
            }
            let client = client::Client::new(&url, ca_file.as_deref(), None).context("audit receipt FAILED")?;
            let checked =
                receipt::check(&client, seq, &leaf_hash, public_key.as_deref()).context("audit receipt FAILED")?;
            println!("{}", checked.summary);
            Ok(())
        }
        AuditCmd::RotateKey { data_dir, database_url } => {
            let done = api::rotate::rotate_checkpoint_key(&data_dir, database_url.as_deref())
                .map_err(|e| anyhow::anyhow!("audit rotate-key FAILED: {e}"))?;
            println!("{}", serde_json::to_string_pretty(&done)?);
            eprintln!(
                "kartu: checkpoints are signed by {} from leaf {} on; publish {} (the keys, oldest first); start the \
                 servers again",
                done.new_key,
                done.rotation_leaf,
                data_dir.join(ledger::keys::KEY_HISTORY_FILE).display()
            );
            Ok(())
        }
        AuditCmd::Watch { url, state, interval, public_key, token, token_file, once, ca_file } => {
            let token = secret(token, token_file, "token")?;
            watch::run(&watch::Args { url, state, interval, public_key, token, once, ca_file })
                .context("audit watch FAILED")
        }
    }
}

/// `kartu migrate`: the migrations, the serving roles' grants again, and a new serving role.
fn migrate(
    database_url: &str,
    serve_role: Option<String>,
    serve_password_file: Option<&std::path::Path>,
) -> Result<()> {
    let password = serve_password_file.map(read_password_file).transpose()?;
    let ran = ledger::migrate(database_url).context("migrating the database")?;
    println!("migrated: {ran} migration(s) applied");
    let mut reports = ledger::roles::regrant_serve_roles(database_url).context("granting the serving roles")?;
    if let Some(role) = &serve_role {
        reports.retain(|r| &r.role != role);
        reports.push(
            ledger::roles::setup_serve_role(database_url, role, password.as_deref())
                .context("setting up the serving role")?,
        );
    }
    for r in &reports {
        println!("{r}");
    }
    if let Some(role) = &serve_role {
        let url = ledger::roles::serve_url(database_url, role, None)?;
        println!("serve with: kartu serve --database-url {url} (its password from the URL, PGPASSWORD or ~/.pgpass)");
    }
    Ok(())
}

/// What `kartu init` made, said on stderr; the first operator token on stdout.
fn report_init(data_dir: &std::path::Path, done: &api::server::Initialised) {
    eprintln!("kartu: initialised {} ({})", data_dir.display(), without_password(&done.config.database_url));
    if let Some(r) = &done.serve_role {
        eprintln!("kartu: {r}");
        eprintln!("kartu: kartu.toml serves as {:?}; migrate as the owner", r.role);
    }
    eprintln!("kartu: checkpoint verifier key: {}", done.verifier_key);
    eprintln!(
        "kartu: {} is the server's key file (verifies taps, signs checkpoints); it stays here",
        data_dir.join(api::server::KEY_FILE).display()
    );
    eprintln!(
        "kartu: {} holds card key 0 of every card, for `kartu card personalize`: move it to the \
         personalisation workstation; `kartu serve` does not need it",
        done.issuance_key_file.display()
    );
    eprintln!("kartu: the first operator token follows; it is shown this once:");
    println!("{}", done.operator_token);
}

/// What `kartu audit verify` trusts: the published key, the origin, an earlier checkpoint.
struct Trust {
    public_key: std::path::PathBuf,
    origin: Option<String>,
    trusted_checkpoint: Option<std::path::PathBuf>,
    allow_unsigned_tail: bool,
}

/// `kartu audit verify --url`: the whole log read over the API and checked here.
fn audit_verify_url(url: &str, token: &str, trust: &Trust, ca_file: Option<&std::path::Path>) -> Result<()> {
    let Trust { public_key, origin, trusted_checkpoint, allow_unsigned_tail } = trust;
    let keys = read_keys(public_key)?;
    let verifier = keys[0].clone();
    let trusted = trusted_checkpoint
        .as_ref()
        .map(|f| open_trusted(&keys, f, origin.as_deref()))
        .transpose()
        .context("audit verify FAILED")?;
    let client = client::Client::new(url, ca_file, None).context("audit verify FAILED")?.with_token(token);
    let report = verify_url::verify(&client, &verifier, *allow_unsigned_tail, origin.as_deref(), trusted.as_ref())
        .context("audit verify FAILED")?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprintln!("kartu: the log verifies");
    Ok(())
}

/// `kartu terminal`: a POS, gate, kiosk or agent counter on a PC/SC reader.
#[cfg(feature = "pcsc")]
fn terminal_cmd(args: TerminalArgs) -> Result<()> {
    let TerminalArgs {
        mode,
        direction,
        stop,
        server,
        token,
        token_file,
        reader,
        data_dir,
        amount,
        taps,
        currency,
        timeout_ms,
        print_public_key,
        ca_file,
    } = args;
    let mode = terminal::Mode::parse(&mode).context("--mode must be pos, gate, kiosk, agent or validator")?;
    let direction = terminal::Direction::parse(&direction).context("--direction must be on, off or auto")?;
    let amount = amount.as_deref().map(|a| terminal::parse_amount(a, &currency)).transpose()?;
    let token = if print_public_key { token.unwrap_or_default() } else { secret(token, token_file, "token")? };
    let config = terminal::Config {
        mode,
        server,
        token,
        data_dir,
        currency,
        timeout: std::time::Duration::from_millis(timeout_ms),
        ca_file,
        validator: terminal::ValidatorSettings { direction, stop },
    };
    let mut t = terminal::Terminal::open(config)?;
    if print_public_key {
        println!("{}", t.public_key_hex());
        return Ok(());
    }
    terminal::run(&mut t, reader.as_deref(), amount, taps, &mut std::io::stdout())?;
    Ok(())
}

/// A secret given on the command line or in the environment (`value`), or in a file: the
/// file's first line. A file others may read is refused, as `kartu serve` refuses its keys.
fn secret(value: Option<String>, file: Option<std::path::PathBuf>, what: &str) -> Result<String> {
    match (value, file) {
        (Some(v), None) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        (_, Some(path)) => Ok(files::read_secret_line(&path)?),
        _ => anyhow::bail!("give the {what} with --{what}-file FILE (or KARTU_TOKEN_FILE / KARTU_TOKEN)"),
    }
}

/// `kartu serve`; `urls` are the database and the read replica given on the command line.
fn serve(
    data_dir: &std::path::Path,
    listen: Option<String>,
    urls: (Option<String>, Option<String>),
    demo_city: Option<std::path::PathBuf>,
    allow_owner: bool,
) -> Result<()> {
    let (database_url, read_database_url) = urls;
    let loaded = api::server::load_with(data_dir, database_url.as_deref(), read_database_url.as_deref(), allow_owner)?;
    let listen = listen.unwrap_or_else(|| loaded.config.listen.clone());
    let listener = std::net::TcpListener::bind(&listen).with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    let scheme = if loaded.state.settings.tls.is_some() { "https" } else { "http" };
    let state = loaded.state.clone();
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let server = api::server::server(state.clone(), listener, loaded.config.workers)?;
        tracing::info!(%addr, database = %loaded.config.database_url, "serving");
        eprintln!("kartu: serving on {scheme}://{addr}");
        if let Some(cert) = &state.settings.tls {
            eprintln!("kartu: TLS certificate sha256 {}; SIGHUP reloads it", cert.fingerprint());
        }
        if let Some(metrics) = &state.settings.metrics_listen {
            eprintln!("kartu: /metrics on http://{metrics} only");
        }
        if let Some(token_file) = demo_city {
            let data_dir = data_dir.to_owned();
            std::thread::spawn(move || {
                let seeded = std::fs::read_to_string(&token_file)
                    .context("reading the operator token")
                    .and_then(|t| demo_city::seed_and_print(&format!("{scheme}://{addr}"), &data_dir, t.trim()));
                if let Err(e) = seeded {
                    eprintln!("kartu: the demo city could not be set up: {e:#}");
                }
            });
        }
        server.await
    })?;
    // Everything accepted has been answered; write what is queued, then stop.
    loaded.state.ledger.shutdown();
    eprintln!("kartu: stopped");
    Ok(())
}

/// A password from a private file, without its line end.
fn read_password_file(path: &std::path::Path) -> Result<String> {
    api::server::check_private(path)?;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let password = text.trim_end_matches(['\n', '\r']).to_owned();
    anyhow::ensure!(!password.is_empty(), "{} holds no password", path.display());
    Ok(password)
}

/// A database URL with its password, if any, replaced by `***` (for printing).
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{}", &rest[end..])
        }
        _ => url.to_owned(),
    }
}

fn audit_verify(
    url: &str,
    key_file: &std::path::Path,
    allow_unsigned_tail: bool,
    origin: Option<String>,
    trusted_checkpoint: Option<std::path::PathBuf>,
) -> Result<()> {
    let keys = read_keys(key_file)?;
    let verifier = keys[0].clone();
    let trusted = trusted_checkpoint
        .map(|f| open_trusted(&keys, &f, origin.as_deref()))
        .transpose()
        .context("audit verification FAILED")?;
    let options = ledger::verify::VerifyOptions { allow_unsigned_tail, origin, trusted };
    let (mut bar, mut last_done): (Option<progress::Progress>, u64) = (None, 0);
    let progress = |done: i64, total: i64| {
        last_done = done as u64;
        bar.get_or_insert_with(|| progress::Progress::new("verified", total as u64)).set(done as u64);
    };
    let result = ledger::verify::verify(url, &verifier, &options, progress);
    if let Some(b) = bar.as_mut() {
        b.finish(last_done);
    }
    match result {
        Ok(r) => {
            let rate = r.leaves as f64 / r.elapsed.as_secs_f64().max(1e-9);
            println!(
                "OK: {} entries, {} leaves, {} signed checkpoints, {} accounts; root {}; {} registry rows match \
                 their {} operator actions; {:.2} s ({rate:.0} leaves/s){}",
                r.entries,
                r.leaves,
                r.checkpoints,
                r.accounts,
                hex_lower(&r.root),
                r.registry_rows,
                r.operator_actions,
                r.elapsed.as_secs_f64(),
                if r.unsigned_tail > 0 {
                    format!("; {} leaves not yet signed", r.unsigned_tail)
                } else {
                    String::new()
                }
            );
            for k in r.keys.iter().skip(1) {
                println!(
                    "key rotation at leaf {}: {} signs from tree size {}",
                    k.rotation_leaf.unwrap_or_default(),
                    k.key,
                    k.from_tree_size
                );
            }
            Ok(())
        }
        // Every registry finding, one a line (the error's text lists them all).
        Err(e) => anyhow::bail!("audit verification FAILED: {e}"),
    }
}

/// Reads a public key file: one verifier key line, or the log's keys oldest first (a
/// city's `checkpoint.keys`). The first is where verification starts; the log itself
/// announces the later ones, which only open a trusted checkpoint signed after a rotation.
fn read_keys(file: &std::path::Path) -> Result<Vec<merkle::Verifier>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let keys = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(merkle::Verifier::parse)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} does not hold a verifier key on each line", file.display()))?;
    anyhow::ensure!(!keys.is_empty(), "{} holds no verifier key", file.display());
    Ok(keys)
}

/// Reads a signed checkpoint an auditor kept and checks its signature by one of `keys`
/// (and its origin).
fn open_trusted(keys: &[merkle::Verifier], file: &std::path::Path, origin: Option<&str>) -> Result<merkle::Checkpoint> {
    let note = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let opened = keys.iter().map(|k| k.open(&note)).find(Result::is_ok).unwrap_or_else(|| keys[0].open(&note));
    let checkpoint =
        opened.map_err(|e| anyhow::anyhow!("the trusted checkpoint {} does not verify: {e}", file.display()))?;
    if let Some(origin) = origin.filter(|o| *o != checkpoint.origin()) {
        anyhow::bail!("the trusted checkpoint's origin is {:?}, expected {origin:?}", checkpoint.origin());
    }
    Ok(checkpoint)
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `kartu ledger export`: the journal as CSV on stdout from `from_seq` to the end.
fn ledger_export(ledger: &Ledger, from_seq: i64) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    out.write_all(ledger::export::JOURNAL_HEADER.as_bytes())?;
    let mut next = from_seq.max(1);
    loop {
        let page = ledger.entries(next, ledger::PAGE_MAX)?;
        let Some(last) = page.last() else { break };
        next = last.seq + 1;
        let mut text = String::new();
        page.iter().for_each(|e| ledger::export::journal_rows(e, &mut text));
        out.write_all(text.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

fn ledger_read(ledger: &Ledger, read: LedgerCmd) -> Result<()> {
    match read {
        LedgerCmd::TrialBalance => {
            let lines = ledger.trial_balance()?;
            if lines.is_empty() {
                println!("no postings yet: the books are empty and balance");
            }
            for l in &lines {
                let c = l.currency;
                let state = if l.balances_sum_minor == 0 { "balanced" } else { "NOT BALANCED" };
                println!(
                    "{c}  balances sum {}  debits {}  credits {}  {state}",
                    c.format_minor(l.balances_sum_minor),
                    c.format_minor(l.debits_minor),
                    c.format_minor(l.credits_minor)
                );
            }
            anyhow::ensure!(lines.iter().all(|l| l.balances_sum_minor == 0), "the trial balance is not zero");
            Ok(())
        }
        LedgerCmd::Balance { account: id, at_us } => {
            let a = ledger.account(id)?.with_context(|| format!("account {id} does not exist"))?;
            let minor = match at_us {
                Some(t) => ledger.balance_at(id, t)?,
                None => ledger.balance(id)?,
            };
            println!("{} {}", a.currency.format_minor(minor), a.currency);
            Ok(())
        }
        LedgerCmd::Export { format: _, from_seq } => ledger_export(ledger, from_seq),
        LedgerCmd::Entries { from, limit } => {
            for e in ledger.entries(from, limit)? {
                let postings: Vec<_> = e
                    .postings
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "account_id": p.account_id.to_string(),
                            "amount_minor": p.amount_minor,
                            "balance_after_minor": p.balance_after_minor,
                        })
                    })
                    .collect();
                let line = serde_json::json!({
                    "seq": e.seq,
                    "kind": e.kind.as_str(),
                    "time_us": e.time_us,
                    "currency": e.currency.code(),
                    "amount": e.currency.format_minor(e.amount_minor),
                    "related_seq": e.related_seq,
                    "postings": postings,
                });
                println!("{line}");
            }
            Ok(())
        }
    }
}
