//! `kartu-client`: how a program talks to a Kartu server. [`wire`] holds the API's request
//! and response bodies, one definition each, shared with the server (`kartu-api` derives
//! its OpenAPI document from them).

pub mod wire;
