//! ISO/IEC 7816-4 APDUs in short form, status words, and NXP's native command wrapping.
//!
//! Parsing never panics: every input, however short or long, gives a value or an error.

use core::fmt;

/// CLA of inter-industry ISO/IEC 7816-4 commands (ISOSelectFile, ISOReadBinary).
pub const CLA_ISO: u8 = 0x00;

/// CLA of NXP native commands wrapped in ISO/IEC 7816-4 APDUs.
pub const CLA_NATIVE: u8 = 0x90;

/// Largest command data field of a short APDU (Lc is one byte).
pub const SHORT_DATA_MAX: usize = 255;

/// Largest expected response length of a short APDU (Le `00` means 256).
pub const SHORT_LE_MAX: u16 = 256;

/// Errors from building or parsing APDUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApduError {
    /// A command APDU has at least CLA INS P1 P2.
    #[error("a command APDU is at least 4 bytes, got {len}")]
    CommandTooShort {
        /// Length of the input.
        len: usize,
    },
    /// Lc `00` starts an extended-length APDU, which NTAG 424 DNA does not support.
    #[error("extended-length APDUs are not supported")]
    ExtendedLength,
    /// The body is neither `Lc data` nor `Lc data Le`.
    #[error("Lc announces {lc} data bytes but {body} bytes follow the header")]
    LengthMismatch {
        /// The Lc byte.
        lc: usize,
        /// Number of bytes after CLA INS P1 P2 Lc.
        body: usize,
    },
    /// More than 255 bytes of command data.
    #[error("command data of {len} bytes exceeds the short APDU limit of 255")]
    DataTooLong {
        /// Length of the data.
        len: usize,
    },
    /// Le outside `1..=256`.
    #[error("Le {le} is outside 1..=256")]
    InvalidLe {
        /// The rejected Le.
        le: u16,
    },
    /// A response APDU has at least SW1 SW2.
    #[error("a response APDU is at least 2 bytes (SW1 SW2), got {len}")]
    ResponseTooShort {
        /// Length of the input.
        len: usize,
    },
}

/// A command APDU: CLA INS P1 P2, optional data (Lc), optional Le.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandApdu {
    cla: u8,
    ins: u8,
    p1: u8,
    p2: u8,
    data: Vec<u8>,
    le: Option<u16>,
}

impl CommandApdu {
    /// Builds a command APDU. `le` is the expected response length, `1..=256`
    /// (256 is sent as `00`), or `None` for no Le byte.
    ///
    /// # Errors
    /// [`ApduError::DataTooLong`] above 255 data bytes, [`ApduError::InvalidLe`] for Le 0 or
    /// above 256.
    pub fn new(cla: u8, ins: u8, p1: u8, p2: u8, data: Vec<u8>, le: Option<u16>) -> Result<Self, ApduError> {
        if data.len() > SHORT_DATA_MAX {
            return Err(ApduError::DataTooLong { len: data.len() });
        }
        if let Some(le) = le {
            if le == 0 || le > SHORT_LE_MAX {
                return Err(ApduError::InvalidLe { le });
            }
        }
        Ok(Self { cla, ins, p1, p2, data, le })
    }

    /// Wraps a native command as NXP specifies: `90 Cmd 00 00 [Lc CmdHeader||CmdData] 00`.
    ///
    /// # Errors
    /// [`ApduError::DataTooLong`] above 255 data bytes.
    pub fn native(cmd: u8, data: Vec<u8>) -> Result<Self, ApduError> {
        Self::new(CLA_NATIVE, cmd, 0x00, 0x00, data, Some(SHORT_LE_MAX))
    }

    /// A native command whose data the caller knows to be within 255 bytes (built from
    /// fixed-size parts inside this crate).
    pub(crate) fn native_small(cmd: u8, data: Vec<u8>) -> Self {
        debug_assert!(data.len() <= SHORT_DATA_MAX, "native command data over 255 bytes");
        Self { cla: CLA_NATIVE, ins: cmd, p1: 0, p2: 0, data, le: Some(SHORT_LE_MAX) }
    }

    /// A command whose sizes the caller knows to be valid (fixed parts inside this crate).
    pub(crate) fn new_unchecked(cla: u8, ins: u8, p1: u8, p2: u8, data: Vec<u8>, le: Option<u16>) -> Self {
        debug_assert!(data.len() <= SHORT_DATA_MAX, "command data over 255 bytes");
        Self { cla, ins, p1, p2, data, le }
    }

