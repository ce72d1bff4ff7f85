//! The virtual NTAG 424 DNA: command APDU bytes in, response APDU bytes out.
//!
//! [`VirtualCard::process`] never panics and answers every input with at least a status
//! word. The card's persistent state is a [`CardState`]; when the card has a
//! [`StateStore`], every change is saved before the card answers, and a change that cannot
//! be saved is undone and answered with MEMORY_ERROR (`91EE`).
//!
//! Departures from a real card, all outside what Kartu uses:
//! - GetVersion is answered in plain, also while authenticated.
//! - Responses longer than one short APDU (a CommMode.Full read of more than 239 bytes)
//!   are refused with LENGTH_ERROR instead of being chained with `91AF`.
//! - SDM mirrors only encrypted PICCData (UID and counter) with a MAC; other valid SDM
//!   configurations are refused with PARAMETER_ERROR.
//! - `FF CA 00 00 00` (PC/SC GET DATA, UID) is answered by the card itself, because vpcd
//!   hands every APDU to the card; with a real reader the reader answers it.

use std::mem;

use card::apdu::{CommandApdu, ResponseApdu, StatusWord, CLA_ISO, CLA_NATIVE};
use card::commands::{
    crc32_nk, AccessCondition, APP_KEY_NO_MAX, CC_FILE_ID, CMD_ADDITIONAL_FRAME, CMD_CHANGE_FILE_SETTINGS,
    CMD_CHANGE_KEY, CMD_GET_CARD_UID, CMD_GET_VERSION, CMD_READ_DATA, CMD_WRITE_DATA, INS_READ_BINARY, INS_SELECT_FILE,
    NDEF_APPLICATION_DF_NAME, NDEF_FILE_ID, NDEF_FILE_NO, PROPRIETARY_FILE_ID,
};
use card::diversify::APP_MASTER_KEY_NO;
use card::ev2::{AuthRequest, CardAuth, CAP2_LEN, CMD_AUTHENTICATE_EV2_FIRST};
use card::session::TI_LEN;
use card::sun::{mirror_sun, PiccData, PICC_DATA_PADDING_LEN};
use card::{AuthError, CardUid, CommMode, Key, ReadCounter, SecureMessagingError, Session, KEY_LEN, READ_COUNTER_MAX};
use zeroize::Zeroizing;

use crate::settings::{parse_file_settings, sdm_mirror};
use crate::state::{CardState, StateError, StateStore};

/// The ATR the simulator presents: the PC/SC Part 3 ATR of a contactless ISO/IEC 14443-4
/// card without historical bytes beyond the category indicator, as a contactless reader
/// builds it for NTAG 424 DNA.
pub const ATR: [u8; 6] = [0x3B, 0x81, 0x80, 0x01, 0x80, 0x80];

/// GetKeyVersion command code.
pub const CMD_GET_KEY_VERSION: u8 = 0x64;

/// CLA of PC/SC pseudo-APDUs addressed to the reader (`FF CA` GET DATA).
pub const CLA_PCSC: u8 = 0xFF;

/// INS of PC/SC GET DATA.
pub const INS_GET_DATA: u8 = 0xCA;

/// ISO: wrong parameters P1-P2 (offset outside the file).
const SW_OFFSET_OUTSIDE_FILE: StatusWord = StatusWord::new(0x6B, 0x00);
/// ISO: function not supported.
const SW_FUNCTION_NOT_SUPPORTED: StatusWord = StatusWord::new(0x6A, 0x81);
/// ISO: command not allowed, no current elementary file.
const SW_NO_CURRENT_FILE: StatusWord = StatusWord::new(0x69, 0x86);

/// GetVersion part 1: NXP, NTAG, 50 pF, HW 48.0, 256 bytes, ISO/IEC 14443-4.
const HARDWARE_VERSION: [u8; 7] = [0x04, 0x04, 0x02, 0x30, 0x00, 0x11, 0x05];
/// GetVersion part 2: NXP, NTAG, SW 1.2, 256 bytes, ISO/IEC 14443-4.
const SOFTWARE_VERSION: [u8; 7] = [0x04, 0x04, 0x02, 0x01, 0x02, 0x11, 0x05];
/// GetVersion part 3 after the UID: batch number, week 21 of (20)25.
const PRODUCTION: [u8; 7] = [0x4B, 0x41, 0x52, 0x54, 0x50, 0x21, 0x25];

