//! Secure messaging after AuthenticateEV2First (data sheet §9.1.8–9.1.10, AN12196 §5).
//!
//! A [`Session`] holds the session keys, the transaction identifier TI and the command
//! counter CmdCtr. The terminal uses [`Session::wrap_command`] and
//! [`Session::unwrap_response`]; a (virtual) card uses [`Session::unwrap_command`] and
//! [`Session::wrap_response`]. Both sides count commands the same way: the MAC and IV of a
//! command use the current CmdCtr, which then goes up by one; the response uses the
//! increased value.
//!
//! - CommMode.MAC: `data || MACt(SesAuthMACKey, Cmd || CmdCtr || TI || CmdHeader || CmdData)`
//!   for commands, `MACt(SesAuthMACKey, RC || CmdCtr || TI || RespData)` for responses.
//! - CommMode.Full: CmdData (or RespData) is padded with `80 00 ..` and encrypted with
//!   AES-128-CBC under SesAuthENCKey, IV = `E(SesAuthENCKey, A55A || TI || CmdCtr || 0^8)`
//!   for commands and `5AA5` for responses; then MACed as above. Empty data is not
//!   encrypted, only MACed.

use zeroize::Zeroizing;

use crate::apdu::{ApduError, CommandApdu, ResponseApdu, StatusWord, SHORT_DATA_MAX};
use crate::crypto::{self, Block, CryptoError, TruncatedMac, BLOCK_LEN, MAC_LEN};
use crate::key::Key;

/// Length of the transaction identifier TI.
pub const TI_LEN: usize = 4;

/// Largest response data field, secure messaging included (Le `00` = 256).
pub const RESPONSE_DATA_MAX: usize = 256;

/// Return code of a successful native command (SW2 of `9100`).
const RC_OK: u8 = 0x00;

const IV_LABEL_COMMAND: [u8; 2] = [0xA5, 0x5A];
const IV_LABEL_RESPONSE: [u8; 2] = [0x5A, 0xA5];

/// How a command and its response are protected (data sheet Table 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommMode {
    /// No protection; while authenticated the command counter still counts.
    Plain,
    /// A truncated CMAC over command and response.
    Mac,
    /// Encrypted data and a truncated CMAC.
    Full,
}

impl CommMode {
    /// The two-bit representation used in FileOption (`00`, `01`, `11`).
    #[must_use]
    pub const fn bits(self) -> u8 {
        match self {
            Self::Plain => 0b00,
            Self::Mac => 0b01,
            Self::Full => 0b11,
        }
    }
}

/// Errors of secure messaging. After any of them the session is to be abandoned: the card
/// drops its authentication on any error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecureMessagingError {
    /// CmdCtr reached `FFFF`; a new AuthenticateEV2First is needed.
    #[error("the command counter is exhausted; authenticate again")]
    CounterExhausted,
    /// The card answered with an error status instead of `9100`.
    #[error("the card answered {0}")]
    Status(StatusWord),
    /// The data is too short to hold the command header and the 8-byte MAC.
    #[error("{len} bytes are too short for the header and the MAC")]
    Truncated {
        /// Length of the data that was received.
        len: usize,
    },
    /// The MAC does not match: the message was altered or the keys differ.
    #[error("the MAC does not match (integrity error)")]
    MacMismatch,
    /// The encrypted part is not a whole number of AES blocks.
    #[error("encrypted data of {len} bytes is not a whole number of AES blocks")]
    NotBlockAligned {
        /// Length of the encrypted part.
        len: usize,
    },
    /// The decrypted data does not end in valid `80 00 ..` padding.
    #[error("invalid padding in decrypted data (integrity error)")]
    BadPadding,
    /// The protected message does not fit a short APDU.
    #[error("the protected message of {len} bytes does not fit a short APDU")]
    TooLong {
        /// Length of the protected message.
        len: usize,
    },
    /// The command is not a native command (`CLA 90`, `P1 P2 00 00`).
    #[error("the command is not a native command")]
    NotNative,
}

impl From<CryptoError> for SecureMessagingError {
    fn from(error: CryptoError) -> Self {
        match error {
            CryptoError::NotBlockAligned { len } => Self::NotBlockAligned { len },
            CryptoError::BadPadding => Self::BadPadding,
        }
    }
}

