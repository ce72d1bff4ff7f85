//! The virtual card driven in-process by the `card` crate's terminal side: every command
//! Kartu uses, the SUN it produces, its errors, and its persistence.

use card::apdu::{CommandApdu, ResponseApdu, StatusWord};
use card::commands::{
    self, additional_frame, change_file_settings, change_key, get_card_uid, get_version, iso_read_binary,
    parse_card_uid, read_data, read_data_in_session, select_file, select_ndef_application, write_data,
    write_data_in_session, FileSettings, VersionInfo, NDEF_FILE_ID, NDEF_FILE_NO, PROPRIETARY_FILE_NO,
};
use card::ev2::TerminalAuth;
use card::ndef::{kartu_tap_url_file, read_uri};
use card::{verify_sun, CardUid, CommMode, FileReadKey, Key, Session};
use cardsim::{CardState, StateStore, VirtualCard};

const UID: [u8; 7] = [0x04, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66];

fn blank() -> VirtualCard {
    VirtualCard::new(CardState::factory(CardUid::from_bytes(UID)))
}

fn send(card: &mut VirtualCard, command: &CommandApdu) -> ResponseApdu {
    let response = card.process(&command.to_bytes());
    ResponseApdu::parse(&response).expect("at least a status word")
}

fn expect_ok(card: &mut VirtualCard, command: &CommandApdu) -> Vec<u8> {
    let response = send(card, command);
    assert!(response.status().is_success(), "{command:02X?} answered {}", response.status());
    response.into_data()
}

fn authenticate(card: &mut VirtualCard, key: &Key, key_no: u8) -> Result<Session, StatusWord> {
    let terminal = TerminalAuth::new(key.clone(), key_no).expect("key number");
    let challenge = send(card, &terminal.command());
    let (second, waiting) = terminal.answer_challenge(&challenge, [0x5A; 16]).map_err(|_| challenge.status())?;
    let proof = send(card, &second);
    waiting.finish(&proof).map(|done| done.session).map_err(|_| proof.status())
}

/// Personalises like Kartu: keys 1 and 2, the URL, SDM on, key 0 last.
fn personalise(card: &mut VirtualCard, meta: &Key, file: &Key, master: &Key) -> FileSettings {
    let zero = Key::factory_default();
    expect_ok(card, &select_ndef_application());
    let mut session = authenticate(card, &zero, 0).expect("factory key 0");
    for (key_no, key) in [(1, meta), (2, file)] {
        let command = change_key(&mut session, key_no, key, 1, Some(&zero)).expect("change key");
        let response = send(card, &command);
        session.unwrap_response(&response, CommMode::Full).expect("MACed answer");
    }
    let url = kartu_tap_url_file("kartu.example").expect("url");
    let command = write_data_in_session(&mut session, NDEF_FILE_NO, 0, url.bytes(), CommMode::Plain).expect("write");
    let response = send(card, &command);
    session.unwrap_response(&response, CommMode::Plain).expect("write answer");
    let settings = FileSettings::kartu_ndef(&url.layout());
    let command = change_file_settings(&mut session, NDEF_FILE_NO, &settings).expect("settings");
    let response = send(card, &command);
    session.unwrap_response(&response, CommMode::Full).expect("settings answer");
    let command = change_key(&mut session, 0, master, 1, None).expect("change key 0");
    let response = send(card, &command);
    session.close_after_auth_key_change(&response).expect("bare 9100");
    assert!(!card.is_authenticated());
    settings
}

fn read_url(card: &mut VirtualCard) -> String {
    expect_ok(card, &select_ndef_application());
    expect_ok(card, &select_file(NDEF_FILE_ID));
    let file = expect_ok(card, &iso_read_binary(0, 256).expect("read binary"));
    read_uri(&file).expect("an URI record")
}

fn query<'a>(url: &'a str, name: &str) -> &'a str {
    url.split_once('?')
        .and_then(|(_, query)| query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('=')))
        .expect("parameter")
}

