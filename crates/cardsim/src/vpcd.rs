//! The connection to pcscd's vpcd driver, and the handle that controls the simulator.
//!
//! vpcd (Debian package `vsmartcard-vpcd`) listens on a TCP port per reader slot; the
//! virtual card connects to it as a client. Every message in both directions is a 2-byte
//! big-endian length followed by the payload. vpcd sends 1-byte control codes (`00` power
//! off, `01` power on, `02` reset, `04` get ATR — the only one answered, with the ATR) and
//! longer payloads that are command APDUs, answered with the response APDU.
//!
//! A card "in the field" is a card connected to vpcd. [`SimHandle::remove`] closes the
//! connection and keeps the card away until [`SimHandle::insert`]; a tear
//! ([`SimHandle::tear_next_command`], [`SimHandle::tear_on_instruction`]) lets the card
//! process the command (a counter goes up, a write happens) and then drops the
//! connection without answering, as a card pulled out of the field mid-command. A torn
//! card stays removed until it is inserted again.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use card::CardUid;

use crate::control::ControlServer;
use crate::ntag::{VirtualCard, ATR};
use crate::shared::{lock, Control, Shared};
pub use crate::shared::{SimError, SimStatus, TearTrigger};
use crate::state::StateStore;

/// vpcd's control code: power off.
pub const VPCD_CTRL_OFF: u8 = 0x00;
/// vpcd's control code: power on.
pub const VPCD_CTRL_ON: u8 = 0x01;
/// vpcd's control code: reset.
pub const VPCD_CTRL_RESET: u8 = 0x02;
/// vpcd's control code: get the ATR.
pub const VPCD_CTRL_ATR: u8 = 0x04;

/// Default port of vpcd's first slot (`CHANNELID 0x8C7B` in Debian's reader.conf).
pub const VPCD_DEFAULT_PORT: u16 = 0x8C7B;

/// Largest message vpcd can send (2-byte length).
pub const VPCD_MESSAGE_MAX: usize = u16::MAX as usize;

/// How long one connection attempt to vpcd may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What starts the simulator; the arguments of `kartu card sim`.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// vpcd's `host:port`, e.g. `127.0.0.1:35963`.
    pub vpcd_address: String,
    /// The state file (created as a factory card when missing).
    pub state_path: PathBuf,
    /// The UID of a new card (random when `None`); must match an existing state file.
    pub uid: Option<CardUid>,
    /// A Unix socket path for control by another process (see [`crate::control`]).
    pub control_socket: Option<PathBuf>,
    /// Pause between connection attempts while vpcd does not accept.
    pub reconnect_interval: Duration,
    /// How long a card that left the field (removed, torn, or disconnected by vpcd) stays
    /// away at least. pcscd learns that a vpcd card is gone only by polling it, every
    /// 400 ms; a card back sooner is never seen as removed, and after a failed command
    /// pcscd then shows the reader as empty although the card is there.
    pub min_absence: Duration,
}

/// Default of [`SimConfig::min_absence`]: longer than pcscd's 400 ms polling interval.
pub const MIN_ABSENCE_DEFAULT: Duration = Duration::from_millis(500);

impl SimConfig {
    /// A configuration with a random UID, no control socket and a 50 ms reconnect interval.
    #[must_use]
    pub fn new(vpcd_address: impl Into<String>, state_path: impl Into<PathBuf>) -> Self {
        Self {
            vpcd_address: vpcd_address.into(),
            state_path: state_path.into(),
            uid: None,
            control_socket: None,
            reconnect_interval: Duration::from_millis(50),
            min_absence: MIN_ABSENCE_DEFAULT,
        }
    }
}

/// A running simulator. Dropping the handle stops it.
#[derive(Debug)]
pub struct SimHandle {
    shared: Arc<Shared>,
    card_thread: Option<JoinHandle<()>>,
    control_server: Option<ControlServer>,
}

/// Starts the simulator in the background: loads or creates the card, connects to vpcd
/// (retrying until vpcd listens) and, if configured, opens the control socket.
///
/// # Errors
/// [`SimError`] for an address that does not resolve, a state file that cannot be used, a
/// control socket that cannot be opened, or a thread that cannot start.
pub fn spawn(config: SimConfig) -> Result<SimHandle, SimError> {
    let address = resolve(&config.vpcd_address)?;
    let card = VirtualCard::open(StateStore::new(&config.state_path), config.uid)?;
    tracing::info!(card.uid = %card.state().uid(), vpcd = %address, "virtual card ready");
    let shared = Arc::new(Shared {
        control: Mutex::new(Control {
            inserted: true,
            shutdown: false,
            connected: false,
            tear: None,
            connections: 0,
            tears: 0,
            last_torn: None,
            absent_since: None,
        }),
        changed: Condvar::new(),
        stream: Mutex::new(None),
        card: Mutex::new(card),
    });
    let control_server = match &config.control_socket {
        Some(path) => Some(ControlServer::start(path.clone(), Arc::clone(&shared))?),
        None => None,
    };
    let thread_shared = Arc::clone(&shared);
    let timing = Timing { reconnect_interval: config.reconnect_interval, min_absence: config.min_absence };
    let card_thread = std::thread::Builder::new()
        .name("cardsim-vpcd".to_string())
        .spawn(move || connection_loop(&thread_shared, address, timing))
        .map_err(|error| SimError::Thread(error.to_string()))?;
    Ok(SimHandle { shared, card_thread: Some(card_thread), control_server })
}