impl From<ApduError> for SecureMessagingError {
    fn from(error: ApduError) -> Self {
        match error {
            ApduError::DataTooLong { len } => Self::TooLong { len },
            _ => Self::TooLong { len: 0 },
        }
    }
}

/// An authenticated secure-messaging session: `{ enc_key, mac_key, ti, cmd_ctr }`.
#[derive(Debug, Clone)]
pub struct Session {
    enc_key: Key,
    mac_key: Key,
    ti: [u8; TI_LEN],
    cmd_ctr: u16,
}

impl Session {
    /// A fresh session as AuthenticateEV2First leaves it: CmdCtr = 0.
    #[must_use]
    pub fn new(enc_key: Key, mac_key: Key, ti: [u8; TI_LEN]) -> Self {
        Self::with_counter(enc_key, mac_key, ti, 0)
    }

    /// A session at a given CmdCtr (to resume, or to replay a published example).
    #[must_use]
    pub fn with_counter(enc_key: Key, mac_key: Key, ti: [u8; TI_LEN], cmd_ctr: u16) -> Self {
        Self { enc_key, mac_key, ti, cmd_ctr }
    }

    /// The session encryption key, SesAuthENCKey.
    #[must_use]
    pub fn enc_key(&self) -> &Key {
        &self.enc_key
    }

    /// The session MAC key, SesAuthMACKey.
    #[must_use]
    pub fn mac_key(&self) -> &Key {
        &self.mac_key
    }

    /// The transaction identifier TI.
    #[must_use]
    pub const fn ti(&self) -> [u8; TI_LEN] {
        self.ti
    }

    /// The current command counter CmdCtr.
    #[must_use]
    pub const fn cmd_ctr(&self) -> u16 {
        self.cmd_ctr
    }

    /// The IV for encrypting command data at the current CmdCtr:
    /// `E(SesAuthENCKey, A5 5A || TI || CmdCtr (LSB first) || 00 * 8)`.
    #[must_use]
    pub fn command_iv(&self) -> Block {
        self.iv(IV_LABEL_COMMAND)
    }

    /// The IV for encrypting response data at the current CmdCtr (label `5A A5`).
    #[must_use]
    pub fn response_iv(&self) -> Block {
        self.iv(IV_LABEL_RESPONSE)
    }

    fn iv(&self, label: [u8; 2]) -> Block {
        let mut input = [0_u8; BLOCK_LEN];
        input[..2].copy_from_slice(&label);
        input[2..6].copy_from_slice(&self.ti);
        input[6..8].copy_from_slice(&self.cmd_ctr.to_le_bytes());
        crypto::aes_encrypt_block(&self.enc_key, &input)
    }

    /// MACt(SesAuthMACKey, first || CmdCtr || TI || header || body).
    fn mac(&self, first: u8, header: &[u8], body: &[u8]) -> TruncatedMac {
        crypto::mac_t(&self.mac_key, &[&[first], &self.cmd_ctr.to_le_bytes(), &self.ti, header, body])
    }

    fn check_counter(&self) -> Result<(), SecureMessagingError> {
        if self.cmd_ctr == u16::MAX {
            Err(SecureMessagingError::CounterExhausted)
        } else {
            Ok(())
        }
    }

    /// Terminal side: protects a native command and advances CmdCtr.
    ///
    /// `header` (CmdHeader: file number, key number, offsets) is sent in plain in every
    /// mode; `data` (CmdData) is encrypted in [`CommMode::Full`].
    ///
    /// # Errors
    /// [`SecureMessagingError::CounterExhausted`] at CmdCtr `FFFF`,
    /// [`SecureMessagingError::TooLong`] when the protected data exceeds 255 bytes.
    pub fn wrap_command(
        &mut self,
        cmd: u8,
        header: &[u8],
        data: &[u8],
        mode: CommMode,
    ) -> Result<CommandApdu, SecureMessagingError> {
        self.check_counter()?;
        let body: Zeroizing<Vec<u8>> = match mode {
            CommMode::Plain | CommMode::Mac => Zeroizing::new(data.to_vec()),
            CommMode::Full => self.encrypt(data, self.command_iv())?,
        };
        let mut apdu_data = Vec::with_capacity(header.len() + body.len() + MAC_LEN);
        apdu_data.extend_from_slice(header);
        apdu_data.extend_from_slice(&body);
        if mode != CommMode::Plain {
            apdu_data.extend_from_slice(&self.mac(cmd, header, &body));
        }
        if apdu_data.len() > SHORT_DATA_MAX {
            return Err(SecureMessagingError::TooLong { len: apdu_data.len() });
        }
        let apdu = CommandApdu::native(cmd, apdu_data)?;
        self.cmd_ctr += 1;
        Ok(apdu)
    }