    /// Parses a short-form command APDU (ISO/IEC 7816-4 cases 1 to 4).
    ///
    /// # Errors
    /// [`ApduError`] for input that is not a well-formed short APDU.
    pub fn parse(bytes: &[u8]) -> Result<Self, ApduError> {
        let Some((&[cla, ins, p1, p2], body)) = bytes.split_first_chunk::<4>() else {
            return Err(ApduError::CommandTooShort { len: bytes.len() });
        };
        let (data, le) = match body {
            [] => (Vec::new(), None),
            [le] => (Vec::new(), Some(le_from_byte(*le))),
            [0, ..] => return Err(ApduError::ExtendedLength),
            [lc, rest @ ..] => {
                let lc = usize::from(*lc);
                if rest.len() == lc {
                    (rest.to_vec(), None)
                } else if rest.len() == lc + 1 {
                    match rest.split_last() {
                        Some((le, data)) => (data.to_vec(), Some(le_from_byte(*le))),
                        None => (Vec::new(), None),
                    }
                } else {
                    return Err(ApduError::LengthMismatch { lc, body: rest.len() });
                }
            }
        };
        Self::new(cla, ins, p1, p2, data, le)
    }

    /// Encodes the APDU to bytes.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(6 + self.data.len());
        bytes.extend_from_slice(&[self.cla, self.ins, self.p1, self.p2]);
        if !self.data.is_empty() {
            // `new` keeps the data within 255 bytes.
            bytes.push(u8::try_from(self.data.len()).unwrap_or(u8::MAX));
            bytes.extend_from_slice(&self.data);
        }
        if let Some(le) = self.le {
            // `new` keeps Le within 1..=256; 256 is encoded as 00.
            bytes.push(u8::try_from(le % 256).unwrap_or(0));
        }
        bytes
    }

    /// Class byte.
    #[must_use]
    pub const fn cla(&self) -> u8 {
        self.cla
    }

    /// Instruction byte; for a native command, the NXP command code.
    #[must_use]
    pub const fn ins(&self) -> u8 {
        self.ins
    }

    /// First parameter byte.
    #[must_use]
    pub const fn p1(&self) -> u8 {
        self.p1
    }

    /// Second parameter byte.
    #[must_use]
    pub const fn p2(&self) -> u8 {
        self.p2
    }

    /// The command data field (empty when there is no Lc).
    #[must_use]
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The expected response length, `1..=256`, if an Le byte is present.
    #[must_use]
    pub const fn le(&self) -> Option<u16> {
        self.le
    }

    /// `Some((cmd, data))` when this is a native command (`CLA 90`, `P1 P2 00 00`).
    #[must_use]
    pub fn as_native(&self) -> Option<(u8, &[u8])> {
        (self.cla == CLA_NATIVE && self.p1 == 0 && self.p2 == 0).then_some((self.ins, &self.data))
    }
}

fn le_from_byte(byte: u8) -> u16 {
    if byte == 0 {
        SHORT_LE_MAX
    } else {
        u16::from(byte)
    }
}

/// A two-byte status word (SW1 SW2).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusWord(u16);

