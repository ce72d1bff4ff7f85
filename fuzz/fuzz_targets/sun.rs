//! Fuzz target: see `fuzz_checks::sun`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::sun(data));
