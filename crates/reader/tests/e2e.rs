//! End to end, no hardware: the real pcscd with the vpcd driver, the virtual card
//! (`cardsim`) connected to vpcd over TCP, and the reader crate talking PC/SC.
//!
//! Isolation. Debian's pcscd always uses `/run/pcscd/pcscd.comm`, and so does the PC/SC
//! client library. So that this test never meets a system pcscd (nor the other way round),
//! the test binary re-executes itself as
//!
//! ```text
//! unshare --mount --propagation private --pid --fork --kill-child --mount-proc -- <this test> <args>
//! ```
//!
//! and, inside (where it is PID 1 of a new PID namespace), mounts a private tmpfs on `/run`
//! (`mount -t tmpfs -o mode=0755,size=4m kartu-e2e /run`), writes its own reader
//! configuration to a temporary directory and starts `pcscd --foreground --apdu --debug
//! --config <dir>` with vpcd on two free consecutive TCP ports (vpcd listens on the port and the
//! port + 1). When the test process ends, the kernel ends every process of the namespace:
//! pcscd never outlives the test. The test needs root (for `unshare`), pcscd,
//! vsmartcard-vpcd and util-linux: see `install-deps.sh`.
//!
//! The trials share one pcscd, one virtual card and one replay guard, and take turns.

use std::ffi::OsString;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use card::sun::verify_sun;
use card::{CardUid, FileReadKey, Key, VerifiedSun};
use cardsim::{send_command, SimConfig, SimHandle};
use libtest_mimic::{Arguments, Failed, Trial};
use reader::{personalize, rotate_keys, MasterKeys, ReaderError, ReplayError, ReplayGuard, SystemIdentifier, Terminal};

/// Set in the re-executed test process, inside the namespaces.
const NAMESPACE_ENV: &str = "KARTU_E2E_IN_NAMESPACE";
/// vpcd's IFD handler as installed by Debian's vsmartcard-vpcd.
const VPCD_DRIVER: &str = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";
/// The reader's friendly name; pcscd appends the slot, " 00 00" for the first.
const READER_NAME: &str = "Kartu E2E PCD";
const HOST: &str = "kartu.e2e.example";
const SYSTEM_IDENTIFIER: &str = "KARTU-MKS";
/// Bounds on waiting; pcscd polls vpcd for the card every 400 ms.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const CARD_TIMEOUT: Duration = Duration::from_secs(10);
const PCSCD_START_ATTEMPTS_MAX: usize = 3;
const TAPS: usize = 100;

fn main() {
    let arguments = Arguments::from_args();
    let inside = std::env::var_os(NAMESPACE_ENV).is_some();
    let outside_reason = if inside || arguments.list {
        None
    } else {
        match run_in_namespace() {
            Ok(code) => std::process::exit(code),
            Err(reason) => Some(reason),
        }
    };
    let world = Arc::new(Mutex::new(Lazy::Pending(outside_reason)));
    let conclusion = libtest_mimic::run(&arguments, trials(&world));
    let log = {
        let mut lazy = lock(&world);
        let log = match &*lazy {
            Lazy::Ready(world) => {
                // KARTU_E2E_PCSCD_LOG=<file> keeps pcscd's whole log for a closer look.
                if let Some(keep) = std::env::var_os("KARTU_E2E_PCSCD_LOG") {
                    let _ = fs::copy(&world.pcscd_log, keep);
                }
                conclusion.has_failed().then(|| fs::read_to_string(&world.pcscd_log).ok()).flatten()
            }
            _ => None,
        };
        // Stops the card and pcscd (and removes the temporary directory) before the end.
        *lazy = Lazy::Failed("finished".to_string());
        log
    };
    if let Some(log) = log {
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        eprintln!("--- last lines of the pcscd log ---");
        for line in tail.iter().rev() {
            eprintln!("{line}");
        }
    }
    conclusion.exit();
}

/// Re-executes this test binary inside new mount and PID namespaces and returns its exit
/// code; `Err` when that cannot be done.
fn run_in_namespace() -> Result<i32, String> {
    let exe = std::env::current_exe().map_err(|error| format!("cannot find the test binary: {error}"))?;
    let arguments: Vec<OsString> = std::env::args_os().skip(1).collect();
    let status = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--mount-proc", "--"])
        .arg(exe)
        .args(arguments)
        .env(NAMESPACE_ENV, "1")
        .status()
        .map_err(|error| format!("cannot run unshare (util-linux): {error}"))?;
    Ok(status.code().unwrap_or(101))
}

