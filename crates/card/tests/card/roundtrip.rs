//! Round trips between the two sides this crate implements: terminal and card
//! authentication with random keys, secure messaging, and SUN taps from a small card model
//! that mirrors the URL the way the data sheet describes.

use crate::common;

use card::apdu::{CommandApdu, ResponseApdu};
use card::crypto::{self, aes_encrypt_block};
use card::diversify::{SDM_FILE_READ_KEY_NO, SDM_META_READ_KEY_NO};
use card::ev2::{AuthRequest, CardAuth, TerminalAuth};
use card::ndef::{kartu_tap_url_file, read_uri, SunUrlFile};
use card::sun::{mirror_sun, PiccData};
use card::{diversify_card_key, AuthError, CardUid, CommMode, FileReadKey, Key, ReadCounter, SunTap};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// AuthenticateEV2First: terminal <-> card with random keys and random numbers.

fn authenticate(
    terminal_key: Key,
    card_key: Key,
    key_no: u8,
    rnd_a: [u8; 16],
    rnd_b: [u8; 16],
    ti: [u8; 4],
    pd_cap2: [u8; 6],
) -> Result<(card::Session, card::Session, card::ev2::Authenticated), AuthError> {
    let terminal = TerminalAuth::new(terminal_key, key_no)?;
    let first = CommandApdu::parse(&terminal.command().to_bytes()).unwrap();
    let request = AuthRequest::parse(&first)?;
    assert_eq!(request.key_no(), key_no);
    let (challenge, card) = CardAuth::challenge(card_key, &request, rnd_b);
    let challenge = ResponseApdu::parse(&challenge.to_bytes()).unwrap();
    let (second, waiting) = terminal.answer_challenge(&challenge, rnd_a)?;
    let second = CommandApdu::parse(&second.to_bytes()).unwrap();
    let (answer, card_session) = card.verify(&second, ti, pd_cap2)?;
    let answer = ResponseApdu::parse(&answer.to_bytes()).unwrap();
    let done = waiting.finish(&answer)?;
    Ok((done.session.clone(), card_session, done))
}

proptest! {
    #[test]
    fn ev2_first_round_trip_with_random_keys(
        key in any::<[u8; 16]>(),
        key_no in 0_u8..=4,
        rnd_a in any::<[u8; 16]>(),
        rnd_b in any::<[u8; 16]>(),
        ti in any::<[u8; 4]>(),
        pd_cap2 in any::<[u8; 6]>(),
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..6),
    ) {
        let (mut terminal, mut card, done) = authenticate(
            Key::from_bytes(key), Key::from_bytes(key), key_no, rnd_a, rnd_b, ti, pd_cap2,
        ).unwrap();
        prop_assert_eq!(terminal.ti(), ti);
        prop_assert_eq!(done.pd_cap2, pd_cap2);
        prop_assert_eq!(done.pcd_cap2, [0; 6]);
        prop_assert_eq!(terminal.enc_key(), card.enc_key());
        prop_assert_eq!(terminal.mac_key(), card.mac_key());
        // The session keys are fresh: neither equals the long-term key.
        prop_assert_ne!(terminal.enc_key(), &Key::from_bytes(key));

        for (index, payload) in payloads.iter().enumerate() {
            let mode = [CommMode::Plain, CommMode::Mac, CommMode::Full][index % 3];
            let command = terminal.wrap_command(0x8D, &[3, 0, 0, 0, 1, 0, 0], payload, mode).unwrap();
            let received = card.unwrap_command(&command, 7, mode).unwrap();
            prop_assert_eq!(&received[7..], &payload[..]);
            let response = card.wrap_response(payload, mode).unwrap();
            prop_assert_eq!(terminal.unwrap_response(&response, mode).unwrap(), payload.clone());
        }
        prop_assert_eq!(terminal.cmd_ctr(), card.cmd_ctr());
    }

    #[test]
    fn ev2_first_refuses_a_terminal_with_another_key(
        terminal_key in any::<[u8; 16]>(),
        card_key in any::<[u8; 16]>(),
        rnd_a in any::<[u8; 16]>(),
        rnd_b in any::<[u8; 16]>(),
    ) {
        prop_assume!(terminal_key != card_key);
        let result = authenticate(
            Key::from_bytes(terminal_key), Key::from_bytes(card_key), 0, rnd_a, rnd_b, [1; 4], [0; 6],
        );
        prop_assert_eq!(result.err(), Some(AuthError::TerminalNotAuthenticated));
    }
}

