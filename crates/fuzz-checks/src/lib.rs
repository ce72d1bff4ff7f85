//! What Kartu's fuzz targets (`fuzz/`, run with `cargo fuzz`) check on each input. The
//! committed seed corpus (`fuzz/corpus/<target>/`) runs through the same functions in the
//! `corpus` test, so what a fuzzing run found stays fixed.
//!
//! Each check panics when an invariant breaks — that is how a fuzzer learns of a finding.
//! The invariants are stated against independent models (a grammar written here, byte
//! round trips), not against the code's own output.

#![allow(clippy::missing_panics_doc)]

use card::apdu::{CommandApdu, ResponseApdu};
use card::keyfile::KeyFile;
use card::sun::SunTap;
use card::{CardUid, FileReadKey, Key, ReadCounter};
use ledger::money::{Amount, Currency, FeeRate, AMOUNT_MAX_MINOR};

mod server;

pub use server::{request_body, request_body_books_balance, request_targets, RequestTarget, SEED_CARD_UID};

/// Command and response APDUs: whatever parses writes back to the same bytes, and the
/// virtual card answers every command of a session (split by a length byte) with a status
/// word and never panics.
pub fn apdu(data: &[u8]) {
    if let Ok(command) = CommandApdu::parse(data) {
        assert_eq!(command.to_bytes(), data, "a command APDU must write back to its bytes");
        assert!(command.data().len() <= 255, "short APDUs only");
    }
    if let Ok(response) = ResponseApdu::parse(data) {
        assert_eq!(response.to_bytes(), data, "a response APDU must write back to its bytes");
    }
    let uid = CardUid::from_hex("04DE5F1EACC040").unwrap_or_else(|_| unreachable!("a fixed UID"));
    let mut card = cardsim::VirtualCard::new(cardsim::CardState::factory(uid));
    card.power_on();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let (command, after) = tail.split_at(usize::from(len).min(tail.len()));
        rest = after;
        let answer = card.process(command);
        assert!(answer.len() >= 2, "every answer ends in a status word: {answer:02X?} to {command:02X?}");
    }
}

/// AN12196's SUN keys (every key zero), so its worked examples are valid seeds.
fn zero_key() -> Key {
    Key::from_bytes([0; 16])
}

/// Whether `text` is `n` hex digits (either case) — the grammar of a tap's fields, written
/// here independently of the parser.
fn is_hex(text: &str, n: usize) -> bool {
    text.len() == n && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// SUN taps in their hex form `picc_data&cmac[&enc_data]`: the parser accepts exactly the
/// grammar, keeps the bytes given, and verification never panics; a valid MAC is the one
/// the keys make for the decrypted UID and counter.
pub fn sun(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.splitn(3, '&');
    let (picc, cmac, enc) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next());
    let enc_ok = enc.is_none_or(|e| !e.is_empty() && e.len() <= 256 && e.len() % 32 == 0 && is_hex(e, e.len()));
    let model_accepts = is_hex(picc, 32) && is_hex(cmac, 16) && enc_ok;
    let parsed = SunTap::from_hex(picc, cmac, enc);
    assert_eq!(parsed.is_ok(), model_accepts, "{text:?}: parser {parsed:?}");
    let Ok(tap) = parsed else { return };
    assert_eq!(hex::encode(tap.picc_data()), picc.to_ascii_lowercase());
    assert_eq!(hex::encode(tap.sdm_mac()), cmac.to_ascii_lowercase());
    assert_eq!(tap.enc_file_data().map(hex::encode), enc.map(str::to_ascii_lowercase));
    let key = zero_key();
    if let Ok(message) = tap.verify(&key, &FileReadKey::Direct(&key)) {
        let mac = card::sun::sdm_mac(&key, &message.uid(), message.counter(), &tap.kartu_mac_input());
        assert_eq!(message.mac_valid(), mac == *tap.sdm_mac(), "MAC verdict for {text:?}");
        assert_eq!(message.file_data().is_some(), message.mac_valid() && enc.is_some());
    }
    // Kartu's own keys: a tap made for the decrypted UID and counter, with the same
    // PICCData, verifies; this one verifies only if its MAC is that one.
    let keys = fixed_key_file();
    if let Ok((message, _)) = keys.verify_tap(&tap) {
        if enc.is_none() {
            let made = keys.make_tap(&message.uid(), message.counter(), [0; 5]).ok();
            let made_mac = made.map(|m| *m.sdm_mac());
            assert_eq!(message.mac_valid(), made_mac == Some(*tap.sdm_mac()), "MAC verdict for {text:?}");
        }
    }
}

/// The key file the request-body harness serves with, fixed so that seeds carry valid taps.
pub fn fixed_key_file() -> KeyFile {
    let sysid = card::SystemIdentifier::parse("KARTU-MKS").unwrap_or_else(|_| unreachable!("a fixed identifier"));
    KeyFile::generate(sysid, &[0x5A; card::keyfile::GENERATE_RANDOM_LEN])
}

