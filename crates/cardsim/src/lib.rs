//! # kartu-cardsim
//!
//! A virtual NXP NTAG 424 DNA for tests and demos without hardware. It connects to
//! pcscd's vpcd driver (Debian package `vsmartcard-vpcd`) as a TCP client, so programs see
//! it as a card in a PC/SC reader, through the real pcscd.
//!
//! - [`VirtualCard`]: the card itself — ISOSelectFile, ISOReadBinary, ReadData and
//!   WriteData with SDM (SUN) mirroring, GetVersion, GetCardUID, GetKeyVersion,
//!   AuthenticateEV2First, ChangeKey, ChangeFileSettings — built on the `card` crate's
//!   card-side functions.
//! - [`CardState`] and [`StateStore`]: the card's memory, kept in a JSON file written
//!   atomically after every change, so a restarted simulator keeps its counter.
//! - [`spawn`] / [`run`] and [`SimHandle`]: the vpcd connection, with control over
//!   insertion, removal and tears; [`control`]: the same control for another process,
//!   over a Unix socket.
//!
//! ```no_run
//! use cardsim::SimConfig;
//!
//! let mut config = SimConfig::new("127.0.0.1:35963", "/var/lib/kartu/card.json");
//! config.control_socket = Some("/run/kartu-sim.sock".into());
//! cardsim::run(config)?; // until `shutdown` arrives on the control socket
//! # Ok::<(), cardsim::SimError>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod control;
pub mod ntag;
pub mod settings;
mod shared;
pub mod state;
pub mod vpcd;

pub use control::send_command;
pub use ntag::{VirtualCard, ATR};
pub use state::{CardState, StateError, StateStore};
pub use vpcd::{run, spawn, SimConfig, SimError, SimHandle, SimStatus, TearTrigger};