#[test]
fn ev2_first_refuses_lrp_and_bad_lencap() {
    let lrp = CommandApdu::native(0x71, common::h("0006020000000000")).unwrap();
    assert_eq!(AuthRequest::parse(&lrp), Err(AuthError::LrpRequested));
    let bad_len_cap = CommandApdu::native(0x71, common::h("000300")).unwrap();
    assert_eq!(AuthRequest::parse(&bad_len_cap), Err(AuthError::InvalidLenCap));
    let with_caps = CommandApdu::native(0x71, common::h("0002A901")).unwrap();
    assert_eq!(AuthRequest::parse(&with_caps).unwrap().pcd_cap2(), [0xA9, 0x01, 0, 0, 0, 0]);
    assert!(TerminalAuth::new(Key::factory_default(), 0x40).is_err());
}

// ---------------------------------------------------------------------------------------
// SUN: a small card model that mirrors Kartu's URL, and the server that verifies it.

/// A card in SDM mode, written from the data sheet (§9.3.4, §9.3.8, §9.3.9) with the
/// crate's AES and CMAC primitives only, independently of `card::sun`.
struct CardModel {
    uid: CardUid,
    counter: u32,
    meta_read_key: Key,
    file_read_key: Key,
    file: SunUrlFile,
}

impl CardModel {
    fn new(uid: CardUid, meta_read_key: Key, file_read_key: Key, host: &str) -> Self {
        Self { uid, counter: 0, meta_read_key, file_read_key, file: kartu_tap_url_file(host).unwrap() }
    }

    /// One unauthenticated read of the NDEF file: the counter goes up, the placeholders
    /// are replaced, the URL comes out.
    fn tap(&mut self, random_padding: [u8; 5]) -> String {
        self.counter += 1;
        let ctr = self.counter.to_le_bytes();
        let mut plain = [0_u8; 16];
        plain[0] = 0xC7;
        plain[1..8].copy_from_slice(self.uid.as_bytes());
        plain[8..11].copy_from_slice(&ctr[..3]);
        plain[11..].copy_from_slice(&random_padding);
        let picc_data = aes_encrypt_block(&self.meta_read_key, &plain);

        let mut sv2 = [0_u8; 16];
        sv2[..6].copy_from_slice(&[0x3C, 0xC3, 0x00, 0x01, 0x00, 0x80]);
        sv2[6..13].copy_from_slice(self.uid.as_bytes());
        sv2[13..].copy_from_slice(&ctr[..3]);
        let session_key = Key::from_bytes(crypto::cmac(&self.file_read_key, &sv2));
        let full = crypto::cmac(&session_key, &[]); // empty MAC input
        let mac: Vec<u8> = full.iter().skip(1).step_by(2).copied().collect();

        let layout = self.file.layout();
        let mut bytes = self.file.bytes().to_vec();
        let picc = layout.picc_data_offset as usize;
        let mac_at = layout.mac_offset as usize;
        bytes[picc..picc + 32].copy_from_slice(hex::encode_upper(picc_data).as_bytes());
        bytes[mac_at..mac_at + 16].copy_from_slice(hex::encode_upper(mac).as_bytes());
        read_uri(&bytes).unwrap()
    }
}

/// The server's side: split the query, parse, verify.
fn query_value<'a>(url: &'a str, name: &str) -> &'a str {
    let query = url.split_once('?').unwrap().1;
    query.split('&').find_map(|pair| pair.strip_prefix(name).and_then(|rest| rest.strip_prefix('='))).unwrap()
}

const SYSTEM_IDENTIFIER: &[u8] = b"KARTU-MKS";

fn kartu_card(uid: CardUid, meta: &Key, file_master: &Key) -> CardModel {
    let file_key = diversify_card_key(file_master, &uid, SDM_FILE_READ_KEY_NO, SYSTEM_IDENTIFIER).unwrap();
    CardModel::new(uid, meta.clone(), file_key, "kartu.makassar.example")
}

#[test]
fn sun_round_trip_through_the_url() {
    let meta = Key::from_hex("0F1E2D3C4B5A69788796A5B4C3D2E1F0").unwrap();
    let file_master = Key::from_hex("00112233445566778899AABBCCDDEEFF").unwrap();
    let uid = CardUid::from_hex("04A1B2C3D4E5F6").unwrap();
    let mut card = kartu_card(uid, &meta, &file_master);
    let file_key = FileReadKey::Diversified { master: &file_master, system_identifier: SYSTEM_IDENTIFIER };

    let mut last_seen = None;
    for round in 0..5_u8 {
        let url = card.tap([round; 5]);
        assert!(url.starts_with("https://kartu.makassar.example/t?picc_data="), "{url}");
        let tap = SunTap::from_hex(query_value(&url, "picc_data"), query_value(&url, "cmac"), None).unwrap();
        let message = tap.verify(&meta, &file_key).unwrap();
        assert!(message.mac_valid(), "round {round}");
        let verified = message.require_valid_mac().unwrap();
        assert_eq!(verified.uid(), uid);
        // The server's replay rule: strictly increasing counters.
        assert!(Some(verified.counter()) > last_seen);
        last_seen = Some(verified.counter());
    }
    assert_eq!(last_seen, ReadCounter::new(5));
}

