//! The virtual card's tests in one binary.

mod card;
mod hostile_input;
mod vpcd;
