//! Property tests: the NDEF file and URL parsers get random, truncated and mutated input
//! and answer with a value or an error, never a panic.

use card::ndef::kartu_tap_url_file;
use proptest::prelude::*;
use reader::{parse_ndef_file, parse_tap_url};

fn valid_url(picc: [u8; 16], mac: [u8; 8]) -> String {
    format!("https://kartu.example/t?picc_data={}&cmac={}", hex::encode_upper(picc), hex::encode_upper(mac))
}

/// A valid NDEF file of Kartu's form with the given PICCData and MAC mirrored in.
fn valid_file(picc: [u8; 16], mac: [u8; 8]) -> Vec<u8> {
    let file = kartu_tap_url_file("kartu.example").expect("host");
    let mut bytes = file.bytes().to_vec();
    let layout = file.layout();
    let picc_at = layout.picc_data_offset as usize;
    let mac_at = layout.mac_offset as usize;
    bytes[picc_at..picc_at + 32].copy_from_slice(hex::encode_upper(picc).as_bytes());
    bytes[mac_at..mac_at + 16].copy_from_slice(hex::encode_upper(mac).as_bytes());
    bytes.resize(256, 0);
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_files_never_panic(input in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_ndef_file(&input);
    }

    #[test]
    fn random_urls_never_panic(input in "\\PC{0,200}") {
        let _ = parse_tap_url(&input);
    }

    #[test]
    fn valid_files_and_urls_round_trip(picc in any::<[u8; 16]>(), mac in any::<[u8; 8]>()) {
        let tap = parse_ndef_file(&valid_file(picc, mac)).expect("valid file");
        prop_assert_eq!(tap.tap().picc_data(), &picc);
        prop_assert_eq!(tap.tap().sdm_mac(), &mac);
        prop_assert_eq!(tap.url(), valid_url(picc, mac));
        let from_url = parse_tap_url(&valid_url(picc, mac)).expect("valid url");
        prop_assert_eq!(from_url, tap);
    }

    #[test]
    fn truncated_files_are_refused(picc in any::<[u8; 16]>(), mac in any::<[u8; 8]>(), cut in 0_usize..100) {
        let file = valid_file(picc, mac);
        let message_end = 2 + usize::from(u16::from_be_bytes([file[0], file[1]]));
        let cut = cut.min(message_end - 1);
        prop_assert!(parse_ndef_file(&file[..cut]).is_err());
    }

    #[test]
    fn mutated_files_never_panic(
        picc in any::<[u8; 16]>(),
        mac in any::<[u8; 8]>(),
        edits in proptest::collection::vec((0_usize..256, any::<u8>()), 1..8),
    ) {
        let mut file = valid_file(picc, mac);
        for (index, value) in edits {
            file[index] = value;
        }
        let _ = parse_ndef_file(&file);
    }

    #[test]
    fn truncated_urls_are_refused(picc in any::<[u8; 16]>(), mac in any::<[u8; 8]>(), cut in 0_usize..90) {
        let url = valid_url(picc, mac);
        let cut = cut.min(url.len() - 1);
        prop_assert!(parse_tap_url(&url[..cut]).is_err());
    }
}
