//! PC/SC access over the `pcsc` crate: readers, waiting for cards (hot-plug aware),
//! connections and transactions.

use std::ffi::{CStr, CString};
use std::time::{Duration, Instant};

use card::apdu::{CommandApdu, ResponseApdu};
use card::CardUid;
use pcsc::{Context, Disposition, Protocols, ReaderState, Scope, ShareMode, State, PNP_NOTIFICATION};

use crate::error::{from_pcsc, ReaderError, RemovalCause};
use crate::tap::{read_sun, read_uid, TapUrl};
use crate::transmit::Transmit;

/// Longest wait accepted by the waiting functions (longer requests are cut to this).
pub const WAIT_MAX: Duration = Duration::from_secs(3600);

/// Most readers watched at once (pcsc-lite allows 16).
pub const READERS_MAX: usize = 16;

/// A connection to the PC/SC service (pcscd).
pub struct Terminal {
    context: Context,
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal").finish_non_exhaustive()
    }
}

impl Terminal {
    /// Connects to the PC/SC service.
    ///
    /// # Errors
    /// [`ReaderError::ServiceUnavailable`] when pcscd is not running.
    pub fn establish() -> Result<Self, ReaderError> {
        let context = Context::establish(Scope::User).map_err(from_pcsc)?;
        Ok(Self { context })
    }

    /// The names of the connected readers.
    ///
    /// # Errors
    /// [`ReaderError::NoReader`] when there is none.
    pub fn list_readers(&self) -> Result<Vec<String>, ReaderError> {
        let names = self.reader_names()?;
        if names.is_empty() {
            return Err(ReaderError::NoReader);
        }
        Ok(names.iter().map(|name| name.to_string_lossy().into_owned()).collect())
    }

    fn reader_names(&self) -> Result<Vec<CString>, ReaderError> {
        match self.context.list_readers_owned() {
            Ok(mut names) => {
                names.truncate(READERS_MAX);
                Ok(names)
            }
            Err(pcsc::Error::NoReadersAvailable) => Ok(Vec::new()),
            Err(error) => Err(from_pcsc(error)),
        }
    }

    /// Waits until a card is in `reader` (or in any reader when `None`) and returns the
    /// reader's name. Returns at once when a card is already there. Readers plugged in
    /// while waiting are watched too (`\\?PnP?\Notification`).
    ///
    /// # Errors
    /// [`ReaderError::Timeout`] when no card came, [`ReaderError::NoReader`] when no
    /// (matching) reader was there at all.
    pub fn wait_for_card(&self, reader: Option<&str>, timeout: Duration) -> Result<String, ReaderError> {
        let started = Instant::now();
        let deadline = started + timeout.min(WAIT_MAX);
        let mut states = vec![ReaderState::new(PNP_NOTIFICATION(), State::UNAWARE)];
        let mut saw_reader = false;
        loop {
            let wanted: Vec<CString> = self
                .reader_names()?
                .into_iter()
                .filter(|name| reader.is_none_or(|wanted| name.as_bytes() == wanted.as_bytes()))
                .collect();
            saw_reader |= !wanted.is_empty();
            // Keep the known states of readers still there; watch new readers.
            states.retain(|state| is_pnp(state.name()) || wanted.iter().any(|name| name.as_c_str() == state.name()));
            for name in wanted {
                if !states.iter().any(|state| state.name() == name.as_c_str()) {
                    states.push(ReaderState::new(name, State::UNAWARE));
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.context.get_status_change(remaining, &mut states) {
                Ok(()) => {}
                Err(pcsc::Error::Timeout) => return Err(timed_out(saw_reader, started)),
                // A reader vanished between listing and waiting: list again.
                Err(pcsc::Error::UnknownReader | pcsc::Error::ReaderUnavailable) if Instant::now() < deadline => {
                    states.truncate(1);
                    continue;
                }
                Err(pcsc::Error::UnknownReader | pcsc::Error::ReaderUnavailable) => {
                    return Err(timed_out(saw_reader, started));
                }
                Err(error) => return Err(from_pcsc(error)),
            }
            if let Some(state) = states.iter().skip(1).find(|state| card_present(state.event_state())) {
                return Ok(state.name().to_string_lossy().into_owned());
            }
            for state in &mut states {
                state.sync_current_state();
            }
            if Instant::now() >= deadline {
                return Err(timed_out(saw_reader, started));
            }
        }
    }

    /// Waits until `reader` holds no card (or is gone).
    ///
    /// # Errors
    /// [`ReaderError::Timeout`] when the card is still there.
    pub fn wait_for_removal(&self, reader: &str, timeout: Duration) -> Result<(), ReaderError> {
        let started = Instant::now();
        let deadline = started + timeout.min(WAIT_MAX);
        let name = CString::new(reader).map_err(|_| ReaderError::InvalidReaderName)?;
        let mut states = [ReaderState::new(name, State::UNAWARE)];
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.context.get_status_change(remaining, &mut states) {
                Ok(()) => {}
                Err(pcsc::Error::Timeout) => return Err(timed_out(true, started)),
                Err(pcsc::Error::UnknownReader | pcsc::Error::ReaderUnavailable) => return Ok(()),
                Err(error) => return Err(from_pcsc(error)),
            }
            let event = states[0].event_state();
            if event.contains(State::EMPTY) || event.intersects(State::UNKNOWN | State::UNAVAILABLE | State::IGNORE) {
                return Ok(());
            }
            states[0].sync_current_state();
            if Instant::now() >= deadline {
                return Err(timed_out(true, started));
            }
        }
    }

    /// Connects to the card in `reader` (shared, T=0 or T=1).
    ///
    /// # Errors
    /// [`ReaderError::CardRemoved`] when there is no card, [`ReaderError::ReaderUnavailable`]
    /// for an unknown reader.
    pub fn connect(&self, reader: &str) -> Result<CardConnection, ReaderError> {
        let name = CString::new(reader).map_err(|_| ReaderError::InvalidReaderName)?;
        let card = self.context.connect(&name, ShareMode::Shared, Protocols::ANY).map_err(from_pcsc)?;
        Ok(CardConnection { card, reader: reader.to_string() })
    }
}

fn is_pnp(name: &CStr) -> bool {
    name == PNP_NOTIFICATION()
}

fn card_present(event: State) -> bool {
    event.contains(State::PRESENT) && !event.intersects(State::MUTE | State::UNAVAILABLE | State::IGNORE)
}

fn timed_out(saw_reader: bool, started: Instant) -> ReaderError {
    if saw_reader {
        ReaderError::Timeout { waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX) }
    } else {
        ReaderError::NoReader
    }
}

