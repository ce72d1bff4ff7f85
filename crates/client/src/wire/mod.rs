//! The API's request and response bodies, one definition each: the server's handlers
//! (`kartu-api`) read and write them, the clients send and parse them, and the OpenAPI
//! document is generated from them. Each submodule holds one area's types; all of them are
//! re-exported here.

pub mod access;
pub mod audit;
pub mod merchant;
pub mod money;
pub mod offline;
pub mod problem;
pub mod transit;
pub mod transparency;

pub use access::*;
pub use audit::*;
pub use merchant::*;
pub use money::*;
pub use offline::*;
pub use problem::*;
pub use transit::*;
pub use transparency::*;
