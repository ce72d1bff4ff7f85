//! AES-128 and AES-CMAC building blocks, as NXP uses them.
//!
//! Everything here wraps RustCrypto's `aes`, `cbc` and `cmac` crates; the only logic of our
//! own is the byte plumbing NXP defines around them: the truncated MAC, ISO/IEC 9797-1
//! padding method 2 and the one-byte rotation used during authentication.

use aes::cipher::array::Array;
use aes::cipher::consts::U16;
use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, BlockModeDecrypt, BlockModeEncrypt};
use aes::cipher::{KeyInit, KeyIvInit};
use aes::Aes128;
use cmac::{Cmac, Mac};
use subtle::ConstantTimeEq;

use crate::key::Key;

/// AES block length in bytes.
pub const BLOCK_LEN: usize = 16;

/// Length of NXP's truncated MAC (MACt) in bytes.
pub const MAC_LEN: usize = 8;

/// One AES block.
pub type Block = [u8; BLOCK_LEN];

/// A truncated MAC as sent on the wire.
pub type TruncatedMac = [u8; MAC_LEN];

/// Errors of the block-level helpers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// CBC without padding needs a whole number of 16-byte blocks.
    #[error("data of {len} bytes is not a whole number of 16-byte AES blocks")]
    NotBlockAligned {
        /// Length of the data that was given.
        len: usize,
    },
    /// The data does not end in `80 00 .. 00` as ISO/IEC 9797-1 padding method 2 requires.
    #[error("invalid ISO/IEC 9797-1 method 2 padding")]
    BadPadding,
}

pub(crate) fn cipher(key: &Key) -> Aes128 {
    Aes128::new(key.expose_secret().into())
}

/// AES-128 encryption of one block (ECB).
#[must_use]
pub fn aes_encrypt_block(key: &Key, block: &Block) -> Block {
    encrypt_with(&cipher(key), block)
}

/// AES-128 decryption of one block (ECB).
#[must_use]
pub fn aes_decrypt_block(key: &Key, block: &Block) -> Block {
    let mut buffer = Array::<u8, U16>::from(*block);
    cipher(key).decrypt_block(&mut buffer);
    buffer.into()
}

pub(crate) fn encrypt_with(cipher: &Aes128, block: &Block) -> Block {
    let mut buffer = Array::<u8, U16>::from(*block);
    cipher.encrypt_block(&mut buffer);
    buffer.into()
}

/// AES-128-CBC encryption in place, without padding.
///
/// # Errors
/// [`CryptoError::NotBlockAligned`] when `data` is not a multiple of 16 bytes.
pub fn aes_cbc_encrypt(key: &Key, iv: &Block, data: &mut [u8]) -> Result<(), CryptoError> {
    let len = data.len();
    let (blocks, rest) = Array::<u8, U16>::slice_as_chunks_mut(data);
    if !rest.is_empty() {
        return Err(CryptoError::NotBlockAligned { len });
    }
    cbc::Encryptor::<Aes128>::new(key.expose_secret().into(), iv.into()).encrypt_blocks(blocks);
    Ok(())
}

/// AES-128-CBC decryption in place, without padding.
///
/// # Errors
/// [`CryptoError::NotBlockAligned`] when `data` is not a multiple of 16 bytes.
pub fn aes_cbc_decrypt(key: &Key, iv: &Block, data: &mut [u8]) -> Result<(), CryptoError> {
    let len = data.len();
    let (blocks, rest) = Array::<u8, U16>::slice_as_chunks_mut(data);
    if !rest.is_empty() {
        return Err(CryptoError::NotBlockAligned { len });
    }
    cbc::Decryptor::<Aes128>::new(key.expose_secret().into(), iv.into()).decrypt_blocks(blocks);
    Ok(())
}

/// AES-CMAC (RFC 4493, NIST SP 800-38B) of a message.
#[must_use]
pub fn cmac(key: &Key, message: &[u8]) -> Block {
    cmac_parts(key, &[message])
}

