//! The AES-128 key type: secret, zeroized on drop, never printed.

use core::fmt;
use core::str::FromStr;

use subtle::{Choice, ConstantTimeEq};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of an AES-128 key in bytes.
pub const KEY_LEN: usize = 16;

/// Length of an AES-128 key written as hexadecimal text.
pub const KEY_HEX_LEN: usize = 2 * KEY_LEN;

/// An AES-128 key.
///
/// The bytes are private, overwritten with zeros when the value is dropped, compared in
/// constant time, and `Debug` prints `Key(<redacted>)`: a key can be passed around and
/// logged by accident without leaking.
#[derive(Clone)]
pub struct Key([u8; KEY_LEN]);

/// Why text could not be parsed as a key. The error never repeats the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    /// The text is not exactly 32 characters long.
    #[error("an AES-128 key is {expected} hex characters, got {found}", expected = KEY_HEX_LEN)]
    WrongLength {
        /// Length of the text that was given, in bytes.
        found: usize,
    },
    /// The text holds a character that is not a hexadecimal digit.
    #[error("an AES-128 key must be written in hexadecimal digits")]
    NotHex,
}

impl Key {
    /// Wraps raw key bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The factory key of a blank NTAG 424 DNA: sixteen zero bytes.
    #[must_use]
    pub const fn factory_default() -> Self {
        Self([0; KEY_LEN])
    }

    /// Parses 32 hexadecimal characters (either case), as in the key file.
    ///
    /// # Errors
    /// [`KeyParseError`] when the text is not 32 hexadecimal characters.
    pub fn from_hex(text: &str) -> Result<Self, KeyParseError> {
        if text.len() != KEY_HEX_LEN {
            return Err(KeyParseError::WrongLength { found: text.len() });
        }
        let mut key = Self([0; KEY_LEN]);
        hex::decode_to_slice(text, &mut key.0).map_err(|_| KeyParseError::NotHex)?;
        Ok(key)
    }

    /// The key bytes. Named so that every use of the secret stands out in review.
    #[must_use]
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for Key {}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl ConstantTimeEq for Key {
    fn ct_eq(&self, other: &Self) -> Choice {
        self.0.ct_eq(&other.0)
    }
}

impl PartialEq for Key {
    /// Constant-time comparison.
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for Key {}

impl From<[u8; KEY_LEN]> for Key {
    fn from(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }
}

impl FromStr for Key {
    type Err = KeyParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::from_hex(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let key = Key::from_hex("00112233445566778899AABBCCDDEEFF").unwrap();
        assert_eq!(format!("{key:?}"), "Key(<redacted>)");
        assert_eq!(format!("{:?}", Some(&key)), "Some(Key(<redacted>))");
    }

    #[test]
    fn parse_accepts_both_cases_and_rejects_the_rest() {
        let upper = Key::from_hex("00112233445566778899AABBCCDDEEFF").unwrap();
        let lower: Key = "00112233445566778899aabbccddeeff".parse().unwrap();
        assert_eq!(upper, lower);
        assert_eq!(upper.expose_secret()[15], 0xFF);
        assert_eq!(Key::from_hex("0011"), Err(KeyParseError::WrongLength { found: 4 }));
        assert_eq!(Key::from_hex("00112233445566778899AABBCCDDEEFG"), Err(KeyParseError::NotHex));
        // 32 bytes, but not 32 ASCII characters.
        assert_eq!(Key::from_hex("ééééééééééééééé00"), Err(KeyParseError::NotHex));
    }
}
