//! Helpers shared by the integration tests.
#![allow(dead_code)]

use card::Key;

/// Bytes from hex written in a test (panics on a typo, which is a broken test).
pub fn h(text: &str) -> Vec<u8> {
    hex::decode(text).expect("test hex")
}

/// A fixed-size array from hex.
pub fn a<const N: usize>(text: &str) -> [u8; N] {
    h(text).try_into().expect("test hex length")
}

/// A key from hex.
pub fn key(text: &str) -> Key {
    Key::from_hex(text).expect("test key")
}

/// Upper-case hex, for readable assertion messages.
pub fn x(bytes: &[u8]) -> String {
    hex::encode_upper(bytes)
}
