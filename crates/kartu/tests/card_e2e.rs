//! The `kartu card` commands end to end, as an operator runs them, no hardware: the real
//! pcscd with the vpcd driver, the virtual card as a `kartu card sim` process, a blank card
//! personalised by `kartu card personalize`, taps read through the reader crate and
//! checked by `kartu card inspect-tap --keys`.
//!
//! The test re-executes itself in private mount and PID namespaces and runs a pcscd of its
//! own there (`kartu-pcsc-testkit`, shared with the reader crate's end-to-end test). It
//! needs root, pcscd, vsmartcard-vpcd and util-linux (`scripts/setup.sh`).
//!
//! The trials share one pcscd and one personalised card (slot 0), and take turns; the
//! interrupted-personalisation trial brings a second blank card in slot 1.
//!
//! One trial runs `kartu demo` (a scripted city day with its own pcscd, in namespaces of its
//! own nested in the test's), then serves the installation it leaves and checks the day's
//! final state through the API against figures computed here. Another runs its tap
//! benchmark (`kartu demo --tap-bench`, what `make bench` times) for a few taps.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use card::keyfile::{KeyFile, GENERATE_RANDOM_LEN};
use card::SystemIdentifier;
use libtest_mimic::{Arguments, Failed, Trial};
use pcsc_testkit::Pcscd;
use reader::Terminal;
use ring::rand::SecureRandom;
use serde_json::{json, Value};