/// PDcap2 of NTAG 424 DNA: all zero.
const PD_CAP2: [u8; CAP2_LEN] = [0; CAP2_LEN];

/// Length of CmdHeader of ReadData and WriteData.
const FILE_HEADER_LEN: usize = 7;

/// What the card answers with when a command fails.
type Outcome = Result<ResponseApdu, StatusWord>;

#[derive(Default)]
enum Auth {
    #[default]
    None,
    /// AuthenticateEV2First part 1 answered; waiting for part 2.
    Challenged { key_no: u8, pending: CardAuth },
    /// Authenticated with `key_no`.
    Authenticated { key_no: u8, session: Session },
}

/// State lost when the card leaves the field or is reset.
#[derive(Default)]
struct Volatile {
    application_selected: bool,
    selected_file: Option<u8>,
    auth: Auth,
    /// The next GetVersion part to send (1 or 2) after `91AF`.
    get_version_next: Option<u8>,
}

/// A virtual NTAG 424 DNA.
pub struct VirtualCard {
    state: CardState,
    store: Option<StateStore>,
    volatile: Volatile,
}

impl std::fmt::Debug for VirtualCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualCard")
            .field("state", &self.state)
            .field("store", &self.store)
            .field("authenticated", &self.is_authenticated())
            .finish_non_exhaustive()
    }
}

impl VirtualCard {
    /// A card that keeps its state in memory only (for tests).
    #[must_use]
    pub fn new(state: CardState) -> Self {
        Self { state, store: None, volatile: Volatile::default() }
    }

    /// A card whose state lives in `store`: loaded from it, or created as a factory card
    /// with `uid` (random when `None`) and saved.
    ///
    /// # Errors
    /// [`StateError`] when the state file cannot be read, written or trusted.
    pub fn open(store: StateStore, uid: Option<CardUid>) -> Result<Self, StateError> {
        let state = store.load_or_create(uid)?;
        Ok(Self { state, store: Some(store), volatile: Volatile::default() })
    }

    /// The persistent state.
    #[must_use]
    pub const fn state(&self) -> &CardState {
        &self.state
    }

    /// Whether an AuthenticateEV2First has succeeded and not been ended since.
    #[must_use]
    pub const fn is_authenticated(&self) -> bool {
        matches!(self.volatile.auth, Auth::Authenticated { .. })
    }

    /// The card enters the field or is powered: nothing selected, not authenticated.
    pub fn power_on(&mut self) {
        self.volatile = Volatile::default();
    }

    /// The card leaves the field or is powered off.
    pub fn power_off(&mut self) {
        self.volatile = Volatile::default();
    }

    /// A warm reset: as power off and on.
    pub fn reset(&mut self) {
        self.volatile = Volatile::default();
    }