/// A genuine tap of `uid` at `counter` under [`fixed_key_file`], as the API's JSON.
pub fn fixed_tap(uid: &str, counter: u32) -> serde_json::Value {
    let uid = CardUid::from_hex(uid).unwrap_or_else(|_| unreachable!("a fixed UID"));
    let counter = ReadCounter::new(counter).unwrap_or_else(|| unreachable!("a small counter"));
    let tap = fixed_key_file().make_tap(&uid, counter, [0; 5]).unwrap_or_else(|_| unreachable!("a valid identifier"));
    serde_json::json!({"picc_data": hex::encode_upper(tap.picc_data()), "cmac": hex::encode_upper(tap.sdm_mac())})
}

/// An amount's value in minor units under the grammar `-?digits(.digits{1,2})?`, written
/// here without the parser's code: `None` for text outside the grammar, `Some(None)` for a
/// value too large for any amount.
fn model_minor(text: &str) -> Option<Option<i128>> {
    if text.is_empty() || text.len() > 40 {
        return None;
    }
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = unsigned.split_once('.').map_or((unsigned, None), |(w, f)| (w, Some(f)));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || fraction.is_some_and(|f| !digits(f) || f.len() > 2) {
        return None;
    }
    let mut value: i128 = 0;
    for b in whole
        .bytes()
        .chain(fraction.unwrap_or("").bytes())
        .chain(std::iter::repeat_n(b'0', 2 - fraction.map_or(0, str::len)))
    {
        value = match value.checked_mul(10).and_then(|v| v.checked_add(i128::from(b - b'0'))) {
            Some(v) if v <= i128::from(i64::MAX) => v,
            _ => return Some(None),
        };
    }
    Some(Some(if negative { -value } else { value }))
}

/// Amounts and fee rates: the parser agrees with the grammar model on what it accepts and
/// on the value, writes back to the same value, and a fee is never negative nor above the
/// amount it is taken from.
pub fn amount(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let currency = Currency::IDR;
    let parsed = Amount::parse(text, currency, AMOUNT_MAX_MINOR);
    let expected = match model_minor(text) {
        Some(Some(v)) if (1..=i128::from(AMOUNT_MAX_MINOR)).contains(&v) => Some(v),
        _ => None,
    };
    assert_eq!(parsed.as_ref().ok().map(|a| i128::from(a.minor())), expected, "{text:?}: {parsed:?}");
    if let Ok(a) = parsed {
        let again = Amount::parse(&currency.format_minor(a.minor()), currency, AMOUNT_MAX_MINOR);
        assert_eq!(again.map(|b| b.minor()).ok(), Some(a.minor()), "{text:?} must write back");
    }
    let signed = ledger::money::parse_signed_minor(text, currency);
    let expected = match model_minor(text) {
        Some(Some(v)) if v != 0 && v.abs() <= i128::from(AMOUNT_MAX_MINOR) => Some(v),
        _ => None,
    };
    assert_eq!(signed.as_ref().ok().map(|m| i128::from(*m)), expected, "{text:?} signed: {signed:?}");
    if let Ok(rate) = FeeRate::parse(text) {
        for minor in [1, 99, 100, 12_345, 1_000_000, AMOUNT_MAX_MINOR] {
            let fee = rate.fee_minor(minor);
            assert!((0..=minor).contains(&fee), "fee {fee} of {minor} at {text:?}");
        }
    }
}

/// The generated request seeds, one per route of [`request_targets`] in order: a body the
/// route takes, with genuine taps of [`SEED_CARD_UID`] where the route wants one.
pub fn request_seeds() -> Vec<Vec<u8>> {
    use serde_json::json;
    let tap = |counter| fixed_tap(SEED_CARD_UID, counter);
    let bodies = [
        json!({"tap": tap(10), "amount": "1000.00", "reference": "r-1"}),
        json!({"amount": "100.00", "reason": "spoilt"}),
        json!({"tap": tap(11), "amount": "2000.00", "expires_in_minutes": 60}),
        json!({"amount": "4000.00"}),
        json!({}),
        json!({"tap": tap(12), "amount": "1000.00"}),
        json!({"tap": tap(13)}),
        json!({"tap": tap(14)}),
        json!({"name": "Budi", "nik": "7371010101900002", "categories": ["student"]}),
        json!({"uid": "04A1B2C3D4E502", "holder_id": "1"}),
        json!({"reason": "lost"}),
        json!({"new_uid": "04A1B2C3D4E503", "reason": "lost"}),
        json!({"name": "Parkir", "category": "parking", "fee_rate": "0.005"}),
        json!({"name": "Perpustakaan", "service": "library", "policy": {"categories": ["student"]}}),
        json!({"name": "Agen 2"}),
        json!({"amount": "1000.00"}),
        json!({"role": "kiosk", "name": "kiosk 2"}),
        json!({"account_id": "1", "amount": "-1.00", "reason": "fuzz"}),
        json!({}),
        json!({"merchant_id": "1"}),
        json!({"terminal_public_key": "00", "records": []}),
        json!({"tap": tap(15), "amount": "1000.00"}),
    ];
    bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let mut seed = vec![u8::try_from(i).unwrap_or(0)];
            seed.extend_from_slice(body.to_string().as_bytes());
            seed
        })
        .collect()
}