    /// Terminal side: checks a response to the last wrapped command and returns its plain
    /// data. The counter is not changed (it already moved when the command was wrapped).
    ///
    /// # Errors
    /// [`SecureMessagingError::Status`] when the status is not `9100` (the card then has
    /// dropped the authentication), and MAC, length or padding errors.
    pub fn unwrap_response(&self, response: &ResponseApdu, mode: CommMode) -> Result<Vec<u8>, SecureMessagingError> {
        let status = response.status();
        if status != StatusWord::OPERATION_OK {
            return Err(SecureMessagingError::Status(status));
        }
        let data = response.data();
        if mode == CommMode::Plain {
            return Ok(data.to_vec());
        }
        let Some((body, received_mac)) = data.split_last_chunk::<MAC_LEN>() else {
            return Err(SecureMessagingError::Truncated { len: data.len() });
        };
        if !crypto::mac_eq(&self.mac(status.sw2(), &[], body), received_mac) {
            return Err(SecureMessagingError::MacMismatch);
        }
        match mode {
            CommMode::Full => self.decrypt(body, self.response_iv()),
            CommMode::Plain | CommMode::Mac => Ok(body.to_vec()),
        }
    }

    /// Terminal side: the end of a session after ChangeKey of the key used to authenticate
    /// (key 0): the card answers a bare `9100` without MAC and is no longer authenticated.
    ///
    /// # Errors
    /// [`SecureMessagingError::Status`] unless the response is exactly `9100`.
    pub fn close_after_auth_key_change(self, response: &ResponseApdu) -> Result<(), SecureMessagingError> {
        if response.status() == StatusWord::OPERATION_OK && response.data().is_empty() {
            Ok(())
        } else {
            Err(SecureMessagingError::Status(response.status()))
        }
    }

    /// Card side: checks a protected command at the current CmdCtr, advances CmdCtr, and
    /// returns `CmdHeader || plain CmdData`, as the command would read in CommMode.Plain.
    ///
    /// `header_len` is the length of the command's CmdHeader (1 for ChangeKey and
    /// ChangeFileSettings, 7 for ReadData and WriteData, 0 for GetCardUID).
    ///
    /// # Errors
    /// [`SecureMessagingError`] for a wrong MAC, length or padding (the card answers
    /// INTEGRITY_ERROR or LENGTH_ERROR and ends the authentication), or an exhausted counter.
    pub fn unwrap_command(
        &mut self,
        command: &CommandApdu,
        header_len: usize,
        mode: CommMode,
    ) -> Result<Vec<u8>, SecureMessagingError> {
        self.check_counter()?;
        let (cmd, data) = command.as_native().ok_or(SecureMessagingError::NotNative)?;
        if data.len() < header_len {
            return Err(SecureMessagingError::Truncated { len: data.len() });
        }
        let (header, rest) = data.split_at(header_len);
        let plain = match mode {
            CommMode::Plain => rest.to_vec(),
            CommMode::Mac | CommMode::Full => {
                let Some((body, received_mac)) = rest.split_last_chunk::<MAC_LEN>() else {
                    return Err(SecureMessagingError::Truncated { len: data.len() });
                };
                if !crypto::mac_eq(&self.mac(cmd, header, body), received_mac) {
                    return Err(SecureMessagingError::MacMismatch);
                }
                if mode == CommMode::Full {
                    self.decrypt(body, self.command_iv())?
                } else {
                    body.to_vec()
                }
            }
        };
        self.cmd_ctr += 1;
        let mut out = Vec::with_capacity(header.len() + plain.len());
        out.extend_from_slice(header);
        out.extend_from_slice(&plain);
        Ok(out)
    }

