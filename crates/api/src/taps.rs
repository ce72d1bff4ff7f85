//! Verifying a tap with the installation's key file (`card::keyfile`): decrypt PICCData
//! with the meta-read key, recompute the SUN MAC with the card's diversified file-read key,
//! compare in constant time; every key version is tried, newest first.

use card::keyfile::KeyFile;
use card::SunTap;

use crate::error::ApiError;
use crate::wire::Tap;

/// The card keys the server verifies taps with.
#[derive(Debug)]
pub struct TapKeys(pub KeyFile);

/// A tap whose MAC verified.
#[derive(Debug, Clone)]
pub struct VerifiedTap {
    /// UID, 14 upper-case hex digits.
    pub uid: String,
    /// SDM read counter.
    pub counter: i64,
    /// The key version that verified it.
    pub key_version: u8,
}

impl TapKeys {
    /// Verifies a tap; `invalid_tap` (malformed) or `tap_mac_invalid` (422) otherwise.
    pub fn verify(&self, tap: &Tap) -> Result<VerifiedTap, ApiError> {
        let sun = SunTap::from_hex(&tap.picc_data, &tap.cmac, None)
            .map_err(|e| ApiError::unprocessable("invalid_tap", format!("the tap is malformed: {e}")))?;
        match self.0.verify_tap(&sun) {
            Ok((message, version)) if message.mac_valid() => Ok(VerifiedTap {
                uid: hex::encode_upper(message.uid().as_bytes()),
                counter: i64::from(message.counter().value()),
                key_version: version,
            }),
            _ => Err(ApiError::unprocessable(
                "tap_mac_invalid",
                "the tap's MAC does not verify: not a genuine card of this city",
            )),
        }
    }
}