    /// Answers one command APDU. Input that is not a well-formed short APDU is answered
    /// with WRONG_LENGTH (`6700`).
    #[must_use]
    pub fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        let response = match CommandApdu::parse(apdu) {
            Ok(command) => self.process_command(&command),
            Err(_) => {
                // A malformed command ends any authentication, as any error does.
                self.volatile.auth = Auth::None;
                ResponseApdu::status_only(StatusWord::WRONG_LENGTH)
            }
        };
        response.to_bytes()
    }

    /// Answers one parsed command APDU.
    pub fn process_command(&mut self, command: &CommandApdu) -> ResponseApdu {
        let is_additional_frame = command.cla() == CLA_NATIVE && command.ins() == CMD_ADDITIONAL_FRAME;
        let get_version_next = self.volatile.get_version_next.take();
        if !is_additional_frame && matches!(self.volatile.auth, Auth::Challenged { .. }) {
            self.volatile.auth = Auth::None;
        }
        let outcome = match command.cla() {
            CLA_ISO => self.iso(command),
            CLA_NATIVE => self.native(command, get_version_next),
            CLA_PCSC => self.pcsc_get_data(command),
            _ => Err(StatusWord::CLA_NOT_SUPPORTED),
        };
        outcome.unwrap_or_else(|status| {
            if command.cla() == CLA_NATIVE {
                // The card ends the authentication on any error (data sheet §9.1.8).
                self.volatile.auth = Auth::None;
            }
            ResponseApdu::status_only(status)
        })
    }

    // -- ISO/IEC 7816-4 commands --------------------------------------------------------

    fn iso(&mut self, command: &CommandApdu) -> Outcome {
        match command.ins() {
            INS_SELECT_FILE => self.iso_select(command),
            INS_READ_BINARY => self.iso_read_binary(command),
            _ => Err(StatusWord::INS_NOT_SUPPORTED),
        }
    }

    fn iso_select(&mut self, command: &CommandApdu) -> Outcome {
        if !matches!(command.p2(), 0x00 | 0x0C) {
            return Err(StatusWord::WRONG_P1_P2);
        }
        match command.p1() {
            // Select by DF name; selecting the application ends any authentication.
            0x04 if command.data() == NDEF_APPLICATION_DF_NAME => {
                self.volatile = Volatile { application_selected: true, ..Volatile::default() };
                Ok(ResponseApdu::status_only(StatusWord::OK))
            }
            0x04 => Err(StatusWord::FILE_OR_APPLICATION_NOT_FOUND),
            0x00 => {
                let Ok(id) = <[u8; 2]>::try_from(command.data()) else {
                    return Err(StatusWord::LC_INCONSISTENT);
                };
                let file_no = match u16::from_be_bytes(id) {
                    CC_FILE_ID => 0x01,
                    NDEF_FILE_ID => 0x02,
                    PROPRIETARY_FILE_ID => 0x03,
                    _ => return Err(StatusWord::FILE_OR_APPLICATION_NOT_FOUND),
                };
                if !self.volatile.application_selected {
                    return Err(StatusWord::FILE_OR_APPLICATION_NOT_FOUND);
                }
                self.volatile.selected_file = Some(file_no);
                Ok(ResponseApdu::status_only(StatusWord::OK))
            }
            _ => Err(StatusWord::WRONG_P1_P2),
        }
    }

    fn iso_read_binary(&mut self, command: &CommandApdu) -> Outcome {
        if !self.volatile.application_selected {
            return Err(SW_NO_CURRENT_FILE);
        }
        let (file_no, offset) = if command.p1() & 0x80 != 0 {
            // Short file identifier in P1 bits 4-0, offset in P2.
            if command.p1() & 0x60 != 0 {
                return Err(StatusWord::WRONG_P1_P2);
            }
            let file_no = command.p1() & 0x1F;
            if self.state.file(file_no).is_none() {
                return Err(StatusWord::FILE_OR_APPLICATION_NOT_FOUND);
            }
            self.volatile.selected_file = Some(file_no);
            (file_no, usize::from(command.p2()))
        } else {
            let file_no = self.volatile.selected_file.ok_or(SW_NO_CURRENT_FILE)?;
            (file_no, usize::from(u16::from_be_bytes([command.p1(), command.p2()])))
        };
        let le = command.le().ok_or(StatusWord::WRONG_LENGTH)?;
        if !command.data().is_empty() {
            return Err(StatusWord::WRONG_LENGTH);
        }
        let file = self.state.file(file_no).ok_or(StatusWord::FILE_OR_APPLICATION_NOT_FOUND)?;
        let rights = file.settings.access_rights;
        if rights.read != AccessCondition::Free && rights.read_write != AccessCondition::Free {
            return Err(StatusWord::SECURITY_STATUS_NOT_SATISFIED);
        }
        let size = file.data.len();
        if offset >= size {
            return Err(SW_OFFSET_OUTSIDE_FILE);
        }
        let len = usize::from(le).min(size - offset);
        let unauthenticated = !self.is_authenticated();
        let content = self.read_content(file_no, unauthenticated)?;
        let data = content.get(offset..offset + len).ok_or(SW_OFFSET_OUTSIDE_FILE)?;
        Ok(ResponseApdu::new(data.to_vec(), StatusWord::OK))
    }

    // -- PC/SC pseudo-APDU --------------------------------------------------------------

    fn pcsc_get_data(&self, command: &CommandApdu) -> Outcome {
        match (command.ins(), command.p1(), command.p2()) {
            (INS_GET_DATA, 0x00, 0x00) => {
                let uid = self.state.uid();
                let le = usize::from(command.le().unwrap_or(256));
                if le < uid.as_bytes().len() {
                    return Err(StatusWord::new(0x6C, 0x07));
                }
                Ok(ResponseApdu::new(uid.as_bytes().to_vec(), StatusWord::OK))
            }
            (INS_GET_DATA, _, _) => Err(SW_FUNCTION_NOT_SUPPORTED),
            _ => Err(StatusWord::INS_NOT_SUPPORTED),
        }
    }

    // -- Native commands ----------------------------------------------------------------

    fn native(&mut self, command: &CommandApdu, get_version_next: Option<u8>) -> Outcome {
        let Some((cmd, data)) = command.as_native() else {
            return Err(StatusWord::PARAMETER_ERROR);
        };
        match cmd {
            CMD_GET_VERSION if data.is_empty() => self.get_version_part(0),
            CMD_GET_VERSION => Err(StatusWord::LENGTH_ERROR),
            CMD_ADDITIONAL_FRAME => match get_version_next {
                Some(part) if data.is_empty() => self.get_version_part(part),
                Some(_) => Err(StatusWord::LENGTH_ERROR),
                None if matches!(self.volatile.auth, Auth::Challenged { .. }) => self.authenticate_finish(command),
                None => Err(StatusWord::ILLEGAL_COMMAND_CODE),
            },
            CMD_AUTHENTICATE_EV2_FIRST => self.authenticate_first(command),
            CMD_GET_CARD_UID => self.get_card_uid(command),
            CMD_GET_KEY_VERSION => self.get_key_version(command),
            CMD_CHANGE_KEY => self.change_key(command),
            CMD_CHANGE_FILE_SETTINGS => self.change_file_settings(command),
            CMD_READ_DATA => self.read_data(command),
            CMD_WRITE_DATA => self.write_data(command),
            _ => Err(StatusWord::ILLEGAL_COMMAND_CODE),
        }
    }

    fn get_version_part(&mut self, part: u8) -> Outcome {
        match part {
            0 => {
                self.volatile.get_version_next = Some(1);
                Ok(ResponseApdu::new(HARDWARE_VERSION.to_vec(), StatusWord::ADDITIONAL_FRAME))
            }
            1 => {
                self.volatile.get_version_next = Some(2);
                Ok(ResponseApdu::new(SOFTWARE_VERSION.to_vec(), StatusWord::ADDITIONAL_FRAME))
            }
            _ => {
                let mut data = self.state.uid().as_bytes().to_vec();
                data.extend_from_slice(&PRODUCTION);
                Ok(ResponseApdu::new(data, StatusWord::OPERATION_OK))
            }
        }
    }

    fn authenticate_first(&mut self, command: &CommandApdu) -> Outcome {
        // A new authentication ends the previous one, whatever its outcome.
        self.volatile.auth = Auth::None;
        if !self.volatile.application_selected {
            return Err(StatusWord::PERMISSION_DENIED);
        }
        let request = AuthRequest::parse(command).map_err(auth_status)?;
        let key_no = request.key_no();
        let key = self.state.key(key_no).ok_or(StatusWord::NO_SUCH_KEY)?.clone();
        let rnd_b = random::<16>()?;
        let (response, pending) = CardAuth::challenge(key, &request, rnd_b);
        self.volatile.auth = Auth::Challenged { key_no, pending };
        Ok(response)
    }

    fn authenticate_finish(&mut self, command: &CommandApdu) -> Outcome {
        let Auth::Challenged { key_no, pending } = mem::take(&mut self.volatile.auth) else {
            return Err(StatusWord::ILLEGAL_COMMAND_CODE);
        };
        let ti = random::<TI_LEN>()?;
        let (response, session) = pending.verify(command, ti, PD_CAP2).map_err(auth_status)?;
        self.volatile.auth = Auth::Authenticated { key_no, session };
        Ok(response)
    }

    fn get_card_uid(&mut self, command: &CommandApdu) -> Outcome {
        let uid = self.state.uid();
        let (_, session) = authenticated(&mut self.volatile.auth)?;
        let plain = session.unwrap_command(command, 0, CommMode::Full).map_err(sm_status)?;
        if !plain.is_empty() {
            return Err(StatusWord::LENGTH_ERROR);
        }
        session.wrap_response(uid.as_bytes(), CommMode::Full).map_err(sm_status)
    }

    fn get_key_version(&mut self, command: &CommandApdu) -> Outcome {
        match &mut self.volatile.auth {
            Auth::Authenticated { session, .. } => {
                let plain = session.unwrap_command(command, 1, CommMode::Mac).map_err(sm_status)?;
                let [key_no] = plain[..] else { return Err(StatusWord::LENGTH_ERROR) };
                let version = self.state.key_version(key_no).ok_or(StatusWord::NO_SUCH_KEY)?;
                session.wrap_response(&[version], CommMode::Mac).map_err(sm_status)
            }
            _ => {
                let [key_no] = command.data()[..] else { return Err(StatusWord::LENGTH_ERROR) };
                let version = self.state.key_version(key_no).ok_or(StatusWord::NO_SUCH_KEY)?;
                Ok(ResponseApdu::new(vec![version], StatusWord::OPERATION_OK))
            }
        }
    }

    fn change_key(&mut self, command: &CommandApdu) -> Outcome {
        let (auth_key_no, session) = authenticated(&mut self.volatile.auth)?;
        if auth_key_no != APP_MASTER_KEY_NO {
            // ChangeKey needs the application master key on NTAG 424 DNA.
            return Err(StatusWord::AUTHENTICATION_ERROR);
        }
        let plain = Zeroizing::new(session.unwrap_command(command, 1, CommMode::Full).map_err(sm_status)?);
        let Some((&key_no, body)) = plain.split_first() else {
            return Err(StatusWord::LENGTH_ERROR);
        };
        if key_no > APP_KEY_NO_MAX {
            return Err(StatusWord::NO_SUCH_KEY);
        }
        let before = self.state.clone();
        if key_no == auth_key_no {
            // NewKey || KeyVer.
            let Some((new_key, &[version])) = body.split_first_chunk::<KEY_LEN>() else {
                return Err(StatusWord::LENGTH_ERROR);
            };
            self.state.set_key(key_no, Key::from_bytes(*new_key), version);
            self.commit(before)?;
            // Changing the key of the session ends the session; the answer has no MAC.
            self.volatile.auth = Auth::None;
            return Ok(ResponseApdu::status_only(StatusWord::OPERATION_OK));
        }
        // (NewKey XOR OldKey) || KeyVer || CRC32NK(NewKey).
        let Some((masked, [version, crc @ ..])) = body.split_first_chunk::<KEY_LEN>() else {
            return Err(StatusWord::LENGTH_ERROR);
        };
        if crc.len() != 4 {
            return Err(StatusWord::LENGTH_ERROR);
        }
        let old_key = self.state.key(key_no).ok_or(StatusWord::NO_SUCH_KEY)?;
        let mut new_bytes = Zeroizing::new([0_u8; KEY_LEN]);
        for ((out, masked), old) in new_bytes.iter_mut().zip(masked).zip(old_key.expose_secret()) {
            *out = masked ^ old;
        }
        let new_key = Key::from_bytes(*new_bytes);
        if crc32_nk(&new_key)[..] != crc[..] {
            return Err(StatusWord::INTEGRITY_ERROR);
        }
        self.state.set_key(key_no, new_key, *version);
        self.commit(before)?;
        let (_, session) = authenticated(&mut self.volatile.auth)?;
        session.wrap_response(&[], CommMode::Full).map_err(sm_status)
    }

    fn change_file_settings(&mut self, command: &CommandApdu) -> Outcome {
        let file_no = *command.data().first().ok_or(StatusWord::LENGTH_ERROR)?;
        let file = self.state.file(file_no).ok_or(StatusWord::FILE_NOT_FOUND)?;
        let file_size = file.data.len();
        let change = file.settings.access_rights.change;
        let plain = match (&mut self.volatile.auth, change) {
            (_, AccessCondition::Never) => return Err(StatusWord::PERMISSION_DENIED),
            (Auth::Authenticated { key_no, session }, condition)
                if condition == AccessCondition::Free || condition == AccessCondition::Key(*key_no) =>
            {
                session.unwrap_command(command, 1, CommMode::Full).map_err(sm_status)?
            }
            (Auth::Authenticated { .. }, _) => return Err(StatusWord::AUTHENTICATION_ERROR),
            (_, AccessCondition::Free) => command.data().to_vec(),
            _ => return Err(StatusWord::AUTHENTICATION_ERROR),
        };
        let settings = parse_file_settings(plain.get(1..).unwrap_or(&[])).map_err(|error| {
            if error.is_length_error() {
                StatusWord::LENGTH_ERROR
            } else {
                StatusWord::PARAMETER_ERROR
            }
        })?;
        if let Some(sdm) = &settings.sdm {
            if file_no != NDEF_FILE_NO || sdm_mirror(sdm, file_size).is_err() {
                return Err(StatusWord::PARAMETER_ERROR);
            }
        }
        let before = self.state.clone();
        if let Some(file) = self.state.file_mut(file_no) {
            file.settings = settings;
        }
        self.commit(before)?;
        match &mut self.volatile.auth {
            Auth::Authenticated { session, .. } => session.wrap_response(&[], CommMode::Full).map_err(sm_status),
            _ => Ok(ResponseApdu::status_only(StatusWord::OPERATION_OK)),
        }
    }

    /// The communication mode of a ReadData or WriteData under `conditions` (the right
    /// itself and Read&Write): free access is plain, a key needs the session of that key.
    fn access_mode(&self, conditions: [AccessCondition; 2], file_mode: CommMode) -> Result<CommMode, StatusWord> {
        if conditions.contains(&AccessCondition::Free) {
            return Ok(CommMode::Plain);
        }
        match self.volatile.auth {
            Auth::Authenticated { key_no, .. } if conditions.contains(&AccessCondition::Key(key_no)) => Ok(file_mode),
            _ if conditions.iter().all(|condition| *condition == AccessCondition::Never) => {
                Err(StatusWord::PERMISSION_DENIED)
            }
            _ => Err(StatusWord::AUTHENTICATION_ERROR),
        }
    }

    /// CmdHeader and CmdData of a file command, unwrapped from the session when there is
    /// one (plain commands still count in CmdCtr).
    fn file_command(&mut self, command: &CommandApdu, mode: CommMode) -> Result<Vec<u8>, StatusWord> {
        match &mut self.volatile.auth {
            Auth::Authenticated { session, .. } => {
                session.unwrap_command(command, FILE_HEADER_LEN, mode).map_err(sm_status)
            }
            _ => Ok(command.data().to_vec()),
        }
    }

    fn wrap_file_response(&mut self, data: &[u8], mode: CommMode, status: StatusWord) -> Outcome {
        match &mut self.volatile.auth {
            Auth::Authenticated { session, .. } => session.wrap_response(data, mode).map_err(sm_status),
            _ => Ok(ResponseApdu::new(data.to_vec(), status)),
        }
    }

    fn read_data(&mut self, command: &CommandApdu) -> Outcome {
        let file_no = *command.data().first().ok_or(StatusWord::LENGTH_ERROR)?;
        let file = self.state.file(file_no).ok_or(StatusWord::FILE_NOT_FOUND)?;
        let rights = file.settings.access_rights;
        let size = file.data.len();
        let mode = self.access_mode([rights.read, rights.read_write], file.settings.comm_mode)?;
        let plain = self.file_command(command, mode)?;
        let header: [u8; FILE_HEADER_LEN] = plain[..].try_into().map_err(|_| StatusWord::LENGTH_ERROR)?;
        let (offset, length) = file_range(&header);
        if offset > size {
            return Err(StatusWord::BOUNDARY_ERROR);
        }
        let length = if length == 0 { size - offset } else { length };
        let end = offset.checked_add(length).filter(|end| *end <= size).ok_or(StatusWord::BOUNDARY_ERROR)?;
        let unauthenticated = !self.is_authenticated();
        let content = self.read_content(file_no, unauthenticated)?;
        let data = content.get(offset..end).ok_or(StatusWord::BOUNDARY_ERROR)?;
        self.wrap_file_response(data, mode, StatusWord::OPERATION_OK)
    }

    fn write_data(&mut self, command: &CommandApdu) -> Outcome {
        let file_no = *command.data().first().ok_or(StatusWord::LENGTH_ERROR)?;
        let file = self.state.file(file_no).ok_or(StatusWord::FILE_NOT_FOUND)?;
        let rights = file.settings.access_rights;
        let size = file.data.len();
        let mode = self.access_mode([rights.write, rights.read_write], file.settings.comm_mode)?;
        let plain = Zeroizing::new(self.file_command(command, mode)?);
        let Some((header, data)) = plain.split_first_chunk::<FILE_HEADER_LEN>() else {
            return Err(StatusWord::LENGTH_ERROR);
        };
        let (offset, length) = file_range(header);
        if length != data.len() || data.is_empty() {
            return Err(StatusWord::LENGTH_ERROR);
        }
        let end = offset.checked_add(length).filter(|end| *end <= size).ok_or(StatusWord::BOUNDARY_ERROR)?;
        let before = self.state.clone();
        if let Some(target) = self.state.file_mut(file_no).and_then(|file| file.data.get_mut(offset..end)) {
            target.copy_from_slice(data);
        }
        self.commit(before)?;
        self.wrap_file_response(&[], mode, StatusWord::OPERATION_OK)
    }

    /// The content of a file as a read returns it: with SDM and an unauthenticated read,
    /// the counter goes up by one (saved first) and PICCData and MAC are mirrored.
    fn read_content(&mut self, file_no: u8, unauthenticated: bool) -> Result<Vec<u8>, StatusWord> {
        let file = self.state.file(file_no).ok_or(StatusWord::FILE_NOT_FOUND)?;
        let mut content = file.data.clone();
        let Some(sdm) = file.settings.sdm.filter(|_| unauthenticated) else {
            return Ok(content);
        };
        // Settings are checked when they are changed or loaded, so this holds.
        let mirror = sdm_mirror(&sdm, content.len()).map_err(|_| StatusWord::MEMORY_ERROR)?;
        let next = self.state.sdm_read_counter() + 1;
        let limit = mirror.read_ctr_limit.unwrap_or(READ_COUNTER_MAX).min(READ_COUNTER_MAX);
        if next > limit {
            return Err(StatusWord::PERMISSION_DENIED);
        }
        let counter = ReadCounter::new(next).ok_or(StatusWord::PERMISSION_DENIED)?;
        let padding = random::<PICC_DATA_PADDING_LEN>()?;
        let before = self.state.clone();
        self.state.set_sdm_read_counter(next);
        self.commit(before)?;
        let meta_read_key = self.state.key(mirror.meta_read_key_no).ok_or(StatusWord::MEMORY_ERROR)?;
        let file_read_key = self.state.key(mirror.file_read_key_no).ok_or(StatusWord::MEMORY_ERROR)?;
        let picc = PiccData { uid: self.state.uid(), counter };
        mirror_sun(&mut content, &mirror.layout, meta_read_key, file_read_key, &picc, padding)
            .map_err(|_| StatusWord::MEMORY_ERROR)?;
        Ok(content)
    }

    /// Saves the state after a change; if that fails, restores `before`.
    fn commit(&mut self, before: CardState) -> Result<(), StatusWord> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        match store.save(&self.state) {
            Ok(()) => Ok(()),
            Err(error) => {
                tracing::error!(%error, "cannot save the card state; the change is undone");
                self.state = before;
                Err(StatusWord::MEMORY_ERROR)
            }
        }
    }
}

