//! Small values read from a card: its UID and its SDM read counter.

use core::fmt;
use core::str::FromStr;

/// Length of an NTAG 424 DNA UID (ISO/IEC 14443 double size) in bytes.
pub const UID_LEN: usize = 7;

/// The largest value of the 24-bit SDM read counter.
pub const READ_COUNTER_MAX: u32 = 0x00FF_FFFF;

/// A card's 7-byte UID. Printed as 14 upper-case hex digits, e.g. `04DE5F1EACC040`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CardUid([u8; UID_LEN]);

/// Why text could not be parsed as a [`CardUid`] or a [`ReadCounter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UidParseError {
    /// The text is not exactly 14 characters long.
    #[error("a card UID is 14 hex characters, got {found}")]
    WrongLength {
        /// Length of the text that was given, in bytes.
        found: usize,
    },
    /// The text holds a character that is not a hexadecimal digit.
    #[error("a card UID must be written in hexadecimal digits")]
    NotHex,
}

impl CardUid {
    /// Wraps the seven UID bytes, most significant (the manufacturer byte, `04` for NXP) first.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; UID_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses 14 hexadecimal characters (either case).
    ///
    /// # Errors
    /// [`UidParseError`] when the text is not 14 hexadecimal characters.
    pub fn from_hex(text: &str) -> Result<Self, UidParseError> {
        if text.len() != 2 * UID_LEN {
            return Err(UidParseError::WrongLength { found: text.len() });
        }
        let mut bytes = [0; UID_LEN];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| UidParseError::NotHex)?;
        Ok(Self(bytes))
    }

    /// The seven UID bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; UID_LEN] {
        &self.0
    }
}

impl From<[u8; UID_LEN]> for CardUid {
    fn from(bytes: [u8; UID_LEN]) -> Self {
        Self(bytes)
    }
}

/// What a stored UID column is read into.
impl TryFrom<String> for CardUid {
    type Error = UidParseError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::from_hex(&text)
    }
}

impl FromStr for CardUid {
    type Err = UidParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::from_hex(text)
    }
}

impl fmt::Display for CardUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CardUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardUid({self})")
    }
}

/// The card's 24-bit SDM read counter (SDMReadCtr), incremented by the card on every
/// unauthenticated read of the NDEF file. A server accepts a tap only if its counter is
/// greater than the last one seen for the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadCounter(u32);

impl ReadCounter {
    /// The counter from its 3-byte little-endian form, as it travels inside PICCData.
    #[must_use]
    pub const fn from_le_bytes(bytes: [u8; 3]) -> Self {
        Self(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], 0]))
    }

    /// The counter from a number; `None` above [`READ_COUNTER_MAX`].
    #[must_use]
    pub const fn new(value: u32) -> Option<Self> {
        if value > READ_COUNTER_MAX {
            None
        } else {
            Some(Self(value))
        }
    }

    /// The counter as a number.
    #[must_use]
    pub const fn value(self) -> u32 {
        self.0
    }

    /// The 3-byte little-endian form used in cryptographic calculations.
    #[must_use]
    pub const fn to_le_bytes(self) -> [u8; 3] {
        let [b0, b1, b2, _] = self.0.to_le_bytes();
        [b0, b1, b2]
    }
}

impl fmt::Display for ReadCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_round_trips_through_hex() {
        let uid = CardUid::from_hex("04de5f1eacc040").unwrap();
        assert_eq!(uid.to_string(), "04DE5F1EACC040");
        assert_eq!(format!("{uid:?}"), "CardUid(04DE5F1EACC040)");
        assert_eq!(CardUid::from_hex("04DE"), Err(UidParseError::WrongLength { found: 4 }));
        assert_eq!(CardUid::from_hex("04DE5F1EACC04Z"), Err(UidParseError::NotHex));
    }

    #[test]
    fn counter_is_little_endian_and_24_bits() {
        assert_eq!(ReadCounter::from_le_bytes([0x3D, 0, 0]).value(), 61);
        assert_eq!(ReadCounter::from_le_bytes([1, 2, 3]).value(), 0x0003_0201);
        assert_eq!(ReadCounter::new(0x0003_0201).unwrap().to_le_bytes(), [1, 2, 3]);
        assert!(ReadCounter::new(READ_COUNTER_MAX).is_some());
        assert!(ReadCounter::new(READ_COUNTER_MAX + 1).is_none());
    }
}
