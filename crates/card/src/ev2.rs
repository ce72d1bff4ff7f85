//! AuthenticateEV2First (data sheet §9.1.5 and §10.4.1, AN12196 §6.6), for both sides, as
//! pure state machines. The caller moves APDUs and supplies the random numbers.
//!
//! ```text
//! terminal                                   card
//! 90 71 00 00 02 KeyNo 00 00      ───▶
//!                                 ◀───       E(K, RndB)                         91 AF
//! 90 AF 00 00 20 E(K, RndA || RndB') 00 ───▶
//!                                 ◀───       E(K, TI || RndA' || PDcap2 || PCDcap2) 91 00
//! ```
//!
//! X' is X rotated left by one byte; E is AES-128-CBC with a zero IV and no padding. Both
//! sides then derive SesAuthENCKey = CMAC(K, SV1) and SesAuthMACKey = CMAC(K, SV2) with
//! `SV1 = A5 5A 00 01 00 80 || RndA[0..2] || (RndA[2..8] ^ RndB[0..6]) || RndB[6..16] ||
//! RndA[8..16]` (SV2 the same with `5A A5`).
//!
//! Terminal: [`TerminalAuth::new`] → [`TerminalAuth::command`] →
//! [`TerminalAuth::answer_challenge`] → [`TerminalAwaitingProof::finish`].
//! Card: [`AuthRequest::parse`] → [`CardAuth::challenge`] → [`CardAuth::verify`].

use core::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::apdu::{CommandApdu, ResponseApdu, StatusWord};
use crate::crypto::{self, Block, BLOCK_LEN};
use crate::key::Key;
use crate::session::{Session, TI_LEN};

/// Command code of AuthenticateEV2First.
pub const CMD_AUTHENTICATE_EV2_FIRST: u8 = 0x71;

/// Command code of the additional frame (second part of the authentication).
pub const CMD_ADDITIONAL_FRAME: u8 = 0xAF;

/// Length of the PD and PCD capability vectors.
pub const CAP2_LEN: usize = 6;

/// Highest key number the KeyNo byte can carry (bits 5–0).
pub const KEY_NO_MAX: u8 = 0x3F;

/// PCDcap2.1 bit 1 asks for LRP secure messaging, which this crate does not implement.
const PCD_CAP2_LRP: u8 = 0b10;

const LABEL_ENC: [u8; 2] = [0xA5, 0x5A];
const LABEL_MAC: [u8; 2] = [0x5A, 0xA5];

/// Why an authentication step failed. On any of them the card is not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Key numbers are 0 to 63 (bits 7–6 are RFU).
    #[error("key number {key_no} is out of range")]
    InvalidKeyNumber {
        /// The rejected key number.
        key_no: u8,
    },
    /// The card answered with an unexpected status word.
    #[error("the card answered {0}")]
    Status(StatusWord),
    /// A message of the wrong length.
    #[error("expected {expected} bytes of authentication data, got {found}")]
    WrongLength {
        /// Length the protocol requires.
        expected: usize,
        /// Length that was received.
        found: usize,
    },
    /// The command is not the expected step of AuthenticateEV2First.
    #[error("unexpected command: not the expected AuthenticateEV2First step")]
    UnexpectedCommand,
    /// LenCap is above 6 or does not match the command length.
    #[error("LenCap does not match the PCD capabilities sent")]
    InvalidLenCap,
    /// The terminal asked for LRP secure messaging (PCDcap2.1 bit 1).
    #[error("LRP secure messaging was requested; only AES (EV2) is supported")]
    LrpRequested,
    /// The card's answer does not hold our RndA': the card does not have the key.
    #[error("the card did not prove knowledge of the key")]
    CardNotAuthenticated,
    /// The terminal's answer does not hold RndB': the terminal does not have the key.
    #[error("the terminal did not prove knowledge of the key")]
    TerminalNotAuthenticated,
}