fn authenticated(auth: &mut Auth) -> Result<(u8, &mut Session), StatusWord> {
    match auth {
        Auth::Authenticated { key_no, session } => Ok((*key_no, session)),
        _ => Err(StatusWord::AUTHENTICATION_ERROR),
    }
}

/// Offset and length (3 bytes each, LSB first) of a ReadData or WriteData header.
fn file_range(header: &[u8; FILE_HEADER_LEN]) -> (usize, usize) {
    let u24 = |bytes: &[u8]| match bytes {
        [b0, b1, b2] => usize::from(*b0) | usize::from(*b1) << 8 | usize::from(*b2) << 16,
        _ => usize::MAX,
    };
    (u24(&header[1..4]), u24(&header[4..7]))
}

fn auth_status(error: AuthError) -> StatusWord {
    match error {
        AuthError::InvalidKeyNumber { .. } => StatusWord::NO_SUCH_KEY,
        AuthError::WrongLength { .. } | AuthError::InvalidLenCap | AuthError::UnexpectedCommand => {
            StatusWord::LENGTH_ERROR
        }
        AuthError::LrpRequested => StatusWord::PARAMETER_ERROR,
        _ => StatusWord::AUTHENTICATION_ERROR,
    }
}

fn sm_status(error: SecureMessagingError) -> StatusWord {
    match error {
        SecureMessagingError::MacMismatch
        | SecureMessagingError::BadPadding
        | SecureMessagingError::NotBlockAligned { .. } => StatusWord::INTEGRITY_ERROR,
        SecureMessagingError::Truncated { .. } | SecureMessagingError::TooLong { .. } => StatusWord::LENGTH_ERROR,
        SecureMessagingError::NotNative => StatusWord::ILLEGAL_COMMAND_CODE,
        _ => StatusWord::AUTHENTICATION_ERROR,
    }
}

fn random<const N: usize>() -> Result<[u8; N], StatusWord> {
    let mut bytes = [0_u8; N];
    getrandom::fill(&mut bytes).map_err(|error| {
        tracing::error!(%error, "no random numbers");
        StatusWord::MEMORY_ERROR
    })?;
    Ok(bytes)
}