/// Runs the simulator in the foreground until it is told to shut down through the control
/// socket (`shutdown`); without a control socket it runs until the process ends.
/// `kartu card sim` does the same in two steps ([`spawn`], then
/// [`SimHandle::run_until_shutdown`]) so as to print the card's UID first.
///
/// # Errors
/// As [`spawn`].
pub fn run(config: SimConfig) -> Result<(), SimError> {
    spawn(config)?.run_until_shutdown()
}

impl SimHandle {
    /// The state now: UID, counter, in the field or not, connected or not.
    #[must_use]
    pub fn status(&self) -> SimStatus {
        self.shared.status()
    }

    /// The card's UID.
    #[must_use]
    pub fn uid(&self) -> CardUid {
        self.status().uid
    }

    /// The card's SDM read counter.
    #[must_use]
    pub fn sdm_read_counter(&self) -> u32 {
        self.status().sdm_read_counter
    }

    /// The card processes the next command APDU, then drops the connection without
    /// answering and stays removed until [`SimHandle::insert`].
    pub fn tear_next_command(&self) {
        self.shared.set_tear(TearTrigger::NextCommand);
    }

    /// As [`SimHandle::tear_next_command`], at the next command with INS `ins` (for
    /// example `0xB0`, ISOReadBinary: a tear in the middle of a tap).
    pub fn tear_on_instruction(&self, ins: u8) {
        self.shared.set_tear(TearTrigger::Instruction(ins));
    }

    /// As [`SimHandle::tear_next_command`], at the `n`-th command APDU from now (`n` ≥ 1;
    /// 0 is taken as 1).
    pub fn tear_after_commands(&self, n: u32) {
        self.shared.set_tear(TearTrigger::AfterCommands(n.max(1)));
    }

    /// Takes the card out of the field: closes the connection to vpcd and stays away.
    pub fn remove(&self) {
        self.shared.remove();
    }

    /// Puts the card (back) into the field: it connects to vpcd again.
    pub fn insert(&self) {
        self.shared.insert();
    }

    /// Waits until the card is connected to vpcd; returns whether it is.
    #[must_use]
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        self.shared.wait_for(timeout, |control| control.connected)
    }

    /// Waits until the card is disconnected from vpcd; returns whether it is.
    #[must_use]
    pub fn wait_disconnected(&self, timeout: Duration) -> bool {
        self.shared.wait_for(timeout, |control| !control.connected)
    }

    /// Waits until the simulator is told to shut down through the control socket
    /// (`shutdown`), then stops it: [`run`] for a caller that first wants the handle (to
    /// show the UID, say). Without a control socket it waits until the process ends.
    ///
    /// # Errors
    /// [`SimError::Thread`] when a simulator thread panicked.
    pub fn run_until_shutdown(self) -> Result<(), SimError> {
        self.shared.wait_for(Duration::MAX, |control| control.shutdown);
        self.shutdown()
    }

    /// Stops the simulator and waits for its threads.
    ///
    /// # Errors
    /// [`SimError::Thread`] when a simulator thread panicked.
    pub fn shutdown(mut self) -> Result<(), SimError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), SimError> {
        self.shared.request_shutdown();
        let mut result = Ok(());
        if let Some(thread) = self.card_thread.take() {
            if thread.join().is_err() {
                result = Err(SimError::Thread("the vpcd connection thread panicked".to_string()));
            }
        }
        if let Some(server) = self.control_server.take() {
            server.stop();
        }
        result
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn resolve(address: &str) -> Result<SocketAddr, SimError> {
    address
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .ok_or_else(|| SimError::Address { address: address.to_string() })
}

#[derive(Debug, Clone, Copy)]
struct Timing {
    reconnect_interval: Duration,
    min_absence: Duration,
}

/// Connects whenever the card is in the field, serves the connection, and starts over.
fn connection_loop(shared: &Shared, address: SocketAddr, timing: Timing) {
    loop {
        shared.wait_for(Duration::MAX, |control| control.shutdown || control.inserted);
        if shared.is_shutdown() {
            return;
        }
        let absent_since = lock(&shared.control).absent_since;
        let away_for = absent_since.map_or(Duration::MAX, |since| since.elapsed());
        if away_for < timing.min_absence {
            shared.wait_for(timing.min_absence - away_for, |control| control.shutdown || !control.inserted);
            continue;
        }
        let stream = match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::trace!(%error, "vpcd does not accept yet");
                shared.wait_for(timing.reconnect_interval, |control| control.shutdown || !control.inserted);
                continue;
            }
        };
        if !register(shared, &stream) {
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        match serve(shared, stream) {
            ConnectionEnd::Closed(error) => tracing::debug!(%error, "vpcd connection closed"),
            ConnectionEnd::Torn => tracing::debug!("vpcd connection torn"),
        }
        *lock(&shared.stream) = None;
        lock(&shared.card).power_off();
        shared.update(|control| {
            control.connected = false;
            control.absent_since = Some(Instant::now());
        });
    }
}

