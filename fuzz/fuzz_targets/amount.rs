//! Fuzz target: see `fuzz_checks::amount`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::amount(data));
