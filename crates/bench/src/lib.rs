//! The HTTP load generator of `make bench` (`kartu-bench http`) as a library, so that other
//! tests can drive a real `kartu serve` with valid card taps: the minimal keep-alive client
//! ([`client`]) and the virtual cards and the load loops ([`loadgen`]), the set-up through
//! the API with `kartu-client` ([`setup`]). The crash tests (`crates/kartu/tests/crash.rs`)
//! use it.

pub mod client;
pub mod loadgen;
pub mod setup;