impl StatusWord {
    /// ISO: normal processing.
    pub const OK: Self = Self(0x9000);
    /// Native: OPERATION_OK.
    pub const OPERATION_OK: Self = Self(0x9100);
    /// Native: ILLEGAL_COMMAND_CODE, the command code is not supported.
    pub const ILLEGAL_COMMAND_CODE: Self = Self(0x911C);
    /// Native: INTEGRITY_ERROR, CRC or MAC does not match, or the padding is invalid.
    pub const INTEGRITY_ERROR: Self = Self(0x911E);
    /// Native: NO_SUCH_KEY, invalid key number.
    pub const NO_SUCH_KEY: Self = Self(0x9140);
    /// Native: LENGTH_ERROR, length of the command string invalid.
    pub const LENGTH_ERROR: Self = Self(0x917E);
    /// Native: PERMISSION_DENIED, the configuration or status does not allow the command.
    pub const PERMISSION_DENIED: Self = Self(0x919D);
    /// Native: PARAMETER_ERROR, value of the parameters invalid.
    pub const PARAMETER_ERROR: Self = Self(0x919E);
    /// Native: AUTHENTICATION_DELAY, currently not allowed to authenticate.
    pub const AUTHENTICATION_DELAY: Self = Self(0x91AD);
    /// Native: AUTHENTICATION_ERROR, the authentication status does not allow the command.
    pub const AUTHENTICATION_ERROR: Self = Self(0x91AE);
    /// Native: ADDITIONAL_FRAME, another frame is expected.
    pub const ADDITIONAL_FRAME: Self = Self(0x91AF);
    /// Native: BOUNDARY_ERROR, read or write beyond the file's limits.
    pub const BOUNDARY_ERROR: Self = Self(0x91BE);
    /// Native: COMMAND_ABORTED, the previous command was not fully completed.
    pub const COMMAND_ABORTED: Self = Self(0x91CA);
    /// Native: MEMORY_ERROR, failure reading or writing non-volatile memory.
    pub const MEMORY_ERROR: Self = Self(0x91EE);
    /// Native: FILE_NOT_FOUND, the file number does not exist.
    pub const FILE_NOT_FOUND: Self = Self(0x91F0);
    /// ISO: wrong length.
    pub const WRONG_LENGTH: Self = Self(0x6700);
    /// ISO: security status not satisfied.
    pub const SECURITY_STATUS_NOT_SATISFIED: Self = Self(0x6982);
    /// ISO: conditions of use not satisfied.
    pub const CONDITIONS_NOT_SATISFIED: Self = Self(0x6985);
    /// ISO: incorrect parameters in the command data field.
    pub const WRONG_DATA: Self = Self(0x6A80);
    /// ISO: file or application not found.
    pub const FILE_OR_APPLICATION_NOT_FOUND: Self = Self(0x6A82);
    /// ISO: incorrect parameters P1-P2.
    pub const WRONG_P1_P2: Self = Self(0x6A86);
    /// ISO: Lc inconsistent with P1-P2.
    pub const LC_INCONSISTENT: Self = Self(0x6A87);
    /// ISO: wrong Le field.
    pub const WRONG_LE: Self = Self(0x6C00);
    /// ISO: instruction code not supported or invalid.
    pub const INS_NOT_SUPPORTED: Self = Self(0x6D00);
    /// ISO: class not supported.
    pub const CLA_NOT_SUPPORTED: Self = Self(0x6E00);

    /// The status word from SW1 and SW2.
    #[must_use]
    pub const fn new(sw1: u8, sw2: u8) -> Self {
        Self(u16::from_be_bytes([sw1, sw2]))
    }

    /// The status word as a number, e.g. `0x9100`.
    #[must_use]
    pub const fn value(self) -> u16 {
        self.0
    }

    /// The first status byte (SW1).
    #[must_use]
    pub const fn sw1(self) -> u8 {
        self.0.to_be_bytes()[0]
    }

    /// SW2; for native commands, the return code (RC) used in secure messaging.
    #[must_use]
    pub const fn sw2(self) -> u8 {
        self.0.to_be_bytes()[1]
    }

    /// `9000` or `9100`.
    #[must_use]
    pub const fn is_success(self) -> bool {
        self.0 == Self::OK.0 || self.0 == Self::OPERATION_OK.0
    }

    /// The data sheet's name of the status, if it is a known one.
    #[must_use]
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x9000 => "OK",
            0x9100 => "OPERATION_OK",
            0x911C => "ILLEGAL_COMMAND_CODE",
            0x911E => "INTEGRITY_ERROR",
            0x9140 => "NO_SUCH_KEY",
            0x917E => "LENGTH_ERROR",
            0x919D => "PERMISSION_DENIED",
            0x919E => "PARAMETER_ERROR",
            0x91AD => "AUTHENTICATION_DELAY",
            0x91AE => "AUTHENTICATION_ERROR",
            0x91AF => "ADDITIONAL_FRAME",
            0x91BE => "BOUNDARY_ERROR",
            0x91CA => "COMMAND_ABORTED",
            0x91EE => "MEMORY_ERROR",
            0x91F0 => "FILE_NOT_FOUND",
            0x6700 => "WRONG_LENGTH",
            0x6982 => "SECURITY_STATUS_NOT_SATISFIED",
            0x6985 => "CONDITIONS_NOT_SATISFIED",
            0x6A80 => "WRONG_DATA",
            0x6A82 => "FILE_OR_APPLICATION_NOT_FOUND",
            0x6A86 => "WRONG_P1_P2",
            0x6A87 => "LC_INCONSISTENT",
            0x6C00 => "WRONG_LE",
            0x6D00 => "INS_NOT_SUPPORTED",
            0x6E00 => "CLA_NOT_SUPPORTED",
            _ => return None,
        })
    }
}

impl fmt::Display for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{:04X} {name}", self.0),
            None => write!(f, "{:04X}", self.0),
        }
    }
}

impl fmt::Debug for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StatusWord({self})")
    }
}