enum Lazy {
    /// Not started; `Some` when the namespace could not be entered.
    Pending(Option<String>),
    Ready(Box<World>),
    Failed(String),
}

type Shared = Arc<Mutex<Lazy>>;

fn lock(world: &Shared) -> MutexGuard<'_, Lazy> {
    world.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `body` with the world, starting it on first use.
fn with_world(world: &Shared, body: impl FnOnce(&mut World) -> Result<(), Failed>) -> Result<(), Failed> {
    let mut lazy = lock(world);
    if let Lazy::Pending(outside) = &*lazy {
        let started = Instant::now();
        *lazy = match outside {
            Some(reason) => Lazy::Failed(format!("not inside a private namespace: {reason}")),
            None => match World::start() {
                Ok(world) => {
                    eprintln!(
                        "e2e: pcscd, vpcd and the personalised card ready in {} ms",
                        started.elapsed().as_millis()
                    );
                    Lazy::Ready(Box::new(world))
                }
                Err(error) => Lazy::Failed(error),
            },
        };
    }
    match &mut *lazy {
        Lazy::Ready(world) => {
            world.ensure_card_present()?;
            body(world)
        }
        Lazy::Failed(reason) => Err(format!("setup failed: {reason}").into()),
        Lazy::Pending(_) => Err("setup did not run".into()),
    }
}

