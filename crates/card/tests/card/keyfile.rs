//! The key file (SPEC §6): parsing with errors that name the field, generating and writing
//! it back, and checking taps against every key version, newest first.

use crate::common::{a, key};
use card::keyfile::{CheckpointSecret, KeyFile, KeyFileError, TapVersions, GENERATE_RANDOM_LEN};
use card::sun::{encrypt_picc_data, sdm_mac};
use card::{diversify_card_key, CardUid, KeyParseError, ReadCounter, SunError, SunTap, SystemIdentifier};

const META_1: &str = "11111111111111111111111111111111";
const FILE_1: &str = "22222222222222222222222222222222";
const APP_1: &str = "33333333333333333333333333333333";
const META_2: &str = "44444444444444444444444444444444";
const FILE_2: &str = "55555555555555555555555555555555";
const APP_2: &str = "66666666666666666666666666666666";
/// Secret-looking values used in the error tests: none may appear in an error message.
const SECRET_SHORT: &str = "ABCDEF0123456789ABCDEF012345678";
const SECRET_NOT_HEX: &str = "ABCDEF0123456789ABCDEF012345678Z";

fn two_versions() -> String {
    format!(
        "system_identifier = \"KARTU-MKS\"\n\
         [cards.2]\nsdm_meta_read_key = \"{META_2}\"\nsdm_file_read_master_key = \"{FILE_2}\"\napp_master_key = \"{APP_2}\"\n\
         [cards.1]\nsdm_meta_read_key = \"{META_1}\"\nsdm_file_read_master_key = \"{FILE_1}\"\napp_master_key = \"{APP_1}\"\n\
         [checkpoint]\ned25519_pkcs8 = \"00ff10\"\n"
    )
}

/// What a card with these master keys mirrors at a read: PICCData and the SUN MAC (card side
/// of `card::sun`, checked against AN12196 in `vectors.rs`).
fn tap(meta: &str, file_master: &str, uid: &str, counter: u32) -> SunTap {
    let uid = CardUid::from_hex(uid).expect("uid");
    let counter = ReadCounter::new(counter).expect("counter");
    let card_key = diversify_card_key(&key(file_master), &uid, 2, b"KARTU-MKS").expect("diversify");
    let picc = encrypt_picc_data(&key(meta), &uid, counter, [0x5A; 5]);
    SunTap::new(picc, sdm_mac(&card_key, &uid, counter, &[]), None).expect("tap")
}

