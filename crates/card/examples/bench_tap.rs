//! A rough timing of the server's hot path: verifying one tap, per-card key diversification
//! included. Run with `cargo run --release --example bench_tap`.

use std::hint::black_box;
use std::time::Instant;

use card::sun::{encrypt_picc_data, sdm_mac};
use card::{diversify_card_key, CardUid, FileReadKey, Key, ReadCounter, SunTap};

const TAPS: u32 = 100_000;

fn main() {
    let meta = Key::from_bytes([0x11; 16]);
    let file_master = Key::from_bytes([0x22; 16]);
    let system_identifier = b"KARTU-MKS";
    let uid = CardUid::from_bytes([0x04, 0xDE, 0x5F, 0x1E, 0xAC, 0xC0, 0x40]);
    let counter = ReadCounter::new(61).unwrap_or_else(|| unreachable!());
    let card_key =
        diversify_card_key(&file_master, &uid, 2, system_identifier).unwrap_or_else(|error| panic!("{error}"));
    let picc_data = encrypt_picc_data(&meta, &uid, counter, [0; 5]);
    let mac = sdm_mac(&card_key, &uid, counter, &[]);
    let picc_hex = hex::encode_upper(picc_data);
    let mac_hex = hex::encode_upper(mac);
    let file_key = FileReadKey::Diversified { master: &file_master, system_identifier };

    let mut valid = 0_u32;
    let start = Instant::now();
    for _ in 0..TAPS {
        let tap =
            SunTap::from_hex(black_box(&picc_hex), black_box(&mac_hex), None).unwrap_or_else(|error| panic!("{error}"));
        let message = tap.verify(black_box(&meta), &file_key).unwrap_or_else(|error| panic!("{error}"));
        valid += u32::from(message.mac_valid());
    }
    let elapsed = start.elapsed();
    assert_eq!(valid, TAPS);
    println!(
        "{TAPS} taps (hex parse + PICCData decrypt + AN10922 diversification + MAC): {:.0} ns/tap",
        elapsed.as_nanos() as f64 / f64::from(TAPS)
    );
}