/// A connection to the card in one reader.
pub struct CardConnection {
    card: pcsc::Card,
    reader: String,
}

impl std::fmt::Debug for CardConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardConnection").field("reader", &self.reader).finish_non_exhaustive()
    }
}

impl CardConnection {
    /// The reader's name.
    #[must_use]
    pub fn reader(&self) -> &str {
        &self.reader
    }

    /// Runs `work` inside a PC/SC transaction: no other program talks to the card
    /// meanwhile. The transaction ends (leaving the card as it is) whatever `work` returns.
    ///
    /// # Errors
    /// [`ReaderError::CardRemoved`] when the card is gone before the transaction starts,
    /// or whatever `work` returns.
    pub fn transaction<T>(
        &mut self,
        work: impl FnOnce(&mut PcscChannel<'_>) -> Result<T, ReaderError>,
    ) -> Result<T, ReaderError> {
        let transaction = self.card.transaction().map_err(from_pcsc)?;
        let mut channel = PcscChannel { transaction };
        let result = work(&mut channel);
        let ended = channel.transaction.end(Disposition::LeaveCard);
        match (result, ended) {
            (Ok(value), Ok(())) => Ok(value),
            (Ok(_), Err((_, error))) => Err(from_pcsc(error)),
            // The first error is the one that matters (ending fails too when the card left).
            (Err(error), _) => Err(error),
        }
    }

    /// Reads the UID (`FF CA 00 00 00`) in a transaction.
    ///
    /// # Errors
    /// As [`crate::read_uid`].
    pub fn read_uid(&mut self) -> Result<CardUid, ReaderError> {
        self.transaction(|channel| read_uid(channel))
    }

    /// Reads the SUN message in a transaction.
    ///
    /// # Errors
    /// As [`crate::read_sun`]; a card pulled away mid-read is [`ReaderError::CardRemoved`].
    pub fn read_sun(&mut self) -> Result<TapUrl, ReaderError> {
        self.transaction(|channel| read_sun(channel))
    }

    /// Disconnects and resets the card, which ends any authentication on it.
    ///
    /// # Errors
    /// [`ReaderError`] from PC/SC; a card already gone is not an error.
    pub fn disconnect(self) -> Result<(), ReaderError> {
        match self.card.disconnect(Disposition::ResetCard) {
            Ok(()) => Ok(()),
            Err((_, error)) => match from_pcsc(error) {
                ReaderError::CardRemoved { .. } => Ok(()),
                other => Err(other),
            },
        }
    }
}

/// The card inside a PC/SC transaction; implements [`Transmit`].
pub struct PcscChannel<'tx> {
    transaction: pcsc::Transaction<'tx>,
}

impl std::fmt::Debug for PcscChannel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcscChannel").finish_non_exhaustive()
    }
}

impl Transmit for PcscChannel<'_> {
    fn transmit(&mut self, command: &CommandApdu) -> Result<ResponseApdu, ReaderError> {
        let mut buffer = [0_u8; pcsc::MAX_BUFFER_SIZE];
        let response = self.transaction.transmit(&command.to_bytes(), &mut buffer).map_err(from_pcsc)?;
        // No status word at all: the card did not answer (torn mid-command).
        let response = ResponseApdu::parse(response)
            .map_err(|_| ReaderError::CardRemoved { cause: RemovalCause::NoStatusWord })?;
        // The instruction and status only: data may be key material under encryption.
        tracing::trace!(cla = command.cla(), ins = command.ins(), status = %response.status(), "apdu");
        Ok(response)
    }
}