fn trials(world: &Shared) -> Vec<Trial> {
    type Body = fn(&mut World) -> Result<(), Failed>;
    let bodies: [(&str, Body); 10] = [
        ("hundred_taps_have_increasing_counters_and_valid_macs", hundred_taps),
        ("a_replayed_tap_is_detected", replayed_tap),
        ("a_tear_mid_read_is_card_removed_and_the_next_read_is_fresh", tear_mid_read),
        ("a_removed_card_times_out_cleanly_and_reinsertion_is_seen", removal_and_reinsertion),
        ("a_restarted_simulator_keeps_its_counter", restarted_simulator),
        ("personalising_a_personalised_card_is_refused", personalise_again),
        ("keys_rotate_from_version_1_to_2", key_rotation),
        ("the_uid_reads_with_ff_ca", uid_via_get_data),
        ("an_unknown_reader_is_no_reader", unknown_reader),
        ("a_card_in_the_second_slot_is_found_when_waiting_on_any_reader", card_in_the_second_slot),
    ];
    bodies
        .into_iter()
        .map(|(name, body)| {
            let world = Arc::clone(world);
            Trial::test(name, move || with_world(&world, body))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The trials.

fn hundred_taps(world: &mut World) -> Result<(), Failed> {
    let started = Instant::now();
    let mut counters = Vec::with_capacity(TAPS);
    for _ in 0..TAPS {
        counters.push(world.tap()?.counter().value());
    }
    if !counters.windows(2).all(|pair| pair[0] < pair[1]) {
        return Err(format!("counters are not strictly increasing: {counters:?}").into());
    }
    eprintln!(
        "e2e: {TAPS} taps in {} ms, counters {}..={}",
        started.elapsed().as_millis(),
        counters[0],
        counters[TAPS - 1]
    );
    Ok(())
}

fn replayed_tap(world: &mut World) -> Result<(), Failed> {
    let mut connection = world.terminal.connect(&world.reader)?;
    let url = connection.read_sun()?;
    connection.disconnect()?;
    let first = world.verify(&url)?;
    world.guard.check(&first)?;
    // The same picc_data and cmac again: the MAC is still valid, the counter is not new.
    let replayed = world.verify(&url)?;
    match world.guard.check(&replayed) {
        Err(ReplayError::Replayed { .. }) => Ok(()),
        other => Err(format!("a replayed tap was not detected: {other:?}").into()),
    }
}

fn tear_mid_read(world: &mut World) -> Result<(), Failed> {
    let before = world.tap()?.counter();
    world.sim()?.tear_on_instruction(0xB0);
    let mut connection = world.terminal.connect(&world.reader)?;
    match connection.read_sun() {
        Err(error @ ReaderError::CardRemoved { .. }) => eprintln!("e2e: torn read reported as: {error}"),
        other => return Err(format!("a torn read gave {other:?}, not CardRemoved").into()),
    }
    drop(connection);
    world
        .terminal
        .wait_for_removal(&world.reader, CARD_TIMEOUT)
        .map_err(|error| format!("removal after the tear: {error}"))?;
    world.sim()?.insert();
    world
        .terminal
        .wait_for_card(Some(&world.reader), CARD_TIMEOUT)
        .map_err(|error| format!("card after the tear: {error}"))?;
    let after = world.tap()?.counter();
    if after <= before {
        return Err(format!("counter {after} after the tear is not above {before}").into());
    }
    // The torn ISOReadBinary was processed by the card before it left: one value is gone.
    eprintln!("e2e: counter {before} before the tear, {after} after");
    Ok(())
}

fn removal_and_reinsertion(world: &mut World) -> Result<(), Failed> {
    // Through the control socket, as another process would.
    send_command(&world.control_socket, "remove")?;
    world.terminal.wait_for_removal(&world.reader, CARD_TIMEOUT)?;
    let started = Instant::now();
    let wait = Duration::from_millis(600);
    match world.terminal.wait_for_card(Some(&world.reader), wait) {
        Err(ReaderError::Timeout { waited_ms }) if u128::from(waited_ms) >= wait.as_millis() => {}
        other => return Err(format!("waiting for a removed card gave {other:?}").into()),
    }
    let elapsed = started.elapsed();
    if elapsed > wait + Duration::from_secs(1) {
        return Err(format!("the timeout of {wait:?} took {elapsed:?}").into());
    }
    send_command(&world.control_socket, "insert")?;
    let found = world.terminal.wait_for_card(None, CARD_TIMEOUT)?;
    if found != world.reader {
        return Err(format!("the card appeared in {found:?}").into());
    }
    world.tap()?;
    Ok(())
}

fn restarted_simulator(world: &mut World) -> Result<(), Failed> {
    let before = world.tap()?.counter();
    if let Some(sim) = world.sim.take() {
        sim.shutdown()?;
    }
    world.terminal.wait_for_removal(&world.reader, CARD_TIMEOUT)?;
    // A new simulator process would do the same: same state file, no UID given.
    world.start_sim(None)?;
    world.terminal.wait_for_card(Some(&world.reader), CARD_TIMEOUT)?;
    let after = world.tap()?.counter();
    if after <= before {
        return Err(format!("counter {after} after the restart is not above {before}").into());
    }
    Ok(())
}

fn personalise_again(world: &mut World) -> Result<(), Failed> {
    let mut connection = world.terminal.connect(&world.reader)?;
    let result = connection.transaction(|channel| personalize(channel, &world.keys, &world.system_identifier, HOST));
    connection.disconnect()?;
    match result {
        Err(ReaderError::NotBlank { .. }) => Ok(()),
        other => Err(format!("personalising again gave {other:?}").into()),
    }
}

fn key_rotation(world: &mut World) -> Result<(), Failed> {
    if world.keys.version() != 1 {
        return Ok(()); // Already rotated (the trial ran before, in a retried run).
    }
    let v2 = master_keys(2, 0x60);
    let mut connection = world.terminal.connect(&world.reader)?;
    let done = connection.transaction(|channel| rotate_keys(channel, &[&world.keys], &v2, &world.system_identifier))?;
    connection.disconnect()?;
    world.guard.check_counter(done.uid, done.counter)?;
    let v1 = std::mem::replace(&mut world.keys, v2);
    let verified = world.tap()?;
    // The version 1 keys no longer verify a fresh tap.
    let mut connection = world.terminal.connect(&world.reader)?;
    let url = connection.read_sun()?;
    connection.disconnect()?;
    if v1.verify_tap(&url, &world.system_identifier).is_ok() {
        return Err("a tap after the rotation verifies with the version 1 keys".into());
    }
    world.guard.check(&world.verify(&url)?)?;
    eprintln!("e2e: rotated to key version 2 at counter {}", verified.counter());
    Ok(())
}

fn uid_via_get_data(world: &mut World) -> Result<(), Failed> {
    let mut connection = world.terminal.connect(&world.reader)?;
    let uid = connection.read_uid()?;
    connection.disconnect()?;
    if uid != world.uid {
        return Err(format!("FF CA read {uid}, the card is {}", world.uid).into());
    }
    Ok(())
}

fn unknown_reader(world: &mut World) -> Result<(), Failed> {
    match world.terminal.wait_for_card(Some("No Such Reader 00 00"), Duration::from_millis(200)) {
        Err(ReaderError::NoReader) => Ok(()),
        other => Err(format!("waiting on an unknown reader gave {other:?}").into()),
    }
}

/// Waiting on any reader watches all of them: a second virtual card in vpcd's second slot
/// (port + 1) is found while the first slot is empty.
fn card_in_the_second_slot(world: &mut World) -> Result<(), Failed> {
    world.sim()?.remove();
    world.terminal.wait_for_removal(&world.reader, CARD_TIMEOUT)?;
    match world.terminal.wait_for_card(None, Duration::from_millis(200)) {
        Err(ReaderError::Timeout { .. }) => {}
        other => return Err(format!("with no card anywhere, waiting gave {other:?}").into()),
    }
    let second_slot = world.vpcd_port + 1;
    let mut config = SimConfig::new(format!("127.0.0.1:{second_slot}"), world.directory.path().join("card-2.json"));
    config.uid = Some(CardUid::from_bytes([0x04, 0xE2, 0xE0, 0x00, 0x00, 0x00, 0x02]));
    let second = cardsim::spawn(config)?;
    let found = world.terminal.wait_for_card(None, CARD_TIMEOUT);
    let uid = found.as_ref().ok().map(|reader| world.terminal.connect(reader).and_then(|mut card| card.read_uid()));
    second.shutdown()?;
    world.sim()?.insert();
    let expected = format!("{READER_NAME} 00 01");
    match (found, uid) {
        (Ok(reader), Some(Ok(uid))) if reader == expected && uid.as_bytes()[6] == 0x02 => Ok(()),
        other => Err(format!("waiting for a card in any reader gave {other:?}").into()),
    }
}

// ---------------------------------------------------------------------------------------
// The world: pcscd, the virtual card, the keys, the replay guard.

struct World {
    directory: tempfile::TempDir,
    pcscd: Child,
    pcscd_log: PathBuf,
    vpcd_port: u16,
    terminal: Terminal,
    reader: String,
    sim: Option<SimHandle>,
    control_socket: PathBuf,
    uid: CardUid,
    keys: MasterKeys,
    system_identifier: SystemIdentifier,
    guard: ReplayGuard,
}

fn master_keys(version: u8, seed: u8) -> MasterKeys {
    let key = |offset: u8| Key::from_bytes(core::array::from_fn(|index| seed.wrapping_add(offset) ^ index as u8));
    match MasterKeys::new(version, key(1), key(2), key(3)) {
        Ok(keys) => keys,
        Err(error) => unreachable!("version {version}: {error}"),
    }
}

impl World {
    fn start() -> Result<Self, String> {
        mount_private_run()?;
        if !Path::new(VPCD_DRIVER).exists() {
            return Err(format!("{VPCD_DRIVER} is missing: run install-deps.sh (vsmartcard-vpcd)"));
        }
        let directory = tempfile::tempdir().map_err(|error| format!("tempdir: {error}"))?;
        let (pcscd, pcscd_log, vpcd_port, terminal) = start_pcscd(directory.path())?;
        let reader = format!("{READER_NAME} 00 00");
        let mut world = Self {
            control_socket: directory.path().join("sim.sock"),
            directory,
            pcscd,
            pcscd_log,
            vpcd_port,
            terminal,
            reader,
            sim: None,
            uid: CardUid::from_bytes([0x04, 0xE2, 0xE0, 0x00, 0x00, 0x00, 0x01]),
            keys: master_keys(1, 0x30),
            system_identifier: SystemIdentifier::parse(SYSTEM_IDENTIFIER).map_err(|error| error.to_string())?,
            guard: ReplayGuard::new(),
        };
        world.start_sim(Some(world.uid)).map_err(|error| format!("{:?}", error.message()))?;
        world.terminal.wait_for_card(Some(&world.reader), CARD_TIMEOUT).map_err(|error| error.to_string())?;
        let mut connection = world.terminal.connect(&world.reader).map_err(|error| error.to_string())?;
        let personalized = connection
            .transaction(|channel| personalize(channel, &world.keys, &world.system_identifier, HOST))
            .map_err(|error| format!("personalisation: {error}"))?;
        connection.disconnect().map_err(|error| error.to_string())?;
        if personalized.uid != world.uid {
            return Err(format!("personalised {} instead of {}", personalized.uid, world.uid));
        }
        world.guard.check_counter(personalized.uid, personalized.counter).map_err(|error| error.to_string())?;
        Ok(world)
    }

    fn start_sim(&mut self, uid: Option<CardUid>) -> Result<(), Failed> {
        let mut config =
            SimConfig::new(format!("127.0.0.1:{}", self.vpcd_port), self.directory.path().join("card.json"));
        config.uid = uid;
        config.control_socket = Some(self.control_socket.clone());
        self.sim = Some(cardsim::spawn(config)?);
        Ok(())
    }

    fn sim(&self) -> Result<&SimHandle, Failed> {
        self.sim.as_ref().ok_or_else(|| "the simulator is not running".into())
    }

    /// Puts the card back if an earlier trial failed half-way.
    fn ensure_card_present(&mut self) -> Result<(), Failed> {
        if self.sim.is_none() {
            self.start_sim(None)?;
        }
        self.sim()?.insert();
        self.terminal.wait_for_card(Some(&self.reader), CARD_TIMEOUT)?;
        Ok(())
    }

    /// One tap as a terminal and the server do it: connect, read in a transaction,
    /// disconnect, verify with the diversified key, check the counter.
    fn tap(&mut self) -> Result<VerifiedSun, Failed> {
        let mut connection = self.terminal.connect(&self.reader)?;
        let url = connection.read_sun()?;
        connection.disconnect()?;
        if url.host() != HOST {
            return Err(format!("the card sends taps to {}", url.host()).into());
        }
        let verified = self.verify(&url)?;
        self.guard.check(&verified)?;
        Ok(verified)
    }

    fn verify(&self, url: &reader::TapUrl) -> Result<VerifiedSun, Failed> {
        let file_read_key = FileReadKey::Diversified {
            master: self.keys.sdm_file_read_master_key(),
            system_identifier: self.system_identifier.as_bytes(),
        };
        let sun = url.tap();
        let message =
            verify_sun(self.keys.sdm_meta_read_key(), &file_read_key, sun.picc_data(), sun.sdm_mac(), None, &[])?;
        let verified = message.require_valid_mac()?;
        if verified.uid() != self.uid {
            return Err(format!("tap from {}, the card is {}", verified.uid(), self.uid).into());
        }
        Ok(verified)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(sim) = self.sim.take() {
            let _ = sim.shutdown();
        }
        let _ = self.pcscd.kill();
        let _ = self.pcscd.wait();
    }
}

/// Mounts a private tmpfs on `/run`, so that pcscd's socket `/run/pcscd/pcscd.comm` is
/// this test's own. Refuses to run outside the namespace this test created.
fn mount_private_run() -> Result<(), String> {
    if std::env::var_os(NAMESPACE_ENV).is_none() || std::process::id() != 1 {
        return Err("refusing to mount over /run outside the test's own namespace".to_string());
    }
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "mode=0755,size=4m", "kartu-e2e", "/run"])
        .status()
        .map_err(|error| format!("cannot run mount: {error}"))?;
    if !status.success() {
        return Err(format!("mount -t tmpfs on /run failed: {status}"));
    }
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

/// Starts pcscd with a configuration of its own and waits until it lists the vpcd reader.
/// A port taken between choosing and binding makes the reader fail to start; then pcscd
/// is started again on other ports.
fn start_pcscd(directory: &Path) -> Result<(Child, PathBuf, u16, Terminal), String> {
    let config = directory.join("reader.conf.d");
    fs::create_dir_all(&config).map_err(|error| format!("mkdir: {error}"))?;
    let pcscd = if Path::new("/usr/sbin/pcscd").exists() { "/usr/sbin/pcscd" } else { "pcscd" };
    let mut last_error = String::new();
    for attempt in 1..=PCSCD_START_ATTEMPTS_MAX {
        let port = free_port_pair()?;
        fs::write(config.join("vpcd"), reader_conf(READER_NAME, port))
            .map_err(|error| format!("write reader.conf: {error}"))?;
        let log_path = directory.join(format!("pcscd-{attempt}.log"));
        let log = fs::File::create(&log_path).map_err(|error| format!("pcscd log: {error}"))?;
        let err_log = log.try_clone().map_err(|error| format!("pcscd log: {error}"))?;
        let mut child = Command::new(pcscd)
            .arg("--foreground")
            .arg("--apdu")
            .arg("--debug")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .map_err(|error| format!("cannot start pcscd (install-deps.sh): {error}"))?;
        match wait_for_reader(&mut child) {
            Ok(terminal) => return Ok((child, log_path, port, terminal)),
            Err(error) => {
                last_error = format!("attempt {attempt} on port {port}: {error}");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
    Err(format!("pcscd did not come up: {last_error}"))
}

fn wait_for_reader(pcscd: &mut Child) -> Result<Terminal, String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let expected = format!("{READER_NAME} 00 00");
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        if let Ok(Some(status)) = pcscd.try_wait() {
            return Err(format!("pcscd exited: {status}"));
        }
        match Terminal::establish().and_then(|terminal| terminal.list_readers().map(|readers| (terminal, readers))) {
            Ok((terminal, readers)) if readers.contains(&expected) => return Ok(terminal),
            Ok((_, readers)) => last = format!("readers {readers:?}"),
            Err(error) => last = error.to_string(),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("no reader {expected:?} within {READY_TIMEOUT:?}: {last}"))
}