#[test]
fn parses_the_spec_layout_newest_version_first() {
    let file = KeyFile::parse(&two_versions()).expect("parse");
    assert_eq!(file.system_identifier().as_str(), "KARTU-MKS");
    assert_eq!(file.versions().map(|set| set.version()).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(file.newest().version(), 2);
    let v1 = file.version(1).expect("version 1");
    assert_eq!(
        (v1.sdm_meta_read_key(), v1.sdm_file_read_master_key(), v1.app_master_key()),
        (&key(META_1), &key(FILE_1), Some(&key(APP_1)))
    );
    assert_eq!(file.newest().app_master_key(), Some(&key(APP_2)));
    assert!(file.version(3).is_none());
    assert_eq!(file.checkpoint().map(CheckpointSecret::expose_secret), Some(&[0x00, 0xFF, 0x10][..]));
    // The checkpoint table is optional.
    let without = two_versions().replace("[checkpoint]\ned25519_pkcs8 = \"00ff10\"\n", "");
    assert!(KeyFile::parse(&without).expect("parse").checkpoint().is_none());
}

#[test]
fn debug_output_shows_no_secret() {
    let file = KeyFile::parse(&two_versions()).expect("parse");
    let printed = format!("{file:?}");
    for secret in [META_1, FILE_1, APP_1, META_2, FILE_2, APP_2, "00ff10", "00FF10"] {
        assert!(!printed.to_uppercase().contains(secret), "{printed}");
    }
    assert!(printed.contains("KARTU-MKS") && printed.contains("<redacted>"), "{printed}");
}

#[test]
fn errors_name_the_field_and_never_the_value() {
    let base = two_versions();
    let cases: Vec<(String, KeyFileError)> = vec![
        (
            base.replace("system_identifier = \"KARTU-MKS\"\n", ""),
            KeyFileError::Missing { field: "system_identifier".into() },
        ),
        (
            base.replace("\"KARTU-MKS\"", "7"),
            KeyFileError::WrongType { field: "system_identifier".into(), expected: "a string" },
        ),
        (base.replace("KARTU-MKS", "KARTU MKS"), KeyFileError::SystemIdentifier(card::SystemIdentifierError)),
        (
            base.replace(&format!("app_master_key = \"{APP_2}\""), &format!("app_master_key = \"{SECRET_SHORT}\"")),
            KeyFileError::Key {
                field: "cards.2.app_master_key".into(),
                source: KeyParseError::WrongLength { found: 31 },
            },
        ),
        (
            base.replace(
                &format!("sdm_meta_read_key = \"{META_1}\""),
                &format!("sdm_meta_read_key = \"{SECRET_NOT_HEX}\""),
            ),
            KeyFileError::Key { field: "cards.1.sdm_meta_read_key".into(), source: KeyParseError::NotHex },
        ),
        (
            base.replace(&format!("sdm_file_read_master_key = \"{FILE_1}\"\n"), ""),
            KeyFileError::Missing { field: "cards.1.sdm_file_read_master_key".into() },
        ),
        (
            base.replace(&format!("app_master_key = \"{APP_1}\""), "app_master_key = 12"),
            KeyFileError::WrongType {
                field: "cards.1.app_master_key".into(),
                expected: "a string of 32 hex characters",
            },
        ),
        (base.replace("[cards.2]", "[cards.0]"), KeyFileError::KeyVersion { name: "0".into() }),
        (base.replace("[cards.2]", "[cards.256]"), KeyFileError::KeyVersion { name: "256".into() }),
        (base.replace("[cards.2]", "[cards.02]"), KeyFileError::KeyVersion { name: "02".into() }),
        (base.replace("[cards.2]", "[cards.two]"), KeyFileError::KeyVersion { name: "two".into() }),
        (
            base.replace("[cards.2]\n", "[cards.2]\nsdm_meta_read_kye = \"00\"\n"),
            KeyFileError::UnknownField { field: "cards.2.sdm_meta_read_kye".into() },
        ),
        (base.replace("[checkpoint]", "[checkpiont]"), KeyFileError::UnknownField { field: "checkpiont".into() }),
        (base.replace("00ff10", "00ff1"), KeyFileError::CheckpointHex),
        (base.replace("ed25519_pkcs8", "ed25519"), KeyFileError::UnknownField { field: "checkpoint.ed25519".into() }),
        ("system_identifier = \"KARTU-MKS\"\n".to_string(), KeyFileError::NoKeyVersion),
        ("system_identifier = \"KARTU-MKS\"\n[cards]\n".to_string(), KeyFileError::NoKeyVersion),
    ];
    for (text, expected) in cases {
        let error = KeyFile::parse(&text).expect_err(&expected.to_string());
        assert_eq!(error, expected);
        let message = error.to_string();
        for secret in [SECRET_SHORT, SECRET_NOT_HEX, META_1, FILE_1, APP_1, META_2, FILE_2, APP_2, "00ff1"] {
            assert!(!message.contains(secret), "{message}");
        }
    }
    assert!(KeyFileError::Key { field: "cards.2.app_master_key".into(), source: KeyParseError::NotHex }
        .to_string()
        .starts_with("cards.2.app_master_key: "));
}

#[test]
fn a_toml_syntax_error_gives_the_line_without_the_text() {
    // Unquoted keys on line 3: the TOML parser's own Display quotes the line, and its
    // message quotes a number it could not read.
    for value in [SECRET_NOT_HEX, "12345678901234567890123456789012", "0x1234567890ABCDEF1234"] {
        let text = format!("system_identifier = \"KARTU-MKS\"\n[cards.1]\nsdm_meta_read_key = {value}\n");
        match KeyFile::parse(&text) {
            Err(error @ KeyFileError::Syntax { line: 3, .. }) => {
                let message = error.to_string();
                for part in [value, "ABCDEF", "12345678", "5373003641998677469065", "85968058271978839505940"] {
                    assert!(!message.contains(part), "{message}");
                }
            }
            other => panic!("{value}: {other:?}"),
        }
    }
}

#[test]
fn generate_then_to_toml_round_trips() {
    let random: [u8; GENERATE_RANDOM_LEN] = core::array::from_fn(|index| index as u8 * 5 + 1);
    let sysid = SystemIdentifier::parse("CITY\"X\\Y").expect("system identifier");
    let generated = KeyFile::generate(sysid.clone(), &random);
    assert_eq!(generated.versions().map(|set| set.version()).collect::<Vec<_>>(), [1]);
    let v1 = generated.newest();
    assert_eq!(v1.sdm_meta_read_key().expose_secret(), &random[..16]);
    assert_eq!(v1.sdm_file_read_master_key().expose_secret(), &random[16..32]);
    assert_eq!(v1.app_master_key().map(|k| k.expose_secret().to_vec()), Some(random[32..].to_vec()));
    assert!(generated.checkpoint().is_none());

    let text = generated.to_toml();
    assert!(text.contains("[cards.1]") && text.contains(&hex::encode_upper(&random[32..])), "{}", *text);
    let parsed = KeyFile::parse(&text).expect("parse what to_toml wrote");
    assert_eq!(parsed, generated);
    assert_eq!(parsed.system_identifier(), &sysid);

    let with_checkpoint = generated.with_checkpoint(CheckpointSecret::from_bytes(vec![0x30, 0x51, 0x02]));
    let parsed = KeyFile::parse(&with_checkpoint.to_toml()).expect("parse");
    assert_eq!(parsed.checkpoint().map(CheckpointSecret::expose_secret), Some(&[0x30, 0x51, 0x02][..]));
    assert_eq!(parsed, with_checkpoint);

    // Two versions survive the round trip too, newest first.
    let two = KeyFile::parse(&two_versions()).expect("parse");
    assert_eq!(KeyFile::parse(&two.to_toml()).expect("parse"), two);
}

/// The two files of an installation: the server's part has every version's SDM keys and
/// the checkpoint key but no key 0; the issuance part has key 0 and no checkpoint key; each
/// round-trips through TOML, and a file without `app_master_key` parses.
#[test]
fn server_and_issuance_parts_are_apart() {
    let full = KeyFile::parse(&two_versions()).expect("parse");
    assert!(full.holds_app_master_keys());
    let server = full.server_part();
    let text = server.to_toml();
    assert!(!text.contains("app_master_key") && !text.contains(APP_1) && !text.contains(APP_2), "{}", *text);
    assert!(text.contains("ed25519_pkcs8") && text.contains("server key file"), "{}", *text);
    let parsed = KeyFile::parse(&text).expect("parse the server part");
    assert_eq!(parsed, server);
    assert!(!parsed.holds_app_master_keys());
    assert_eq!(parsed.versions().map(|set| set.version()).collect::<Vec<_>>(), [2, 1]);
    assert!(parsed.versions().all(|set| set.app_master_key().is_none()));
    assert_eq!(parsed.version(1).map(|set| set.sdm_file_read_master_key()), Some(&key(FILE_1)));
    assert!(parsed.checkpoint().is_some());
    // The server's part verifies the taps of cards of either version.
    let (_, version) = parsed.verify_tap(&tap(META_1, FILE_1, "04A1B2C3D4E5F6", 9)).expect("tap");
    assert_eq!(version, 1);

    let issuance = full.issuance_part();
    let text = issuance.to_toml();
    assert!(text.contains(APP_1) && text.contains(APP_2) && !text.contains("ed25519_pkcs8"), "{}", *text);
    assert!(text.contains("issuance key file"), "{}", *text);
    let parsed = KeyFile::parse(&text).expect("parse the issuance part");
    assert_eq!(parsed, issuance);
    assert!(parsed.checkpoint().is_none() && parsed.holds_app_master_keys());
    // One version with key 0 and one without: the file still holds key 0.
    let mixed = two_versions().replace(&format!("app_master_key = \"{APP_1}\"\n"), "");
    let mixed = KeyFile::parse(&mixed).expect("parse");
    assert!(mixed.holds_app_master_keys());
    assert_eq!(mixed.version(1).and_then(|set| set.app_master_key()), None);
}

/// AN12196's SUN example (VECTORS.md): with the zero meta-read key the key file decrypts
/// PICCData to UID 04DE5F1EACC040, counter 61. The example's MAC is made with the zero
/// file-read key itself, not a key diversified from a master, so no version's MAC holds:
/// the newest version's reading comes back, with `mac_valid() == false`.
#[test]
fn an12196_tap_decrypts_but_its_undiversified_mac_is_not_valid() {
    let zero = "00000000000000000000000000000000";
    let text = format!(
        "system_identifier = \"KARTU-MKS\"\n\
         [cards.1]\nsdm_meta_read_key = \"{zero}\"\nsdm_file_read_master_key = \"{zero}\"\napp_master_key = \"{zero}\"\n\
         [cards.3]\nsdm_meta_read_key = \"{zero}\"\nsdm_file_read_master_key = \"{FILE_2}\"\napp_master_key = \"{zero}\"\n"
    );
    let file = KeyFile::parse(&text).expect("parse");
    let tap = SunTap::new(a("EF963FF7828658A599F3041510671E88"), a("94EED9EE65337086"), None).expect("tap");
    let (message, version) = file.verify_tap(&tap).expect("PICCData decrypts");
    assert_eq!(
        (message.uid().to_string(), message.counter().value(), message.mac_valid(), version),
        ("04DE5F1EACC040".to_string(), 61, false, 3)
    );
}

#[test]
fn verify_tap_finds_the_version_of_the_card() {
    let file = KeyFile::parse(&two_versions()).expect("parse");
    // A card still on version 1 (another meta-read key than version 2: version 2's
    // decryption fails and must not stop the search).
    let (message, version) = file.verify_tap(&tap(META_1, FILE_1, "04A1B2C3D4E5F6", 7)).expect("v1 tap");
    assert_eq!(
        (message.uid().to_string(), message.counter().value(), message.mac_valid(), version),
        ("04A1B2C3D4E5F6".into(), 7, true, 1)
    );
    assert!(message.require_valid_mac().is_ok());
    let (message, version) = file.verify_tap(&tap(META_2, FILE_2, "04A1B2C3D4E5F6", 8)).expect("v2 tap");
    assert_eq!((message.mac_valid(), version), (true, 2));

    // Version 1's meta key with a MAC from a foreign file-read master: decrypts, MAC invalid.
    let (message, version) = file.verify_tap(&tap(META_1, APP_1, "04A1B2C3D4E5F6", 9)).expect("decrypts");
    assert_eq!((message.mac_valid(), message.counter().value(), version), (false, 9, 1));
    // One flipped MAC bit.
    let good = tap(META_2, FILE_2, "04A1B2C3D4E5F6", 10);
    let mut mac = *good.sdm_mac();
    mac[7] ^= 1;
    let forged = SunTap::new(*good.picc_data(), mac, None).expect("tap");
    assert_eq!(file.verify_tap(&forged).map(|(message, version)| (message.mac_valid(), version)), Ok((false, 2)));
    // No version's meta-read key: the newest version's error.
    assert!(matches!(
        file.verify_tap(&tap(APP_2, FILE_2, "04A1B2C3D4E5F6", 11)),
        Err(SunError::UnsupportedPiccDataTag { .. })
    ));
    // Another system identifier diversifies other card keys.
    let other = KeyFile::parse(&two_versions().replace("KARTU-MKS", "OTHER-CITY")).expect("parse");
    assert_eq!(other.verify_tap(&good).map(|(message, _)| message.mac_valid()), Ok(false));
}

/// A card pulled away between the two ChangeKeys of a rotation holds the SDM keys of two
/// versions: its taps verify, as the lower version, and say which key is at which version;
/// a pair of one version is consistent.
#[test]
fn a_half_rotated_card_taps_as_its_older_version() {
    let file = KeyFile::parse(&two_versions()).expect("parse");
    let uid = "04A1B2C3D4E5F6";
    let versions = |meta: &str, file_master: &str, counter: u32| {
        file.verify_tap_versions(&tap(meta, file_master, uid, counter))
            .map(|(message, versions)| (message.mac_valid(), message.counter().value(), versions))
    };
    let pair = |meta_read: u8, file_read: u8| TapVersions { meta_read, file_read };
    // Key 1 rotated, key 2 not; and the other way round.
    assert_eq!(versions(META_2, FILE_1, 20), Ok((true, 20, pair(2, 1))));
    assert_eq!(versions(META_1, FILE_2, 21), Ok((true, 21, pair(1, 2))));
    assert_eq!(file.verify_tap(&tap(META_2, FILE_1, uid, 22)).map(|(m, v)| (m.mac_valid(), v)), Ok((true, 1)));
    assert_eq!(file.verify_tap(&tap(META_1, FILE_2, uid, 23)).map(|(m, v)| (m.mac_valid(), v)), Ok((true, 1)));
    assert!(!pair(2, 1).consistent() && pair(2, 2).consistent());
    // Whole versions are found as before.
    assert_eq!(versions(META_2, FILE_2, 24), Ok((true, 24, pair(2, 2))));
    assert_eq!(versions(META_1, FILE_1, 25), Ok((true, 25, pair(1, 1))));
    // A file-read master of no version still fails, whichever meta-read key decrypts.
    assert_eq!(versions(META_2, APP_1, 26).map(|(valid, _, _)| valid), Ok(false));
}

/// `claimed_uid` reads the UID without the MAC: from AN12196's PICCData under the zero
/// meta-read key (VECTORS.md), from an older version's key, and from a tap whose MAC is
/// forged; nothing from PICCData no version's key decrypts to a Kartu tag.
#[test]
fn claimed_uid_is_the_decrypted_uid_whatever_the_mac() {
    let zero = "00000000000000000000000000000000";
    let text = format!(
        "system_identifier = \"KARTU-MKS\"\n\
         [cards.1]\nsdm_meta_read_key = \"{zero}\"\nsdm_file_read_master_key = \"{FILE_1}\"\n\
         [cards.2]\nsdm_meta_read_key = \"{META_2}\"\nsdm_file_read_master_key = \"{FILE_2}\"\n"
    );
    let file = KeyFile::parse(&text).expect("parse");
    let an12196 = SunTap::new(a("EF963FF7828658A599F3041510671E88"), a("94EED9EE65337086"), None).expect("tap");
    assert_eq!(file.claimed_uid(&an12196).map(|u| u.to_string()), Some("04DE5F1EACC040".into()));
    let good = tap(META_2, FILE_2, "04A1B2C3D4E5F6", 3);
    let forged = SunTap::new(*good.picc_data(), [0; 8], None).expect("tap");
    for t in [&good, &forged] {
        assert_eq!(file.claimed_uid(t).map(|u| u.to_string()), Some("04A1B2C3D4E5F6".into()));
    }
    assert_eq!(file.claimed_uid(&tap(APP_2, FILE_2, "04A1B2C3D4E5F6", 4)), None);
}
