//! Fuzz target: see `fuzz_checks::apdu`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::apdu(data));