/// The session keys (SesAuthENCKey, SesAuthMACKey) derived from the authentication key and
/// the two random numbers (data sheet §9.1.7).
#[must_use]
pub fn session_keys(key: &Key, rnd_a: &Block, rnd_b: &Block) -> (Key, Key) {
    let mut context = Zeroizing::new([0_u8; 26]);
    context[..2].copy_from_slice(&rnd_a[..2]);
    for (out, (a, b)) in context[2..8].iter_mut().zip(rnd_a[2..8].iter().zip(&rnd_b[..6])) {
        *out = a ^ b;
    }
    context[8..18].copy_from_slice(&rnd_b[6..]);
    context[18..].copy_from_slice(&rnd_a[8..]);
    let derive = |label: [u8; 2]| {
        Key::from_bytes(crypto::cmac_parts(key, &[&label, &[0x00, 0x01, 0x00, 0x80], context.as_slice()]))
    };
    (derive(LABEL_ENC), derive(LABEL_MAC))
}

/// What a successful authentication leaves the terminal with.
#[derive(Debug)]
pub struct Authenticated {
    /// The secure-messaging session (CmdCtr = 0).
    pub session: Session,
    /// The card's capabilities PDcap2.
    pub pd_cap2: [u8; CAP2_LEN],
    /// The terminal capabilities as echoed by the card (zero-padded to 6 bytes).
    pub pcd_cap2: [u8; CAP2_LEN],
}

/// Terminal side, first state: knows the key and its number.
#[derive(Debug)]
pub struct TerminalAuth {
    key: Key,
    key_no: u8,
}

impl TerminalAuth {
    /// Prepares an authentication with `key`, stored on the card as key `key_no`.
    ///
    /// # Errors
    /// [`AuthError::InvalidKeyNumber`] above [`KEY_NO_MAX`].
    pub fn new(key: Key, key_no: u8) -> Result<Self, AuthError> {
        if key_no > KEY_NO_MAX {
            return Err(AuthError::InvalidKeyNumber { key_no });
        }
        Ok(Self { key, key_no })
    }

    /// The first command: `90 71 00 00 02 KeyNo 00 00` (LenCap 0: no PCDcap2, AES mode).
    #[must_use]
    pub fn command(&self) -> CommandApdu {
        native(CMD_AUTHENTICATE_EV2_FIRST, vec![self.key_no, 0x00])
    }

    /// Takes the card's `E(K, RndB) 91AF` and the terminal's random `rnd_a`; returns the
    /// second command `90 AF 00 00 20 E(K, RndA || RndB') 00`.
    ///
    /// # Errors
    /// [`AuthError::Status`] unless the card answered `91AF`,
    /// [`AuthError::WrongLength`] unless it sent 16 bytes.
    pub fn answer_challenge(
        self,
        response: &ResponseApdu,
        rnd_a: Block,
    ) -> Result<(CommandApdu, TerminalAwaitingProof), AuthError> {
        expect_status(response, StatusWord::ADDITIONAL_FRAME)?;
        let encrypted_rnd_b: &Block = exact(response.data())?;
        let rnd_b = Zeroizing::new(crypto::aes_decrypt_block(&self.key, encrypted_rnd_b));
        let mut message = Zeroizing::new([0_u8; 2 * BLOCK_LEN]);
        message[..BLOCK_LEN].copy_from_slice(&rnd_a);
        message[BLOCK_LEN..].copy_from_slice(&crypto::rotate_left(&rnd_b));
        cbc_encrypt_zero_iv(&self.key, message.as_mut_slice());
        let command = native(CMD_ADDITIONAL_FRAME, message.to_vec());
        let next = TerminalAwaitingProof { key: self.key, rnd_a: Zeroizing::new(rnd_a), rnd_b };
        Ok((command, next))
    }
}

/// Terminal side, second state: waits for the card's proof.
pub struct TerminalAwaitingProof {
    key: Key,
    rnd_a: Zeroizing<Block>,
    rnd_b: Zeroizing<Block>,
}