/// AES-CMAC of the concatenation of `parts`, without building the concatenation.
#[must_use]
pub fn cmac_parts(key: &Key, parts: &[&[u8]]) -> Block {
    let mut mac = Cmac::<Aes128>::new(key.expose_secret().into());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// NXP's truncation of a 16-byte CMAC to 8 bytes: the bytes at (0-based) indexes
/// 1, 3, 5, .. 15, which the data sheet calls "the even-numbered bytes".
#[must_use]
pub fn truncate_mac(full: &Block) -> TruncatedMac {
    let mut truncated = [0; MAC_LEN];
    for (out, pair) in truncated.iter_mut().zip(full.chunks_exact(2)) {
        if let [_, odd] = pair {
            *out = *odd;
        }
    }
    truncated
}

/// MACt: the truncated AES-CMAC of the concatenation of `parts`.
#[must_use]
pub fn mac_t(key: &Key, parts: &[&[u8]]) -> TruncatedMac {
    truncate_mac(&cmac_parts(key, parts))
}

/// Compares two truncated MACs in constant time.
#[must_use]
pub fn mac_eq(left: &TruncatedMac, right: &TruncatedMac) -> bool {
    left.ct_eq(right).into()
}

/// ISO/IEC 9797-1 padding method 2: appends `80` and then zeros up to a multiple of 16
/// bytes. Data already a multiple of 16 gets a whole extra block.
#[must_use]
pub fn pad_m2(data: &[u8]) -> Vec<u8> {
    let padded_len = (data.len() / BLOCK_LEN + 1) * BLOCK_LEN;
    let mut padded = Vec::with_capacity(padded_len);
    padded.extend_from_slice(data);
    padded.push(0x80);
    padded.resize(padded_len, 0);
    padded
}

/// Removes ISO/IEC 9797-1 padding method 2 (the inverse of [`pad_m2`]).
///
/// # Errors
/// [`CryptoError::BadPadding`] unless the data ends in `80` followed by fewer than 16 zeros.
pub fn unpad_m2(data: &[u8]) -> Result<&[u8], CryptoError> {
    let zeros = data.iter().rev().take_while(|&&byte| byte == 0).count();
    if zeros >= BLOCK_LEN {
        return Err(CryptoError::BadPadding);
    }
    let unpadded_len = data.len().saturating_sub(zeros + 1);
    match data.get(unpadded_len) {
        Some(0x80) if data.len().is_multiple_of(BLOCK_LEN) => Ok(data.get(..unpadded_len).unwrap_or(&[])),
        _ => Err(CryptoError::BadPadding),
    }
}

/// Rotates a block left by one byte (RndA' and RndB' of the authentication).
#[must_use]
pub fn rotate_left(block: &Block) -> Block {
    let mut rotated = *block;
    rotated.rotate_left(1);
    rotated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_the_odd_indexes() {
        let full: Block = core::array::from_fn(|index| index as u8);
        assert_eq!(truncate_mac(&full), [1, 3, 5, 7, 9, 11, 13, 15]);
    }

    #[test]
    fn padding_round_trips_and_rejects_garbage() {
        assert_eq!(pad_m2(&[]), {
            let mut block = vec![0; 16];
            block[0] = 0x80;
            block
        });
        assert_eq!(pad_m2(&[0; 16]).len(), 32);
        assert_eq!(pad_m2(&[1; 15]).len(), 16);
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|index| index as u8 | 1).collect();
            assert_eq!(unpad_m2(&pad_m2(&data)).unwrap(), &data[..]);
        }
        assert_eq!(unpad_m2(&[0; 16]), Err(CryptoError::BadPadding));
        assert_eq!(unpad_m2(&[]), Err(CryptoError::BadPadding));
        assert_eq!(unpad_m2(&[0x80]), Err(CryptoError::BadPadding));
        assert_eq!(unpad_m2(&[1; 16]), Err(CryptoError::BadPadding));
    }

    #[test]
    fn cbc_refuses_partial_blocks() {
        let key = Key::factory_default();
        let mut data = [0; 17];
        assert_eq!(aes_cbc_encrypt(&key, &[0; 16], &mut data), Err(CryptoError::NotBlockAligned { len: 17 }));
        assert_eq!(aes_cbc_decrypt(&key, &[0; 16], &mut data), Err(CryptoError::NotBlockAligned { len: 17 }));
    }

    #[test]
    fn cbc_round_trips() {
        let key = Key::from_bytes([7; 16]);
        let plain: Vec<u8> = (0..48).collect();
        let mut data = plain.clone();
        aes_cbc_encrypt(&key, &[9; 16], &mut data).unwrap();
        assert_ne!(data, plain);
        aes_cbc_decrypt(&key, &[9; 16], &mut data).unwrap();
        assert_eq!(data, plain);
    }
}
