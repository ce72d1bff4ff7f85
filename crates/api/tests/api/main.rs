//! The API's integration tests (to be filled in): a real server on a random port against
//! SQLite and PostgreSQL.

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    libtest_mimic::run(&args, Vec::new()).exit();
}
