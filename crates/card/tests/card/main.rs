//! The card crate's tests in one binary: published vectors (AN12196, AN10922, RFC 4493),
//! AN12196 worked examples from public test suites, round trips, and hostile input.

mod an12196_examples;
mod common;
mod hostile_input;
mod roundtrip;
mod vectors;
