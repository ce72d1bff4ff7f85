//! Fuzz target: see `fuzz_checks::request_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_checks::request_body(data);
});