#[test]
fn factory_card_reads_an_empty_record_and_counts_nothing() {
    let mut card = blank();
    expect_ok(&mut card, &select_ndef_application());
    expect_ok(&mut card, &select_file(NDEF_FILE_ID));
    let file = expect_ok(&mut card, &iso_read_binary(0, 256).expect("read binary"));
    assert_eq!(file.len(), 256);
    assert_eq!(&file[..5], &[0x00, 0x03, 0xD0, 0x00, 0x00]);
    assert_eq!(card.state().sdm_read_counter(), 0);
    // The capability container names the NDEF file E104.
    expect_ok(&mut card, &select_file(commands::CC_FILE_ID));
    let cc = expect_ok(&mut card, &iso_read_binary(0, 15).expect("read binary"));
    assert_eq!(&cc[9..11], &[0xE1, 0x04]);
    // PC/SC GET DATA (UID), answered by the card because vpcd has no reader firmware.
    let uid = expect_ok(&mut card, &CommandApdu::new(0xFF, 0xCA, 0, 0, vec![], Some(256)).expect("apdu"));
    assert_eq!(uid, UID);
}

#[test]
fn get_version_has_three_frames() {
    let mut card = blank();
    let part1 = send(&mut card, &get_version());
    let part2 = send(&mut card, &additional_frame());
    let part3 = send(&mut card, &additional_frame());
    let info = VersionInfo::parse(&part1, &part2, &part3).expect("version");
    assert_eq!(info.uid, CardUid::from_bytes(UID));
    assert_eq!(info.hardware[1], 0x04, "NTAG");
    // Without a GetVersion in progress, AF is an illegal command.
    assert_eq!(send(&mut card, &additional_frame()).status(), StatusWord::ILLEGAL_COMMAND_CODE);
}

#[test]
fn authentication_get_card_uid_and_key_versions() {
    let mut card = blank();
    // Not before the application is selected.
    assert_eq!(
        send(&mut card, &TerminalAuth::new(Key::factory_default(), 0).expect("auth").command()).status(),
        StatusWord::PERMISSION_DENIED
    );
    expect_ok(&mut card, &select_ndef_application());
    assert_eq!(authenticate(&mut card, &Key::from_bytes([1; 16]), 0).err(), Some(StatusWord::AUTHENTICATION_ERROR));
    assert_eq!(
        send(&mut card, &TerminalAuth::new(Key::factory_default(), 5).expect("auth").command()).status(),
        StatusWord::NO_SUCH_KEY
    );
    let mut session = authenticate(&mut card, &Key::factory_default(), 3).expect("key 3");
    let command = get_card_uid(&mut session).expect("uid");
    let response = send(&mut card, &command);
    assert_eq!(parse_card_uid(&session, &response).expect("uid"), CardUid::from_bytes(UID));
    // ChangeKey needs key 0; the refusal ends the session.
    let command =
        change_key(&mut session, 1, &Key::from_bytes([7; 16]), 1, Some(&Key::factory_default())).expect("change key");
    assert_eq!(send(&mut card, &command).status(), StatusWord::AUTHENTICATION_ERROR);
    assert!(!card.is_authenticated());
    let version = send(&mut card, &CommandApdu::native(0x64, vec![0]).expect("apdu"));
    assert_eq!((version.data(), version.status()), (&[0_u8][..], StatusWord::OPERATION_OK));
}

#[test]
fn change_key_checks_the_crc_and_the_old_key() {
    let mut card = blank();
    expect_ok(&mut card, &select_ndef_application());
    let zero = Key::factory_default();
    let mut session = authenticate(&mut card, &zero, 0).expect("key 0");
    // A wrong old key gives another new key, whose CRC does not match.
    let command =
        change_key(&mut session, 2, &Key::from_bytes([9; 16]), 1, Some(&Key::from_bytes([1; 16]))).expect("change key");
    assert_eq!(send(&mut card, &command).status(), StatusWord::INTEGRITY_ERROR);
    assert!(!card.is_authenticated());
    assert_eq!(card.state().key(2), Some(&zero));
}