#[test]
fn sun_refuses_tampering_and_the_wrong_card_key() {
    let meta = Key::from_bytes([0x11; 16]);
    let file_master = Key::from_bytes([0x22; 16]);
    let uid = CardUid::from_hex("04010203040506").unwrap();
    let mut card = kartu_card(uid, &meta, &file_master);
    let url = card.tap([0; 5]);
    let picc = query_value(&url, "picc_data");
    let mac = query_value(&url, "cmac");
    let diversified = FileReadKey::Diversified { master: &file_master, system_identifier: SYSTEM_IDENTIFIER };

    // A flipped MAC digit.
    let mut bad_mac = mac.to_string();
    bad_mac.replace_range(0..1, if mac.starts_with('0') { "1" } else { "0" });
    let tap = SunTap::from_hex(picc, &bad_mac, None).unwrap();
    assert!(!tap.verify(&meta, &diversified).unwrap().mac_valid());

    // The undiversified master key, another system identifier: no match.
    let tap = SunTap::from_hex(picc, mac, None).unwrap();
    assert!(!tap.verify(&meta, &FileReadKey::Direct(&file_master)).unwrap().mac_valid());
    let other = FileReadKey::Diversified { master: &file_master, system_identifier: b"KARTU-XXX" };
    assert!(!tap.verify(&meta, &other).unwrap().mac_valid());
    assert!(tap.verify(&meta, &diversified).unwrap().mac_valid());

    // A per-card closure gives the same answer as the built-in derivation.
    let derive = |uid: &CardUid| diversify_card_key(&file_master, uid, 2, SYSTEM_IDENTIFIER);
    assert!(tap.verify(&meta, &FileReadKey::PerCard(&derive)).unwrap().mac_valid());
}

/// The library's card-side mirroring (for the virtual card) produces the model's URL.
#[test]
fn library_mirroring_matches_the_card_model() {
    let meta = Key::from_bytes([0x33; 16]);
    let file_master = Key::from_bytes([0x44; 16]);
    let uid = CardUid::from_hex("04112233445566").unwrap();
    let mut model = kartu_card(uid, &meta, &file_master);
    let expected = model.tap([7, 6, 5, 4, 3]);

    let file = kartu_tap_url_file("kartu.makassar.example").unwrap();
    let mut bytes = file.bytes().to_vec();
    let file_key = diversify_card_key(&file_master, &uid, SDM_FILE_READ_KEY_NO, SYSTEM_IDENTIFIER).unwrap();
    let picc = PiccData { uid, counter: ReadCounter::new(1).unwrap() };
    mirror_sun(&mut bytes, &file.layout(), &meta, &file_key, &picc, [7, 6, 5, 4, 3]).unwrap();
    assert_eq!(read_uri(&bytes).unwrap(), expected);
    assert_eq!(SDM_META_READ_KEY_NO, 1);
}

#[test]
fn kartu_url_file_layout() {
    let file = kartu_tap_url_file("kartu.example").unwrap();
    let uri = read_uri(file.bytes()).unwrap();
    assert_eq!(uri, format!("https://kartu.example/t?picc_data={}&cmac={}", "0".repeat(32), "0".repeat(16)));
    let layout = file.layout();
    let bytes = file.bytes();
    let picc = layout.picc_data_offset as usize;
    let mac = layout.mac_offset as usize;
    assert_eq!(&bytes[picc - 11..picc], b"?picc_data=");
    assert_eq!(&bytes[picc + 32..mac], b"&cmac=");
    assert_eq!(mac + 16, bytes.len());
    assert_eq!(layout.mac_input_offset, layout.mac_offset);
    // NLEN counts the message after itself.
    assert_eq!(usize::from(u16::from_be_bytes([bytes[0], bytes[1]])), bytes.len() - 2);
    assert!(kartu_tap_url_file("").is_err());
    assert!(kartu_tap_url_file("evil.example/x?y=").is_err());
    assert!(kartu_tap_url_file(&"a".repeat(220)).is_err());
}
