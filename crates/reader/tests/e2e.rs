//! End to end, no hardware: the real pcscd with the vpcd driver, the virtual card
//! (`cardsim`) connected to vpcd over TCP, and the reader crate talking PC/SC.
//!
//! Isolation: the test binary re-executes itself in private mount and PID namespaces
//! (`unshare`) and runs a pcscd of its own there, with its own `/run`; see the
//! `kartu-pcsc-testkit` crate, shared with the `kartu` binary's end-to-end test. When the
//! test process ends, the kernel ends every process of the namespace: pcscd never outlives
//! the test. The test needs root, pcscd, vsmartcard-vpcd and util-linux
//! (`scripts/setup.sh`).
//!
//! The trials share one pcscd, one virtual card and one replay guard, and take turns.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use card::sun::verify_sun;
use card::{CardUid, FileReadKey, Key, VerifiedSun};
use cardsim::{send_command, SimConfig, SimHandle};
use libtest_mimic::{Arguments, Failed, Trial};
use pcsc_testkit::Pcscd;
use reader::{personalize, rotate_keys, MasterKeys, ReaderError, ReplayError, ReplayGuard, SystemIdentifier, Terminal};

/// The reader's friendly name; pcscd appends the slot, " 00 00" for the first.
const READER_NAME: &str = "Kartu E2E PCD";
const HOST: &str = "kartu.e2e.example";
const SYSTEM_IDENTIFIER: &str = "KARTU-MKS";
/// Bound on waiting for a card; pcscd polls vpcd for the card every 400 ms.
const CARD_TIMEOUT: Duration = Duration::from_secs(10);
const TAPS: usize = 100;

fn main() {
    let arguments = Arguments::from_args();
    let outside_reason = if pcsc_testkit::is_inside() || arguments.list {
        None
    } else {
        match pcsc_testkit::reexec_in_namespace() {
            Ok(code) => std::process::exit(code),
            Err(reason) => Some(reason),
        }
    };
    let world = Arc::new(Mutex::new(Lazy::Pending(outside_reason)));
    let conclusion = libtest_mimic::run(&arguments, trials(&world));
    {
        let mut lazy = lock(&world);
        if let Lazy::Ready(world) = &*lazy {
            // KARTU_E2E_PCSCD_LOG=<file> keeps pcscd's whole log; a failure shows its end.
            world.pcscd.finish(conclusion.has_failed());
        }
        // Stops the card and pcscd (and removes the temporary directory) before the end.
        *lazy = Lazy::Failed("finished".to_string());
    }
    conclusion.exit();
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
    let mut config = SimConfig::new(world.pcscd.vpcd_address(1), world.directory.path().join("card-2.json"));
    config.uid = Some(CardUid::from_bytes([0x04, 0xE2, 0xE0, 0x00, 0x00, 0x00, 0x02]));
    let second = cardsim::spawn(config)?;
    let found = world.terminal.wait_for_card(None, CARD_TIMEOUT);
    let uid = found.as_ref().ok().map(|reader| world.terminal.connect(reader).and_then(|mut card| card.read_uid()));
    second.shutdown()?;
    world.sim()?.insert();
    let expected = world.pcscd.reader_name(1);
    match (found, uid) {
        (Ok(reader), Some(Ok(uid))) if reader == expected && uid.as_bytes()[6] == 0x02 => Ok(()),
        other => Err(format!("waiting for a card in any reader gave {other:?}").into()),
    }
}

// ---------------------------------------------------------------------------------------
// The world: pcscd, the virtual card, the keys, the replay guard.

struct World {
    // Fields drop in order: the simulator (see `Drop`), the connection to pcscd, pcscd, and
    // last the directory holding its configuration and log.
    terminal: Terminal,
    reader: String,
    sim: Option<SimHandle>,
    control_socket: PathBuf,
    uid: CardUid,
    keys: MasterKeys,
    system_identifier: SystemIdentifier,
    guard: ReplayGuard,
    pcscd: Pcscd,
    directory: tempfile::TempDir,
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
        let directory = tempfile::tempdir().map_err(|error| format!("tempdir: {error}"))?;
        let pcscd = Pcscd::start(directory.path(), READER_NAME)?;
        let terminal = Terminal::establish().map_err(|error| format!("PC/SC: {error}"))?;
        let reader = pcscd.reader_name(0);
        let mut world = Self {
            control_socket: directory.path().join("sim.sock"),
            directory,
            pcscd,
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
        let mut config = SimConfig::new(self.pcscd.vpcd_address(0), self.directory.path().join("card.json"));
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
    }
}
