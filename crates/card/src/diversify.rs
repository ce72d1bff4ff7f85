//! NXP AN10922 AES-128 key diversification, and Kartu's per-card keys.
//!
//! AN10922 §2.2: `diversified = CMAC(master, 0x01 || M)`, where the CMAC input is always
//! brought to 32 bytes: input shorter than 32 bytes is padded with `80 00 ..` and then
//! uses subkey K2; input of exactly 32 bytes uses K1. For inputs of 17 to 32 bytes this is
//! plain AES-CMAC, so the `cmac` crate computes it. For inputs of up to 16 bytes plain
//! CMAC would pad to one block only, so the two blocks are processed here, with subkeys
//! from the `dbl` crate.

use aes::cipher::array::Array;
use aes::cipher::consts::U16;
use dbl::Dbl;
use zeroize::Zeroizing;

use crate::crypto::{self, Block, BLOCK_LEN};
use crate::key::Key;
use crate::types::CardUid;

/// Longest diversification input M that AN10922 allows (1 + 31 = 32 bytes of CMAC input).
pub const DIVERSIFICATION_INPUT_MAX: usize = 31;

/// The constant AN10922 prefixes to M for an AES-128 key.
const AES128_DIVERSIFICATION_CONSTANT: u8 = 0x01;

/// Longest system identifier Kartu's input can hold: 31 − 7 (UID) − 1 (key number).
pub const SYSTEM_IDENTIFIER_MAX: usize = DIVERSIFICATION_INPUT_MAX - 8;

/// Key number of the application master key (key 0), diversified per card.
pub const APP_MASTER_KEY_NO: u8 = 0;

/// Key number of the SDM meta-read key, shared by all cards: it decrypts PICCData.
pub const SDM_META_READ_KEY_NO: u8 = 1;

/// Key number of the SDM file-read key, diversified per card: it makes the SUN MAC.
pub const SDM_FILE_READ_KEY_NO: u8 = 2;

/// Why a key could not be diversified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DiversifyError {
    /// AN10922 needs 1 to 31 bytes of diversification input.
    #[error("AN10922 diversification input must be 1 to 31 bytes, got {len}")]
    InputLength {
        /// Length of the input that was given.
        len: usize,
    },
}

/// AN10922 AES-128 diversification of `master` with the diversification input `m`.
///
/// # Errors
/// [`DiversifyError::InputLength`] unless `m` is 1 to 31 bytes.
pub fn diversify_an10922(master: &Key, m: &[u8]) -> Result<Key, DiversifyError> {
    if m.is_empty() || m.len() > DIVERSIFICATION_INPUT_MAX {
        return Err(DiversifyError::InputLength { len: m.len() });
    }
    let mut input = Zeroizing::new([0_u8; 2 * BLOCK_LEN]);
    let input_len = 1 + m.len();
    input[0] = AES128_DIVERSIFICATION_CONSTANT;
    input[1..input_len].copy_from_slice(m);
    let input = input.get(..input_len).unwrap_or(&[]);
    let diversified = if input_len > BLOCK_LEN {
        // 17..=32 bytes: standard CMAC pads (with K2) or not (with K1) exactly as AN10922.
        crypto::cmac(master, input)
    } else {
        cmac_padded_to_two_blocks(master, input)
    };
    Ok(Key::from_bytes(diversified))
}

/// CMAC over `data` padded with `80 00 ..` to 32 bytes, the last block masked with K2:
/// AN10922's rule for any input shorter than 32 bytes.
pub(crate) fn cmac_padded_to_two_blocks(key: &Key, data: &[u8]) -> Block {
    let cipher = crypto::cipher(key);
    let mut padded = Zeroizing::new([0_u8; 2 * BLOCK_LEN]);
    let len = data.len().min(2 * BLOCK_LEN - 1);
    padded[..len].copy_from_slice(data.get(..len).unwrap_or(&[]));
    padded[len] = 0x80;

    let l = crypto::encrypt_with(&cipher, &[0; BLOCK_LEN]);
    let k2: Block = Array::<u8, U16>::from(l).dbl().dbl().into();

    let (first, second) = padded.split_at(BLOCK_LEN);
    let mut state = [0_u8; BLOCK_LEN];
    state.copy_from_slice(first);
    let state = crypto::encrypt_with(&cipher, &state);
    let mut last = [0_u8; BLOCK_LEN];
    for (((out, s), d), k) in last.iter_mut().zip(state).zip(second).zip(k2) {
        *out = s ^ d ^ k;
    }
    crypto::encrypt_with(&cipher, &last)
}

/// The installation's system identifier, the last part of every per-card key's
/// diversification input (SPEC §6): 1 to [`SYSTEM_IDENTIFIER_MAX`] printable ASCII
/// characters without spaces, e.g. `KARTU-MKS`. Not a secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SystemIdentifier(String);

