//! # kartu-pcsc-testkit
//!
//! The real pcscd with the vpcd driver, private to one process: for the end-to-end card
//! tests of `kartu-reader` (`crates/reader/tests/e2e.rs`) and of the `kartu` binary
//! (`crates/kartu/tests/card_e2e.rs`), and for `kartu demo`, which runs a city day through
//! the same private pcscd and virtual cards.
//!
//! Isolation. Debian's pcscd always uses `/run/pcscd/pcscd.comm`, and so does the PC/SC
//! client library. So that a test never meets a system pcscd (nor the other way round), the
//! test binary re-executes itself ([`reexec_in_namespace`]) as
//!
//! ```text
//! unshare --mount --propagation private --pid --fork --kill-child --mount-proc -- <test binary> <args>
//! ```
//!
//! and, inside (where it is PID 1 of a new PID namespace, [`is_inside`]), [`Pcscd::start`]
//! mounts a private tmpfs on `/run` (`mount -t tmpfs -o mode=0755,size=4m kartu-e2e /run`),
//! writes its own reader configuration to a directory of the test's and starts
//! `pcscd --foreground --apdu --debug --config <dir>` with vpcd on two free consecutive TCP
//! ports (vpcd listens on the port and the port + 1: two reader slots). Every process the
//! test starts (pcscd, a `kartu card sim`, a `kartu card personalize`) lives in the
//! namespace and talks to that pcscd; when the test process ends, the kernel ends them all.
//! Needs root (for `unshare` and `mount`), pcscd, vsmartcard-vpcd and util-linux
//! (`scripts/setup.sh`).
//!
//! ```no_run
//! # fn main() -> Result<(), String> {
//! if !pcsc_testkit::is_inside() {
//!     std::process::exit(pcsc_testkit::reexec_in_namespace()?);
//! }
//! let directory = std::env::temp_dir().join("my-e2e");
//! let pcscd = pcsc_testkit::Pcscd::start(&directory, "My E2E PCD")?;
//! println!("put a virtual card on {}, it shows in {}", pcscd.vpcd_address(0), pcscd.reader_name(0));
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::ffi::OsString;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set in the re-executed test process, inside the namespaces.
pub const NAMESPACE_ENV: &str = "KARTU_E2E_IN_NAMESPACE";

/// Set to a file name to keep pcscd's whole log there after the test.
pub const KEEP_LOG_ENV: &str = "KARTU_E2E_PCSCD_LOG";

/// vpcd's IFD handler as installed by Debian's vsmartcard-vpcd.
pub const VPCD_DRIVER: &str = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";

/// How long pcscd may take to list the vpcd reader.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often pcscd is started on other ports when its reader does not come up (a port can
/// be taken between choosing and binding).
pub const START_ATTEMPTS_MAX: usize = 3;

/// Lines of pcscd's log shown when a test failed.
pub const LOG_TAIL_LINES: usize = 60;

/// Whether this process is the re-executed program, inside the private namespaces: the
/// marker is set and this process is PID 1 of its PID namespace. A child of that process
/// (say a `kartu demo` run by a test) inherits the marker but is not PID 1, so it is not
/// inside and may enter namespaces of its own, with a pcscd of its own.
#[must_use]
pub fn is_inside() -> bool {
    std::env::var_os(NAMESPACE_ENV).is_some() && std::process::id() == 1
}

/// Re-executes this test binary, with the same arguments, inside new mount and PID
/// namespaces, waits for it and returns its exit code; `Err` when that cannot be done (no
/// `unshare`, not root).
///
/// # Errors
/// A description of what failed.
pub fn reexec_in_namespace() -> Result<i32, String> {
    let exe = std::env::current_exe().map_err(|error| format!("cannot find the test binary: {error}"))?;
    let arguments: Vec<OsString> = std::env::args_os().skip(1).collect();
    let status = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--mount-proc", "--"])
        .arg(exe)
        .args(arguments)
        .env(NAMESPACE_ENV, "1")
        .status()
        .map_err(|error| format!("cannot run unshare (util-linux): {error}"))?;
    match status.code() {
        Some(code) => Ok(code),
        None => Err(format!("the test inside the namespace ended without an exit code: {status} (not root?)")),
    }
}

/// A pcscd of the test's own, with one vpcd reader of two slots.
#[derive(Debug)]
pub struct Pcscd {
    child: Child,
    log: PathBuf,
    port: u16,
    reader: String,
}

