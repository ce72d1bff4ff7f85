//! # kartu-card
//!
//! The card protocol of Kartu, for NXP NTAG 424 DNA (and MIFARE DESFire EV3) cards in AES
//! mode. Pure computation: this crate does no I/O — no files, no network, no PC/SC, no
//! clock and no random number generator. Random numbers come in as parameters.
//!
//! - [`Key`]: an AES-128 key that cannot be printed and is zeroized on drop.
//! - [`crypto`]: AES-128 block, CBC and AES-CMAC helpers; NXP's truncated MAC.
//! - [`diversify`]: NXP AN10922 key diversification and Kartu's per-card keys.
//! - [`sun`]: Secure Dynamic Messaging (SUN) verification: [`verify_sun`].
//! - [`ev2`]: AuthenticateEV2First for the terminal and for the card, as state machines.
//! - [`session`]: secure messaging (CommMode.Plain, .MAC and .Full) for both sides.
//! - [`commands`]: command builders for personalisation and reading.
//! - [`keyfile`]: the key file (SPEC §6): master keys per key version, parsed and written;
//!   [`keyfile::KeyFile::verify_tap`] checks a tap against every version, newest first.
//! - [`ndef`]: the NDEF URI record holding the SUN URL, with its placeholder offsets.
//! - [`apdu`]: command and response APDUs, status words.
//!
//! Verifying a tap (AN12196's SUN example, where both SDM keys are sixteen zero bytes):
//!
//! ```
//! use card::{FileReadKey, Key, SunTap};
//!
//! let zero = Key::factory_default();
//! let tap = SunTap::from_hex("EF963FF7828658A599F3041510671E88", "94EED9EE65337086", None)?;
//! let message = tap.verify(&zero, &FileReadKey::Direct(&zero))?;
//! assert!(message.mac_valid()); // what an operator tool prints
//! let tap = message.require_valid_mac()?; // what code that moves money uses
//! assert_eq!(tap.uid().to_string(), "04DE5F1EACC040");
//! assert_eq!(tap.counter().value(), 61); // accept only if above the last one seen
//! # Ok::<(), card::SunError>(())
//! ```
//!
//! In production the file read key is per card:
//! `FileReadKey::Diversified { master, system_identifier: b"KARTU-MKS" }`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod apdu;
pub mod commands;
pub mod crypto;
pub mod diversify;
pub mod ev2;
mod key;
pub mod keyfile;
pub mod ndef;
pub mod session;
pub mod sun;
mod types;

pub use apdu::{ApduError, CommandApdu, ResponseApdu, StatusWord};
pub use diversify::{diversify_an10922, diversify_card_key, DiversifyError, SystemIdentifier, SystemIdentifierError};
pub use ev2::AuthError;

pub use key::{Key, KeyParseError, KEY_HEX_LEN, KEY_LEN};
pub use session::{CommMode, SecureMessagingError, Session};
pub use sun::{verify_sun, FileReadKey, SunError, SunMessage, SunTap, VerifiedSun};

pub use types::{CardUid, ReadCounter, UidParseError, READ_COUNTER_MAX, UID_LEN};
