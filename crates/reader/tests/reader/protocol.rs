//! The reader's card protocol against the virtual card in the same process (no pcscd):
//! personalisation, taps, key rotation, and runs interrupted by a tear and repeated.

use card::apdu::{CommandApdu, ResponseApdu, StatusWord};
use card::{CardUid, Key};
use cardsim::{CardState, VirtualCard};
use reader::{
    personalize, read_sun, read_uid, rotate_keys, MasterKeys, ReaderError, RemovalCause, ReplayError, ReplayGuard,
    SystemIdentifier, Transmit,
};

const UID: [u8; 7] = [0x04, 0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6];
const HOST: &str = "kartu.makassar.example";

/// A channel to the virtual card that records the exchange and can be torn: after a
/// number of answered commands, the next one fails as a card pulled away would, either
/// before the card sees it or after the card processed it.
struct SimChannel<'a> {
    card: &'a mut VirtualCard,
    tear: Option<Tear>,
    log: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Clone, Copy)]
struct Tear {
    answered: usize,
    processed: bool,
}

impl<'a> SimChannel<'a> {
    fn new(card: &'a mut VirtualCard) -> Self {
        Self { card, tear: None, log: Vec::new() }
    }

    fn torn(card: &'a mut VirtualCard, tear: Tear) -> Self {
        Self { card, tear: Some(tear), log: Vec::new() }
    }
}

impl Transmit for SimChannel<'_> {
    fn transmit(&mut self, command: &CommandApdu) -> Result<ResponseApdu, ReaderError> {
        let bytes = command.to_bytes();
        if let Some(tear) = self.tear.filter(|tear| tear.answered == self.log.len()) {
            if tear.processed {
                let _ = self.card.process(&bytes);
            }
            self.card.power_off();
            return Err(ReaderError::CardRemoved { cause: RemovalCause::Pcsc(pcsc::Error::NotTransacted) });
        }
        let response = self.card.process(&bytes);
        self.log.push((bytes, response.clone()));
        Ok(ResponseApdu::parse(&response)?)
    }
}

/// Every tear point of a run of `commands` commands, before and after processing.
fn tears(commands: usize) -> impl Iterator<Item = Tear> {
    (0..commands).flat_map(|answered| [false, true].map(|processed| Tear { answered, processed }))
}

fn blank() -> VirtualCard {
    VirtualCard::new(CardState::factory(CardUid::from_bytes(UID)))
}

fn master_keys(version: u8, seed: u8) -> MasterKeys {
    MasterKeys::new(
        version,
        Key::from_bytes([seed; 16]),
        Key::from_bytes([seed.wrapping_add(1); 16]),
        Key::from_bytes([seed.wrapping_add(2); 16]),
    )
    .expect("version above 0")
}

fn system_identifier() -> SystemIdentifier {
    SystemIdentifier::parse("KARTU-MKS").expect("valid")
}

#[test]
fn personalise_then_taps_verify_with_the_diversified_key() {
    let mut card = blank();
    let keys = master_keys(1, 0x10);
    let personalized = personalize(&mut SimChannel::new(&mut card), &keys, &system_identifier(), HOST).expect("blank");
    assert_eq!(personalized.uid, CardUid::from_bytes(UID));
    assert_eq!(personalized.key_version, 1);
    assert_eq!(personalized.counter.value(), 1);
    for key_no in 0..=4 {
        assert_eq!(card.state().key_version(key_no), Some(1), "key {key_no}");
    }
    // The server's view: decrypt, recompute the MAC with the per-card key, counters go up.
    let mut guard = ReplayGuard::new();
    guard.check_counter(personalized.uid, personalized.counter).expect("first");
    for _ in 0..10 {
        let tap = read_sun(&mut SimChannel::new(&mut card)).expect("tap");
        assert_eq!(tap.host(), HOST);
        let verified = keys.verify_tap(&tap, &system_identifier()).expect("valid MAC");
        guard.check(&verified).expect("counter goes up");
    }
    let uid = read_uid(&mut SimChannel::new(&mut card)).expect("uid");
    assert_eq!(uid, personalized.uid);
    // A second personalisation is refused and changes nothing.
    let again = personalize(&mut SimChannel::new(&mut card), &keys, &system_identifier(), HOST);
    assert!(matches!(again, Err(ReaderError::NotBlank { key_version: 1 })), "{again:?}");
    // Other master keys do not verify the card's taps.
    let tap = read_sun(&mut SimChannel::new(&mut card)).expect("tap");
    assert!(master_keys(1, 0x70).verify_tap(&tap, &system_identifier()).is_err());
    assert!(keys.verify_tap(&tap, &SystemIdentifier::parse("OTHER").expect("valid")).is_err());
}