/// A response APDU: data followed by SW1 SW2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseApdu {
    data: Vec<u8>,
    status: StatusWord,
}

impl ResponseApdu {
    /// Builds a response from data and a status word.
    #[must_use]
    pub fn new(data: Vec<u8>, status: StatusWord) -> Self {
        Self { data, status }
    }

    /// A response with no data, only a status word.
    #[must_use]
    pub fn status_only(status: StatusWord) -> Self {
        Self::new(Vec::new(), status)
    }

    /// Parses a response: everything before the last two bytes is data.
    ///
    /// # Errors
    /// [`ApduError::ResponseTooShort`] when there are fewer than two bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ApduError> {
        match bytes.split_last_chunk::<2>() {
            Some((data, &[sw1, sw2])) => Ok(Self::new(data.to_vec(), StatusWord::new(sw1, sw2))),
            None => Err(ApduError::ResponseTooShort { len: bytes.len() }),
        }
    }

    /// The response data (without the status word).
    #[must_use]
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Takes the response data.
    #[must_use]
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }

    /// The status word.
    #[must_use]
    pub const fn status(&self) -> StatusWord {
        self.status
    }

    /// Encodes the response to bytes: data || SW1 SW2.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.data.len() + 2);
        bytes.extend_from_slice(&self.data);
        bytes.extend_from_slice(&self.status.0.to_be_bytes());
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_four_cases() {
        let case1 = CommandApdu::parse(&[0x00, 0xA4, 0x04, 0x0C]).unwrap();
        assert!(case1.data().is_empty() && case1.le().is_none());
        let case2 = CommandApdu::parse(&[0x90, 0x60, 0x00, 0x00, 0x00]).unwrap();
        assert_eq!(case2.le(), Some(256));
        let case3 = CommandApdu::parse(&[0x00, 0xA4, 0x00, 0x0C, 0x02, 0xE1, 0x04]).unwrap();
        assert_eq!(case3.data(), &[0xE1, 0x04]);
        assert_eq!(case3.le(), None);
        let case4 = CommandApdu::parse(&[0x90, 0xF5, 0x00, 0x00, 0x01, 0x02, 0x10]).unwrap();
        assert_eq!(case4.data(), &[0x02]);
        assert_eq!(case4.le(), Some(16));
        for apdu in [case1, case2, case3, case4] {
            assert_eq!(CommandApdu::parse(&apdu.to_bytes()).unwrap(), apdu);
        }
    }

    #[test]
    fn rejects_malformed_commands() {
        assert_eq!(CommandApdu::parse(&[0x00, 0xA4, 0x04]), Err(ApduError::CommandTooShort { len: 3 }));
        assert_eq!(CommandApdu::parse(&[0x00, 0xA4, 0x04, 0x00, 0x00, 0x00, 0x01]), Err(ApduError::ExtendedLength));
        assert_eq!(
            CommandApdu::parse(&[0x00, 0xA4, 0x04, 0x00, 0x03, 0x01]),
            Err(ApduError::LengthMismatch { lc: 3, body: 1 })
        );
        assert_eq!(CommandApdu::new(0, 0, 0, 0, vec![0; 256], None), Err(ApduError::DataTooLong { len: 256 }));
        assert_eq!(CommandApdu::new(0, 0, 0, 0, vec![], Some(0)), Err(ApduError::InvalidLe { le: 0 }));
    }

    #[test]
    fn responses_and_status_words() {
        assert_eq!(ResponseApdu::parse(&[0x91]), Err(ApduError::ResponseTooShort { len: 1 }));
        let response = ResponseApdu::parse(&[0x01, 0x02, 0x91, 0xAE]).unwrap();
        assert_eq!(response.data(), &[1, 2]);
        assert_eq!(response.status(), StatusWord::AUTHENTICATION_ERROR);
        assert_eq!(response.status().to_string(), "91AE AUTHENTICATION_ERROR");
        assert_eq!(response.to_bytes(), vec![0x01, 0x02, 0x91, 0xAE]);
        assert_eq!(StatusWord::new(0x91, 0x7E).name(), Some("LENGTH_ERROR"));
        assert_eq!(StatusWord::new(0x6A, 0x82).name(), Some("FILE_OR_APPLICATION_NOT_FOUND"));
        assert_eq!(StatusWord::new(0x12, 0x34).to_string(), "1234");
        assert!(StatusWord::OK.is_success() && StatusWord::OPERATION_OK.is_success());
        assert!(!StatusWord::ADDITIONAL_FRAME.is_success());
    }
}