    /// Card side: protects a successful response (`9100`) at the current CmdCtr, which
    /// [`Session::unwrap_command`] has already advanced. Error responses carry no MAC: send
    /// [`ResponseApdu::status_only`] instead.
    ///
    /// # Errors
    /// [`SecureMessagingError::TooLong`] when the protected response exceeds 256 bytes.
    pub fn wrap_response(&self, data: &[u8], mode: CommMode) -> Result<ResponseApdu, SecureMessagingError> {
        let body: Zeroizing<Vec<u8>> = match mode {
            CommMode::Plain | CommMode::Mac => Zeroizing::new(data.to_vec()),
            CommMode::Full => self.encrypt(data, self.response_iv())?,
        };
        let mut out = Vec::with_capacity(body.len() + MAC_LEN);
        out.extend_from_slice(&body);
        if mode != CommMode::Plain {
            out.extend_from_slice(&self.mac(RC_OK, &[], &body));
        }
        if out.len() > RESPONSE_DATA_MAX {
            return Err(SecureMessagingError::TooLong { len: out.len() });
        }
        Ok(ResponseApdu::new(out, StatusWord::OPERATION_OK))
    }

    fn encrypt(&self, data: &[u8], iv: Block) -> Result<Zeroizing<Vec<u8>>, SecureMessagingError> {
        if data.is_empty() {
            return Ok(Zeroizing::new(Vec::new()));
        }
        let mut padded = Zeroizing::new(crypto::pad_m2(data));
        crypto::aes_cbc_encrypt(&self.enc_key, &iv, &mut padded)?;
        Ok(padded)
    }

    fn decrypt(&self, body: &[u8], iv: Block) -> Result<Vec<u8>, SecureMessagingError> {
        if body.is_empty() {
            return Ok(Vec::new());
        }
        let mut plain = Zeroizing::new(body.to_vec());
        crypto::aes_cbc_decrypt(&self.enc_key, &iv, &mut plain)?;
        Ok(crypto::unpad_m2(&plain)?.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Session, Session) {
        let terminal = Session::new(Key::from_bytes([1; 16]), Key::from_bytes([2; 16]), [9; 4]);
        (terminal.clone(), terminal)
    }

    #[test]
    fn terminal_and_card_agree_in_every_mode() {
        let (mut terminal, mut card) = pair();
        for (round, mode) in [CommMode::Plain, CommMode::Mac, CommMode::Full].into_iter().cycle().take(9).enumerate() {
            let data: Vec<u8> = (0..round * 7).map(|index| index as u8).collect();
            let command = terminal.wrap_command(0x8D, &[2, 0, 0, 0], &data, mode).unwrap();
            let received = card.unwrap_command(&command, 4, mode).unwrap();
            assert_eq!(received[..4], [2, 0, 0, 0]);
            assert_eq!(received[4..], data[..]);
            let response = card.wrap_response(&data, mode).unwrap();
            assert_eq!(terminal.unwrap_response(&response, mode).unwrap(), data);
            assert_eq!(terminal.cmd_ctr(), card.cmd_ctr());
        }
        assert_eq!(terminal.cmd_ctr(), 9);
    }

    #[test]
    fn a_tampered_command_is_refused_and_the_counter_stays() {
        let (mut terminal, mut card) = pair();
        let command = terminal.wrap_command(0xC4, &[2], &[5; 21], CommMode::Full).unwrap();
        let mut bytes = command.to_bytes();
        bytes[7] ^= 1;
        let tampered = CommandApdu::parse(&bytes).unwrap();
        assert_eq!(card.unwrap_command(&tampered, 1, CommMode::Full), Err(SecureMessagingError::MacMismatch));
        assert_eq!(card.cmd_ctr(), 0);
    }

    #[test]
    fn error_status_and_exhausted_counter() {
        let (terminal, _) = pair();
        assert_eq!(
            terminal.unwrap_response(&ResponseApdu::status_only(StatusWord::INTEGRITY_ERROR), CommMode::Mac),
            Err(SecureMessagingError::Status(StatusWord::INTEGRITY_ERROR))
        );
        let mut last = Session::with_counter(Key::from_bytes([1; 16]), Key::from_bytes([2; 16]), [0; 4], u16::MAX);
        assert_eq!(last.wrap_command(0x51, &[], &[], CommMode::Full), Err(SecureMessagingError::CounterExhausted));
    }

    #[test]
    fn too_long_commands_are_refused() {
        let (mut terminal, _) = pair();
        assert_eq!(
            terminal.wrap_command(0x8D, &[0; 7], &[0; 240], CommMode::Full),
            Err(SecureMessagingError::TooLong { len: 7 + 256 + 8 })
        );
        assert_eq!(terminal.cmd_ctr(), 0);
    }
}
