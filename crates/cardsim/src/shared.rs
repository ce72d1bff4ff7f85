//! What the simulator's threads share: the card, whether it is in the field, the tear to
//! come, and the errors of the simulator. The vpcd connection (`vpcd`) and the control
//! socket (`control`) both work on a [`Shared`]; neither imports the other's internals.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use card::CardUid;

use crate::ntag::VirtualCard;
use crate::state::StateError;

/// Why the simulator could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The vpcd address is not `host:port` or does not resolve.
    #[error("vpcd address {address:?} does not resolve to a socket address")]
    Address {
        /// The address given.
        address: String,
    },
    /// The card state could not be loaded or created.
    #[error(transparent)]
    State(#[from] StateError),
    /// The control socket could not be opened or used.
    #[error("control socket {path}: {source}")]
    Control {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The control socket answered with an error.
    #[error("the simulator refused the control command: {0}")]
    ControlRefused(String),
    /// A simulator thread could not be started or panicked.
    #[error("simulator thread: {0}")]
    Thread(String),
}

/// When the next tear happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TearTrigger {
    /// At the next command APDU.
    NextCommand,
    /// At the next command APDU with this INS byte (e.g. `B0`, ISOReadBinary).
    Instruction(u8),
    /// At the n-th command APDU from now (1: the next one, as [`TearTrigger::NextCommand`]);
    /// the number counts down as commands arrive, so a test can tear a multi-command
    /// operation at each of its steps in turn.
    AfterCommands(u32),
}

/// A snapshot of the simulator for status displays and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimStatus {
    /// The card's UID.
    pub uid: CardUid,
    /// The card's SDM read counter.
    pub sdm_read_counter: u32,
    /// Whether the card is in the field (it then connects to vpcd).
    pub inserted: bool,
    /// Whether a connection to vpcd is open.
    pub connected: bool,
    /// A tear waiting to happen.
    pub tear: Option<TearTrigger>,
    /// Connections made to vpcd so far.
    pub connections: u64,
    /// Tears performed so far.
    pub tears: u64,
    /// The INS byte of the last command torn (which step of an operation a tear hit).
    pub last_torn: Option<u8>,
}

/// What the vpcd connection and the controls share, behind [`Shared::control`].
#[derive(Debug)]
pub(crate) struct Control {
    pub(crate) inserted: bool,
    pub(crate) shutdown: bool,
    pub(crate) connected: bool,
    pub(crate) tear: Option<TearTrigger>,
    pub(crate) connections: u64,
    pub(crate) tears: u64,
    pub(crate) last_torn: Option<u8>,
    /// When the last connection ended.
    pub(crate) absent_since: Option<Instant>,
}

/// The simulator's state, shared by the vpcd connection thread, the [`crate::SimHandle`]
/// and the control socket.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) control: Mutex<Control>,
    pub(crate) changed: Condvar,
    /// A clone of the open connection, so that `remove` can close it from outside.
    pub(crate) stream: Mutex<Option<TcpStream>>,
    pub(crate) card: Mutex<VirtualCard>,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves plain data behind; keep going with it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn update(&self, change: impl FnOnce(&mut Control)) {
        change(&mut lock(&self.control));
        self.changed.notify_all();
    }

    pub(crate) fn status(&self) -> SimStatus {
        let (uid, sdm_read_counter) = {
            let card = lock(&self.card);
            (card.state().uid(), card.state().sdm_read_counter())
        };
        let control = lock(&self.control);
        SimStatus {
            uid,
            sdm_read_counter,
            inserted: control.inserted,
            connected: control.connected,
            tear: control.tear,
            connections: control.connections,
            tears: control.tears,
            last_torn: control.last_torn,
        }
    }

    pub(crate) fn set_tear(&self, trigger: TearTrigger) {
        self.update(|control| control.tear = Some(trigger));
    }

    pub(crate) fn remove(&self) {
        let mut control = lock(&self.control);
        control.inserted = false;
        if let Some(stream) = lock(&self.stream).as_ref() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        drop(control);
        self.changed.notify_all();
    }

    pub(crate) fn insert(&self) {
        self.update(|control| control.inserted = true);
    }

    pub(crate) fn request_shutdown(&self) {
        self.update(|control| control.shutdown = true);
        if let Some(stream) = lock(&self.stream).as_ref() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    pub(crate) fn is_shutdown(&self) -> bool {
        lock(&self.control).shutdown
    }

    /// Waits until `done` holds or `timeout` passes (`Duration::MAX`: no limit); returns
    /// whether it holds.
    pub(crate) fn wait_for(&self, timeout: Duration, done: impl Fn(&Control) -> bool) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut control = lock(&self.control);
        loop {
            if done(&control) {
                return true;
            }
            control = match deadline {
                None => self.changed.wait(control).unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return false;
                    }
                    self.changed.wait_timeout(control, deadline - now).unwrap_or_else(PoisonError::into_inner).0
                }
            };
        }
    }
}