/// Records a new connection, unless the card was removed or the simulator stopped while
/// connecting (checked under the control lock, which `remove` also holds).
fn register(shared: &Shared, stream: &TcpStream) -> bool {
    let mut control = lock(&shared.control);
    if control.shutdown || !control.inserted {
        return false;
    }
    let Ok(clone) = stream.try_clone() else {
        return false;
    };
    let _ = stream.set_nodelay(true);
    *lock(&shared.stream) = Some(clone);
    control.connected = true;
    control.connections += 1;
    drop(control);
    shared.changed.notify_all();
    true
}

/// Why a connection ended.
#[derive(Debug)]
enum ConnectionEnd {
    /// vpcd closed it or it failed (also after `remove`, which shuts it down).
    Closed(io::Error),
    /// The simulator tore it on purpose.
    Torn,
}

fn serve(shared: &Shared, mut stream: TcpStream) -> ConnectionEnd {
    loop {
        acknowledge_at_once(&stream);
        let message = match read_message(&mut stream) {
            Ok(message) => message,
            Err(error) => return ConnectionEnd::Closed(error),
        };
        let reply = match message.as_slice() {
            [] => None,
            [code] => control_code(shared, *code),
            apdu => {
                let tear = take_tear(shared, apdu);
                let response = lock(&shared.card).process(apdu);
                if tear {
                    tracing::info!(ins = ?apdu.get(1), "tearing: the card leaves the field before answering");
                    let _ = stream.shutdown(Shutdown::Both);
                    return ConnectionEnd::Torn;
                }
                Some(response)
            }
        };
        if let Some(reply) = reply {
            if let Err(error) = write_message(&mut stream, &reply) {
                return ConnectionEnd::Closed(error);
            }
        }
    }
}

/// vpcd writes the 2-byte length and the payload of a message with two `send` calls and
/// does not disable Nagle's algorithm, so the payload waits until the length is
/// acknowledged; with delayed ACKs that costs about 40 ms per message. Asking the kernel to
/// acknowledge at once (TCP_QUICKACK, which it resets after a while, hence before every
/// read) brings an APDU round trip back to well under a millisecond.
fn acknowledge_at_once(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    {
        let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

fn control_code(shared: &Shared, code: u8) -> Option<Vec<u8>> {
    match code {
        VPCD_CTRL_OFF => lock(&shared.card).power_off(),
        VPCD_CTRL_ON => lock(&shared.card).power_on(),
        VPCD_CTRL_RESET => lock(&shared.card).reset(),
        VPCD_CTRL_ATR => return Some(ATR.to_vec()),
        other => tracing::warn!(code = other, "unknown vpcd control code ignored"),
    }
    None
}

/// Whether this APDU is torn; a tear that fires is consumed and removes the card.
fn take_tear(shared: &Shared, apdu: &[u8]) -> bool {
    let mut control = lock(&shared.control);
    let fires = match control.tear {
        Some(TearTrigger::NextCommand) => true,
        Some(TearTrigger::Instruction(ins)) => apdu.get(1) == Some(&ins),
        Some(TearTrigger::AfterCommands(n)) if n > 1 => {
            control.tear = Some(TearTrigger::AfterCommands(n - 1));
            false
        }
        Some(TearTrigger::AfterCommands(_)) => true,
        None => false,
    };
    if fires {
        control.tear = None;
        control.inserted = false;
        control.tears += 1;
        control.last_torn = apdu.get(1).copied();
    }
    fires
}

/// Reads one length-prefixed message.
///
/// # Errors
/// The I/O error, `UnexpectedEof` when vpcd closed the connection.
pub fn read_message(stream: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut length = [0_u8; 2];
    stream.read_exact(&mut length)?;
    let mut message = vec![0; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut message)?;
    Ok(message)
}

/// Writes one length-prefixed message.
///
/// # Errors
/// The I/O error; `InvalidInput` for a message above 65535 bytes.
pub fn write_message(stream: &mut impl Write, message: &[u8]) -> io::Result<()> {
    let length = u16::try_from(message.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message longer than 65535 bytes"))?;
    let mut frame = Vec::with_capacity(2 + message.len());
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(message);
    stream.write_all(&frame)?;
    stream.flush()
}