impl TerminalAwaitingProof {
    /// Takes the card's `E(K, TI || RndA' || PDcap2 || PCDcap2) 9100`, checks RndA' in
    /// constant time and derives the session.
    ///
    /// # Errors
    /// [`AuthError::Status`] unless `9100`, [`AuthError::WrongLength`] unless 32 bytes,
    /// [`AuthError::CardNotAuthenticated`] when RndA' does not match.
    pub fn finish(self, response: &ResponseApdu) -> Result<Authenticated, AuthError> {
        expect_status(response, StatusWord::OPERATION_OK)?;
        let encrypted: &[u8; 2 * BLOCK_LEN] = exact(response.data())?;
        let mut plain = Zeroizing::new(*encrypted);
        cbc_decrypt_zero_iv(&self.key, plain.as_mut_slice());
        let (ti, rest) = plain.split_at(TI_LEN);
        let (rnd_a_rotated, caps) = rest.split_at(BLOCK_LEN);
        let expected = crypto::rotate_left(&self.rnd_a);
        if !bool::from(rnd_a_rotated.ct_eq(&expected)) {
            return Err(AuthError::CardNotAuthenticated);
        }
        let (enc_key, mac_key) = session_keys(&self.key, &self.rnd_a, &self.rnd_b);
        Ok(Authenticated {
            session: Session::new(enc_key, mac_key, array(ti)),
            pd_cap2: array(caps.get(..CAP2_LEN).unwrap_or(&[])),
            pcd_cap2: array(caps.get(CAP2_LEN..).unwrap_or(&[])),
        })
    }
}

/// Card side: a parsed first command `90 71 00 00 Lc KeyNo LenCap [PCDcap2]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthRequest {
    key_no: u8,
    pcd_cap2: [u8; CAP2_LEN],
}

impl AuthRequest {
    /// Parses the first command of AuthenticateEV2First.
    ///
    /// # Errors
    /// [`AuthError::UnexpectedCommand`] for another command, [`AuthError::InvalidLenCap`],
    /// [`AuthError::InvalidKeyNumber`], [`AuthError::LrpRequested`].
    pub fn parse(command: &CommandApdu) -> Result<Self, AuthError> {
        let Some((CMD_AUTHENTICATE_EV2_FIRST, data)) = command.as_native() else {
            return Err(AuthError::UnexpectedCommand);
        };
        let [key_no, len_cap, caps @ ..] = data else {
            return Err(AuthError::WrongLength { expected: 2, found: data.len() });
        };
        if usize::from(*len_cap) > CAP2_LEN || caps.len() != usize::from(*len_cap) {
            return Err(AuthError::InvalidLenCap);
        }
        if *key_no > KEY_NO_MAX {
            return Err(AuthError::InvalidKeyNumber { key_no: *key_no });
        }
        if caps.first().is_some_and(|cap| cap & PCD_CAP2_LRP != 0) {
            return Err(AuthError::LrpRequested);
        }
        let mut pcd_cap2 = [0; CAP2_LEN];
        pcd_cap2[..caps.len()].copy_from_slice(caps);
        Ok(Self { key_no: *key_no, pcd_cap2 })
    }

    /// The key the terminal wants to authenticate with.
    #[must_use]
    pub const fn key_no(&self) -> u8 {
        self.key_no
    }

    /// The terminal's capabilities, zero-padded to 6 bytes.
    #[must_use]
    pub const fn pcd_cap2(&self) -> [u8; CAP2_LEN] {
        self.pcd_cap2
    }
}

/// Card side, after sending the challenge: waits for the terminal's answer.
pub struct CardAuth {
    key: Key,
    rnd_b: Zeroizing<Block>,
    pcd_cap2: [u8; CAP2_LEN],
}

impl CardAuth {
    /// Answers the first command with `E(K, RndB) 91AF`; `key` is the card's key number
    /// `request.key_no()`, `rnd_b` the card's random challenge.
    #[must_use]
    pub fn challenge(key: Key, request: &AuthRequest, rnd_b: Block) -> (ResponseApdu, Self) {
        let encrypted = crypto::aes_encrypt_block(&key, &rnd_b);
        let response = ResponseApdu::new(encrypted.to_vec(), StatusWord::ADDITIONAL_FRAME);
        let state = Self { key, rnd_b: Zeroizing::new(rnd_b), pcd_cap2: request.pcd_cap2 };
        (response, state)
    }

