//! Verifying a tap with the installation's key file (`card::keyfile`): decrypt PICCData
//! with the meta-read key, recompute the SUN MAC with the card's diversified file-read key,
//! compare in constant time; every key version is tried, newest first, then the pairs of two
//! versions' keys a card pulled away half-way through a rotation holds
//! ([`KeyFile::verify_tap_versions`]; such a tap counts as the lower version).

use card::keyfile::{KeyFile, TapVersions};
use card::{CardUid, ReadCounter, SunTap};

use crate::error::ApiError;
use crate::wire::Tap;

/// The card keys the server verifies taps with.
#[derive(Debug)]
pub struct TapKeys(pub KeyFile);

/// A tap whose MAC verified, in the card crate's types.
#[derive(Debug, Clone)]
pub struct VerifiedTap {
    /// The card's UID, as the decrypted PICCData gives it.
    pub uid: CardUid,
    /// The card's SDM read counter at this tap.
    pub counter: ReadCounter,
    /// The key version that verified it: the lower of `versions`' two.
    pub key_version: u8,
    /// The versions of the two SDM keys that verified it (two versions: a card pulled away
    /// half-way through a rotation).
    pub versions: TapVersions,
}

impl VerifiedTap {
    /// The read counter as the ledger stores it (`card_read_counter`).
    #[must_use]
    pub fn counter_value(&self) -> i64 {
        i64::from(self.counter.value())
    }
}

impl TapKeys {
    /// Verifies a tap; `invalid_tap` (malformed) or `tap_mac_invalid` (422) otherwise.
    pub fn verify(&self, tap: &Tap) -> Result<VerifiedTap, ApiError> {
        self.verify_parsed(&parse(tap)?)
    }

    /// [`TapKeys::verify`] of a tap already parsed ([`parse`]).
    pub fn verify_parsed(&self, sun: &SunTap) -> Result<VerifiedTap, ApiError> {
        match self.0.verify_tap_versions(sun) {
            Ok((message, versions)) if message.mac_valid() => Ok(VerifiedTap {
                uid: message.uid(),
                counter: message.counter(),
                key_version: versions.version(),
                versions,
            }),
            _ => Err(ApiError::unprocessable(
                "tap_mac_invalid",
                "the tap's MAC does not verify: not a genuine card of this city",
            )),
        }
    }

    /// The UID a tap claims, MAC unchecked ([`KeyFile::claimed_uid`]): a hint for fetching
    /// the card with the caller's credential in one statement, before the caller may ask
    /// whether the tap is genuine.
    pub fn claimed_uid(&self, sun: &SunTap) -> Option<CardUid> {
        self.0.claimed_uid(sun)
    }
}

/// A tap's hex fields in the card crate's type; `invalid_tap` (422) when malformed.
pub fn parse(tap: &Tap) -> Result<SunTap, ApiError> {
    SunTap::from_hex(&tap.picc_data, &tap.cmac, None)
        .map_err(|e| ApiError::unprocessable("invalid_tap", format!("the tap is malformed: {e}")))
}
