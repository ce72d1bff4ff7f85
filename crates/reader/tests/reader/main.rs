//! The reader crate's tests that need no pcscd, in one binary.

mod hostile_input;
mod protocol;