#[test]
fn personalised_card_mirrors_a_fresh_verifiable_sun_at_every_read() {
    let mut card = blank();
    let meta = Key::from_bytes([0x11; 16]);
    let file_key = Key::from_bytes([0x22; 16]);
    personalise(&mut card, &meta, &file_key, &Key::from_bytes([0x33; 16]));
    assert_eq!(card.state().key_version(0), Some(1));
    let mut last = 0;
    for _ in 0..5 {
        let url = read_url(&mut card);
        assert!(url.starts_with("https://kartu.example/t?picc_data="), "{url}");
        let picc: [u8; 16] = hex::decode(query(&url, "picc_data")).expect("hex").try_into().expect("16 bytes");
        let mac: [u8; 8] = hex::decode(query(&url, "cmac")).expect("hex").try_into().expect("8 bytes");
        let message = verify_sun(&meta, &FileReadKey::Direct(&file_key), &picc, &mac, None, &[]).expect("sun");
        assert!(message.mac_valid());
        assert_eq!(message.uid(), CardUid::from_bytes(UID));
        assert_eq!(message.counter().value(), last + 1);
        last = message.counter().value();
    }
    // A native ReadData mirrors too and counts.
    let file = expect_ok(&mut card, &read_data(NDEF_FILE_NO, 0, 0).expect("read data"));
    assert!(read_uri(&file).is_some());
    assert_eq!(card.state().sdm_read_counter(), 6);
    // The NDEF file now needs key 0 to be written.
    let refused = send(&mut card, &write_data(NDEF_FILE_NO, 0, b"xx").expect("write"));
    assert_eq!(refused.status(), StatusWord::AUTHENTICATION_ERROR);
}

#[test]
fn full_mode_write_and_read_of_the_proprietary_file() {
    let mut card = blank();
    expect_ok(&mut card, &select_ndef_application());
    let zero = Key::factory_default();
    // Write needs key 3 (factory), in CommMode.Full.
    let mut session = authenticate(&mut card, &zero, 3).expect("key 3");
    let data: Vec<u8> = (0..100).collect();
    let command = write_data_in_session(&mut session, PROPRIETARY_FILE_NO, 10, &data, CommMode::Full).expect("write");
    let response = send(&mut card, &command);
    session.unwrap_response(&response, CommMode::Full).expect("write answer");
    // Read needs key 2.
    let mut session = authenticate(&mut card, &zero, 2).expect("key 2");
    let command = read_data_in_session(&mut session, PROPRIETARY_FILE_NO, 10, 100, CommMode::Full).expect("read");
    let response = send(&mut card, &command);
    assert_eq!(session.unwrap_response(&response, CommMode::Full).expect("read answer"), data);
    // Out of bounds.
    let command = read_data_in_session(&mut session, PROPRIETARY_FILE_NO, 100, 29, CommMode::Full).expect("read");
    assert_eq!(send(&mut card, &command).status(), StatusWord::BOUNDARY_ERROR);
    // Without authentication the file is closed.
    assert_eq!(
        send(&mut card, &read_data(PROPRIETARY_FILE_NO, 0, 1).expect("read")).status(),
        StatusWord::AUTHENTICATION_ERROR
    );
}

#[test]
fn a_restarted_card_continues_its_counter() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("card.json");
    let meta = Key::from_bytes([0x44; 16]);
    let file_key = Key::from_bytes([0x55; 16]);
    {
        let mut card = VirtualCard::open(StateStore::new(&path), Some(CardUid::from_bytes(UID))).expect("open");
        personalise(&mut card, &meta, &file_key, &Key::from_bytes([0x66; 16]));
        for _ in 0..3 {
            read_url(&mut card);
        }
    }
    let mut card = VirtualCard::open(StateStore::new(&path), None).expect("reopen");
    assert_eq!(card.state().sdm_read_counter(), 3);
    assert_eq!(card.state().key_version(2), Some(1));
    let url = read_url(&mut card);
    let picc: [u8; 16] = hex::decode(query(&url, "picc_data")).expect("hex").try_into().expect("16 bytes");
    let mac: [u8; 8] = hex::decode(query(&url, "cmac")).expect("hex").try_into().expect("8 bytes");
    let message = verify_sun(&meta, &FileReadKey::Direct(&file_key), &picc, &mac, None, &[]).expect("sun");
    assert!(message.mac_valid());
    assert_eq!(message.counter().value(), 4);
}

#[test]
fn a_state_file_that_cannot_be_written_undoes_the_change() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("card.json");
    let mut card = VirtualCard::open(StateStore::new(&path), Some(CardUid::from_bytes(UID))).expect("open");
    expect_ok(&mut card, &select_ndef_application());
    // The temporary file's place is taken by a directory: saving fails.
    std::fs::create_dir(directory.path().join("card.json.tmp")).expect("mkdir");
    let response = send(&mut card, &write_data(NDEF_FILE_NO, 0, b"\x00\x00").expect("write"));
    assert_eq!(response.status(), StatusWord::MEMORY_ERROR);
    assert_eq!(card.state().file(NDEF_FILE_NO).map(|file| file.data[1]), Some(0x03));
}
