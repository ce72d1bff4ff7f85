//! # kartu-reader
//!
//! Kartu's access to cards through PC/SC (pcscd on Linux). The only crate that knows PC/SC.
//!
//! - [`Terminal`]: readers, waiting for a card or its removal (hot-plug aware),
//!   connections; [`CardConnection`]: PC/SC transactions; [`PcscChannel`]: APDUs through
//!   the `card` crate's codec.
//! - [`read_uid`] and [`read_sun`]: what a terminal reads at a tap; [`parse_tap_url`]
//!   turns the card's URL into `picc_data` and `cmac`.
//! - [`personalize()`] and [`rotate_keys`]: a blank card becomes a Kartu card; a Kartu card
//!   moves to a new key version.
//! - [`ReplayGuard`]: counters must go up.
//! - [`ReaderError`]: one typed error; a card pulled away mid-read is
//!   [`ReaderError::CardRemoved`].
//!
//! The protocol functions take any [`Transmit`], so they run over PC/SC or, in tests,
//! against a virtual card in the same process.
//!
//! ```no_run
//! use std::time::Duration;
//! use reader::Terminal;
//!
//! let terminal = Terminal::establish()?;
//! let reader = terminal.wait_for_card(None, Duration::from_secs(30))?;
//! let mut card = terminal.connect(&reader)?;
//! let tap = card.read_sun()?;
//! println!("picc_data={} cmac={}", tap.picc_data_hex(), tap.cmac_hex());
//! # Ok::<(), reader::ReaderError>(())
//! ```
//!
//! Keys are [`card::Key`] values: they never appear in `Debug` output or logs.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod error;
pub mod personalize;
mod replay;
pub mod tap;
pub mod tap_url;
mod terminal;
mod transmit;

pub use error::{from_pcsc, ReaderError, RemovalCause};
pub use personalize::{
    personalize, read_key_version, rotate_keys, CardKeys, MasterKeys, Personalized, SystemIdentifier,
};
pub use replay::{ReplayError, ReplayGuard, REPLAY_GUARD_CARDS_MAX};
pub use tap::{parse_ndef_file, parse_tap_url, read_sun, read_uid, TapParseError, TapUrl};
pub use terminal::{CardConnection, PcscChannel, Terminal};
pub use transmit::{exchange_in_session, expect_status, expect_success, Transmit};