#[test]
fn a_replayed_tap_is_refused() {
    let mut card = blank();
    let keys = master_keys(1, 0x20);
    personalize(&mut SimChannel::new(&mut card), &keys, &system_identifier(), HOST).expect("blank");
    let mut guard = ReplayGuard::new();
    let tap = read_sun(&mut SimChannel::new(&mut card)).expect("tap");
    let verified = keys.verify_tap(&tap, &system_identifier()).expect("valid");
    guard.check(&verified).expect("first time");
    // The same picc_data and cmac again: valid MAC, old counter.
    let replayed = keys.verify_tap(&tap, &system_identifier()).expect("still a valid MAC");
    assert!(matches!(guard.check(&replayed), Err(ReplayError::Replayed { .. })));
}

#[test]
fn an_interrupted_personalisation_can_be_repeated() {
    let keys = master_keys(1, 0x30);
    let full_run = {
        let mut card = blank();
        let mut channel = SimChannel::new(&mut card);
        personalize(&mut channel, &keys, &system_identifier(), HOST).expect("blank");
        channel.log.len()
    };
    for tear in tears(full_run) {
        let mut card = blank();
        let torn = personalize(&mut SimChannel::torn(&mut card, tear), &keys, &system_identifier(), HOST);
        assert!(matches!(torn, Err(ReaderError::CardRemoved { .. })), "{torn:?}");
        match personalize(&mut SimChannel::new(&mut card), &keys, &system_identifier(), HOST) {
            Ok(done) => assert_eq!(done.key_version, 1),
            // Torn after the card changed key 0: the card is personalised, a tap proves it.
            Err(ReaderError::NotBlank { key_version: 1 }) => {
                let tap = read_sun(&mut SimChannel::new(&mut card)).expect("tap");
                keys.verify_tap(&tap, &system_identifier()).expect("personalised");
            }
            Err(error) => panic!("after a tear at command {}: {error}", tear.answered),
        }
    }
}

#[test]
fn key_rotation_from_version_1_to_2_and_its_interruptions() {
    let v1 = master_keys(1, 0x40);
    let v2 = master_keys(2, 0x50);
    let personalised = || {
        let mut card = blank();
        personalize(&mut SimChannel::new(&mut card), &v1, &system_identifier(), HOST).expect("blank");
        card
    };
    let full_run = {
        let mut card = personalised();
        let mut channel = SimChannel::new(&mut card);
        rotate_keys(&mut channel, &[&v1], &v2, &system_identifier()).expect("rotation");
        channel.log.len()
    };
    let check = |card: &mut VirtualCard| {
        for key_no in 0..=4 {
            assert_eq!(card.state().key_version(key_no), Some(2));
        }
        let tap = read_sun(&mut SimChannel::new(card)).expect("tap");
        v2.verify_tap(&tap, &system_identifier()).expect("v2 keys");
        assert!(v1.verify_tap(&tap, &system_identifier()).is_err(), "v1 keys no longer work");
    };
    let mut card = personalised();
    let done = rotate_keys(&mut SimChannel::new(&mut card), &[&v1], &v2, &system_identifier()).expect("rotation");
    assert_eq!(done.key_version, 2);
    check(&mut card);
    for tear in tears(full_run) {
        let mut card = personalised();
        let torn = rotate_keys(&mut SimChannel::torn(&mut card, tear), &[&v1], &v2, &system_identifier());
        assert!(matches!(torn, Err(ReaderError::CardRemoved { .. })), "{torn:?}");
        rotate_keys(&mut SimChannel::new(&mut card), &[&v1], &v2, &system_identifier())
            .unwrap_or_else(|error| panic!("after a tear at command {}: {error}", tear.answered));
        check(&mut card);
    }
}