const READER_NAME: &str = "Kartu CLI E2E PCD";
const HOST: &str = "kartu.cli-e2e.example";
const SYSTEM_IDENTIFIER: &str = "KARTU-E2E";
/// Bound on waiting for a card; pcscd polls vpcd for the card every 400 ms. Generous: under
/// the whole suite's load (both cores busy) one wait ran past 10 s once.
const CARD_TIMEOUT: Duration = Duration::from_secs(30);
/// What `kartu card personalize` is given to wait for a card.
const PERSONALIZE_TIMEOUT_SECS: &str = "10";
const TAPS: usize = 5;
/// The UID given to the second (blank) virtual card.
const SECOND_UID: &str = "04E2E0000000C2";

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
    let world = Arc::new(Mutex::new(Lazy::Pending(outside_reason.clone())));
    let conclusion = libtest_mimic::run(&arguments, trials(&world, outside_reason));
    {
        let mut lazy = lock(&world);
        if let Lazy::Ready(world) = &*lazy {
            world.pcscd.finish(conclusion.has_failed());
            if conclusion.has_failed() {
                eprintln!("--- kartu card sim (slot 0) stderr ---\n{}", read(&world.sim_stderr));
            }
        }
        // Stops the simulator and pcscd, removes the temporary directory.
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
fn with_world(world: &Shared, body: fn(&mut World) -> Result<(), Failed>) -> Result<(), Failed> {
    let mut lazy = lock(world);
    if let Lazy::Pending(outside) = &*lazy {
        let started = Instant::now();
        *lazy = match outside {
            Some(reason) => Lazy::Failed(format!("not inside a private namespace: {reason}")),
            None => match World::start() {
                Ok(world) => {
                    eprintln!(
                        "card_e2e: pcscd, kartu card sim and kartu card personalize done in {} ms",
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

fn trials(world: &Shared, outside_reason: Option<String>) -> Vec<Trial> {
    type Body = fn(&mut World) -> Result<(), Failed>;
    let bodies: [(&str, Body); 7] = [
        ("personalize_prints_the_sims_uid_and_a_verified_tap", personalize_output),
        ("taps_read_through_pcsc_verify_with_inspect_tap", taps_verify_with_inspect_tap),
        ("personalizing_a_personalized_card_fails_clearly_and_changes_nothing", personalize_again),
        ("an_interrupted_personalization_is_reported_and_finished_by_a_second_run", interrupted_personalization),
        ("no_card_is_a_timeout_with_a_clear_message", no_card_times_out),
        ("an_unknown_reader_is_refused_with_the_readers_listed", unknown_reader),
        ("a_rotation_torn_at_every_step_leaves_a_working_card_and_is_finished_by_a_second_run", rotation_torn),
    ];
    bodies
        .into_iter()
        .map(|(name, body)| {
            let world = Arc::clone(world);
            Trial::test(name, move || with_world(&world, body))
        })
        .chain(std::iter::once({
            let outside = outside_reason.clone();
            Trial::test("kartu_demo_plays_the_city_day_and_its_final_state_checks_through_the_api", move || {
                demo_day(outside.as_deref())
            })
        }))
        .chain(std::iter::once(Trial::test(
            "kartu_demo_tap_bench_times_approved_payments_and_allowed_entries",
            move || demo_tap_bench(outside_reason.as_deref()),
        )))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The trials.

fn personalize_output(world: &mut World) -> Result<(), Failed> {
    let out = &world.personalized;
    let expected = (
        Some(world.sim_uid.as_str()),
        Some(1),
        Some(world.pcscd.reader_name(0)),
        Some(true),
        // The card's own check tap inside the personalisation is read 1, the read-back 2.
        Some(2),
    );
    let found = (
        out["uid"].as_str(),
        out["key_version"].as_u64(),
        out["reader"].as_str().map(str::to_string),
        out["tap_verified"].as_bool(),
        out["counter"].as_u64(),
    );
    if found != expected {
        return Err(format!("personalize printed {out}, expected {expected:?}").into());
    }
    if out.as_object().map(serde_json::Map::len) != Some(5) {
        return Err(format!("personalize printed other fields: {out}").into());
    }
    world.check_no_secret(&world.personalize_output)?;
    Ok(())
}

fn taps_verify_with_inspect_tap(world: &mut World) -> Result<(), Failed> {
    let mut counters = Vec::with_capacity(TAPS);
    for _ in 0..TAPS {
        let (picc_data, cmac) = world.read_tap(0)?;
        let out = world.inspect_tap(&picc_data, &cmac)?;
        let found = (out["uid"].as_str(), out["mac_valid"].as_bool(), out["key_version"].as_u64());
        if found != (Some(world.sim_uid.as_str()), Some(true), Some(1)) {
            return Err(format!("inspect-tap printed {out}").into());
        }
        counters.push(out["counter"].as_u64().ok_or("no counter")?);
    }
    let above_last = counters.first().is_some_and(|first| *first > world.last_counter);
    if !above_last || !counters.windows(2).all(|pair| pair[0] < pair[1]) {
        return Err(format!("counters {counters:?} are not strictly increasing from {}", world.last_counter).into());
    }
    world.last_counter = counters.last().copied().unwrap_or(world.last_counter);

    // One flipped MAC bit: inspect-tap says so and fails.
    let (picc_data, cmac) = world.read_tap(0)?;
    let last = cmac.chars().last().ok_or("empty cmac")?;
    let forged = format!("{}{}", &cmac[..cmac.len() - 1], if last == '0' { '1' } else { '0' });
    let output =
        kartu(&["card", "inspect-tap", "--keys", &world.keys_arg(), "--picc-data", &picc_data, "--cmac", &forged])?;
    let (stdout, stderr) = texts(&output);
    if output.status.success() || !stdout.contains("\"mac_valid\":false") || !stderr.contains("MAC is not valid") {
        return Err(format!("a forged MAC gave {}: {stdout} {stderr}", output.status).into());
    }
    Ok(())
}

fn personalize_again(world: &mut World) -> Result<(), Failed> {
    // Other keys (another installation's key file): refused, the card is not theirs.
    let other = world.directory.path().join("other-keys.toml");
    write_key_file(&other, "OTHER-CITY")?;
    let output = world.personalize(&other, 0)?;
    let (stdout, stderr) = texts(&output);
    let refused = !output.status.success() && stdout.is_empty() && stderr.contains("is not blank");
    if !refused || !stderr.contains("application master key has version 1") || !stderr.contains("do not verify") {
        return Err(format!("personalising with other keys gave {}: {stdout} {stderr}", output.status).into());
    }
    if !stderr.contains("Nothing was changed") {
        return Err(format!("the refusal does not say that nothing changed: {stderr}").into());
    }
    // Its own keys: refused too, and recognised as already done.
    let output = world.personalize(&world.keys_path.clone(), 0)?;
    let (stdout, stderr) = texts(&output);
    if output.status.success() || !stdout.is_empty() || !stderr.contains("already personalised") {
        return Err(format!("personalising again gave {}: {stdout} {stderr}", output.status).into());
    }
    world.check_no_secret(&stderr)?;
    // The card still taps with the original keys.
    let (picc_data, cmac) = world.read_tap(0)?;
    let out = world.inspect_tap(&picc_data, &cmac)?;
    let counter = out["counter"].as_u64().unwrap_or(0);
    if out["mac_valid"].as_bool() != Some(true) || counter <= world.last_counter {
        return Err(format!("after the refusals the card taps {out} (last counter {})", world.last_counter).into());
    }
    world.last_counter = counter;
    Ok(())
}

/// A second blank card (slot 1, `--uid`) leaves the field in the middle of the first
/// ChangeKey: a clear error; put back, the same command finishes the job.
fn interrupted_personalization(world: &mut World) -> Result<(), Failed> {
    // Slot 1 is shared with the rotation trial: pcscd must have seen its last card leave.
    world.terminal.wait_for_removal(&world.pcscd.reader_name(1), CARD_TIMEOUT)?;
    let socket = world.directory.path().join("sim-2.sock");
    let (sim, _, uid) = start_sim(world, 1, Some(SECOND_UID), &socket, "card-2")?;
    let _sim = KillOnDrop(sim);
    if uid != SECOND_UID {
        return Err(format!("kartu card sim --uid {SECOND_UID} printed uid {uid}").into());
    }
    let reader = world.pcscd.reader_name(1);
    world.terminal.wait_for_card(Some(&reader), CARD_TIMEOUT)?;
    cardsim::send_command(&socket, "tear-on C4")?;
    let output = world.personalize(&world.keys_path.clone(), 1)?;
    let (stdout, stderr) = texts(&output);
    let clear =
        stderr.contains("left the reader during personalisation") && stderr.contains("run the same command again");
    if output.status.success() || !stdout.is_empty() || !clear {
        return Err(format!("a torn personalisation gave {}: {stdout} {stderr}", output.status).into());
    }
    // A torn card stays out of the field until it is put back.
    world.terminal.wait_for_removal(&reader, CARD_TIMEOUT)?;
    cardsim::send_command(&socket, "insert")?;
    world.terminal.wait_for_card(Some(&reader), CARD_TIMEOUT)?;
    let output = world.personalize(&world.keys_path.clone(), 1)?;
    let (stdout, stderr) = texts(&output);
    if !output.status.success() {
        return Err(format!("the second run gave {}: {stdout} {stderr}", output.status).into());
    }
    let out: Value = serde_json::from_str(stdout.trim())?;
    let found =
        (out["uid"].as_str(), out["reader"].as_str(), out["tap_verified"].as_bool(), out["key_version"].as_u64());
    if found != (Some(SECOND_UID), Some(reader.as_str()), Some(true), Some(1)) {
        return Err(format!("the second run printed {out}").into());
    }
    Ok(())
}

fn no_card_times_out(world: &mut World) -> Result<(), Failed> {
    cardsim::send_command(&world.control_socket, "remove")?;
    world.terminal.wait_for_removal(&world.pcscd.reader_name(0), CARD_TIMEOUT)?;
    let started = Instant::now();
    let reader = world.pcscd.reader_name(0);
    let output = kartu(&[
        "card",
        "personalize",
        "--keys",
        &world.keys_arg(),
        "--host",
        HOST,
        "--reader",
        &reader,
        "--timeout-secs",
        "1",
    ])?;
    let elapsed = started.elapsed();
    let (stdout, stderr) = texts(&output);
    if output.status.success() || !stdout.is_empty() || !stderr.contains("no card was presented") {
        return Err(format!("personalize without a card gave {}: {stdout} {stderr}", output.status).into());
    }
    if elapsed < Duration::from_secs(1) || elapsed > Duration::from_secs(5) {
        return Err(format!("a 1 s timeout took {elapsed:?}").into());
    }
    Ok(()) // The next trial puts the card back (`ensure_card_present`).
}

fn unknown_reader(world: &mut World) -> Result<(), Failed> {
    let output = kartu(&[
        "card",
        "personalize",
        "--keys",
        &world.keys_arg(),
        "--host",
        HOST,
        "--reader",
        "No Such Reader 00 00",
        "--timeout-secs",
        "1",
    ])?;
    let (stdout, stderr) = texts(&output);
    let listed =
        stderr.contains("no reader named \"No Such Reader 00 00\"") && stderr.contains(&world.pcscd.reader_name(0));
    if output.status.success() || !stdout.is_empty() || !listed {
        return Err(format!("an unknown reader gave {}: {stdout} {stderr}", output.status).into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// `kartu card rotate`, torn at every step.

/// Most command APDUs a rotation may take before the test gives up counting.
const ROTATION_STEPS_MAX: u32 = 40;
/// INS bytes: AuthenticateEV2First (part 1), its second part (additional frame), ChangeKey.
const INS_AUTHENTICATE: u8 = 0x71;
const INS_ADDITIONAL_FRAME: u8 = 0xAF;
const INS_CHANGE_KEY: u8 = 0xC4;
/// The order of the rotation's ChangeKeys (key 0, the session's, last).
const CHANGE_KEY_ORDER: [usize; 5] = [1, 2, 3, 4, 0];

/// What one tear point did: the step (k-th command), the INS of the torn command, the key
/// versions the card was left with, and the versions of the two SDM keys its tap verified
/// with (meta-read, file-read).
#[derive(Debug)]
struct TearPoint {
    step: u32,
    ins: u8,
    key_versions: Vec<u8>,
    tap_versions: (u8, u8),
}

/// For k = 1, 2, …: a new card personalised at version 1 (slot 1) and issued at version 1
/// on a served installation whose key files hold versions 1 and 2; `kartu card rotate
/// --to-version 2` torn at its k-th command APDU fails and says to run it again; the card
/// left behind still taps (with the key file, and at the server); the same command then
/// finishes the rotation and records it. Until a run is shorter than k and succeeds.
/// The tear points must cover the authentication and every ChangeKey, each leaving the
/// keys before it rotated; then the last card is checked: key versions 2 on the card and
/// at the server, a version-2 tap pays, a fresh version-1 tap is refused.
fn rotation_torn(world: &mut World) -> Result<(), Failed> {
    let city = RotationCity::start(world)?;
    world.terminal.wait_for_removal(&world.pcscd.reader_name(1), CARD_TIMEOUT)?;
    city.errors_are_clear(world, false)?;
    let mut points = Vec::new();
    for step in 1..=ROTATION_STEPS_MAX {
        let uid = format!("04E2E01700{step:04X}");
        let card = city.new_card(world, &uid)?;
        cardsim::send_command(&card.socket, &format!("tear-after {step}"))?;
        let output = city.rotate(world)?;
        let status = cardsim::send_command(&card.socket, "status")?;
        if output.status.success() {
            // Shorter than `step` commands: the tear still waits; no more tears.
            if !status.contains("tears=0") || !status.contains("tear=after:") {
                return Err(format!("a run succeeded though the card was torn: {status}").into());
            }
            cardsim::send_command(&card.socket, "tear-cancel")?;
            let last = |error: Failed| -> Failed { format!("step {step}, not torn: {error:?}").into() };
            city.check_result(world, &output, &uid, &card.id).map_err(last)?;
            city.last_card_pays_and_old_taps_are_refused(world, &uid, &card.id).map_err(last)?;
            city.errors_are_clear(world, true).map_err(last)?;
            return points_cover_every_step(&points);
        }
        points.push(city.torn_then_finished(world, &card, step, &output, &status)?);
    }
    Err(format!("the rotation was still torn after {ROTATION_STEPS_MAX} commands").into())
}

/// The checks of one torn run (`output`, the simulator's `status` after it): a clear
/// message; a card that still taps; a second run that finishes and records the rotation.
fn tear_message_is_clear(output: &Output) -> Result<(), Failed> {
    let (stdout, stderr) = texts(output);
    let clear = stderr.contains("Put the card back and run the same command again");
    if output.status.success() || !stdout.is_empty() || !clear {
        return Err(format!("a torn rotation gave {}: {stdout} {stderr}", output.status).into());
    }
    Ok(())
}

/// Asserts the tear points hit both parts of the authentication and each ChangeKey, the
/// j-th ChangeKey leaving the first j keys of [`CHANGE_KEY_ORDER`] at version 2 (a tear
/// loses the answer, after the card carried the command out); prints them.
fn points_cover_every_step(points: &[TearPoint]) -> Result<(), Failed> {
    let summary: Vec<String> = points
        .iter()
        .map(|p| format!("{}:{:02X}:{:?}:{}/{}", p.step, p.ins, p.key_versions, p.tap_versions.0, p.tap_versions.1))
        .collect();
    eprintln!(
        "card_e2e: rotation torn at {} points (step:INS:key versions:tap meta/file): {}",
        points.len(),
        summary.join(" ")
    );
    for ins in [INS_AUTHENTICATE, INS_ADDITIONAL_FRAME] {
        if !points.iter().any(|p| p.ins == ins) {
            return Err(format!("no tear hit INS {ins:02X} of the authentication: {summary:?}").into());
        }
    }
    let change_keys: Vec<&TearPoint> = points.iter().filter(|p| p.ins == INS_CHANGE_KEY).collect();
    if change_keys.len() != CHANGE_KEY_ORDER.len() {
        return Err(format!("{} tears hit a ChangeKey, not 5: {summary:?}", change_keys.len()).into());
    }
    for (j, point) in change_keys.iter().enumerate() {
        let mut expected = vec![1_u8; 5];
        for key_no in &CHANGE_KEY_ORDER[..=j] {
            expected[*key_no] = 2;
        }
        if point.key_versions != expected {
            return Err(format!(
                "ChangeKey {} torn left key versions {:?}, not {expected:?}",
                j + 1,
                point.key_versions
            )
            .into());
        }
    }
    // The first ChangeKey torn (key 1, the meta-read key) leaves a half-rotated SDM pair.
    if change_keys[0].tap_versions != (2, 1) {
        return Err(format!("the card torn after key 1 tapped with {:?}", change_keys[0].tap_versions).into());
    }
    Ok(())
}

/// A blank card of the rotation trial, personalised and issued: its simulator, control
/// socket and id at the server.
struct RotationCard {
    _sim: KillOnDrop,
    socket: PathBuf,
    id: String,
}

/// The installation of the rotation trial: served, with key versions 1 and 2, and the
/// credentials its checks use.
struct RotationCity {
    _server: KillOnDrop,
    http: Http,
    base: String,
    issuance: PathBuf,
    server_keys: KeyFile,
    token_file: PathBuf,
    operator: String,
    holder: String,
    kiosk: String,
    teller: String,
    pos: String,
}

impl RotationCity {
    fn start(world: &World) -> Result<Self, Failed> {
        let data = world.directory.path().join("rotation-city");
        let output = Command::new(env!("CARGO_BIN_EXE_kartu")).arg("init").arg("--data-dir").arg(&data).output()?;
        let (stdout, stderr) = texts(&output);
        let operator = stdout.lines().find(|l| l.starts_with("kt_")).ok_or(format!("kartu init: {stdout} {stderr}"))?;
        let operator = operator.trim().to_owned();
        let token_file = world.directory.path().join("rotation-operator.token");
        std::fs::write(&token_file, format!("{operator}\n"))?;
        std::fs::set_permissions(&token_file, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        // Key version 2, in both key files.
        let mut random = [0_u8; GENERATE_RANDOM_LEN];
        ring::rand::SystemRandom::new().fill(&mut random).map_err(|_| "no random numbers")?;
        let sysid = SystemIdentifier::parse("KARTU-MKS").map_err(|error| error.to_string())?;
        let v2 = KeyFile::generate(sysid, &random);
        let set = v2.newest();
        let hex = |key: &card::Key| hex::encode_upper(key.expose_secret());
        let sdm = format!(
            "\n[cards.2]\nsdm_meta_read_key = \"{}\"\nsdm_file_read_master_key = \"{}\"\n",
            hex(set.sdm_meta_read_key()),
            hex(set.sdm_file_read_master_key())
        );
        let app = format!("app_master_key = \"{}\"\n", hex(set.app_master_key().ok_or("no key 0")?));
        let (server_path, issuance) = (data.join("keys.toml"), data.join("issuance-keys.toml"));
        std::fs::write(&server_path, format!("{}{sdm}", read(&server_path)))?;
        std::fs::write(&issuance, format!("{}{sdm}{app}", read(&issuance)))?;
        let server_keys = KeyFile::parse(&read(&server_path)).map_err(|error| error.to_string())?;
        let (server, base) = serve(&data)?;
        let http = Http { agent: client::transport::agent(None, None)?, base: base.clone() };
        let mut city = Self {
            _server: KillOnDrop(server),
            http,
            base,
            issuance,
            server_keys,
            token_file,
            operator,
            holder: String::new(),
            kiosk: String::new(),
            teller: String::new(),
            pos: String::new(),
        };
        city.credentials()?;
        Ok(city)
    }

    /// A holder; a kiosk, a top-up agent with float and its teller, a merchant's terminal.
    fn credentials(&mut self) -> Result<(), Failed> {
        let holder =
            self.post("/v1/holders", &json!({"name": "Rina", "nik": "7371010101901717", "categories": ["resident"]}))?;
        self.holder = holder["id"].as_str().ok_or("holder id")?.to_owned();
        let token = |v: Value| v["token"].as_str().map(str::to_owned).ok_or_else(|| format!("no token: {v}"));
        self.kiosk = token(self.post("/v1/credentials", &json!({"role": "kiosk", "name": "rotation kiosk"}))?)?;
        let agent = self.post("/v1/agents", &json!({"name": "rotation teller"}))?;
        let agent = agent["id"].as_str().ok_or("agent id")?.to_owned();
        self.post(&format!("/v1/agents/{agent}/float"), &json!({"amount": "1000.00"}))?;
        let body = json!({"role": "top_up_agent", "name": "teller", "agent_id": agent});
        self.teller = token(self.post("/v1/credentials", &body)?)?;
        let merchant =
            self.post("/v1/merchants", &json!({"name": "Toko", "category": "grocery", "fee_rate": "0.007"}))?;
        let merchant = merchant["id"].as_str().ok_or("merchant id")?.to_owned();
        let body = json!({"role": "merchant_terminal", "name": "pos", "merchant_id": merchant});
        self.pos = token(self.post("/v1/credentials", &body)?)?;
        Ok(())
    }

    /// An operator POST that must succeed.
    fn post(&self, path: &str, body: &Value) -> Result<Value, Failed> {
        self.post_as(&self.operator, path, body, &[200, 201])
    }

    /// A POST as `token` whose status must be one of `ok`, with a key of its own.
    fn post_as(&self, token: &str, path: &str, body: &Value, ok: &[u16]) -> Result<Value, Failed> {
        static KEYS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let key = format!("e2e-rotation-{}", KEYS.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        let (status, answer) = self.http.post(token, path, &key, body)?;
        if !ok.contains(&status) {
            return Err(format!("POST {path}: {status} {answer}").into());
        }
        Ok(answer)
    }

    /// A blank card `uid` in slot 1, personalised at key version 1 and issued at version 1.
    fn new_card(&self, world: &World, uid: &str) -> Result<RotationCard, Failed> {
        let reader = world.pcscd.reader_name(1);
        // The previous card's simulator is gone: pcscd must have seen it leave.
        world.terminal.wait_for_removal(&reader, CARD_TIMEOUT)?;
        let socket = world.directory.path().join("rotation-sim.sock");
        let (sim, _, found) = start_sim(world, 1, Some(uid), &socket, &format!("rotation-{uid}"))?;
        let sim = KillOnDrop(sim);
        if found != uid {
            return Err(format!("kartu card sim --uid {uid} printed uid {found}").into());
        }
        world.terminal.wait_for_card(Some(&reader), CARD_TIMEOUT)?;
        let output = world.personalize_at(&self.issuance, 1, Some("1"))?;
        if !output.status.success() {
            let (stdout, stderr) = texts(&output);
            return Err(format!("personalising {uid} at version 1 gave {}: {stdout} {stderr}", output.status).into());
        }
        let card = self.post("/v1/cards", &json!({"uid": uid, "holder_id": self.holder, "key_version": 1}))?;
        let id = card["id"].as_str().ok_or("card id")?.to_owned();
        Ok(RotationCard { _sim: sim, socket, id })
    }

    /// `kartu card rotate --to-version 2` on slot 1.
    fn rotate(&self, world: &World) -> Result<Output, Failed> {
        self.rotate_with(world, "2", "10000", &self.token_file)
    }

    /// `kartu card rotate` on slot 1 to `version`, waiting `timeout_ms`, with the token
    /// in `token_file`.
    fn rotate_with(&self, world: &World, version: &str, timeout_ms: &str, token_file: &Path) -> Result<Output, Failed> {
        let (keys, token_file) = (self.issuance.display().to_string(), token_file.display().to_string());
        let reader = world.pcscd.reader_name(1);
        let args = ["card", "rotate", "--keys", &keys, "--to-version", version, "--reader", &reader];
        let api = ["--timeout-ms", timeout_ms, "--server", &self.base, "--token-file", &token_file];
        kartu(&[&args[..], &api[..]].concat())
    }

    /// Refusals that say what is wrong: no card in the reader, a version the key file
    /// lacks; with a card already rotated, a server that refuses the token.
    fn errors_are_clear(&self, world: &World, with_card: bool) -> Result<(), Failed> {
        let mut cases = Vec::new();
        if with_card {
            let bad = world.directory.path().join("rotation-bad.token");
            std::fs::write(&bad, "kt_not-a-token\n")?;
            std::fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            let output = self.rotate_with(world, "2", "10000", &bad)?;
            cases.push((output, vec!["refused to record the rotation", "unauthorized", "run the same command again"]));
        } else {
            let output = self.rotate_with(world, "2", "500", &self.token_file)?;
            cases.push((output, vec!["no card was presented", "within 500 ms", "nothing was changed"]));
        }
        let output = self.rotate_with(world, "3", "500", &self.token_file)?;
        cases.push((output, vec!["has no key version 3", "its versions are 2, 1", "Nothing was changed"]));
        for (output, needles) in cases {
            let (stdout, stderr) = texts(&output);
            if output.status.success() || !stdout.is_empty() || !needles.iter().all(|n| stderr.contains(n)) {
                let expected = format!("expected {needles:?}");
                return Err(format!("kartu card rotate gave {}: {stdout} {stderr} ({expected})", output.status).into());
            }
        }
        Ok(())
    }

    /// One torn run: clear message, a working card put back, a second run that finishes.
    fn torn_then_finished(
        &self,
        world: &World,
        card: &RotationCard,
        step: u32,
        output: &Output,
        status: &str,
    ) -> Result<TearPoint, Failed> {
        tear_message_is_clear(output)?;
        let torn = status.split_whitespace().find_map(|w| w.strip_prefix("last_torn=")).unwrap_or("none");
        let ins = u8::from_str_radix(torn, 16).map_err(|_| format!("status after a tear: {status}"))?;
        let reader = world.pcscd.reader_name(1);
        world.terminal.wait_for_removal(&reader, CARD_TIMEOUT)?;
        cardsim::send_command(&card.socket, "insert")?;
        world.terminal.wait_for_card(Some(&reader), CARD_TIMEOUT)?;
        let at = |stage: &'static str| {
            move |error: Failed| -> Failed { format!("step {step}, torn at INS {ins:02X}, {stage}: {error:?}").into() }
        };
        let key_versions = card_key_versions(world, 1).map_err(at("reading key versions"))?;
        let tap_versions = self.card_still_taps(world).map_err(at("tapping"))?;
        let output = self.rotate(world)?;
        let uid = status.split_whitespace().find_map(|w| w.strip_prefix("uid=")).unwrap_or("?").to_owned();
        self.check_result(world, &output, &uid, &card.id).map_err(at("after the second run"))?;
        Ok(TearPoint { step, ins, key_versions, tap_versions })
    }

    /// A tap of the card in slot 1 verifies with the server's key file (some version of
    /// each SDM key) and the server accepts it (a balance inquiry at the kiosk). Returns
    /// the versions of the two SDM keys.
    fn card_still_taps(&self, world: &World) -> Result<(u8, u8), Failed> {
        let (picc_data, cmac) = world.read_tap(1)?;
        let tap = card::SunTap::from_hex(&picc_data, &cmac, None).map_err(|error| error.to_string())?;
        let (message, versions) = self.server_keys.verify_tap_versions(&tap).map_err(|error| error.to_string())?;
        if !message.mac_valid() {
            return Err(format!("a torn card's tap does not verify ({versions:?})").into());
        }
        let body = json!({"tap": {"picc_data": picc_data, "cmac": cmac}});
        self.post_as(&self.kiosk, "/v1/balance-inquiries", &body, &[200, 201])?;
        Ok((versions.meta_read, versions.file_read))
    }

    /// A successful `kartu card rotate`: its JSON, the card's keys all at version 2, the
    /// server's record at 2.
    fn check_result(&self, world: &World, output: &Output, uid: &str, id: &str) -> Result<(), Failed> {
        let (stdout, stderr) = texts(output);
        if !output.status.success() {
            return Err(format!("kartu card rotate gave {}: {stdout} {stderr}", output.status).into());
        }
        let out: Value = serde_json::from_str(stdout.trim())?;
        let found = (
            out["uid"].as_str(),
            out["card_id"].as_str(),
            out["key_version"].as_u64(),
            out["tap_verified"].as_bool(),
            out["recorded"].as_bool(),
        );
        if found != (Some(uid), Some(id), Some(2), Some(true), Some(true)) || !out["counter"].is_u64() {
            return Err(format!("kartu card rotate printed {out}").into());
        }
        world.check_no_secret(&format!("{stdout}{stderr}"))?;
        let versions = card_key_versions(world, 1)?;
        let server = self.http.get(&self.operator, &format!("/v1/cards/{id}"))?;
        if versions != [2; 5] || server["key_version"] != 2 {
            return Err(format!("after the rotation: key versions {versions:?}, the server says {server}").into());
        }
        Ok(())
    }

    /// The last card: topped up, a tap read from it (version 2) pays; a genuine version-1
    /// tap with a fresh counter (a copy made with the old keys) is refused.
    fn last_card_pays_and_old_taps_are_refused(&self, world: &World, uid: &str, id: &str) -> Result<(), Failed> {
        self.post_as(&self.teller, "/v1/topups", &json!({"card_id": id, "amount": "10.00"}), &[201])?;
        let (picc_data, cmac) = world.read_tap(1)?;
        let body = json!({"tap": {"picc_data": picc_data, "cmac": cmac}, "amount": "1.00"});
        let paid = self.post_as(&self.pos, "/v1/payments", &body, &[201])?;
        let last = self.http.get(&self.operator, &format!("/v1/cards/{id}"))?["last_counter"].as_u64().unwrap_or(0);
        let old = fresh_tap_at(&self.server_keys, 1, uid, u32::try_from(last + 1)?)?;
        let refused = self.post_as(&self.pos, "/v1/payments", &json!({"tap": old, "amount": "1.00"}), &[422])?;
        if refused["code"] != "tap_key_outdated" || paid["balance"]["amount"] != "9.00" {
            return Err(format!("paid {paid}; the version-1 tap gave {refused}").into());
        }
        Ok(())
    }
}

/// The versions of keys 0 to 4 of the card in `slot` (GetKeyVersion, unauthenticated).
fn card_key_versions(world: &World, slot: u16) -> Result<Vec<u8>, Failed> {
    let mut connection = world.terminal.connect(&world.pcscd.reader_name(slot))?;
    let versions = connection.transaction(|channel| {
        let select = card::commands::select_ndef_application();
        reader::expect_status(channel, &select, card::apdu::StatusWord::OK, "ISOSelectFile")?;
        (0..5).map(|key_no| reader::read_key_version(channel, key_no)).collect::<Result<Vec<u8>, _>>()
    });
    connection.disconnect()?;
    Ok(versions?)
}

// ---------------------------------------------------------------------------------------
// `kartu demo`.

/// The demo's cards as the test knows them: UID, holder, NIK (which must never be printed).
const DEMO_CARDS: [(&str, &str, &str); 3] = [
    ("04A1B2C3D4E501", "Ani Wijaya", "7371010101900001"),
    ("04A1B2C3D4E502", "Budi Santoso", "7371010101900002"),
    ("04A1B2C3D4E503", "Citra Dewi", "7371010101900003"),
];
/// The blank card that replaces Budi's lost one.
const DEMO_REPLACEMENT_UID: &str = "04A1B2C3D4E504";
/// The day's amounts in minor units (IDR), as the demo's script says: top-ups for Ani, Budi,
/// Citra; Ani's groceries; Budi's parking hold and capture; Citra's groceries online (whose
/// tap a clone replays) and offline.
const DEMO_TOPUPS: [i64; 3] = [20_000_000, 15_000_000, 10_000_000];
const DEMO_GROCERY_ANI: i64 = 4_550_000;
const DEMO_PARKING_HOLD: i64 = 2_000_000;
const DEMO_PARKING_CAPTURE: i64 = 1_200_000;
const DEMO_GROCERY_CITRA: i64 = 3_000_000;
const DEMO_OFFLINE_CITRA: i64 = 2_500_000;
/// Public transport, by docs/TRANSIT.md's fare table: Ani's bus ride on the offline bus
/// (flat Rp 35,00), her island ferry held at its maximum (Rp 60,00) and captured for two
/// stops (Rp 30,00), refunded down to the transfer (Rp 50,00 a journey) when the bus
/// uploads; Budi, a student, on the Selayar ferry: half of Rp 150,00, capped at half of the
/// Rp 100,00 daily cap; his bus ride after it is free, as is Citra's (senior).
const DEMO_BUS_ANI: i64 = 3_500;
const DEMO_FERRY_HOLD: i64 = 6_000;
const DEMO_FERRY_CAPTURE: i64 = 3_000;
const DEMO_FERRY_REFUND: i64 = 1_500;
const DEMO_SELAYAR_BUDI: i64 = 5_000;
/// How long `kartu serve` may take to say where it listens.
const SERVE_TIMEOUT: Duration = Duration::from_secs(30);

fn demo_day(outside: Option<&str>) -> Result<(), Failed> {
    if let Some(reason) = outside {
        return Err(format!("not inside a private namespace: {reason}").into());
    }
    let directory = tempfile::tempdir()?;
    let data = directory.path().join("city");
    let summary_path = directory.path().join("day.json");
    demo_refuses_a_busy_data_directory(directory.path())?;

    // The day over HTTPS: a CA and a certificate for localhost made here; the demo serves
    // its installation with them and its clients (terminals, API, verify) trust the CA.
    let (ca_file, cert_file, key_file) = make_tls(directory.path())?;
    let (story, stderr) = play_the_demo(&data, &summary_path, [&cert_file, &key_file, &ca_file])?;
    let summary: Value = serde_json::from_str(&read(&summary_path))?;
    let (operator, auditor) = demo_tokens(&data)?;
    let keys = KeyFile::parse(&read(&data.join("issuance-keys.toml"))).map_err(|error| error.to_string())?;
    the_story_tells_the_day_and_no_secret(&format!("{story}{stderr}"), &story, &keys, [&operator, &auditor])?;
    let ids = DemoCardIds::from_summary(&summary)?;

    // The installation the demo left, served again; checked through the API.
    let (server, base) = serve(&data)?;
    let _server = KillOnDrop(server);
    if !base.starts_with("https://127.0.0.1:") {
        return Err(format!("the demo's installation is served at {base}, not over HTTPS").into());
    }
    // The certificate names localhost only: clients call the server by that name.
    let base = base.replace("https://127.0.0.1:", "https://localhost:");
    let http = Http { agent: client::transport::agent(Some(&ca_file), None)?, base };
    let cards = the_cards_end_the_day_as_computed(&http, &operator, &ids)?;
    let entries = the_journal_holds_the_days_entries_once(&http, &auditor, &summary)?;
    the_entries_carry_the_days_amounts(&entries, &ids, &summary)?;
    the_access_log_lets_ani_into_the_clinic_only(&http, &auditor, &ids)?;
    the_auditor_verifies_the_served_log(&http, &data, &ca_file, &auditor, entries.len(), &summary)?;
    // The lost card takes no tap any more: a genuine, fresh tap of it (made here with the
    // installation's keys, counter above its last) is refused at a kiosk. Last, because the
    // kiosk's credential is a new leaf of the log.
    let kiosk = http.post(&operator, "/v1/credentials", "e2e-kiosk", &json!({"role": "kiosk", "name": "e2e kiosk"}))?;
    let kiosk = kiosk.1["token"].as_str().ok_or("no kiosk token")?.to_string();
    let next = u32::try_from(cards[1]["last_counter"].as_i64().unwrap_or(0) + 1)?;
    let tap = fresh_tap(&keys, DEMO_CARDS[1].0, next)?;
    let (status, refused) = http.post(&kiosk, "/v1/balance-inquiries", "e2e-old-card", &json!({"tap": tap}))?;
    if (status, refused["code"].as_str()) != (422, Some("card_blocked")) {
        return Err(format!("a tap of the lost card gave {status} {refused}").into());
    }
    Ok(())
}

/// Bad input first: a data directory that is not empty is refused before anything starts.
fn demo_refuses_a_busy_data_directory(directory: &Path) -> Result<(), Failed> {
    let busy = directory.join("busy");
    std::fs::create_dir(&busy)?;
    std::fs::write(busy.join("something"), "x")?;
    let output = Command::new(env!("CARGO_BIN_EXE_kartu"))
        .arg("demo")
        .arg("--data-dir")
        .arg(&busy)
        .stdin(Stdio::null())
        .output()?;
    let (stdout, stderr) = texts(&output);
    if output.status.success() || !stdout.is_empty() || !stderr.contains("is not empty") {
        return Err(format!("kartu demo on a non-empty directory gave {}: {stdout} {stderr}", output.status).into());
    }
    Ok(())
}

/// `kartu demo` in `data`, its summary to `summary_path`, served with `tls` (certificate,
/// key, CA file); returns what it printed (the story, and its stderr).
fn play_the_demo(data: &Path, summary_path: &Path, tls: [&Path; 3]) -> Result<(String, String), Failed> {
    let [cert_file, key_file, ca_file] = tls;
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_kartu"))
        .arg("demo")
        .arg("--data-dir")
        .arg(data)
        .arg("--json")
        .arg(summary_path)
        .arg("--tls-cert")
        .arg(cert_file)
        .arg("--tls-key")
        .arg(key_file)
        .arg("--ca-file")
        .arg(ca_file)
        .stdin(Stdio::null())
        .output()?;
    let (story, stderr) = texts(&output);
    if !output.status.success() {
        return Err(format!("kartu demo failed ({}):\n{story}\n{stderr}", output.status).into());
    }
    eprintln!("card_e2e: kartu demo took {} ms", started.elapsed().as_millis());
    Ok((story, stderr))
}

/// The operator's and the auditor's tokens, from the demo's private token file.
fn demo_tokens(data: &Path) -> Result<(String, String), Failed> {
    let tokens_path = data.join("demo-tokens.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&tokens_path)?.permissions());
    if mode & 0o077 != 0 {
        return Err(format!("{} has mode {mode:o}, not 0600", tokens_path.display()).into());
    }
    let tokens: Value = serde_json::from_str(&read(&tokens_path))?;
    let operator = tokens["operator"].as_str().ok_or("no operator token")?.to_owned();
    let auditor = tokens["auditor"].as_str().ok_or("no auditor token")?.to_owned();
    Ok((operator, auditor))
}

/// No secret in what the demo printed (`printed`: tokens, NIKs, card master keys), and its
/// `story` tells each event of the day.
fn the_story_tells_the_day_and_no_secret(
    printed: &str,
    story: &str,
    keys: &KeyFile,
    tokens: [&str; 2],
) -> Result<(), Failed> {
    let mut secrets: Vec<String> = tokens.iter().map(|t| (*t).to_owned()).collect();
    secrets.extend(DEMO_CARDS.iter().map(|(_, _, nik)| (*nik).to_string()));
    for set in keys.versions() {
        for key in [Some(set.sdm_meta_read_key()), Some(set.sdm_file_read_master_key()), set.app_master_key()]
            .into_iter()
            .flatten()
        {
            secrets.push(hex::encode_upper(key.expose_secret()));
        }
    }
    if let Some(secret) = secrets.iter().find(|s| printed.to_uppercase().contains(&s.to_uppercase())) {
        return Err(format!("kartu demo printed a secret ({} characters)", secret.len()).into());
    }
    for (what, needle) in [
        ("the clinic's queue number", "queue number 1"),
        ("the library's refusal", "not_entitled"),
        ("the replay's refusal", "409 card_replay"),
        ("the lost card's refusal", "card_blocked"),
        ("the offline approval", "approved offline"),
        ("the offline bus's fare", "OPEN ON stop 1 OFFLINE: 35.00 (flat fare)"),
        ("the senior's free ride", "0.00 (flat fare; senior 100 %)"),
        ("the daily cap", "payment 50.00 (flat fare; student 50 %; daily cap reached)"),
        ("the bus's upload", "uploads its journal (2 records)"),
        ("the verification", "OK: "),
        ("the server's HTTPS URL", "answers on https://localhost:"),
    ] {
        if !story.contains(needle) {
            return Err(format!("the story does not tell {what} ({needle:?}):\n{story}").into());
        }
    }
    Ok(())
}

/// The demo's cards' ids, from its summary: Ani's, Budi's lost one, Citra's, and Budi's
/// replacement.
struct DemoCardIds {
    ani: String,
    budi: String,
    citra: String,
    budi_new: String,
}

impl DemoCardIds {
    fn from_summary(summary: &Value) -> Result<Self, Failed> {
        let card_of = |uid: &str| -> Result<String, Failed> {
            summary["cards"]
                .as_array()
                .and_then(|cards| cards.iter().find(|c| c["uid"] == uid))
                .and_then(|c| c["card_id"].as_str())
                .map(str::to_string)
                .ok_or_else(|| format!("the summary has no card {uid}: {summary}").into())
        };
        let (ani, budi, citra) = (card_of(DEMO_CARDS[0].0)?, card_of(DEMO_CARDS[1].0)?, card_of(DEMO_CARDS[2].0)?);
        let budi_new = card_of(DEMO_REPLACEMENT_UID)?;
        Ok(Self { ani, budi, citra, budi_new })
    }
}

/// Each card's UID, status and balance are the day's figures computed here; the lost card
/// is replaced; the clone's replay is recorded on Citra's card only. Returns the cards in
/// the order of [`DemoCardIds`]' fields.
fn the_cards_end_the_day_as_computed(http: &Http, operator: &str, ids: &DemoCardIds) -> Result<Vec<Value>, Failed> {
    let expected: [(&str, &str, &str, i64); 4] = [
        (
            ids.ani.as_str(),
            DEMO_CARDS[0].0,
            "active",
            DEMO_TOPUPS[0] - DEMO_GROCERY_ANI - DEMO_BUS_ANI - DEMO_FERRY_CAPTURE + DEMO_FERRY_REFUND,
        ),
        (ids.budi.as_str(), DEMO_CARDS[1].0, "replaced", 0),
        (ids.citra.as_str(), DEMO_CARDS[2].0, "active", DEMO_TOPUPS[2] - DEMO_GROCERY_CITRA - DEMO_OFFLINE_CITRA),
        (
            ids.budi_new.as_str(),
            DEMO_REPLACEMENT_UID,
            "active",
            DEMO_TOPUPS[1] - DEMO_PARKING_CAPTURE - DEMO_SELAYAR_BUDI,
        ),
    ];
    let mut cards = Vec::new();
    for (id, uid, status, balance) in expected {
        let card = http.get(operator, &format!("/v1/cards/{id}"))?;
        let found = (card["uid"].as_str(), card["status"].as_str(), card["balance"]["amount"].as_str());
        let want = (Some(uid), Some(status), Some(minor_text(balance)));
        if found != (want.0, want.1, want.2.as_deref()) {
            return Err(format!("card {id}: {card}, expected {want:?}").into());
        }
        cards.push(card);
    }
    // The lost card: replaced by the new one, which belongs to the same holder; it was
    // blocked as lost first (the operator's log says so), and a tap of it was refused.
    let (old, new) = (&cards[1], &cards[3]);
    if old["replaced_by"].as_str() != Some(ids.budi_new.as_str()) || old["holder_id"] != new["holder_id"] {
        return Err(format!("the lost card {old} is not replaced by {new}").into());
    }
    // The clone's replayed tap was refused and recorded; nobody else's was.
    let replays: Vec<u64> = cards.iter().map(|c| c["replays"].as_u64().unwrap_or(u64::MAX)).collect();
    if replays != [0, 0, 1, 0] || cards[2]["suspected_clone"] != true {
        return Err(format!("replays per card {replays:?}, expected [0, 0, 1, 0]: {}", cards[2]).into());
    }
    Ok(cards)
}

/// The journal: every entry of the day, each once, numbered 1, 2, ... as many as the demo
/// reported. Returns the entries.
fn the_journal_holds_the_days_entries_once(http: &Http, auditor: &str, summary: &Value) -> Result<Vec<Value>, Failed> {
    let entries = http.get(auditor, "/v1/audit/entries?limit=1000")?;
    let entries = entries["entries"].as_array().ok_or("no entries")?.clone();
    let kinds: Vec<&str> = entries.iter().map(|e| e["kind"].as_str().unwrap_or("?")).collect();
    let expected_kinds = [
        "transfer", // the agent's float
        "topup",
        "topup",
        "topup",
        "payment",
        "hold",
        "capture",
        "card_replacement",
        "payment",
        "payment", // offline, uploaded
        "hold",    // Ani's island ferry, tapped on
        "capture", // and off
        "payment", // Budi's Selayar ferry, capped
        "payment", // Ani's ride on the offline bus, uploaded
        "refund",  // her ferry ride, now a transfer
    ];
    if kinds != expected_kinds {
        return Err(format!("entry kinds {kinds:?}, expected {expected_kinds:?}").into());
    }
    let seqs: Vec<i64> = entries.iter().filter_map(|e| e["entry_seq"].as_i64()).collect();
    if seqs != (1..=expected_kinds.len() as i64).collect::<Vec<_>>() || summary["entries"] != seqs.len() {
        return Err(format!("entry sequence {seqs:?}; the demo reported {} entries", summary["entries"]).into());
    }
    Ok(entries)
}

/// Each card's entries carry the day's amounts; the offline payment is posted exactly
/// once, for Citra's card.
fn the_entries_carry_the_days_amounts(entries: &[Value], ids: &DemoCardIds, summary: &Value) -> Result<(), Failed> {
    let of_card = |id: &str, kind: &str| -> Vec<String> {
        entries
            .iter()
            .filter(|e| e["card_id"].as_str() == Some(id) && e["kind"] == kind)
            .map(|e| e["amount"]["amount"].as_str().unwrap_or("?").to_string())
            .collect()
    };
    let texts_of = |v: &[i64]| v.iter().map(|m| minor_text(*m)).collect::<Vec<_>>();
    let figures = [
        (of_card(&ids.ani, "payment"), texts_of(&[DEMO_GROCERY_ANI, DEMO_BUS_ANI])),
        (of_card(&ids.ani, "hold"), texts_of(&[DEMO_FERRY_HOLD])),
        (of_card(&ids.ani, "capture"), texts_of(&[DEMO_FERRY_CAPTURE])),
        (of_card(&ids.ani, "refund"), texts_of(&[DEMO_FERRY_REFUND])),
        (of_card(&ids.budi_new, "payment"), texts_of(&[DEMO_SELAYAR_BUDI])),
        (of_card(&ids.budi, "hold"), texts_of(&[DEMO_PARKING_HOLD])),
        (of_card(&ids.budi_new, "card_replacement"), texts_of(&[DEMO_TOPUPS[1] - DEMO_PARKING_CAPTURE])),
        (of_card(&ids.citra, "payment"), texts_of(&[DEMO_GROCERY_CITRA, DEMO_OFFLINE_CITRA])),
    ];
    for (found, want) in figures {
        if found != want {
            return Err(format!("entry amounts {found:?}, expected {want:?}").into());
        }
    }
    // The offline payment: posted exactly once, for Citra's card.
    let offline: Vec<&Value> =
        entries.iter().filter(|e| e["memo"].as_str().is_some_and(|m| m.starts_with("offline"))).collect();
    let posted_once = offline.len() == 1
        && offline[0]["card_id"].as_str() == Some(ids.citra.as_str())
        && offline[0]["amount"]["amount"].as_str() == Some(minor_text(DEMO_OFFLINE_CITRA).as_str());
    if !posted_once || summary["offline"]["posted"] != 1 {
        return Err(format!("offline entries {offline:?}, summary {}", summary["offline"]).into());
    }
    Ok(())
}

/// The access log: the clinic let Ani in with queue number 1; the library refused her.
fn the_access_log_lets_ani_into_the_clinic_only(http: &Http, auditor: &str, ids: &DemoCardIds) -> Result<(), Failed> {
    let log = http.get(auditor, "/v1/audit/access-log?limit=100")?;
    let decisions: Vec<Decision<'_>> = log["decisions"]
        .as_array()
        .ok_or("no decisions")?
        .iter()
        .map(|d| (d["card_id"].as_str(), d["decision"].as_str(), d["reason"].as_str(), d["queue_number"].as_i64()))
        .collect();
    let want = vec![
        (Some(ids.ani.as_str()), Some("allow"), Some("entitled"), Some(1)),
        (Some(ids.ani.as_str()), Some("deny"), Some("not_entitled"), None),
    ];
    if decisions != want {
        return Err(format!("access log {decisions:?}, expected {want:?}").into());
    }
    Ok(())
}

/// The auditor's check, as a separate process against the served installation: the log of
/// `entries` entries verifies with the key the demo saved, as the demo's summary says.
fn the_auditor_verifies_the_served_log(
    http: &Http,
    data: &Path,
    ca_file: &Path,
    auditor: &str,
    entries: usize,
    summary: &Value,
) -> Result<(), Failed> {
    let verifier_file = data.join("checkpoint-verifier.pub");
    let public_key = http.get_text("/v1/audit/public-key")?;
    if public_key.trim() != read(&verifier_file).trim() {
        return Err(format!("the server's verifier key {public_key:?} is not the one the demo saved").into());
    }
    let url = http.base.clone();
    let output = Command::new(env!("CARGO_BIN_EXE_kartu"))
        .args(["audit", "verify", "--url", &url, "--token", auditor, "--public-key"])
        .arg(&verifier_file)
        .arg("--ca-file")
        .arg(ca_file)
        .stdin(Stdio::null())
        .output()?;
    let (stdout, stderr) = texts(&output);
    if !output.status.success() || !stderr.contains("the log verifies") {
        return Err(format!("kartu audit verify --url gave {}: {stdout} {stderr}", output.status).into());
    }
    let report: Value = serde_json::from_str(&stdout)?;
    if report["entries"] != entries || report["leaves"] != summary["verify"]["report"]["leaves"] {
        return Err(format!("audit verify reported {report}; the demo's summary {}", summary["verify"]).into());
    }
    let codes = (summary["lost_card_tap"]["code"].as_str(), summary["replay"]["code"].as_str());
    if codes != (Some("card_blocked"), Some("card_replay")) {
        return Err(format!("the demo's summary says {codes:?}").into());
    }
    if summary["verify"]["ok"] != true || summary["trial_balance_balanced"] != true {
        return Err(format!("the demo's summary: {summary}").into());
    }
    Ok(())
}

/// A CA and a server certificate for `localhost` (rcgen) in `dir`: (CA file, certificate,
/// key with mode 0600).
fn make_tls(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf), Failed> {
    use std::os::unix::fs::PermissionsExt;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Kartu demo test CA");
    let ca_key = rcgen::KeyPair::generate()?;
    let ca_pem = ca_params.self_signed(&ca_key)?.pem();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?.signed_by(&key, &issuer)?;
    let (ca_file, cert_file, key_file) = (dir.join("ca.pem"), dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&ca_file, ca_pem)?;
    std::fs::write(&cert_file, cert.pem())?;
    std::fs::write(&key_file, key.serialize_pem())?;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))?;
    Ok((ca_file, cert_file, key_file))
}

/// An access decision as the test compares it: card, decision, reason, queue number.
type Decision<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, Option<i64>);

/// Minor units as the API writes amounts: 4550000 → "45500.00".
/// Taps of each kind in the tap benchmark trial, and a generous bound on each (a debug
/// build on a busy machine; `make bench` holds the release build to 100 ms).
const BENCH_TAPS: usize = 5;
const BENCH_TAP_MS_MAX: f64 = 1000.0;

fn demo_tap_bench(outside: Option<&str>) -> Result<(), Failed> {
    if let Some(reason) = outside {
        return Err(format!("not inside a private namespace: {reason}").into());
    }
    let directory = tempfile::tempdir()?;
    let result_path = directory.path().join("taps.json");
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_kartu"))
        .args(["demo", "--tap-bench", &BENCH_TAPS.to_string(), "--json"])
        .arg(&result_path)
        .stdin(Stdio::null())
        .output()?;
    let (stdout, stderr) = texts(&output);
    if !output.status.success() {
        return Err(format!("kartu demo --tap-bench failed ({}):\n{stdout}\n{stderr}", output.status).into());
    }
    eprintln!("card_e2e: kartu demo --tap-bench {BENCH_TAPS} took {} ms", started.elapsed().as_millis());
    let result: Value = serde_json::from_str(&read(&result_path))?;
    let kinds = [("pos", "approved"), ("gate", "allowed"), ("validator", "opened"), ("validator_offline", "opened")];
    for (kind, flag) in kinds {
        let taps = result[kind].as_array().ok_or_else(|| format!("no {kind} taps: {result}"))?;
        if taps.len() != BENCH_TAPS {
            return Err(format!("{} {kind} taps, {BENCH_TAPS} made: {result}", taps.len()).into());
        }
        for tap in taps {
            let ms = |f: &str| tap[f].as_f64().filter(|v| *v > 0.0 && *v < BENCH_TAP_MS_MAX);
            let (Some(total), Some(card), Some(http)) = (ms("ms"), ms("card_ms"), ms("http_ms")) else {
                return Err(format!("a {kind} tap's times are not in (0, {BENCH_TAP_MS_MAX}) ms: {tap}").into());
            };
            if tap[flag] != true || (card + http - total).abs() > 0.01 {
                return Err(format!("a {kind} tap is not {flag}, or its parts do not add up: {tap}").into());
            }
        }
    }
    let paid: Vec<i64> =
        result["pos"].as_array().into_iter().flatten().filter_map(|t| t["entry_seq"].as_i64()).collect();
    let distinct: std::collections::BTreeSet<i64> = paid.iter().copied().collect();
    let spent = result["balance_before_minor"].as_i64().zip(result["balance_after_minor"].as_i64()).map(|(b, a)| b - a);
    // The online bus: Rp 35,00 flat, and a journey within 60 minutes at most Rp 50,00
    // (docs/TRANSIT.md's table), whatever the number of boardings above one.
    let fares = (3_500 * BENCH_TAPS as i64).min(5_000);
    if distinct.len() != BENCH_TAPS
        || spent != Some(100_000 * BENCH_TAPS as i64 + fares)
        || result["fares_minor"] != fares
    {
        return Err(format!(
            "the payments are not {BENCH_TAPS} receipts of Rp 1,000.00 each and Rp {fares} of fares: {result}"
        )
        .into());
    }
    // Bad input: no taps at all is refused before anything starts.
    let output = kartu(&["demo", "--tap-bench", "0"])?;
    if output.status.success() || !texts(&output).1.contains("--tap-bench") {
        return Err(format!("kartu demo --tap-bench 0 gave {}", output.status).into());
    }
    Ok(())
}

fn minor_text(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

/// A genuine tap of card `uid` with read counter `counter`, as the card would mirror it.
fn fresh_tap(keys: &KeyFile, uid: &str, counter: u32) -> Result<Value, Failed> {
    fresh_tap_at(keys, keys.newest().version(), uid, counter)
}

/// [`fresh_tap`] with the keys of key version `version`.
fn fresh_tap_at(keys: &KeyFile, version: u8, uid: &str, counter: u32) -> Result<Value, Failed> {
    let set = keys.version(version).ok_or("no such key version")?;
    let uid = card::CardUid::from_hex(uid).map_err(|error| error.to_string())?;
    let counter = card::ReadCounter::new(counter).ok_or("counter out of range")?;
    let file_key =
        card::diversify_card_key(set.sdm_file_read_master_key(), &uid, 2, keys.system_identifier().as_bytes())
            .map_err(|error| error.to_string())?;
    let picc = card::sun::encrypt_picc_data(set.sdm_meta_read_key(), &uid, counter, [0; 5]);
    let mac = card::sun::sdm_mac(&file_key, &uid, counter, &[]);
    Ok(json!({"picc_data": hex::encode_upper(picc), "cmac": hex::encode_upper(mac)}))
}

/// `kartu serve --data-dir DIR` on a free port; returns it and its base URL.
fn serve(data: &Path) -> Result<(Child, String), Failed> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kartu"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (sender, receiver) = std::sync::mpsc::channel();
    // Reads the server's stderr to the end, so that it never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("kartu: serving on ") {
                let _ = sender.send(url.trim().to_string());
            }
        }
    });
    match receiver.recv_timeout(SERVE_TIMEOUT) {
        Ok(url) => Ok((child, url)),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("kartu serve did not start within {SERVE_TIMEOUT:?}").into())
        }
    }
}

struct Http {
    agent: ureq::Agent,
    base: String,
}

impl Http {
    fn get(&self, token: &str, path: &str) -> Result<Value, Failed> {
        let mut response = self
            .agent
            .get(&format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {token}"))
            .call()?;
        let status = response.status();
        let body: Value = response.body_mut().read_json()?;
        if !status.is_success() {
            return Err(format!("GET {path}: {status}: {body}").into());
        }
        Ok(body)
    }

    fn post(&self, token: &str, path: &str, key: &str, body: &Value) -> Result<(u16, Value), Failed> {
        let mut response = self
            .agent
            .post(&format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {token}"))
            .header("Idempotency-Key", key)
            .send_json(body)?;
        let status = response.status().as_u16();
        Ok((status, response.body_mut().read_json()?))
    }

    fn get_text(&self, path: &str) -> Result<String, Failed> {
        let mut response = self.agent.get(&format!("{}{path}", self.base)).call()?;
        Ok(response.body_mut().read_to_string()?)
    }
}

// ---------------------------------------------------------------------------------------
// The world: pcscd, `kartu card sim` in slot 0, the key file, the personalised card.

struct World {
    sim: KillOnDrop,
    sim_stderr: PathBuf,
    sim_uid: String,
    control_socket: PathBuf,
    terminal: Terminal,
    keys_path: PathBuf,
    key_file: KeyFile,
    /// `kartu card personalize`'s stdout and its JSON.
    personalize_output: String,
    personalized: Value,
    last_counter: u64,
    pcscd: Pcscd,
    directory: tempfile::TempDir,
}

impl World {
    fn start() -> Result<Self, String> {
        let directory = tempfile::tempdir().map_err(|error| format!("tempdir: {error}"))?;
        let pcscd = Pcscd::start(directory.path(), READER_NAME)?;
        let terminal = Terminal::establish().map_err(|error| format!("PC/SC: {error}"))?;
        let keys_path = directory.path().join("keys.toml");
        let key_file = write_key_file(&keys_path, SYSTEM_IDENTIFIER)?;
        let control_socket = directory.path().join("sim.sock");
        let partial = Partial { directory: &directory, pcscd: &pcscd };
        let (sim, sim_stderr, sim_uid) = start_sim_in(&partial, 0, None, &control_socket, "card")?;
        let sim = KillOnDrop(sim);
        terminal
            .wait_for_card(Some(&pcscd.reader_name(0)), CARD_TIMEOUT)
            .map_err(|error| format!("the virtual card did not show up: {error}"))?;
        let mut world = Self {
            sim,
            sim_stderr,
            sim_uid,
            control_socket,
            terminal,
            keys_path,
            key_file,
            personalize_output: String::new(),
            personalized: Value::Null,
            last_counter: 0,
            pcscd,
            directory,
        };
        let output = world.personalize(&world.keys_path.clone(), 0).map_err(|error| format!("{error:?}"))?;
        let (stdout, stderr) = texts(&output);
        if !output.status.success() {
            return Err(format!("kartu card personalize failed ({}): {stdout} {stderr}", output.status));
        }
        world.personalized =
            serde_json::from_str(stdout.trim()).map_err(|error| format!("personalize printed {stdout:?}: {error}"))?;
        world.last_counter = world.personalized["counter"].as_u64().unwrap_or(0);
        world.personalize_output = format!("{stdout}{stderr}");
        Ok(world)
    }

    /// Puts the card back if a trial took it out.
    fn ensure_card_present(&mut self) -> Result<(), Failed> {
        if let Ok(Some(status)) = self.sim.0.try_wait() {
            return Err(format!("kartu card sim exited ({status}): {}", read(&self.sim_stderr)).into());
        }
        cardsim::send_command(&self.control_socket, "insert")?;
        self.terminal.wait_for_card(Some(&self.pcscd.reader_name(0)), CARD_TIMEOUT)?;
        Ok(())
    }

    fn keys_arg(&self) -> String {
        self.keys_path.display().to_string()
    }

    /// `kartu card personalize` on slot `slot`.
    fn personalize(&self, keys: &Path, slot: u16) -> Result<Output, Failed> {
        self.personalize_at(keys, slot, None)
    }

    /// `kartu card personalize` on slot `slot`, with `--key-version` when given.
    fn personalize_at(&self, keys: &Path, slot: u16, version: Option<&str>) -> Result<Output, Failed> {
        let reader = self.pcscd.reader_name(slot);
        let keys = keys.display().to_string();
        let mut args = vec!["card", "personalize", "--keys", &keys, "--host", HOST, "--reader", &reader];
        args.extend(["--timeout-secs", PERSONALIZE_TIMEOUT_SECS]);
        if let Some(v) = version {
            args.extend(["--key-version", v]);
        }
        kartu(&args)
    }

    /// One tap as a terminal reads it: `picc_data` and `cmac` from the card's URL.
    fn read_tap(&self, slot: u16) -> Result<(String, String), Failed> {
        let mut connection = self.terminal.connect(&self.pcscd.reader_name(slot))?;
        let url = connection.read_sun();
        connection.disconnect()?;
        let url = url?;
        if url.host() != HOST {
            return Err(format!("the card sends taps to {}", url.host()).into());
        }
        Ok((url.picc_data_hex(), url.cmac_hex()))
    }

    /// `kartu card inspect-tap --keys` on a tap that must verify.
    fn inspect_tap(&self, picc_data: &str, cmac: &str) -> Result<Value, Failed> {
        let output =
            kartu(&["card", "inspect-tap", "--keys", &self.keys_arg(), "--picc-data", picc_data, "--cmac", cmac])?;
        let (stdout, stderr) = texts(&output);
        if !output.status.success() {
            return Err(format!("inspect-tap failed ({}): {stdout} {stderr}", output.status).into());
        }
        Ok(serde_json::from_str(stdout.trim())?)
    }

    /// None of the key file's master keys appears in `text`, in either case.
    fn check_no_secret(&self, text: &str) -> Result<(), Failed> {
        let upper = text.to_uppercase();
        for set in self.key_file.versions() {
            for key in [Some(set.sdm_meta_read_key()), Some(set.sdm_file_read_master_key()), set.app_master_key()]
                .into_iter()
                .flatten()
            {
                if upper.contains(&hex::encode_upper(key.expose_secret())) {
                    return Err(format!("a master key was printed: {text}").into());
                }
            }
        }
        Ok(())
    }
}

/// What starting a simulator needs before the world is complete.
struct Partial<'a> {
    directory: &'a tempfile::TempDir,
    pcscd: &'a Pcscd,
}

fn start_sim(
    world: &World,
    slot: u16,
    uid: Option<&str>,
    socket: &Path,
    name: &str,
) -> Result<(Child, PathBuf, String), String> {
    start_sim_in(&Partial { directory: &world.directory, pcscd: &world.pcscd }, slot, uid, socket, name)
}

/// Starts `kartu card sim` on vpcd slot `slot` and reads the JSON line it prints when the
/// card is ready; returns the process, its stderr file and the card's UID.
fn start_sim_in(
    world: &Partial<'_>,
    slot: u16,
    uid: Option<&str>,
    socket: &Path,
    name: &str,
) -> Result<(Child, PathBuf, String), String> {
    let state = world.directory.path().join(format!("{name}.json"));
    let stderr_path = world.directory.path().join(format!("{name}.stderr"));
    let stderr = std::fs::File::create(&stderr_path).map_err(|error| format!("sim stderr: {error}"))?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_kartu"));
    command.args(["card", "sim", "--vpcd", &world.pcscd.vpcd_address(slot)]).arg("--state").arg(&state);
    command.arg("--control-socket").arg(socket);
    if let Some(uid) = uid {
        command.args(["--uid", uid]);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|error| format!("cannot start kartu card sim: {error}"))?;
    let line = child.stdout.take().map(first_line).unwrap_or_default();
    let ready: Value = match serde_json::from_str(line.trim()) {
        Ok(ready) => ready,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("kartu card sim printed {line:?}: {}", read(&stderr_path)));
        }
    };
    let expected_state = state.display().to_string();
    match (ready["uid"].as_str(), ready["state"].as_str()) {
        (Some(uid), Some(state)) if uid.len() == 14 && state == expected_state => {
            Ok((child, stderr_path, uid.to_string()))
        }
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("kartu card sim printed {ready}"))
        }
    }
}

/// The first line a child prints (empty when it exits first).
fn first_line(stdout: ChildStdout) -> String {
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    line
}

/// A new key file (version 1, random keys) for `system_identifier`, written to `path`.
fn write_key_file(path: &Path, system_identifier: &str) -> Result<KeyFile, String> {
    let mut random = [0_u8; GENERATE_RANDOM_LEN];
    ring::rand::SystemRandom::new().fill(&mut random).map_err(|_| "no random numbers".to_string())?;
    let sysid = SystemIdentifier::parse(system_identifier).map_err(|error| error.to_string())?;
    let key_file = KeyFile::generate(sysid, &random);
    std::fs::write(path, key_file.to_toml().as_bytes())
        .map_err(|error| format!("write {}: {error}", path.display()))?;
    Ok(key_file)
}

fn kartu(args: &[&str]) -> Result<Output, Failed> {
    Ok(Command::new(env!("CARGO_BIN_EXE_kartu")).args(args).stdin(Stdio::null()).output()?)
}

fn texts(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A child process killed (and reaped) when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
