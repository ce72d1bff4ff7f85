//! Verifying a tap: decrypt PICCData with the meta-read key, recompute the SUN MAC with the
//! card's diversified file-read key, compare in constant time (the card crate does the
//! cryptography). Every key version is tried, newest first.

use card::{FileReadKey, Key, SunTap};

use crate::error::ApiError;
use crate::wire::Tap;

/// One key version's keys.
pub struct CardKeyVersion {
    /// Version number.
    pub version: u32,
    /// SDM meta read key (shared).
    pub meta_read: Key,
    /// SDM file read master key (diversified per card).
    pub file_read_master: Key,
}

/// The card keys the server verifies taps with.
pub struct TapKeys {
    /// ASCII system identifier, part of the diversification input.
    pub system_identifier: Vec<u8>,
    /// Newest first.
    pub versions: Vec<CardKeyVersion>,
}

impl std::fmt::Debug for TapKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapKeys").field("versions", &self.versions.len()).finish_non_exhaustive()
    }
}

/// A tap whose MAC verified.
#[derive(Debug, Clone)]
pub struct VerifiedTap {
    /// UID, 14 upper-case hex digits.
    pub uid: String,
    /// SDM read counter.
    pub counter: i64,
    /// The key version that verified it.
    pub key_version: u32,
}

impl TapKeys {
    /// Verifies a tap; `invalid_tap` (malformed) or `tap_mac_invalid` (422) otherwise.
    pub fn verify(&self, tap: &Tap) -> Result<VerifiedTap, ApiError> {
        let sun = SunTap::from_hex(&tap.picc_data, &tap.cmac, None)
            .map_err(|e| ApiError::unprocessable("invalid_tap", format!("the tap is malformed: {e}")))?;
        for v in &self.versions {
            let file_key =
                FileReadKey::Diversified { master: &v.file_read_master, system_identifier: &self.system_identifier };
            let Ok(message) = sun.verify(&v.meta_read, &file_key) else { continue };
            if message.mac_valid() {
                return Ok(VerifiedTap {
                    uid: hex::encode_upper(message.uid().as_bytes()),
                    counter: i64::from(message.counter().value()),
                    key_version: v.version,
                });
            }
        }
        Err(ApiError::unprocessable("tap_mac_invalid", "the tap's MAC does not verify: not a genuine card of this city"))
    }
}
