//! Property tests: random, truncated and out-of-order bytes sent to the simulator's APDU
//! dispatcher get an answer with a status word, never a panic; malformed APDUs get an
//! error status; the SDM counter never goes down.

use card::apdu::{CommandApdu, ResponseApdu};
use card::commands::{
    change_key, iso_read_binary, read_data, select_file, select_ndef_application, write_data, NDEF_FILE_ID,
};
use card::ev2::TerminalAuth;
use card::{CardUid, Key, Session};
use cardsim::settings::parse_file_settings;
use cardsim::{CardState, VirtualCard};
use proptest::prelude::*;

fn blank() -> VirtualCard {
    VirtualCard::new(CardState::factory(CardUid::from_bytes([4, 1, 2, 3, 4, 5, 6])))
}

/// A card with the NDEF application selected and an EV2 session with key 0, and the
/// terminal's half of that session.
fn authenticated() -> (VirtualCard, Session) {
    let mut card = blank();
    let _ = card.process(&select_ndef_application().to_bytes());
    let terminal = TerminalAuth::new(Key::factory_default(), 0).expect("auth");
    let challenge = ResponseApdu::parse(&card.process(&terminal.command().to_bytes())).expect("response");
    let (second, waiting) = terminal.answer_challenge(&challenge, [7; 16]).expect("challenge");
    let proof = ResponseApdu::parse(&card.process(&second.to_bytes())).expect("response");
    (card, waiting.finish(&proof).expect("authenticated").session)
}

/// Well-formed commands the card knows, as raw bytes.
fn valid_commands() -> Vec<Vec<u8>> {
    let (_, mut session) = authenticated();
    vec![
        select_ndef_application().to_bytes(),
        select_file(NDEF_FILE_ID).to_bytes(),
        iso_read_binary(0, 256).expect("read binary").to_bytes(),
        read_data(2, 0, 0).expect("read data").to_bytes(),
        write_data(2, 0, &[0, 3, 0xD0, 0, 0]).expect("write").to_bytes(),
        TerminalAuth::new(Key::factory_default(), 0).expect("auth").command().to_bytes(),
        change_key(&mut session, 1, &Key::from_bytes([1; 16]), 1, Some(&Key::factory_default()))
            .expect("change key")
            .to_bytes(),
        vec![0x90, 0x60, 0x00, 0x00, 0x00],
        vec![0x90, 0xAF, 0x00, 0x00, 0x00],
        vec![0x90, 0x64, 0x00, 0x00, 0x01, 0x00, 0x00],
        vec![0xFF, 0xCA, 0x00, 0x00, 0x00],
    ]
}

fn status_of(response: &[u8]) -> u16 {
    let parsed = ResponseApdu::parse(response).expect("every answer has a status word");
    parsed.status().value()
}

fn is_error(status: u16) -> bool {
    !matches!(status, 0x9000 | 0x9100 | 0x91AF)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_get_a_status_word(input in proptest::collection::vec(any::<u8>(), 0..300)) {
        for mut card in [blank(), authenticated().0] {
            let response = card.process(&input);
            let status = status_of(&response);
            if CommandApdu::parse(&input).is_err() {
                prop_assert!(is_error(status), "malformed input answered {status:04X}");
            }
        }
    }

    #[test]
    fn truncated_commands_get_a_status_word(index in 0_usize..11, cut in 0_usize..64) {
        let commands = valid_commands();
        let command = &commands[index % commands.len()];
        let truncated = &command[..cut.min(command.len().saturating_sub(1))];
        for mut card in [blank(), authenticated().0] {
            let response = card.process(truncated);
            let status = status_of(&response);
            if CommandApdu::parse(truncated).is_err() {
                prop_assert!(is_error(status));
            }
        }
    }

    /// Native commands with random data, inside and outside a session, in any order.
    #[test]
    fn random_native_sequences_never_panic(
        commands in proptest::collection::vec(
            (prop_oneof![Just(0x00_u8), Just(0x90), Just(0xFF)],
             prop_oneof![Just(0x71_u8), Just(0xAF), Just(0x51), Just(0x64), Just(0xC4), Just(0x5F),
                         Just(0xAD), Just(0x8D), Just(0x60), Just(0xA4), Just(0xB0), Just(0xCA), any::<u8>()],
             proptest::collection::vec(any::<u8>(), 0..64)),
            1..24),
    ) {
        let (mut card, _) = authenticated();
        let mut last_counter = card.state().sdm_read_counter();
        for (cla, ins, data) in commands {
            let p1p2 = if cla == 0x00 && ins == 0xA4 { [0x04, 0x0C] } else { [0, 0] };
            let apdu = CommandApdu::new(cla, ins, p1p2[0], p1p2[1], data, Some(256)).expect("short apdu");
            let response = card.process(&apdu.to_bytes());
            status_of(&response);
            let counter = card.state().sdm_read_counter();
            prop_assert!(counter >= last_counter);
            last_counter = counter;
        }
    }

    #[test]
    fn file_settings_parser_never_panics(input in proptest::collection::vec(any::<u8>(), 0..48)) {
        if let Ok(settings) = parse_file_settings(&input) {
            // Accepted settings are exactly their canonical encoding.
            prop_assert_eq!(settings.encode().expect("valid"), input);
        }
    }
}
