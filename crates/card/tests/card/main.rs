//! The card crate's tests in one binary: published vectors (AN12196, AN10922, RFC 4493),
//! AN12196 worked examples from public test suites, round trips, the key file, and hostile
//! input.

mod an12196_examples;
mod common;
mod hostile_input;
mod keyfile;
mod roundtrip;
mod vectors;
