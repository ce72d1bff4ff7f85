//! The reader crate's error type.

use card::apdu::{ApduError, StatusWord};
use card::commands::CommandError;
use card::ndef::NdefError;
use card::{AuthError, CardUid, DiversifyError, SecureMessagingError, SunError};

use crate::tap_url::TapParseError;

/// Everything that can go wrong between a program and a card.
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    /// PC/SC knows no reader (none is plugged in, or none is configured).
    #[error("no card reader is connected")]
    NoReader,
    /// Nothing happened within the time allowed (no card, or the card was not removed).
    #[error("timed out after {waited_ms} ms")]
    Timeout {
        /// How long the call waited, in milliseconds.
        waited_ms: u64,
    },
    /// The card left the field or stopped answering in the middle of a command (a "tear"),
    /// or is not in the reader any more. Whatever was in progress did not complete as far as
    /// the program can know: tap again.
    #[error("the card was removed or stopped answering; tap again ({cause})")]
    CardRemoved {
        /// What showed it.
        cause: RemovalCause,
    },
    /// The reader was unplugged or disappeared.
    #[error("the reader is no longer available ({cause})")]
    ReaderUnavailable {
        /// What PC/SC reported.
        cause: pcsc::Error,
    },
    /// The PC/SC service (pcscd) is not running or stopped.
    #[error("the PC/SC service is not available ({cause})")]
    ServiceUnavailable {
        /// What PC/SC reported.
        cause: pcsc::Error,
    },
    /// Any other PC/SC failure.
    #[error("PC/SC error: {0}")]
    Pcsc(pcsc::Error),
    /// A reader name holds a NUL byte.
    #[error("a reader name cannot contain a NUL byte")]
    InvalidReaderName,
    /// The card answered a command with an error status word.
    #[error("{command}: the card answered {status}")]
    Protocol {
        /// The command that failed.
        command: &'static str,
        /// The card's status word.
        status: StatusWord,
    },
    /// The card's answer is not a response APDU.
    #[error("malformed response: {0}")]
    Apdu(#[from] ApduError),
    /// A command could not be built, or its answer has the wrong shape.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// AuthenticateEV2First failed.
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthError),
    /// Secure messaging failed (wrong MAC, padding, exhausted counter).
    #[error("secure messaging failed: {0}")]
    SecureMessaging(#[from] SecureMessagingError),
    /// The NDEF file does not hold a Kartu tap URL.
    #[error("the card's NDEF file does not hold a tap URL: {0}")]
    Tap(#[from] TapParseError),
    /// The UID answer is not 7 bytes (not an NTAG 424 DNA or DESFire EV3).
    #[error("the card's UID is {len} bytes long, not 7")]
    UidLength {
        /// Length of the UID that was read.
        len: usize,
    },
    /// The card's authenticated UID differs from the UID read before.
    #[error("the card answered UID {found} where {expected} was expected")]
    UidMismatch {
        /// The UID read first.
        expected: CardUid,
        /// The UID the card proved.
        found: CardUid,
    },
    /// Personalisation needs a blank card; this one has a changed application master key.
    #[error("the card is not blank: its application master key has version {key_version}")]
    NotBlank {
        /// Version of key 0 on the card (0 with a non-factory key, when the factory key fails).
        key_version: u8,
    },
    /// A card key has a version that none of the given master key sets has.
    #[error("key {key_no} has version {version}, for which no master keys were given")]
    UnknownKeyVersion {
        /// The key number.
        key_no: u8,
        /// The version found on the card.
        version: u8,
    },
    /// A rotation to a version older than a key the card already holds (it would turn the
    /// card back to keys a copy may have been made with).
    #[error(
        "key {key_no} has version {version}, newer than the rotation's version {target}: a rotation only goes forward"
    )]
    KeyVersionNewer {
        /// The key number.
        key_no: u8,
        /// The version found on the card.
        version: u8,
        /// The version asked for.
        target: u8,
    },
    /// Key version 0 is the factory version; master keys start at 1.
    #[error("key version {version} is not valid for master keys (1 to 255)")]
    InvalidKeyVersion {
        /// The rejected version.
        version: u8,
    },
    /// The key file is the server's: it has no `app_master_key`, which personalising and
    /// rotating a card need.
    #[error(
        "key version {version} has no app_master_key: this is the server's key file; personalise with the issuance key file"
    )]
    NoAppMasterKey {
        /// The key version.
        version: u8,
    },
    /// A per-card key could not be derived.
    #[error("cannot derive the card keys: {0}")]
    Diversify(#[from] DiversifyError),
    /// The tap URL could not be built (invalid host).
    #[error("cannot build the tap URL: {0}")]
    Ndef(#[from] NdefError),
    /// A SUN message did not verify.
    #[error("the SUN message does not verify: {0}")]
    Sun(#[from] SunError),
    /// The operating system has no random numbers.
    #[error("no random numbers: {0}")]
    Random(getrandom::Error),
}

/// What showed that a card left the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalCause {
    /// PC/SC reported this error.
    Pcsc(pcsc::Error),
    /// The reader passed on an answer without a status word: the card went silent
    /// mid-command (vpcd reports a dropped connection this way).
    NoStatusWord,
}

impl std::fmt::Display for RemovalCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pcsc(error) => write!(f, "PC/SC: {error}"),
            Self::NoStatusWord => f.write_str("the answer has no status word"),
        }
    }
}

impl ReaderError {
    /// Whether the error means the card is gone or was interrupted, so that tapping again
    /// is the remedy.
    #[must_use]
    pub const fn is_card_removed(&self) -> bool {
        matches!(self, Self::CardRemoved { .. })
    }
}

/// Classifies a PC/SC error.
///
/// A contactless card that leaves the field mid-command shows up, depending on the reader
/// and its driver, as a removed or reset card, a failed transmission or a lost or mute
/// card: all of them are [`ReaderError::CardRemoved`].
#[must_use]
pub fn from_pcsc(error: pcsc::Error) -> ReaderError {
    use pcsc::Error as E;
    match error {
        E::NoReadersAvailable => ReaderError::NoReader,
        E::RemovedCard
        | E::ResetCard
        | E::NoSmartcard
        | E::NotTransacted
        | E::CommError
        | E::CommDataLost
        | E::UnpoweredCard
        | E::UnresponsiveCard => ReaderError::CardRemoved { cause: RemovalCause::Pcsc(error) },
        E::ReaderUnavailable | E::UnknownReader => ReaderError::ReaderUnavailable { cause: error },
        E::NoService | E::ServiceStopped => ReaderError::ServiceUnavailable { cause: error },
        other => ReaderError::Pcsc(other),
    }
}
