//! Property tests: random and truncated bytes fed to every parser that faces the outside
//! give errors, never panics.

use card::apdu::{CommandApdu, ResponseApdu, StatusWord};
use card::commands::VersionInfo;
use card::ev2::{AuthRequest, CardAuth, TerminalAuth};
use card::ndef::{kartu_tap_url_file, read_uri, sun_url_file};
use card::sun::{decrypt_picc_data, mirror_sun, PiccData, SunLayout};
use card::{verify_sun, CardUid, CommMode, FileReadKey, Key, ReadCounter, Session, SunTap};
use proptest::prelude::*;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn mode() -> impl Strategy<Value = CommMode> {
    prop_oneof![Just(CommMode::Plain), Just(CommMode::Mac), Just(CommMode::Full)]
}

/// Mostly-hex text of any length, with some stray characters.
fn hexish(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[0-9A-Fa-fxZ é&]{{0,{max}}}")).unwrap()
}

fn session(seed: u8) -> Session {
    Session::new(Key::from_bytes([seed; 16]), Key::from_bytes([seed ^ 0x5A; 16]), [seed; 4])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn command_apdu_parse_never_panics_and_round_trips(input in bytes(300)) {
        if let Ok(apdu) = CommandApdu::parse(&input) {
            prop_assert_eq!(apdu.to_bytes(), input);
        }
    }

    #[test]
    fn response_apdu_parse_never_panics_and_round_trips(input in bytes(300)) {
        match ResponseApdu::parse(&input) {
            Ok(response) => prop_assert_eq!(response.to_bytes(), input),
            Err(_) => prop_assert!(input.len() < 2),
        }
    }

    #[test]
    fn status_words_always_print(sw1 in any::<u8>(), sw2 in any::<u8>()) {
        let status = StatusWord::new(sw1, sw2);
        let prefix = format!("{:02X}{:02X}", sw1, sw2);
        prop_assert!(status.to_string().starts_with(&prefix));
    }

    #[test]
    fn sun_tap_from_hex_never_panics(picc in hexish(40), mac in hexish(20), enc in proptest::option::of(hexish(300))) {
        let _ = SunTap::from_hex(&picc, &mac, enc.as_deref());
    }

    #[test]
    fn sun_tap_from_well_formed_hex_parses(picc in any::<[u8; 16]>(), mac in any::<[u8; 8]>(), blocks in 0_usize..9) {
        let enc = (blocks > 0).then(|| hex::encode(vec![0xAB; 16 * blocks]));
        let tap = SunTap::from_hex(&hex::encode(picc), &hex::encode_upper(mac), enc.as_deref()).unwrap();
        prop_assert_eq!(tap.picc_data(), &picc);
        prop_assert_eq!(tap.sdm_mac(), &mac);
    }

    #[test]
    fn verify_sun_never_panics(
        meta in any::<[u8; 16]>(),
        file in any::<[u8; 16]>(),
        picc in any::<[u8; 16]>(),
        mac in any::<[u8; 8]>(),
        enc in proptest::option::of(bytes(200)),
        mac_input in bytes(100),
    ) {
        let meta = Key::from_bytes(meta);
        let file = Key::from_bytes(file);
        let _ = decrypt_picc_data(&meta, &picc);
        let _ = verify_sun(&meta, &FileReadKey::Direct(&file), &picc, &mac, enc.as_deref(), &mac_input);
        let diversified = FileReadKey::Diversified { master: &file, system_identifier: &mac_input };
        let _ = verify_sun(&meta, &diversified, &picc, &mac, enc.as_deref(), &mac_input);
    }

    /// A random PICCData that happens to decrypt to a valid tag still has to carry the MAC.
    #[test]
    fn verify_sun_never_accepts_a_random_mac(uid in any::<[u8; 7]>(), ctr in 0_u32..=0xFF_FFFF, mac in any::<[u8; 8]>()) {
        let key = Key::from_bytes([9; 16]);
        let uid = CardUid::from_bytes(uid);
        let counter = ReadCounter::new(ctr).unwrap();
        let picc = card::sun::encrypt_picc_data(&key, &uid, counter, [0; 5]);
        let right = card::sun::sdm_mac(&key, &uid, counter, &[]);
        prop_assume!(mac != right);
        let message = verify_sun(&key, &FileReadKey::Direct(&key), &picc, &mac, None, &[]).unwrap();
        prop_assert!(!message.mac_valid());
        prop_assert_eq!(message.uid(), uid);
        prop_assert_eq!(message.counter(), counter);
    }

    #[test]
    fn mirror_sun_never_panics(file_len in 0_usize..300, picc_at in 0_u32..300, input_at in 0_u32..300, mac_at in 0_u32..300) {
        let mut file = vec![b'0'; file_len];
        let layout = SunLayout { picc_data_offset: picc_at, mac_input_offset: input_at, mac_offset: mac_at };
        let picc = PiccData { uid: CardUid::from_bytes([4; 7]), counter: ReadCounter::new(1).unwrap() };
        let key = Key::factory_default();
        let _ = mirror_sun(&mut file, &layout, &key, &key, &picc, [0; 5]);
        prop_assert_eq!(file.len(), file_len);
    }

    #[test]
    fn unwrap_response_never_panics(input in bytes(300), mode in mode(), seed in any::<u8>()) {
        if let Ok(response) = ResponseApdu::parse(&input) {
            let _ = session(seed).unwrap_response(&response, mode);
        }
        let response = ResponseApdu::new(input, StatusWord::OPERATION_OK);
        let _ = session(seed).unwrap_response(&response, mode);
    }

    #[test]
    fn unwrap_command_never_panics(data in bytes(255), header_len in 0_usize..300, mode in mode(), ins in any::<u8>()) {
        let command = CommandApdu::native(ins, data).unwrap();
        let mut card = session(1);
        if card.unwrap_command(&command, header_len, mode).is_err() {
            prop_assert_eq!(card.cmd_ctr(), 0);
        }
    }

    /// A protected response cut at any length is refused, never accepted and never a panic.
    #[test]
    fn truncated_responses_are_refused(payload in bytes(100), mode in prop_oneof![Just(CommMode::Mac), Just(CommMode::Full)], cut in any::<prop::sample::Index>()) {
        let card = session(7);
        let response = card.wrap_response(&payload, mode).unwrap();
        let full = response.to_bytes();
        let cut = cut.index(full.len() - 2);
        let mut truncated = full[..cut].to_vec();
        truncated.extend_from_slice(&[0x91, 0x00]);
        let truncated = ResponseApdu::parse(&truncated).unwrap();
        prop_assert!(session(7).unwrap_response(&truncated, mode).is_err());
    }

    #[test]
    fn authentication_steps_never_panic(input in bytes(300), other in bytes(300), rnd in any::<[u8; 16]>()) {
        let key = Key::from_bytes(rnd);
        if let Ok(response) = ResponseApdu::parse(&input) {
            let terminal = TerminalAuth::new(key.clone(), 0).unwrap();
            if let Ok((_, waiting)) = terminal.answer_challenge(&response, rnd) {
                if let Ok(second) = ResponseApdu::parse(&other) {
                    let _ = waiting.finish(&second);
                }
            }
        }
        if let Ok(command) = CommandApdu::parse(&input) {
            let _ = AuthRequest::parse(&command);
        }
        let request = AuthRequest::parse(&CommandApdu::native(0x71, vec![0, 0]).unwrap()).unwrap();
        let (_, card) = CardAuth::challenge(key, &request, rnd);
        if let Ok(command) = CommandApdu::parse(&other) {
            let _ = card.verify(&command, [0; 4], [0; 6]);
        }
    }

    #[test]
    fn version_info_never_panics(one in bytes(20), two in bytes(20), three in bytes(20)) {
        let parts = [&one, &two, &three].map(|data| ResponseApdu::parse(data));
        if let [Ok(a), Ok(b), Ok(c)] = parts {
            let _ = VersionInfo::parse(&a, &b, &c);
        }
    }

    #[test]
    fn ndef_functions_never_panic(file in bytes(300), host in ".{0,300}", before in ".{0,300}") {
        let _ = read_uri(&file);
        let _ = kartu_tap_url_file(&host);
        let _ = sun_url_file(&before, &host, "");
    }

    #[test]
    fn key_and_uid_parsing_never_panics(text in ".{0,40}") {
        let _ = Key::from_hex(&text);
        let _ = CardUid::from_hex(&text);
    }
}
