//! The migrations are embedded at compile time (`embed_migrations!` in
//! `store/migrations.rs`), which tracks the files it read but not a migration added later:
//! a new directory under `migrations/` must rebuild the crate too.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
