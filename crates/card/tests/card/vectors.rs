//! Every vector of `/work/shared/VECTORS.md` for AN12196, AN10922 and RFC 4493, each as its
//! own test, compared with the published hex (never with our own output).

use crate::common::{a, h, key, x};
use card::crypto::{self, aes_decrypt_block};
use card::ev2::session_keys;
use card::sun::decrypt_picc_data;
use card::{diversify_an10922, verify_sun, CardUid, CommMode, FileReadKey, Key, ReadCounter, Session};

// ---------------------------------------------------------------------------------------
// NXP AN12196, SUN message in AES mode (p. 12); both SDM keys are 16 zero bytes.

#[test]
fn an12196_sun_picc_data_decrypts_to_tag_uid_and_counter() {
    let picc_data: [u8; 16] = a("EF963FF7828658A599F3041510671E88");
    let plain = aes_decrypt_block(&Key::factory_default(), &picc_data);
    assert_eq!(plain[0], 0xC7, "PICCDataTag");
    assert_eq!(x(&plain[1..8]), "04DE5F1EACC040", "UID");
    assert_eq!(x(&plain[8..11]), "3D0000", "SDMReadCtr, LSB first");

    let parsed = decrypt_picc_data(&Key::factory_default(), &picc_data).unwrap();
    assert_eq!(parsed.uid, CardUid::from_hex("04DE5F1EACC040").unwrap());
    assert_eq!(parsed.counter.value(), 61);
}

#[test]
fn an12196_sun_mac_verifies() {
    let zero = Key::factory_default();
    let message = verify_sun(
        &zero,
        &FileReadKey::Direct(&zero),
        &a("EF963FF7828658A599F3041510671E88"),
        &a("94EED9EE65337086"),
        None,
        &[],
    )
    .unwrap();
    assert!(message.mac_valid());
    assert_eq!(message.uid().to_string(), "04DE5F1EACC040");
    assert_eq!(message.counter(), ReadCounter::new(61).unwrap());
    assert_eq!(message.file_data(), None);
}

#[test]
fn an12196_sun_mac_from_sv2_and_empty_input() {
    // SV2 = 3CC3 0001 0080 || UID || ctr; KSesSDMFileReadMAC = CMAC(key, SV2);
    // SDMMAC = odd bytes of CMAC(KSesSDMFileReadMAC, empty).
    let zero = Key::factory_default();
    let sv2 = h("3CC30001008004DE5F1EACC0403D0000");
    let session_key = Key::from_bytes(crypto::cmac(&zero, &sv2));
    assert_eq!(x(&crypto::mac_t(&session_key, &[&[]])), "94EED9EE65337086");
    let uid = CardUid::from_hex("04DE5F1EACC040").unwrap();
    let counter = ReadCounter::new(61).unwrap();
    assert_eq!(x(&card::sun::sdm_mac(&zero, &uid, counter, &[])), "94EED9EE65337086");
}

// ---------------------------------------------------------------------------------------
// NXP AN12196 §6.6 (p. 28), AuthenticateEV2First session keys, key 0 = 16 zero bytes.

#[test]
fn an12196_ev2_session_keys() {
    let zero = Key::factory_default();
    let rnd_a: [u8; 16] = a("13C5DB8A5930439FC3DEF9A4C675360F");
    let rnd_b = aes_decrypt_block(&zero, &a("A04C124213C186F22399D33AC2A30215"));
    let (enc, mac) = session_keys(&zero, &rnd_a, &rnd_b);
    assert_eq!(x(enc.expose_secret()), "1309C877509E5A215007FF0ED19CA564");
    assert_eq!(x(mac.expose_secret()), "4C6626F5E72EA694202139295C7A7FC7");
}

// ---------------------------------------------------------------------------------------
// NXP AN12196 §5.3 (p. 21), secure messaging MAC.

#[test]
fn an12196_secure_messaging_mac() {
    let mac_key = key("8248134A386E86EB7FAF54A52E536CB6");
    let input = h("F500007A21085E02"); // Cmd F5 || CmdCtr 0000 || TI 7A21085E || FileNo 02
    assert_eq!(x(&crypto::mac_t(&mac_key, &[&input])), "6597A457C8CD442C");

    // The same through a session at CmdCtr 0 with TI 7A21085E (GetFileSettings, MAC mode).
    let mut session = Session::new(Key::factory_default(), mac_key, a("7A21085E"));
    let command = session.wrap_command(0xF5, &[0x02], &[], CommMode::Mac).unwrap();
    assert_eq!(x(&command.data()[1..]), "6597A457C8CD442C");
    assert_eq!(session.cmd_ctr(), 1);
}

// ---------------------------------------------------------------------------------------
// NXP AN10922 §2.2.1, AES-128 key diversification.

#[test]
fn an10922_aes128_diversification() {
    let master = key("00112233445566778899AABBCCDDEEFF");
    let mut m = h("04782E21801D80"); // UID
    m.extend_from_slice(&h("3042F5")); // AID
    m.extend_from_slice(b"NXP Abu"); // system identifier
    let diversified = diversify_an10922(&master, &m).unwrap();
    assert_eq!(x(diversified.expose_secret()), "A8DD63A3B89D54B37CA802473FDA9175");
}

// ---------------------------------------------------------------------------------------
// RFC 4493 §4, AES-CMAC example 2 (the one listed in VECTORS.md).

#[test]
fn rfc4493_example_2() {
    let mac = crypto::cmac(&key("2B7E151628AED2A6ABF7158809CF4F3C"), &h("6BC1BEE22E409F96E93D7E117393172A"));
    assert_eq!(x(&mac), "070A16B46B4D4144F79BDD9DD04A287C");
}