#[test]
fn rotation_needs_the_current_master_keys() {
    let mut card = blank();
    personalize(&mut SimChannel::new(&mut card), &master_keys(1, 0x40), &system_identifier(), HOST).expect("blank");
    let result = rotate_keys(&mut SimChannel::new(&mut card), &[], &master_keys(3, 0x60), &system_identifier());
    assert!(matches!(result, Err(ReaderError::UnknownKeyVersion { key_no: 0, version: 1 })), "{result:?}");
}

/// A rotation only goes forward: a card at version 2 asked to go to version 1 is refused
/// before anything is changed, and still taps with version 2.
#[test]
fn rotation_to_an_older_version_is_refused() {
    let (v1, v2) = (master_keys(1, 0x40), master_keys(2, 0x50));
    let mut card = blank();
    personalize(&mut SimChannel::new(&mut card), &v2, &system_identifier(), HOST).expect("blank");
    let result = rotate_keys(&mut SimChannel::new(&mut card), &[&v2], &v1, &system_identifier());
    assert!(matches!(result, Err(ReaderError::KeyVersionNewer { key_no: 0, version: 2, target: 1 })), "{result:?}");
    for key_no in 0..=4 {
        assert_eq!(card.state().key_version(key_no), Some(2));
    }
    let tap = read_sun(&mut SimChannel::new(&mut card)).expect("tap");
    v2.verify_tap(&tap, &system_identifier()).expect("v2 keys");
}

#[test]
fn bad_input_is_refused_before_the_card_is_touched() {
    let mut card = blank();
    let mut channel = SimChannel::new(&mut card);
    assert!(matches!(
        personalize(&mut channel, &master_keys(1, 1), &system_identifier(), "bad host/"),
        Err(ReaderError::Ndef(_))
    ));
    assert!(channel.log.is_empty());
    assert!(SystemIdentifier::parse("").is_err());
    assert!(SystemIdentifier::parse(&"X".repeat(24)).is_err());
    assert!(SystemIdentifier::parse("KARTU MKS").is_err());
    assert!(MasterKeys::new(0, Key::factory_default(), Key::factory_default(), Key::factory_default()).is_err());
}

#[test]
fn a_factory_card_has_no_tap_url() {
    let mut card = blank();
    let result = read_sun(&mut SimChannel::new(&mut card));
    assert!(matches!(result, Err(ReaderError::Tap(reader::TapParseError::NotUriRecord))), "{result:?}");
    let mut card = VirtualCard::new(CardState::factory(CardUid::from_bytes(UID)));
    let response = SimChannel::new(&mut card)
        .transmit(&CommandApdu::parse(&[0x00, 0xB0, 0x00, 0x00, 0x00]).expect("apdu"))
        .expect("answer");
    assert_ne!(response.status(), StatusWord::OK, "no file selected");
}

/// Prints the APDUs of a personalisation and a tap for CARDS.md when
/// `KARTU_PRINT_APDUS=1` (random numbers make the encrypted parts differ per run).
#[test]
fn apdu_transcript() {
    let mut card = blank();
    let keys = master_keys(1, 0x10);
    let mut channel = SimChannel::new(&mut card);
    personalize(&mut channel, &keys, &system_identifier(), "kartu.example").expect("blank");
    let personalisation = std::mem::take(&mut channel.log);
    read_sun(&mut channel).expect("tap");
    let tap = std::mem::take(&mut channel.log);
    assert_eq!(tap.len(), 3, "a tap is three commands");
    if std::env::var_os("KARTU_PRINT_APDUS").is_some() {
        for (title, log) in [("personalisation", personalisation), ("tap", tap)] {
            println!("== {title}");
            for (command, response) in log {
                println!("> {}\n< {}", hex::encode_upper(command), hex::encode_upper(response));
            }
        }
    }
}