impl Pcscd {
    /// Mounts the private `/run` (once per process), writes the reader configuration into
    /// `directory` (created if needed) and starts pcscd; returns when pcscd lists the
    /// reader's first slot. `reader` is the friendly name; pcscd shows the slots as
    /// `<reader> 00 00` and `<reader> 00 01`.
    ///
    /// # Errors
    /// A description of what failed, with the last attempt's reason.
    pub fn start(directory: &Path, reader: &str) -> Result<Self, String> {
        mount_private_run()?;
        if !Path::new(VPCD_DRIVER).exists() {
            return Err(format!("{VPCD_DRIVER} is missing: run scripts/setup.sh (vsmartcard-vpcd)"));
        }
        let config = directory.join("reader.conf.d");
        fs::create_dir_all(&config).map_err(|error| format!("mkdir {}: {error}", config.display()))?;
        let pcscd = if Path::new("/usr/sbin/pcscd").exists() { "/usr/sbin/pcscd" } else { "pcscd" };
        let mut last_error = String::new();
        for attempt in 1..=START_ATTEMPTS_MAX {
            let port = free_port_pair()?;
            fs::write(config.join("vpcd"), reader_conf(reader, port))
                .map_err(|error| format!("write reader.conf: {error}"))?;
            let log = directory.join(format!("pcscd-{attempt}.log"));
            let out = fs::File::create(&log).map_err(|error| format!("pcscd log: {error}"))?;
            let err = out.try_clone().map_err(|error| format!("pcscd log: {error}"))?;
            let child = Command::new(pcscd)
                .args(["--foreground", "--apdu", "--debug", "--config"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|error| format!("cannot start pcscd (scripts/setup.sh): {error}"))?;
            let pcscd = Self { child, log, port, reader: reader.to_string() };
            match pcscd.wait_until_listed() {
                Ok(()) => return Ok(pcscd),
                // Dropping `pcscd` ends it; the next attempt takes other ports.
                Err(error) => last_error = format!("attempt {attempt} on port {port}: {error}"),
            }
        }
        Err(format!("pcscd did not come up: {last_error}"))
    }

    /// vpcd's TCP port of the first slot; the second slot listens on the next port.
    #[must_use]
    pub const fn port(&self) -> u16 {
        self.port
    }

    /// Where a virtual card connects to appear in slot `slot` (0 or 1): `127.0.0.1:<port>`.
    #[must_use]
    pub fn vpcd_address(&self, slot: u16) -> String {
        format!("127.0.0.1:{}", self.port.saturating_add(slot))
    }

    /// The PC/SC name of slot `slot` (0 or 1), e.g. `Kartu E2E PCD 00 01`.
    #[must_use]
    pub fn reader_name(&self, slot: u16) -> String {
        format!("{} 00 {slot:02}", self.reader)
    }

    /// pcscd's log file (with `--apdu --debug`: every APDU).
    #[must_use]
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// At the end of a test run: keeps the log where [`KEEP_LOG_ENV`] says, and when the
    /// run `failed`, prints the log's last [`LOG_TAIL_LINES`] lines to stderr.
    pub fn finish(&self, failed: bool) {
        if let Some(keep) = std::env::var_os(KEEP_LOG_ENV) {
            let _ = fs::copy(&self.log, keep);
        }
        if !failed {
            return;
        }
        if let Ok(log) = fs::read_to_string(&self.log) {
            let tail: Vec<&str> = log.lines().rev().take(LOG_TAIL_LINES).collect();
            eprintln!("--- last lines of the pcscd log ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }

    fn wait_until_listed(&self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let expected = self.reader_name(0);
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            match list_readers() {
                Ok(readers) if readers.contains(&expected) => return Ok(()),
                Ok(readers) => last = format!("readers {readers:?}"),
                Err(error) => last = error,
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("no reader {expected:?} within {READY_TIMEOUT:?}: {last}"))
    }
}

impl Drop for Pcscd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn list_readers() -> Result<Vec<String>, String> {
    let context = pcsc::Context::establish(pcsc::Scope::User).map_err(|error| error.to_string())?;
    match context.list_readers_owned() {
        Ok(names) => Ok(names.iter().map(|name| name.to_string_lossy().into_owned()).collect()),
        Err(pcsc::Error::NoReadersAvailable) => Ok(Vec::new()),
        Err(error) => Err(error.to_string()),
    }
}

static RUN_MOUNTED: AtomicBool = AtomicBool::new(false);

/// Mounts a private tmpfs on `/run`, so that pcscd's socket `/run/pcscd/pcscd.comm` is
/// this test's own. Refuses to run outside the namespace [`reexec_in_namespace`] created.
fn mount_private_run() -> Result<(), String> {
    if !is_inside() {
        return Err("refusing to mount over /run outside the test's own namespace".to_string());
    }
    if RUN_MOUNTED.load(Ordering::SeqCst) {
        return Ok(());
    }
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "mode=0755,size=4m", "kartu-e2e", "/run"])
        .status()
        .map_err(|error| format!("cannot run mount: {error}"))?;
    if !status.success() {
        return Err(format!("mount -t tmpfs on /run failed: {status}"));
    }
    RUN_MOUNTED.store(true, Ordering::SeqCst);
    Ok(())
}

/// Two free consecutive TCP ports (vpcd listens on all addresses, on the port and the
/// port + 1); the first is returned.
fn free_port_pair() -> Result<u16, String> {
    for _ in 0..64 {
        let first = TcpListener::bind(("0.0.0.0", 0)).map_err(|error| format!("bind: {error}"))?;
        let port = first.local_addr().map_err(|error| error.to_string())?.port();
        let Some(next) = port.checked_add(1) else { continue };
        if TcpListener::bind(("0.0.0.0", next)).is_ok() {
            return Ok(port);
        }
    }
    Err("no two free consecutive TCP ports".to_string())
}

/// A reader.conf entry for a vpcd reader listening on `port` (and `port` + 1).
fn reader_conf(name: &str, port: u16) -> String {
    format!("FRIENDLYNAME \"{name}\"\nDEVICENAME   /dev/null:{port}\nLIBPATH      {VPCD_DRIVER}\nCHANNELID    {port}\n")
}