/// Why text is not a [`SystemIdentifier`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a system identifier is 1 to {max} printable ASCII characters without spaces", max = SYSTEM_IDENTIFIER_MAX)]
pub struct SystemIdentifierError;

impl SystemIdentifier {
    /// Parses a system identifier.
    ///
    /// # Errors
    /// [`SystemIdentifierError`] unless 1 to [`SYSTEM_IDENTIFIER_MAX`] printable ASCII
    /// characters without spaces.
    pub fn parse(text: &str) -> Result<Self, SystemIdentifierError> {
        let printable = text.bytes().all(|byte| byte.is_ascii_graphic());
        if text.is_empty() || text.len() > SYSTEM_IDENTIFIER_MAX || !printable {
            return Err(SystemIdentifierError);
        }
        Ok(Self(text.to_string()))
    }

    /// The identifier's ASCII bytes, as they enter the diversification input.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The identifier as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl core::fmt::Display for SystemIdentifier {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Kartu's per-card key: AN10922 diversification of `master` with
/// `M = UID (7 bytes) || key number (1 byte) || system identifier (ASCII)` (SPEC §6).
///
/// # Errors
/// [`DiversifyError::InputLength`] when the system identifier is longer than
/// [`SYSTEM_IDENTIFIER_MAX`] bytes.
pub fn diversify_card_key(
    master: &Key,
    uid: &CardUid,
    key_no: u8,
    system_identifier: &[u8],
) -> Result<Key, DiversifyError> {
    let mut input = Zeroizing::new([0_u8; DIVERSIFICATION_INPUT_MAX]);
    let len = 8 + system_identifier.len();
    if len > DIVERSIFICATION_INPUT_MAX {
        return Err(DiversifyError::InputLength { len });
    }
    input[..7].copy_from_slice(uid.as_bytes());
    input[7] = key_no;
    input[8..len].copy_from_slice(system_identifier);
    diversify_an10922(master, input.get(..len).unwrap_or(&[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_identifier_is_printable_ascii_of_1_to_23_characters() {
        assert_eq!(SystemIdentifier::parse("KARTU-MKS").map(|id| id.as_bytes().to_vec()), Ok(b"KARTU-MKS".to_vec()));
        assert!(SystemIdentifier::parse(&"X".repeat(SYSTEM_IDENTIFIER_MAX)).is_ok());
        for bad in ["", "KARTU MKS", "KARTU\nMKS", "KARTÜ"] {
            assert_eq!(SystemIdentifier::parse(bad), Err(SystemIdentifierError), "{bad:?}");
        }
        assert_eq!(SystemIdentifier::parse(&"X".repeat(SYSTEM_IDENTIFIER_MAX + 1)), Err(SystemIdentifierError));
    }

    #[test]
    fn rejects_inputs_outside_1_to_31_bytes() {
        let master = Key::factory_default();
        assert_eq!(diversify_an10922(&master, &[]), Err(DiversifyError::InputLength { len: 0 }));
        assert_eq!(diversify_an10922(&master, &[0; 32]), Err(DiversifyError::InputLength { len: 32 }));
        assert!(diversify_an10922(&master, &[0; 31]).is_ok());
        let uid = CardUid::from_bytes([4, 1, 2, 3, 4, 5, 6]);
        assert!(diversify_card_key(&master, &uid, 2, &[b'A'; SYSTEM_IDENTIFIER_MAX]).is_ok());
        assert_eq!(
            diversify_card_key(&master, &uid, 2, &[b'A'; SYSTEM_IDENTIFIER_MAX + 1]),
            Err(DiversifyError::InputLength { len: 32 })
        );
    }

    /// The hand-written two-block path agrees with the `cmac` crate wherever both apply:
    /// inputs of 17 to 31 bytes, which plain CMAC also pads to 32 bytes with K2.
    #[test]
    fn two_block_path_agrees_with_the_cmac_crate() {
        let key = Key::from_bytes(core::array::from_fn(|index| (index * 17) as u8));
        for len in 17..32 {
            let data: Vec<u8> = (0..len).map(|index| (index * 31 + 7) as u8).collect();
            assert_eq!(cmac_padded_to_two_blocks(&key, &data), crypto::cmac(&key, &data), "length {len}");
        }
    }

    /// Inputs of up to 16 bytes are padded to 32 bytes, so they differ from plain CMAC.
    #[test]
    fn short_inputs_are_padded_to_two_blocks() {
        let master = Key::from_bytes([0x42; 16]);
        let diversified = diversify_an10922(&master, &[1, 2, 3]).unwrap();
        assert_ne!(diversified.expose_secret(), &crypto::cmac(&master, &[1, 1, 2, 3]));
        assert_eq!(diversified.expose_secret(), &cmac_padded_to_two_blocks(&master, &[1, 1, 2, 3]));
    }
}