    /// Checks the terminal's `90 AF .. E(K, RndA || RndB')`. On success answers
    /// `E(K, TI || RndA' || PDcap2 || PCDcap2) 9100` with the caller's fresh `ti` and the
    /// card's `pd_cap2`, and returns the card's session (CmdCtr = 0).
    ///
    /// # Errors
    /// [`AuthError::UnexpectedCommand`] or [`AuthError::WrongLength`] (the card answers
    /// LENGTH_ERROR), [`AuthError::TerminalNotAuthenticated`] when RndB' is wrong (the card
    /// answers AUTHENTICATION_ERROR).
    pub fn verify(
        self,
        command: &CommandApdu,
        ti: [u8; TI_LEN],
        pd_cap2: [u8; CAP2_LEN],
    ) -> Result<(ResponseApdu, Session), AuthError> {
        let Some((CMD_ADDITIONAL_FRAME, data)) = command.as_native() else {
            return Err(AuthError::UnexpectedCommand);
        };
        let encrypted: &[u8; 2 * BLOCK_LEN] = exact(data)?;
        let mut plain = Zeroizing::new(*encrypted);
        cbc_decrypt_zero_iv(&self.key, plain.as_mut_slice());
        let (rnd_a, rnd_b_rotated) = plain.split_at(BLOCK_LEN);
        let expected = crypto::rotate_left(&self.rnd_b);
        if !bool::from(rnd_b_rotated.ct_eq(&expected)) {
            return Err(AuthError::TerminalNotAuthenticated);
        }
        let rnd_a: Zeroizing<Block> = Zeroizing::new(array(rnd_a));
        let mut answer = Zeroizing::new([0_u8; 2 * BLOCK_LEN]);
        answer[..TI_LEN].copy_from_slice(&ti);
        answer[TI_LEN..TI_LEN + BLOCK_LEN].copy_from_slice(&crypto::rotate_left(&rnd_a));
        answer[TI_LEN + BLOCK_LEN..TI_LEN + BLOCK_LEN + CAP2_LEN].copy_from_slice(&pd_cap2);
        answer[TI_LEN + BLOCK_LEN + CAP2_LEN..].copy_from_slice(&self.pcd_cap2);
        cbc_encrypt_zero_iv(&self.key, answer.as_mut_slice());
        let (enc_key, mac_key) = session_keys(&self.key, &rnd_a, &self.rnd_b);
        Ok((ResponseApdu::new(answer.to_vec(), StatusWord::OPERATION_OK), Session::new(enc_key, mac_key, ti)))
    }
}

impl fmt::Debug for TerminalAwaitingProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TerminalAwaitingProof(<redacted>)")
    }
}

impl fmt::Debug for CardAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CardAuth(<redacted>)")
    }
}

fn native(cmd: u8, data: Vec<u8>) -> CommandApdu {
    // At most 32 bytes of data: always a valid short APDU.
    CommandApdu::native_small(cmd, data)
}

fn expect_status(response: &ResponseApdu, expected: StatusWord) -> Result<(), AuthError> {
    if response.status() == expected {
        Ok(())
    } else {
        Err(AuthError::Status(response.status()))
    }
}

fn exact<const N: usize>(data: &[u8]) -> Result<&[u8; N], AuthError> {
    data.try_into().map_err(|_| AuthError::WrongLength { expected: N, found: data.len() })
}

/// Copies a slice of known length into an array; callers pass slices of exactly `N` bytes.
fn array<const N: usize>(slice: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    let len = slice.len().min(N);
    out[..len].copy_from_slice(slice.get(..len).unwrap_or(&[]));
    out
}

fn cbc_encrypt_zero_iv(key: &Key, data: &mut [u8]) {
    // Callers pass 32-byte buffers, so CBC cannot fail on alignment.
    let _ = crypto::aes_cbc_encrypt(key, &[0; BLOCK_LEN], data);
}

fn cbc_decrypt_zero_iv(key: &Key, data: &mut [u8]) {
    // Callers pass 32-byte buffers, so CBC cannot fail on alignment.
    let _ = crypto::aes_cbc_decrypt(key, &[0; BLOCK_LEN], data);
}
